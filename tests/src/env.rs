//! Which binaries a case runs against: the shim under test and the containerd flavor.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{HarnessError, Result};

/// Path of the shim binary to test. Default: the workspace's own build.
pub const SHIM_ENV: &str = "LIMPET_SHIM";
/// Overrides the runtime name derived from the shim's file name.
pub const RUNTIME_ENV: &str = "LIMPET_RUNTIME";
/// A containerd 2.x bin dir (holding `containerd` and `ctr`) for the second flavor.
pub const CONTAINERD2_ENV: &str = "LIMPET_CONTAINERD";

const OUR_SHIM: &str = "containerd-shim-limpet-v2";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The distribution's containerd 1.x found on PATH.
    Containerd1,
    /// A containerd 2.x from `LIMPET_CONTAINERD`.
    Containerd2,
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flavor::Containerd1 => "containerd 1.x",
            Flavor::Containerd2 => "containerd 2.x",
        })
    }
}

#[derive(Debug, Clone)]
pub struct ContainerdBins {
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    /// Major version reported by `containerd --version`; it picks the config schema.
    pub major: u32,
    pub version: String,
    /// Prepended to containerd's PATH so it finds its own helpers (for a non-system build).
    pub bin_dir: Option<PathBuf>,
}

impl Flavor {
    pub fn resolve(self) -> Result<ContainerdBins> {
        let (containerd, ctr, bin_dir) = match self {
            Flavor::Containerd1 => {
                let containerd = which("containerd")
                    .ok_or_else(|| skip("containerd is not installed (scripts/setup.sh)"))?;
                let ctr = which("ctr").ok_or_else(|| skip("ctr is not installed"))?;
                (containerd, ctr, None)
            }
            Flavor::Containerd2 => {
                let dir = std::env::var_os(CONTAINERD2_ENV).ok_or_else(|| {
                    skip(&format!(
                        "{CONTAINERD2_ENV} is not set (a containerd 2.x bin dir)"
                    ))
                })?;
                let dir = PathBuf::from(dir);
                let containerd = dir.join("containerd");
                let ctr = dir.join("ctr");
                for bin in [&containerd, &ctr] {
                    if !bin.is_file() {
                        return Err(skip(&format!(
                            "{CONTAINERD2_ENV}: {} is missing",
                            bin.display()
                        )));
                    }
                }
                (containerd, ctr, Some(dir))
            }
        };
        let version = containerd_version(&containerd)?;
        let major = major_version(&version).ok_or_else(|| {
            HarnessError::Setup(format!("cannot parse containerd version {version:?}"))
        })?;
        match (self, major) {
            (Flavor::Containerd1, 1) | (Flavor::Containerd2, 2..) => {}
            _ => {
                return Err(skip(&format!(
                    "{} is version {version}, not {self}",
                    containerd.display()
                )))
            }
        }
        Ok(ContainerdBins {
            containerd,
            ctr,
            major,
            version,
            bin_dir,
        })
    }
}

/// The shim binary under test and the runtime name containerd knows it by.
#[derive(Debug, Clone)]
pub struct ShimUnderTest {
    pub binary: PathBuf,
    /// `io.containerd.<name>.v<n>`; containerd resolves it to `containerd-shim-<name>-v<n>`.
    pub runtime: String,
}

impl ShimUnderTest {
    /// The file name containerd looks for on its PATH for `runtime`.
    pub fn binary_name(&self) -> String {
        binary_name_for(&self.runtime)
    }

    /// True for containerd's Go shim (its `-v` names Go): the reference the suites also run
    /// against, which lacks limpet's own additions (cri-log, pause, the attach socket).
    pub fn is_go(&self) -> bool {
        std::process::Command::new(&self.binary)
            .arg("-v")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("Go version"))
    }
}

