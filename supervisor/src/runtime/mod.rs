//! Pod sandboxes and containers: the logic behind the CRI RuntimeService. Every change is
//! written to the metadata store before it is acted on or acknowledged, so a restarted
//! limpetd can finish or undo whatever a crash interrupted (see `reconcile`).

mod attach;
mod bandwidth;
mod container;
mod error;
mod events;
mod exec;
mod exec_stream;
pub(crate) mod ids;
mod port_forward;
mod reconcile;
pub mod records;
mod sandbox;
pub mod sandbox_files;
mod shim_pool;
mod signals;
mod stats;
pub mod status;

pub use error::{Result, RuntimeError};
pub use events::ContainerEvents;
pub use exec::ExecOutput;
pub use records::{
    Container, ContainerRecord, ContainerState, Sandbox, SandboxRecord, SandboxState,
};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::Config;
use crate::config_runtime::Handler;
use crate::images::Images;
use crate::network::Cni;
use crate::store::Store;

/// Crashes limpetd here when the test harness arms the named point (`FAILPOINTS=name=return`),
/// as a SIGKILL would: no unwinding, no cleanup.
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        if fail::eval($name, |_| ()).is_some() {
            tracing::error!(point = $name, "crash point reached");
            std::process::abort();
        }
    };
}
pub(crate) use crash_point;

/// Where a runtime keeps its files.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Persistent per-pod files (hostname, hosts, resolv.conf).
    pub sandboxes: PathBuf,
    pub netns: PathBuf,
    pub bundles: PathBuf,
    pub shm: PathBuf,
    pub exec: PathBuf,
    /// The ttrpc socket the shims publish their events to.
    pub events_socket: PathBuf,
}

impl Dirs {
    pub fn new(config: &Config) -> Dirs {
        Dirs {
            sandboxes: config.root.join("sandboxes"),
            netns: config.state.join("netns"),
            bundles: config.state.join("bundles"),
            shm: config.state.join("shm"),
            exec: config.state.join("exec"),
            events_socket: config.state.join("events.sock"),
        }
    }

    pub fn bundle(&self, id: &str) -> PathBuf {
        self.bundles.join(id)
    }
}

/// Pods and containers in memory; the store is written first, this follows.
#[derive(Default)]
pub struct Tables {
    pub sandboxes: HashMap<String, Sandbox>,
    pub containers: HashMap<String, Container>,
}

pub struct Runtime {
    config: Arc<Config>,
    store: Arc<Store>,
    images: Arc<Images>,
    cni: Cni,
    dirs: Dirs,
    tables: Mutex<Tables>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    shims: Arc<shim_pool::ShimPool>,
    events: ContainerEvents,
    cpu_history: stats::CpuHistory,
    /// With `restrict_oom_score_adj` in force (no CAP_SYS_RESOURCE), limpetd's own score.
    min_oom_score_adj: Option<i64>,
}

