//! The rootfs mounts of a Create request (overlay, bind, ...), mounted at the bundle's
//! `rootfs`, and their removal.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Context, Error, Result};

/// One mount as containerd describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

struct Parsed {
    flags: MsFlags,
    propagation: MsFlags,
    data: String,
}

fn parse_options(options: &[String]) -> Parsed {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        let (clear, set) = match o.as_str() {
            "async" => (true, MsFlags::MS_SYNCHRONOUS),
            "atime" => (true, MsFlags::MS_NOATIME),
            "bind" => (false, MsFlags::MS_BIND),
            "defaults" => (false, MsFlags::empty()),
            "dev" => (true, MsFlags::MS_NODEV),
            "diratime" => (true, MsFlags::MS_NODIRATIME),
            "dirsync" => (false, MsFlags::MS_DIRSYNC),
            "exec" => (true, MsFlags::MS_NOEXEC),
            "mand" => (false, MsFlags::MS_MANDLOCK),
            "noatime" => (false, MsFlags::MS_NOATIME),
            "nodev" => (false, MsFlags::MS_NODEV),
            "nodiratime" => (false, MsFlags::MS_NODIRATIME),
            "noexec" => (false, MsFlags::MS_NOEXEC),
            "nomand" => (true, MsFlags::MS_MANDLOCK),
            "norelatime" => (true, MsFlags::MS_RELATIME),
            "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
            "nosuid" => (false, MsFlags::MS_NOSUID),
            "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
            "relatime" => (false, MsFlags::MS_RELATIME),
            "remount" => (false, MsFlags::MS_REMOUNT),
            "ro" => (false, MsFlags::MS_RDONLY),
            "rw" => (true, MsFlags::MS_RDONLY),
            "strictatime" => (false, MsFlags::MS_STRICTATIME),
            "suid" => (true, MsFlags::MS_NOSUID),
            "sync" => (false, MsFlags::MS_SYNCHRONOUS),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                propagation |= match o.as_str() {
                    "private" => MsFlags::MS_PRIVATE,
                    "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
                    "shared" => MsFlags::MS_SHARED,
                    "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
                    "slave" => MsFlags::MS_SLAVE,
                    "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
                    "unbindable" => MsFlags::MS_UNBINDABLE,
                    _ => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
                };
                continue;
            }
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        if clear {
            flags.remove(set);
        } else {
            flags.insert(set);
        }
    }
    Parsed {
        flags,
        propagation,
        data: data.join(","),
    }
}

impl Mount {
    pub fn mount(&self, target: &Path) -> Result<()> {
        let p = parse_options(&self.options);
        let data = (!p.data.is_empty()).then_some(p.data.as_str());
        let ctx = || {
            format!(
                "mount {} {} on {}",
                self.kind,
                self.source,
                target.display()
            )
        };
        mount(
            Some(self.source.as_str()),
            target,
            Some(self.kind.as_str()),
            p.flags,
            data,
        )
        .context(ctx())?;
        // A bind mount ignores MS_RDONLY until it is remounted.
        if p.flags.contains(MsFlags::MS_BIND) && p.flags.contains(MsFlags::MS_RDONLY) {
            let flags = p.flags | MsFlags::MS_REMOUNT;
            mount(None::<&str>, target, None::<&str>, flags, None::<&str>).context(ctx())?;
        }
        if !p.propagation.is_empty() {
            mount(
                None::<&str>,
                target,
                None::<&str>,
                p.propagation,
                None::<&str>,
            )
            .context(ctx())?;
        }
        Ok(())
    }
}

/// Mounts every layer at `target` in order; on failure, what was mounted is removed again.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for m in mounts {
        if let Err(e) = m.mount(target) {
            let _ = unmount_all(target);
            return Err(e);
        }
    }
    Ok(())
}

/// Unmounts everything stacked at `target`; not being mounted (or not existing) is fine.
pub fn unmount_all(target: &Path) -> Result<()> {
    loop {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(Errno::EBUSY) => {
                umount2(target, MntFlags::MNT_DETACH)
                    .context(format!("unmount {}", target.display()))?;
            }
            Err(e) => {
                return Err(Error::Sys {
                    context: format!("unmount {}", target.display()),
                    source: e,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_and_data_are_separated() {
        let p = parse_options(&opts(&[
            "ro",
            "nosuid",
            "lowerdir=/a:/b",
            "upperdir=/u",
            "index=off",
        ]));
        assert_eq!(p.flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(p.data, "lowerdir=/a:/b,upperdir=/u,index=off");
        let p = parse_options(&opts(&["rbind", "ro", "rw", "rprivate"]));
        assert_eq!(p.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(p.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
    }

    #[test]
    fn unmounting_what_is_not_mounted_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        if nix::unistd::geteuid().is_root() {
            unmount_all(dir.path()).unwrap();
        }
        unmount_all(&dir.path().join("missing")).unwrap();
    }

    #[test]
    fn a_bind_mount_is_mounted_read_only_and_removed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: mounting needs root");
            return;
        }
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), "x").unwrap();
        let dst = tempfile::tempdir().unwrap();
        let m = Mount {
            kind: "bind".into(),
            source: src.path().display().to_string(),
            options: opts(&["rbind", "ro"]),
        };
        mount_all(&[m], dst.path()).unwrap();
        assert_eq!(std::fs::read_to_string(dst.path().join("f")).unwrap(), "x");
        assert!(
            std::fs::write(dst.path().join("g"), "y").is_err(),
            "read-only bind mount"
        );
        unmount_all(dst.path()).unwrap();
        assert!(!dst.path().join("f").exists());
    }
}
