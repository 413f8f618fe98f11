//! The cgroup of a container: which hierarchy the host runs, where a process's cgroup
//! directories are, its metrics for the task API's `Stats`, and moving a process into a
//! cgroup (the runc option `ShimCgroup`).
//!
//! Hosts with cgroup v1 controllers (Legacy, and Hybrid with v2 mounted beside them) are served
//! as v1, pure cgroup v2 hosts (Unified) as v2, as containerd's Go shim does.

#[cfg(test)]
pub(crate) mod host_tests;
mod parse;
pub mod v1;
pub mod v2;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use limpet_protos::protobuf::well_known_types::any::Any;
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};

/// Where cgroup hierarchies are mounted.
const CGROUP_MOUNT: &str = "sys/fs/cgroup";

/// Which cgroup hierarchies the host runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Only cgroup v1 hierarchies.
    Legacy,
    /// cgroup v1 controllers, plus an empty v2 hierarchy at /sys/fs/cgroup/unified.
    Hybrid,
    /// Only cgroup v2, mounted at /sys/fs/cgroup.
    Unified,
}

impl Mode {
    /// Whether containers are served with cgroup v1 files.
    pub fn is_v1(self) -> bool {
        self != Mode::Unified
    }
}

/// The host's cgroup mode, probed once per process.
pub fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| {
        let is_cgroup2 =
            |path: &str| statfs(path).is_ok_and(|fs| fs.filesystem_type() == CGROUP2_SUPER_MAGIC);
        if is_cgroup2("/sys/fs/cgroup") {
            Mode::Unified
        } else if is_cgroup2("/sys/fs/cgroup/unified") {
            Mode::Hybrid
        } else {
            Mode::Legacy
        }
    })
}

/// Errors of cgroup operations, each naming the file or process involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("parse {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("no cgroup of process {pid} exists (listed in {})", path.display())]
    NoCgroup { pid: i32, path: PathBuf },
    #[error("cgroup {} no longer exists", path.display())]
    Deleted { path: PathBuf },
    #[error("cgroup path {path:?} does not exist in any hierarchy")]
    NoSuchPath { path: String },
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("invalid pid {0}")]
    InvalidPid(i32),
    #[error("encode cgroup metrics: {0}")]
    Encode(#[from] limpet_protos::protobuf::Error),
}

/// The cgroup of a process, in the hierarchy the host runs.
#[derive(Clone, Debug)]
pub enum Cgroup {
    V1(v1::Cgroup),
    V2(v2::Cgroup),
}

impl Cgroup {
    /// The cgroup `pid` is in now, read from /proc/PID/cgroup.
    pub fn for_pid(pid: i32) -> Result<Cgroup, CgroupError> {
        Cgroup::with_root(Path::new("/"), mode(), pid)
    }

    /// As `for_pid`, with every host path (`proc/PID/cgroup`, `sys/fs/cgroup/...`,
    /// `proc/partitions`, `sys/kernel/mm/hugepages`) taken under `root` instead of `/`, so
    /// tests can run on a fake tree.
    pub fn with_root(root: &Path, mode: Mode, pid: i32) -> Result<Cgroup, CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::InvalidPid(pid));
        }
        let path = root.join(format!("proc/{pid}/cgroup"));
        let text = parse::read(&path)?;
        let host = Host::new(root);
        let cgroup = if mode.is_v1() {
            v1::Cgroup::from_proc_cgroup(host, &text).map(Cgroup::V1)
        } else {
            v2::Cgroup::from_proc_cgroup(host, &text).map(Cgroup::V2)
        };
        cgroup.ok_or(CgroupError::NoCgroup { pid, path })
    }

    /// The directory whose memory files describe this cgroup (v1: the memory controller's,
    /// if the process has one).
    pub fn memory_dir(&self) -> Option<&Path> {
        match self {
            Cgroup::V1(cg) => cg.memory_dir(),
            Cgroup::V2(cg) => Some(cg.dir()),
        }
    }

    /// All metrics of the cgroup as containerd's Go shim reports them in `Stats`: an `Any`
    /// holding `io.containerd.cgroups.v1.Metrics` or `io.containerd.cgroups.v2.Metrics`.
    /// Files of controllers that are not enabled are skipped.
    pub fn metrics(&self) -> Result<Any, CgroupError> {
        use limpet_protos::protobuf::Message;
        use limpet_protos::type_urls::{CGROUPS_V1_METRICS, CGROUPS_V2_METRICS};
        let (type_url, value) = match self {
            Cgroup::V1(cg) => (CGROUPS_V1_METRICS, cg.metrics()?.write_to_bytes()?),
            Cgroup::V2(cg) => (CGROUPS_V2_METRICS, cg.metrics()?.write_to_bytes()?),
        };
        Ok(Any {
            type_url: type_url.to_string(),
            value,
            ..Default::default()
        })
    }
}

