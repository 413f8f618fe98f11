//! One limpetd per root: an exclusive `flock` on `<root>/limpetd.lock`, held for the life of
//! the process (the kernel drops it when the process dies, even by SIGKILL).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another limpetd{pid} holds {path}: stop it first, or give this one another root")]
    Held { path: PathBuf, pid: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held while alive.
#[derive(Debug)]
pub struct RootLock {
    _file: File,
}

pub fn lock_root(root: &Path) -> Result<RootLock, LockError> {
    let path = root.join("limpetd.lock");
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let pid = if pid.is_empty() {
                String::new()
            } else {
                format!(" (pid {pid})")
            };
            return Err(LockError::Held { path, pid });
        }
        Err(e) => return Err(io(e.into())),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(RootLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_goes() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_root(dir.path()).unwrap();
        let err = lock_root(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("another limpetd") && err.contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(first);
        lock_root(dir.path()).unwrap();
    }
}