/// Reads `LIMPET_SHIM` / `LIMPET_RUNTIME`, defaulting to the workspace's own shim build.
pub fn shim_under_test() -> Result<ShimUnderTest> {
    let binary = match std::env::var_os(SHIM_ENV) {
        Some(path) => {
            // Absolute, because containerd sees it through a symlink in another dir.
            let path = std::path::absolute(PathBuf::from(path))
                .map_err(crate::error::io_err(format!("resolve {SHIM_ENV}")))?;
            if !path.is_file() {
                return Err(skip(&format!(
                    "{SHIM_ENV}={} does not exist",
                    path.display()
                )));
            }
            path
        }
        None => default_shim().ok_or_else(|| {
            skip(&format!(
                "{OUR_SHIM} is not built (cargo build -p {OUR_SHIM}) and {SHIM_ENV} is not set"
            ))
        })?,
    };
    let runtime = match std::env::var(RUNTIME_ENV) {
        Ok(name) => name,
        Err(_) => runtime_for_binary(&binary),
    };
    if !runtime.starts_with("io.containerd.") || runtime.split('.').count() != 4 {
        return Err(HarnessError::Setup(format!(
            "runtime name {runtime:?} is not of the form io.containerd.<name>.v<n>"
        )));
    }
    Ok(ShimUnderTest { binary, runtime })
}

fn default_shim() -> Option<PathBuf> {
    let target = target_dir();
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join(OUR_SHIM))
        .find(|p| p.is_file())
}

/// `containerd-shim-runc-v2` → `io.containerd.runc.v2`; anything else is ours.
fn runtime_for_binary(binary: &Path) -> String {
    let name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let parts: Option<(&str, &str)> = name
        .strip_prefix("containerd-shim-")
        .and_then(|rest| rest.rsplit_once('-'));
    match parts {
        Some((runtime, version)) if !runtime.is_empty() && version.starts_with('v') => {
            format!("io.containerd.{runtime}.{version}")
        }
        _ => "io.containerd.limpet.v2".to_string(),
    }
}

fn binary_name_for(runtime: &str) -> String {
    let mut parts = runtime.rsplit('.');
    let version = parts.next().unwrap_or("v2");
    let name = parts.next().unwrap_or("limpet");
    format!("containerd-shim-{name}-{version}")
}

pub fn require_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(skip("needs root (containerd, runc, mounts, cgroups)"))
    }
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target dir, found from the running test binary (`<target>/<profile>/deps/<bin>`),
/// so that it follows `CARGO_TARGET_DIR` without being told.
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| workspace_root().join("target"))
}

pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn containerd_version(containerd: &Path) -> Result<String> {
    let out = Command::new(containerd)
        .arg("--version")
        .output()
        .map_err(crate::error::io_path_err("run", containerd))?;
    // "containerd github.com/containerd/containerd 1.6.20~ds1 <revision>"
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .map(|v| v.trim_start_matches('v').to_string())
        .ok_or_else(|| HarnessError::Setup(format!("unexpected `containerd --version`: {text}")))
}

fn major_version(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

fn skip(reason: &str) -> HarnessError {
    HarnessError::Skip(reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_follow_containerd_convention() {
        assert_eq!(
            runtime_for_binary(Path::new("/usr/bin/containerd-shim-runc-v2")),
            "io.containerd.runc.v2"
        );
        assert_eq!(
            runtime_for_binary(Path::new("/x/containerd-shim-limpet-v2")),
            "io.containerd.limpet.v2"
        );
        assert_eq!(
            runtime_for_binary(Path::new("/x/myshim")),
            "io.containerd.limpet.v2"
        );
        assert_eq!(
            binary_name_for("io.containerd.runc.v2"),
            "containerd-shim-runc-v2"
        );
        assert_eq!(
            binary_name_for("io.containerd.limpet.v2"),
            "containerd-shim-limpet-v2"
        );
    }

    #[test]
    fn versions_parse() {
        assert_eq!(major_version("1.6.20~ds1"), Some(1));
        assert_eq!(major_version("2.3.4"), Some(2));
        assert_eq!(major_version("garbage"), None);
    }
}
