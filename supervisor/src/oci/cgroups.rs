//! The `linux.cgroupsPath` of a pod or container, in the form the runtime's cgroup driver
//! expects.

/// How cgroups are managed: by writing the cgroup fs, or through systemd units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// Parent for pods whose config names none (cgroupfs).
pub const DEFAULT_CGROUP_PARENT: &str = "/limpet";

/// Middle part of a systemd `slice:prefix:name` path: units are `limpet-<id>.scope`.
pub const SYSTEMD_SCOPE_PREFIX: &str = "limpet";

/// The cgroups path of `id` under the CRI `cgroup_parent`.
///
/// cgroupfs: `<parent>/<id>` (`/limpet/<id>` without a parent).
/// systemd: `<slice>:limpet:<id>`, as runc's systemd driver wants it; the slice is the last
/// element of a `.slice` parent, a cgroupfs-style parent converted the way the kubelet names
/// slices (`/kubepods/burstable` → `kubepods-burstable.slice`), or `system.slice`.
pub fn cgroups_path(driver: CgroupDriver, parent: &str, id: &str) -> String {
    match driver {
        CgroupDriver::Cgroupfs => {
            let parent = if parent.is_empty() {
                DEFAULT_CGROUP_PARENT
            } else {
                parent
            };
            format!("{}/{id}", parent.trim_end_matches('/'))
        }
        CgroupDriver::Systemd => format!("{}:{SYSTEMD_SCOPE_PREFIX}:{id}", systemd_slice(parent)),
    }
}

fn systemd_slice(parent: &str) -> String {
    let parts: Vec<&str> = parent.split('/').filter(|p| !p.is_empty()).collect();
    match parts.last() {
        None => "system.slice".to_string(),
        Some(last) if last.ends_with(".slice") => last.to_string(),
        // systemd nests `a-b.slice` under `a.slice`, so a `-` inside a name must not survive
        Some(_) => format!(
            "{}.slice",
            parts
                .iter()
                .map(|p| p.replace('-', "_"))
                .collect::<Vec<_>>()
                .join("-")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_joins_the_parent() {
        let c = CgroupDriver::Cgroupfs;
        assert_eq!(
            cgroups_path(c, "/kubepods/pod1", "abc"),
            "/kubepods/pod1/abc"
        );
        assert_eq!(
            cgroups_path(c, "/kubepods/pod1/", "abc"),
            "/kubepods/pod1/abc"
        );
        assert_eq!(cgroups_path(c, "", "abc"), "/limpet/abc");
        // a slice-looking parent is still just a directory to cgroupfs
        assert_eq!(
            cgroups_path(c, "/kubepods.slice/kubepods-pod1.slice", "abc"),
            "/kubepods.slice/kubepods-pod1.slice/abc"
        );
    }

    #[test]
    fn systemd_uses_slice_prefix_name() {
        let s = CgroupDriver::Systemd;
        assert_eq!(
            cgroups_path(
                s,
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice",
                "abc"
            ),
            "kubepods-besteffort-pod1.slice:limpet:abc"
        );
        assert_eq!(
            cgroups_path(s, "kubepods.slice", "abc"),
            "kubepods.slice:limpet:abc"
        );
        assert_eq!(cgroups_path(s, "", "abc"), "system.slice:limpet:abc");
        assert_eq!(cgroups_path(s, "/", "abc"), "system.slice:limpet:abc");
        assert_eq!(
            cgroups_path(s, "/kubepods/burstable/pod-1", "abc"),
            "kubepods-burstable-pod_1.slice:limpet:abc"
        );
    }
}
