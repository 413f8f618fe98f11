//! The daemonized shim: serves the task API on the socket it inherited as fd 3 until it is
//! told to shut down with no task left.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use limpet_protos::events::task::TaskOOM;
use limpet_protos::{topics, ttrpc};

use crate::args::Args;
use crate::error::{Context, Result};
use crate::events::Publisher;
use crate::oom::OomWatcher;
use crate::reaper::{block_signals, reaper, set_subreaper};
use crate::service::Service;
use crate::task::Shim;

/// The listening socket `start` hands over.
const LISTENER_FD: i32 = 3;

pub fn serve(args: &Args) -> Result<()> {
    limit_malloc_arenas();
    block_signals()?;
    set_subreaper()?;
    let bundle = crate::bootstrap::bundle_dir(args)?;
    crate::logger::init(&bundle, args.debug);

    let ttrpc_address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
    let publisher =
        Publisher::start(&ttrpc_address, &args.namespace).context("start event publisher")?;
    let oom = {
        let p = publisher.clone();
        let on_oom = move |id: &str| {
            p.publish(
                topics::TASK_OOM_EVENT_TOPIC,
                &TaskOOM {
                    container_id: id.to_string(),
                    ..Default::default()
                },
            )
        };
        OomWatcher::start(Box::new(on_oom))
            .inspect_err(|e| log::warn!("no OOM events: {e}"))
            .ok()
    };
    let shim = Arc::new(Shim::new(&args.namespace, publisher.clone(), oom));

    // Exits are applied on a thread of their own, so that reaping never waits for the
    // task table (which runc commands hold while the reaper collects their own exits).
    let (exit_tx, exit_rx) = mpsc::channel();
    {
        let shim = shim.clone();
        spawn("exits", move || {
            for exit in exit_rx {
                shim.on_exit(exit);
            }
        })?;
    }
    spawn("reaper", move || {
        reaper().reap_loop(|exit| {
            let _ = exit_tx.send(exit);
        })
    })?;

    let (shutdown_tx, shutdown_rx) = mpsc::channel();
    let service = Arc::new(Service {
        shim: shim.clone(),
        shutdown: Mutex::new(shutdown_tx),
    });
    let listener = listener(args)?;
    let socket_path = socket_path(&listener);
    let mut server = ttrpc::Server::new()
        .add_listener(std::os::fd::IntoRawFd::into_raw_fd(listener))
        .context("listen")?
        .register_service(limpet_protos::task_service(service.clone()))
        .register_service(limpet_protos::log::log_service(service))
        // Per connection: one idle worker beyond the busy ones (Wait blocks a worker).
        .set_thread_count_min(1)
        .set_thread_count_default(2)
        .set_thread_count_max(3);
    server.start().context("start ttrpc server")?;
    log::debug!("serving {}", args.id);

    let _ = shutdown_rx.recv();
    // Let the Shutdown reply go out, and the last events reach the master.
    publisher.flush(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(5));
    if let Some(path) = socket_path {
        let _ = std::fs::remove_file(path);
    }
    std::process::exit(0);
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(128 * 1024)
        .spawn(f)
        .map(|_| ())
        .context(format!("start {name} thread"))
}

fn listener(args: &Args) -> Result<OwnedFd> {
    if !args.socket.is_empty() {
        let path = args.socket.trim_start_matches("unix://");
        let l =
            std::os::unix::net::UnixListener::bind(path).context(format!("listen on {path}"))?;
        return Ok(OwnedFd::from(l));
    }
    nix::fcntl::fcntl(LISTENER_FD, nix::fcntl::FcntlArg::F_GETFD).context("no listener on fd 3")?;
    // Inherited without close-on-exec: children (runc, loggers) must not keep the socket
    // accepting after the shim is gone.
    nix::fcntl::fcntl(
        LISTENER_FD,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .context("set close-on-exec on fd 3")?;
    // SAFETY: fd 3 is the listening socket `start` passed and nothing else owns it.
    #[allow(unsafe_code)]
    Ok(unsafe { OwnedFd::from_raw_fd(LISTENER_FD) })
}

fn socket_path(fd: &OwnedFd) -> Option<std::path::PathBuf> {
    use std::os::fd::AsRawFd;
    let addr: nix::sys::socket::UnixAddr = nix::sys::socket::getsockname(fd.as_raw_fd()).ok()?;
    addr.path().map(|p| p.to_path_buf())
}

/// One malloc arena for all threads: the shim's threads mostly sleep, and every extra
/// arena costs resident memory in each of the many shim processes.
fn limit_malloc_arenas() {
    // SAFETY: mallopt only tunes the allocator; called before any thread exists.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
