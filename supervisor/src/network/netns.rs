//! Named network namespaces, made the way `ip netns add` makes them: a helper thread unshares
//! a fresh network namespace and bind-mounts its `/proc/thread-self/ns/net` onto a file under
//! the netns dir. The bind mount keeps the namespace alive after the thread exits; unmounting
//! it (once no process is left inside) frees it.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("invalid network namespace name {0:?}")]
    InvalidName(String),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("{context}: {source}")]
    Sys { context: String, source: Errno },
    #[error("network namespace {0} already exists")]
    Exists(PathBuf),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> NetnsError {
    let context = context.into();
    move |source| NetnsError::Io { context, source }
}

fn sys_err(context: impl Into<String>) -> impl FnOnce(Errno) -> NetnsError {
    let context = context.into();
    move |source| NetnsError::Sys { context, source }
}

/// A name is one plain path component: it becomes a file name under the netns dir.
pub fn validate_name(name: &str) -> Result<(), NetnsError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || name.len() > 255;
    if bad {
        return Err(NetnsError::InvalidName(name.to_string()));
    }
    Ok(())
}

/// Creates network namespace `name` bound at `<dir>/<name>` and returns that path.
/// `dir` is made a shared mount point first (as `ip netns` does) so that the bind mounts
/// under it propagate into mount namespaces created later, and unmounting here frees the
/// namespace everywhere.
pub fn create(dir: &Path, name: &str) -> Result<PathBuf, NetnsError> {
    validate_name(name)?;
    fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    make_shared_mount_point(dir)?;
    let path = dir.join(name);
    match File::options().write(true).create_new(true).open(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(NetnsError::Exists(path)),
        Err(e) => return Err(io_err(format!("create {}", path.display()))(e)),
    }
    // A thread of its own: unsharing changes the calling thread's namespace, and this thread
    // exits right after, so no other work ever runs inside the new namespace by accident.
    let target = path.clone();
    let bound = std::thread::Builder::new()
        .name("netns-create".into())
        .spawn(move || -> Result<(), NetnsError> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(sys_err("unshare network namespace"))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(sys_err(format!(
                "bind network namespace to {}",
                target.display()
            )))
        })
        .map_err(io_err("spawn netns thread"))?
        .join()
        .unwrap_or_else(|_| {
            Err(NetnsError::Io {
                context: "netns thread".into(),
                source: io::Error::other("panicked"),
            })
        });
    if let Err(e) = bound {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Unmounts and deletes a namespace file. A missing or already unmounted one is fine:
/// teardown runs again after crashes and must converge.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::ENOENT) | Err(Errno::EINVAL) => {}
        Err(e) => return Err(sys_err(format!("unmount {}", path.display()))(e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("remove {}", path.display()))(e)),
    }
}

/// Undoes `create`'s bind of `dir` onto itself once no namespace is bound under it, so that
/// a daemon stopping with no pods leaves no mount behind. With namespaces left (pods that
/// outlive a restart) the mount stays: detaching it would detach theirs too.
pub fn release_dir(dir: &Path) -> Result<(), NetnsError> {
    let mut entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(format!("read {}", dir.display()))(e)),
    };
    if entries.next().is_some() {
        return Ok(());
    }
    match umount2(dir, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(sys_err(format!("unmount {}", dir.display()))(e)),
    }
}

/// Whether `path` is a bound network namespace (and not a plain file left by a crash).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(ns) = nix::sys::statfs::statfs(path) else {
        return false;
    };
    ns.filesystem_type() == nix::sys::statfs::NSFS_MAGIC
}

fn make_shared_mount_point(dir: &Path) -> Result<(), NetnsError> {
    let shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => return Ok(()),
        // Not a mount point yet: bind it onto itself, then retry.
        Err(Errno::EINVAL) => {}
        Err(e) => return Err(sys_err(format!("make {} shared", dir.display()))(e)),
    }
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys_err(format!("bind {} onto itself", dir.display())))?;
    shared().map_err(sys_err(format!("make {} shared", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_component() {
        for bad in ["", ".", "..", "a/b", "../x", "/abs", "a\0b"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["pod-1", "cni-0a1b", "a.b", "..x"] {
            assert!(validate_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn removing_a_missing_namespace_is_ok() {
        let dir = tempfile::tempdir().unwrap();
        remove(&dir.path().join("nope")).unwrap();
        assert!(!is_mounted(&dir.path().join("nope")));
    }
}
