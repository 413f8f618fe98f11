//! Mount descriptions of a container rootfs, in containerd's shape (type, source, options),
//! and the calls that perform them.

use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{self as rmount, MountFlags, UnmountFlags};

/// One mount: `mount -t KIND -o OPTIONS SOURCE TARGET`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// The rootfs mount over `lower` (top layer first), writable through `rw/{upper,work}`.
pub(super) fn overlay(lower: &[PathBuf], rw: Option<&Path>) -> Vec<Mount> {
    let show = |p: &Path| p.display().to_string();
    if rw.is_none() && lower.len() == 1 {
        // overlayfs needs two lower layers when there is no upper one
        return vec![Mount {
            kind: "bind".into(),
            source: show(&lower[0]),
            options: vec!["ro".into(), "rbind".into()],
        }];
    }
    let lowerdir = lower.iter().map(|p| show(p)).collect::<Vec<_>>().join(":");
    let mut options = Vec::new();
    if let Some(rw) = rw {
        // index=off: the same lower layers are shared by many overlays
        if Path::new("/sys/module/overlay/parameters/index").exists() {
            options.push("index=off".into());
        }
        options.push(format!("workdir={}", show(&rw.join("work"))));
        options.push(format!("upperdir={}", show(&rw.join("upper"))));
    }
    options.push(format!("lowerdir={lowerdir}"));
    vec![Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        options,
    }]
}

impl Mount {
    /// Mounts at `target` (needs CAP_SYS_ADMIN).
    pub fn mount(&self, target: &Path) -> io::Result<()> {
        let ro = self.options.iter().any(|o| o == "ro");
        if self.kind == "bind" {
            let mut flags = MountFlags::BIND;
            if self.options.iter().any(|o| o == "rbind") {
                flags |= MountFlags::REC;
            }
            rmount::mount(self.source.as_str(), target, "", flags, None)?;
            if ro {
                let remount = MountFlags::BIND | MountFlags::RDONLY;
                rmount::mount_remount(target, remount, c"")?;
            }
            return Ok(());
        }
        let data: Vec<&str> = self
            .options
            .iter()
            .map(String::as_str)
            .filter(|o| *o != "ro")
            .collect();
        let flags = if ro {
            MountFlags::RDONLY
        } else {
            MountFlags::empty()
        };
        let data = std::ffi::CString::new(data.join(",")).map_err(io::Error::other)?;
        rmount::mount(
            self.source.as_str(),
            target,
            self.kind.as_str(),
            flags,
            Some(data.as_c_str()),
        )?;
        Ok(())
    }
}

/// Unmounts `target` (lazily when it is busy).
pub fn unmount(target: &Path) -> io::Result<()> {
    match rmount::unmount(target, UnmountFlags::empty()) {
        Err(rustix::io::Errno::BUSY) => Ok(rmount::unmount(target, UnmountFlags::DETACH)?),
        r => Ok(r?),
    }
}
