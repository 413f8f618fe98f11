//! The busybox test image: an OCI archive built from the host's static busybox by
//! scripts/build-busybox-image.sh, cached in the target dir and shared by all test processes.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};

use crate::env::{target_dir, which, workspace_root};
use crate::error::{io_path_err, HarnessError, Result};

/// The name the archive is imported under (`ctr images import --base-name` + tag `latest`).
pub const IMAGE_REF: &str = "localhost/limpet/busybox:latest";
pub(crate) const IMAGE_BASE_NAME: &str = "localhost/limpet/busybox";

const BUSYBOX: &str = "/bin/busybox";

/// Path of the cached archive, building it first if it is missing or stale.
pub fn busybox_image_tar() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_cached().map_err(|e| e.to_string()))
        .clone()
        .map_err(|reason| {
            if reason.starts_with("SKIP ") {
                HarnessError::Skip(reason.trim_start_matches("SKIP ").to_string())
            } else {
                HarnessError::Setup(reason)
            }
        })
}

fn build_cached() -> std::result::Result<PathBuf, String> {
    let script = workspace_root().join("scripts/build-busybox-image.sh");
    for (what, present) in [
        ("umoci", which("umoci").is_some()),
        (
            "/bin/busybox (busybox-static)",
            Path::new(BUSYBOX).is_file(),
        ),
        ("scripts/build-busybox-image.sh", script.is_file()),
    ] {
        if !present {
            return Err(format!(
                "SKIP {what} is missing: cannot build the test image"
            ));
        }
    }
    let dir = target_dir().join("limpet-images");
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let archive = dir.join("busybox.tar");
    // Test processes run in parallel: one builds, the others wait on the lock.
    let _lock = lock(&dir.join(".lock")).map_err(|e| e.to_string())?;
    if is_fresh(&archive, &[&script, Path::new(BUSYBOX)]) {
        return Ok(archive);
    }
    let out = Command::new("bash")
        .arg(&script)
        .arg(&archive)
        .output()
        .map_err(|e| format!("run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(archive)
}

fn lock(path: &Path) -> Result<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_path_err("open lock", path))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| HarnessError::Io {
        context: format!("flock {}", path.display()),
        source: errno.into(),
    })
}

/// The archive exists and is newer than everything it is built from.
fn is_fresh(archive: &Path, inputs: &[&Path]) -> bool {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = mtime(archive) else {
        return false;
    };
    inputs
        .iter()
        .all(|input| mtime(input).unwrap_or(SystemTime::UNIX_EPOCH) <= built)
}
