//! Start-up, serving and shutdown of limpetd: lock the root, open the stores, clean what a
//! crash left, serve CRI on the unix socket (and metrics over HTTP) until SIGTERM or SIGINT.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use limpet_protos::cri::v1::image_service_server::ImageServiceServer;
use limpet_protos::cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::sync::watch;

use crate::config::Config;
use crate::content::{ContentError, ContentStore};
use crate::cri::{ImageServiceImpl, RuntimeServiceImpl};
use crate::images::Images;
use crate::lock::{lock_root, LockError};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::snapshots::{SnapshotError, Snapshotter};
use crate::store::{Store, StoreError};

/// How long in-flight requests may run on after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);
const MAX_MESSAGE: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("socket {0} is in use by a running process: is another CRI runtime listening there?")]
    SocketInUse(PathBuf),
    #[error("gRPC server: {0}")]
    Serve(String),
    #[error("runtime: {0}")]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Streaming(#[from] crate::streaming::StreamingError),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let context = context.into();
    move |source| DaemonError::Io { context, source }
}

fn make_dir(path: &Path, mode: u32) -> Result<(), DaemonError> {
    std::fs::create_dir_all(path).map_err(io_err(format!("create {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", path.display())))
}

/// The opened stores, ready to serve.
pub struct Daemon {
    config: Arc<Config>,
    images: Arc<Images>,
    metrics: Arc<Metrics>,
    runtime: Arc<Runtime>,
    _events: crate::shims::EventsServer,
    _lock: crate::lock::RootLock,
}

impl Daemon {
    /// Locks the root, opens the stores and removes what an interrupted run left behind.
    pub async fn open(config: Config) -> Result<Daemon, DaemonError> {
        make_dir(&config.root, 0o700)?;
        make_dir(&config.state, 0o711)?;
        let lock = lock_root(&config.root)?;
        let store = Arc::new(Store::open(&config.root.join("meta.db"))?);
        let content = Arc::new(ContentStore::open(&config.root.join("content"))?);
        let snapshots = Arc::new(Snapshotter::open(
            &config.root.join("snapshots"),
            store.clone(),
        )?);
        let metrics = Arc::new(Metrics::new());
        let images = Arc::new(Images::new(
            &config,
            store,
            content,
            snapshots,
            metrics.clone(),
        ));
        let config = Arc::new(config);
        let runtime = Runtime::new(config.clone(), images.clone())?;
        // Records first, then the shims' queued events (exits while limpetd was away), then
        // the reconciliation that settles everything else.
        runtime.load()?;
        let events = runtime.serve_events()?;
        let recovered = runtime.reconcile().await?;
        tracing::info!(?recovered, "re-attached");
        // Blobs and snapshots of a pull that a crash cut short are whole but unreferenced.
        images.gc().await?;
        Ok(Daemon {
            config,
            images,
            metrics,
            runtime,
            _events: events,
            _lock: lock,
        })
    }

    pub fn images(&self) -> &Arc<Images> {
        &self.images
    }

    /// Serves until SIGTERM or SIGINT.
    pub async fn serve(self) -> Result<(), DaemonError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop_tx.send(true);
        });
        self.serve_until(stop_rx).await
    }

    /// Serves until `stop` turns true.
    pub async fn serve_until(self, stop: watch::Receiver<bool>) -> Result<(), DaemonError> {
        let socket = self.config.grpc.address.clone();
        let listener = bind_socket(&socket, self.config.grpc.uid, self.config.grpc.gid)?;
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };

        let metrics_task = match self.config.metrics_address() {
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(io_err(format!("metrics.address {addr}")))?;
                tracing::info!(address = %addr, "serving metrics on /metrics");
                let fut = crate::metrics::serve(l, self.metrics.clone(), stopped(stop.clone()));
                Some(tokio::spawn(fut))
            }
            None => None,
        };

        let images = ImageServiceImpl::new(
            self.images.clone(),
            self.metrics.clone(),
            self.config.root.clone(),
        );
        let streaming = Arc::new(
            crate::streaming::StreamingServer::start(&self.config.streaming, self.runtime.clone())
                .await?,
        );
        let runtime = RuntimeServiceImpl::new(
            self.config.clone(),
            self.metrics.clone(),
            self.runtime.clone(),
            streaming,
        );
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let server = tonic::transport::Server::builder()
            // client deadlines end as DeadlineExceeded, not tonic's Cancelled
            .layer(crate::cri::deadline::DeadlineLayer)
            .add_service(
                RuntimeServiceServer::new(runtime)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
            )
            .add_service(
                ImageServiceServer::new(images)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
            )
            .serve_with_incoming_shutdown(incoming, stopped(stop.clone()));
        tracing::info!(socket = %socket.display(), root = %self.config.root.display(), "limpetd serving CRI v1");

        let drain_limit = async {
            stopped(stop.clone()).await;
            tracing::info!("shutting down");
            tokio::time::sleep(DRAIN).await;
        };
        let result = tokio::select! {
            r = server => r.map_err(|e| DaemonError::Serve(e.to_string())),
            _ = drain_limit => {
                tracing::warn!("requests still running after {} s; stopping anyway", DRAIN.as_secs());
                Ok(())
            }
        };
        let _ = std::fs::remove_file(&socket);
        let netns_dir = crate::runtime::Dirs::new(&self.config).netns;
        if let Err(e) = crate::network::netns::release_dir(&netns_dir) {
            tracing::warn!(error = %e, "releasing the netns dir");
        }
        if let Some(t) = metrics_task {
            t.abort();
        }
        tracing::info!("stopped");
        result
    }
}

/// Binds the CRI socket with mode 0660, replacing a stale socket file.
fn bind_socket(path: &Path, uid: u32, gid: u32) -> Result<tokio::net::UnixListener, DaemonError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(format!("create {}", parent.display())))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::SocketInUse(path.into()));
        }
        std::fs::remove_file(path)
            .map_err(io_err(format!("remove stale socket {}", path.display())))?;
    }
    let listener =
        tokio::net::UnixListener::bind(path).map_err(io_err(format!("bind {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(io_err(format!("chmod {}", path.display())))?;
    rustix::fs::chown(
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .map_err(|e| DaemonError::Io {
        context: format!("chown {}", path.display()),
        source: e.into(),
    })?;
    Ok(listener)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
