//! Host device nodes given to a container: the CRI `devices` (a node, or a directory of
//! nodes) with the device cgroup rules that let it use them, and, for privileged
//! containers, every device under the host's /dev.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use limpet_protos::cri::v1::Device;
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};

use super::SpecError;

/// Directories under /dev that hold no devices of their own, or that other mounts provide.
const SKIPPED_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// The devices of the CRI `devices` list and one cgroup allow rule per device.
pub fn cri_devices(
    devices: &[Device],
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    let mut nodes = Vec::new();
    let mut rules = Vec::new();
    for d in devices {
        let bad = |reason: String| SpecError::Device {
            path: PathBuf::from(&d.host_path),
            reason,
        };
        if d.host_path.is_empty() {
            return Err(bad("host path is empty".into()));
        }
        let access = access(&d.permissions).map_err(bad)?;
        let container_path = match d.container_path.as_str() {
            "" => None,
            p if Path::new(p).is_absolute() => Some(Path::new(p)),
            _ => return Err(bad("container path is not absolute".into())),
        };
        let host = std::fs::canonicalize(&d.host_path).map_err(|e| bad(e.to_string()))?;
        for dev in devices_at(&host, container_path)? {
            rules.push(
                LinuxDeviceCgroupBuilder::default()
                    .allow(true)
                    .typ(dev.typ())
                    .major(dev.major())
                    .minor(dev.minor())
                    .access(access.clone())
                    .build()?,
            );
            nodes.push(dev);
        }
    }
    Ok((nodes, rules))
}

/// Every device node under the host's /dev, for privileged containers.
pub fn host_devices() -> Result<Vec<LinuxDevice>, SpecError> {
    devices_at(Path::new("/dev"), None)
}

/// The device at `path`, or the devices below it when it is a directory; each placed at
/// the same relative spot under `container_path` (default: where it is on the host).
pub fn devices_at(
    path: &Path,
    container_path: Option<&Path>,
) -> Result<Vec<LinuxDevice>, SpecError> {
    let io_err = |source| SpecError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if !meta.is_dir() {
        let dev = device_from_path(path)
            .map_err(io_err)?
            .ok_or_else(|| SpecError::Device {
                path: path.to_path_buf(),
                reason: "not a device node".into(),
            })?;
        return Ok(vec![placed(dev, container_path)]);
    }
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .map_err(io_err)?
        .collect::<Result<_, _>>()
        .map_err(io_err)?;
    entries.sort_by_key(|e| e.file_name());
    let mut out = Vec::new();
    for entry in entries {
        let name = entry.file_name();
        let child = entry.path();
        let inner = container_path.map(|c| c.join(&name));
        let is_dir = entry.file_type().map_err(io_err)?.is_dir();
        if is_dir {
            if !SKIPPED_DIRS.iter().any(|s| name == *s) {
                out.extend(devices_at(&child, inner.as_deref())?);
            }
            continue;
        }
        if name == "console" {
            continue;
        }
        match device_from_path(&child) {
            Ok(Some(dev)) if dev.typ() != LinuxDeviceType::P => {
                out.push(placed(dev, inner.as_deref()))
            }
            Ok(_) => {}
            // gone between listing and stat
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(SpecError::Io {
                    path: child,
                    source,
                })
            }
        }
    }
    Ok(out)
}

fn placed(mut dev: LinuxDevice, container_path: Option<&Path>) -> LinuxDevice {
    if let Some(p) = container_path {
        dev.set_path(p.to_path_buf());
    }
    dev
}