impl Runtime {
    pub fn new(config: Arc<Config>, images: Arc<Images>) -> Result<Arc<Runtime>> {
        let dirs = Dirs::new(&config);
        for d in [&dirs.sandboxes, &dirs.bundles, &dirs.shm, &dirs.exec] {
            std::fs::create_dir_all(d).map_err(error::io_err(format!("create {}", d.display())))?;
        }
        let cni = Cni {
            bin_dirs: config.cni.bin_dirs.clone(),
            timeout: std::time::Duration::from_secs(config.cni.timeout),
        };
        let shims = Arc::new(shim_pool::ShimPool::new(&config, &dirs)?);
        Ok(Arc::new(Runtime {
            store: images.store.clone(),
            images,
            cni,
            dirs,
            tables: Mutex::new(Tables::default()),
            locks: Mutex::new(HashMap::new()),
            shims,
            events: ContainerEvents::new(),
            cpu_history: stats::CpuHistory::default(),
            min_oom_score_adj: restrict_oom_score_adj(),
            config,
        }))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn events(&self) -> &ContainerEvents {
        &self.events
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serializes lifecycle operations on one pod or container.
    async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(id.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }

    fn forget_lock(&self, id: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.remove(id);
    }

    pub fn handler(&self, name: &str) -> Result<(&str, &Handler)> {
        let name = if name.is_empty() {
            self.config.runtime.default_runtime.as_str()
        } else {
            name
        };
        self.config
            .runtime
            .runtimes
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| {
                RuntimeError::InvalidArgument(format!(
                    "no runtime for {name:?} is configured (handlers: {})",
                    self.config
                        .runtime
                        .runtimes
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    pub fn sandbox(&self, id: &str) -> Result<Sandbox> {
        let t = self.tables();
        find_by_prefix(&t.sandboxes, id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("pod sandbox {id:?} not found")))
    }

    pub fn container(&self, id: &str) -> Result<Container> {
        let t = self.tables();
        find_by_prefix(&t.containers, id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id:?} not found")))
    }

    pub fn list_sandboxes(&self) -> Vec<Sandbox> {
        self.tables()
            .sandboxes
            .values()
            .filter(|s| s.record.state != SandboxState::Creating)
            .cloned()
            .collect()
    }

    pub fn list_containers(&self) -> Vec<Container> {
        self.tables()
            .containers
            .values()
            .filter(|c| c.record.state != ContainerState::Creating)
            .cloned()
            .collect()
    }

    fn put_sandbox(&self, s: &Sandbox) -> Result<()> {
        self.store.update_sandbox(&s.record.id, &s.record)?;
        self.tables()
            .sandboxes
            .insert(s.record.id.clone(), s.clone());
        Ok(())
    }

    fn put_container(&self, c: &Container) -> Result<()> {
        self.store.update_container(&c.record.id, &c.record)?;
        self.tables()
            .containers
            .insert(c.record.id.clone(), c.clone());
        Ok(())
    }

    /// Applies `f` to the stored and held record of a container, if it still exists.
    fn update_container(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerRecord),
    ) -> Result<Option<Container>> {
        let mut t = self.tables();
        let Some(c) = t.containers.get_mut(id) else {
            return Ok(None);
        };
        let mut rec = c.record.clone();
        f(&mut rec);
        if rec != c.record {
            self.store.update_container(id, &rec)?;
            c.record = rec;
        }
        Ok(Some(c.clone()))
    }

    fn containers_of(&self, sandbox_id: &str) -> Vec<Container> {
        self.tables()
            .containers
            .values()
            .filter(|c| c.record.sandbox_id == sandbox_id)
            .cloned()
            .collect()
    }
}

/// An exact id, or a unique prefix of one (as crictl users type them).
fn find_by_prefix<'a, V>(map: &'a HashMap<String, V>, id: &str) -> Option<&'a V> {
    if id.is_empty() {
        return None;
    }
    if let Some(v) = map.get(id) {
        return Some(v);
    }
    let mut found = map.iter().filter(|(k, _)| k.starts_with(id));
    match (found.next(), found.next()) {
        (Some((_, v)), None) => Some(v),
        _ => None,
    }
}

/// limpetd's own oom_score_adj when it cannot lower scores (no CAP_SYS_RESOURCE in its
/// bounding set), the floor containers are raised to as containerd's `restrict_oom_score_adj`.
fn restrict_oom_score_adj() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())?;
    const CAP_SYS_RESOURCE: u32 = 24;
    if eff & (1 << CAP_SYS_RESOURCE) != 0 {
        return None;
    }
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Removes a directory tree; missing is fine.
fn remove_dir(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(error::io_err(format!("remove {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Runs blocking work (shim ttrpc calls, CNI plugins, mounts) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Internal(format!("blocking task failed: {e}")))
}

/// Unmounts a bundle's rootfs (every layer mounted there), if mounted.
fn unmount_rootfs(bundle: &Path) -> Result<()> {
    let rootfs = bundle.join("rootfs");
    for _ in 0..8 {
        if !is_mount_point(&rootfs) {
            return Ok(());
        }
        crate::snapshots::unmount(&rootfs)
            .map_err(error::io_err(format!("unmount {}", rootfs.display())))?;
    }
    Ok(())
}

/// Whether something is mounted at `path` (as /proc/self/mountinfo lists it).
pub(crate) fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}