/// Moves `pid` into the existing cgroup `path` (relative to the hierarchy roots) of every
/// hierarchy that has it: the runc option `ShimCgroup`.
pub fn add_process(path: &str, pid: i32) -> Result<(), CgroupError> {
    add_process_with_root(Path::new("/"), mode(), path, pid)
}

/// As `add_process`, with the cgroup mounts taken under `root` instead of `/`.
pub fn add_process_with_root(
    root: &Path,
    mode: Mode,
    path: &str,
    pid: i32,
) -> Result<(), CgroupError> {
    if pid <= 0 {
        return Err(CgroupError::InvalidPid(pid));
    }
    let relative = parse::relative_cgroup_path(path)?;
    let mount = root.join(CGROUP_MOUNT);
    if mode.is_v1() {
        v1::add_process(&mount, path, relative, pid)
    } else {
        let dir = mount.join(relative);
        if !dir.is_dir() {
            return Err(CgroupError::NoSuchPath {
                path: path.to_string(),
            });
        }
        parse::write_pid(&dir.join("cgroup.procs"), pid)
    }
}

/// Host paths a cgroup reads besides its own directories.
#[derive(Clone, Debug)]
pub(crate) struct Host {
    root: PathBuf,
}

impl Host {
    fn new(root: &Path) -> Host {
        Host {
            root: root.to_path_buf(),
        }
    }

    /// Where the cgroup hierarchies are mounted.
    fn cgroup_mount(&self) -> PathBuf {
        self.root.join(CGROUP_MOUNT)
    }

    /// Block devices by number, for v1 blkio entries.
    fn partitions(&self) -> PathBuf {
        self.root.join("proc/partitions")
    }

    /// One directory per huge page size the kernel supports.
    fn hugepages(&self) -> PathBuf {
        self.root.join("sys/kernel/mm/hugepages")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes a file of a fake cgroupfs tree, creating its directories.
    pub(crate) fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn mode_matches_the_mounts() {
        let fs_type = |p: &str| statfs(p).map(|fs| fs.filesystem_type());
        let expected = if fs_type("/sys/fs/cgroup").ok() == Some(CGROUP2_SUPER_MAGIC) {
            Mode::Unified
        } else if fs_type("/sys/fs/cgroup/unified").ok() == Some(CGROUP2_SUPER_MAGIC) {
            Mode::Hybrid
        } else {
            Mode::Legacy
        };
        assert_eq!(mode(), expected);
        assert_eq!(mode().is_v1(), expected != Mode::Unified);
    }

    #[test]
    fn invalid_pids_are_refused() {
        assert!(matches!(
            Cgroup::with_root(Path::new("/nonexistent"), Mode::Unified, 0),
            Err(CgroupError::InvalidPid(0))
        ));
        assert!(matches!(
            add_process_with_root(Path::new("/nonexistent"), Mode::Legacy, "a", -1),
            Err(CgroupError::InvalidPid(-1))
        ));
    }

    #[test]
    fn missing_proc_file_is_a_read_error_with_its_path() {
        let err = Cgroup::with_root(Path::new("/nonexistent"), Mode::Hybrid, 42).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/proc/42/cgroup"),
            "{err}"
        );
    }
}