/// The node at `path` itself (a symlink is not followed); `None` when it is no device.
pub fn device_from_path(path: &Path) -> io::Result<Option<LinuxDevice>> {
    let meta = std::fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    let typ = if ft.is_block_device() {
        LinuxDeviceType::B
    } else if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_fifo() {
        LinuxDeviceType::P
    } else {
        return Ok(None);
    };
    let rdev = meta.rdev();
    LinuxDeviceBuilder::default()
        .path(path)
        .typ(typ)
        .major(nix::sys::stat::major(rdev) as i64)
        .minor(nix::sys::stat::minor(rdev) as i64)
        .file_mode(meta.mode() & 0o7777)
        .uid(meta.uid())
        .gid(meta.gid())
        .build()
        .map(Some)
        .map_err(io::Error::other)
}

/// The cgroup access of CRI `permissions`: some of `r`, `w`, `m`; empty means all three.
fn access(permissions: &str) -> Result<String, String> {
    if permissions.is_empty() {
        return Ok("rwm".into());
    }
    if permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        Ok(permissions.to_string())
    } else {
        Err(format!(
            "permissions {permissions:?} are not a combination of r, w and m"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(host: &str, container: &str, perms: &str) -> Device {
        Device {
            container_path: container.into(),
            host_path: host.into(),
            permissions: perms.into(),
        }
    }

    #[test]
    fn a_single_node_with_its_rule() {
        let (nodes, rules) = cri_devices(&[dev("/dev/null", "/dev/mydev", "rw")]).unwrap();
        assert_eq!(nodes.len(), 1);
        let n = &nodes[0];
        assert_eq!(n.path(), Path::new("/dev/mydev"));
        assert_eq!(n.typ(), LinuxDeviceType::C);
        assert_eq!((n.major(), n.minor()), (1, 3));
        assert_eq!(n.file_mode(), Some(0o666));
        assert_eq!(n.uid(), Some(0));
        let v = serde_json::to_value(&rules).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"}])
        );
        // no container path: the host path; no permissions: all
        let (nodes, rules) = cri_devices(&[dev("/dev/zero", "", "")]).unwrap();
        assert_eq!(nodes[0].path(), Path::new("/dev/zero"));
        assert_eq!(rules[0].access().as_deref(), Some("rwm"));
    }

    #[test]
    fn symlinks_are_resolved_and_bad_input_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("null-link");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let (nodes, _) = cri_devices(&[dev(link.to_str().unwrap(), "/dev/n", "r")]).unwrap();
        assert_eq!((nodes[0].major(), nodes[0].minor()), (1, 3));

        let plain = dir.path().join("file");
        std::fs::write(&plain, "x").unwrap();
        for bad in [
            dev(plain.to_str().unwrap(), "/dev/x", "rw"),
            dev("/dev/null", "/dev/x", "rwx"),
            dev("/dev/null", "relative", "rw"),
            dev("", "/dev/x", "rw"),
            dev("/dev/does-not-exist", "/dev/x", "rw"),
        ] {
            assert!(
                matches!(
                    cri_devices(std::slice::from_ref(&bad)),
                    Err(SpecError::Device { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_directory_expands_to_its_devices() {
        // a tree of symlinks is no device: the walk does not follow them
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join("l")).unwrap();
        assert!(devices_at(dir.path(), None).unwrap().is_empty());

        // the host's whole /dev, placed under /hostdev
        let (nodes, rules) = cri_devices(&[dev("/dev", "/hostdev", "r")]).unwrap();
        assert_eq!(nodes.len(), rules.len());
        let null = nodes
            .iter()
            .find(|n| n.path() == Path::new("/hostdev/null"))
            .expect("/dev/null in the expansion");
        assert_eq!((null.major(), null.minor()), (1, 3));
        assert!(nodes.iter().all(|n| n.path().starts_with("/hostdev")));
        assert!(!nodes
            .iter()
            .any(|n| n.path().starts_with("/hostdev/pts")
                || n.path() == Path::new("/hostdev/console")));
    }

    #[test]
    fn host_devices_cover_dev() {
        let all = host_devices().unwrap();
        assert!(all.iter().any(|d| d.path() == Path::new("/dev/null")));
        assert!(all.iter().all(|d| d.typ() != LinuxDeviceType::P));
    }
}
