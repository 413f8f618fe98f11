//! The busybox test image: an OCI archive built from the host's static busybox by
//! scripts/build-busybox-image.sh, cached in the target dir and shared by all test processes.
//! The CRI suite also gets a sandbox ("pause") image: the same layer with an idling command.

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

/// The CRI sandbox image (`ctr images import --base-name` + tag `latest`).
pub const PAUSE_IMAGE_REF: &str = "localhost/limpet/pause:latest";
pub(crate) const PAUSE_IMAGE_BASE_NAME: &str = "localhost/limpet/pause";
/// Idles without forking every second; exits 0 on SIGTERM, which a pid 1 without a handler
/// would ignore.
const PAUSE_CMD: &[&str] = &[
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM; sleep 2147483647 & wait",
];

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

/// Path of the cached sandbox image archive, derived from the busybox one.
pub fn pause_image_tar() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let busybox = busybox_image_tar()?;
    BUILT
        .get_or_init(|| build_pause(&busybox))
        .clone()
        .map_err(HarnessError::Setup)
}

/// Unpacks the busybox layout, swaps its command for [`PAUSE_CMD`] with umoci (a new config
/// and manifest over the same layer) and packs it again.
fn build_pause(busybox: &Path) -> std::result::Result<PathBuf, String> {
    let dir = busybox
        .parent()
        .ok_or_else(|| format!("{} has no parent dir", busybox.display()))?;
    let archive = dir.join("pause.tar");
    // The command is part of the image: a changed PAUSE_CMD makes the cached archive stale.
    let stamp = dir.join("pause.cmd");
    let cmd = PAUSE_CMD.join("\0");
    let _lock = lock(&dir.join(".lock")).map_err(|e| e.to_string())?;
    let same_cmd = std::fs::read_to_string(&stamp).is_ok_and(|s| s == cmd);
    if same_cmd && is_fresh(&archive, &[busybox]) {
        return Ok(archive);
    }
    let work = tempfile::Builder::new()
        .prefix("pause-")
        .tempdir_in(dir)
        .map_err(|e| format!("temp dir in {}: {e}", dir.display()))?;
    let layout = work.path().join("layout");
    std::fs::create_dir(&layout).map_err(|e| format!("create {}: {e}", layout.display()))?;
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-xf")
        .arg(busybox))?;
    let image = format!("{}:latest", layout.display());
    let mut config = Command::new("umoci");
    config.args(["config", "--image", &image]);
    for arg in PAUSE_CMD {
        config.args(["--config.cmd", arg]);
    }
    run(&mut config)?;
    run(Command::new("umoci").arg("gc").arg("--layout").arg(&layout))?;
    let tmp = work.path().join("pause.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tmp)
        .arg("."))?;
    std::fs::rename(&tmp, &archive).map_err(|e| format!("rename to {}: {e}", archive.display()))?;
    std::fs::write(&stamp, cmd).map_err(|e| format!("write {}: {e}", stamp.display()))?;
    Ok(archive)
}

/// Runs a helper, turning a failure into its command line and output.
fn run(cmd: &mut Command) -> std::result::Result<(), String> {
    let out = cmd.output().map_err(|e| format!("run {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
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
