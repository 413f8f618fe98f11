//! A container's mounts: the default kernel filesystems, the files its pod sandbox shares
//! (/etc/hostname, /etc/hosts, /etc/resolv.conf, /dev/shm) and the CRI bind mounts.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use limpet_protos::cri::v1::{ContainerConfig, Mount as CriMount, MountPropagation};
use oci_spec::runtime::{Mount, MountBuilder};

use super::defaults;
use super::SpecError;

/// Files on the host that the pod sandbox provides to each of its containers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFiles {
    /// Mounted at /etc/hostname; `None` leaves the image's file.
    pub hostname: Option<PathBuf>,
    /// Mounted at /etc/hosts.
    pub hosts: Option<PathBuf>,
    /// Mounted at /etc/resolv.conf.
    pub resolv: Option<PathBuf>,
    /// The pod's /dev/shm (a tmpfs the caller mounted); with host IPC the host's /dev/shm
    /// is used instead, and `None` leaves the container a /dev/shm of its own.
    pub shm: Option<PathBuf>,
}

pub const ETC_HOSTNAME: &str = "/etc/hostname";
pub const ETC_HOSTS: &str = "/etc/hosts";
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
pub const DEV_SHM: &str = "/dev/shm";

/// The sandbox files as CRI mounts: read-only when the rootfs is, /dev/shm always writable.
pub fn sandbox_file_mounts(
    files: &SandboxFiles,
    readonly_rootfs: bool,
    host_ipc: bool,
) -> Vec<CriMount> {
    let bind = |dest: &str, src: &Path, readonly: bool| CriMount {
        container_path: dest.to_string(),
        host_path: src.to_string_lossy().into_owned(),
        readonly,
        propagation: MountPropagation::PropagationPrivate as i32,
        ..Default::default()
    };
    let mut out = Vec::new();
    for (dest, src) in [
        (ETC_HOSTNAME, &files.hostname),
        (ETC_HOSTS, &files.hosts),
        (RESOLV_CONF, &files.resolv),
    ] {
        if let Some(src) = src {
            out.push(bind(dest, src, readonly_rootfs));
        }
    }
    let shm = if host_ipc {
        Some(Path::new(DEV_SHM))
    } else {
        files.shm.as_deref()
    };
    if let Some(src) = shm {
        out.push(bind(DEV_SHM, src, false));
    }
    out
}

/// The mounts of a container, and the rootfs propagation its bind mounts need.
///
/// CRI mounts win over `extra` mounts at the same path; both replace default mounts at
/// their path (a CRI /dev replaces every default under /dev) and are ordered by depth, so
/// that a mount never hides one below it.
pub fn container_mounts(
    c: &ContainerConfig,
    extra: &[CriMount],
    writable_sys: bool,
) -> Result<(Vec<Mount>, Option<String>), SpecError> {
    let cri_dests: HashSet<PathBuf> = c.mounts.iter().map(|m| clean(&m.container_path)).collect();
    let mut wanted: Vec<&CriMount> = c.mounts.iter().collect();
    wanted.extend(
        extra
            .iter()
            .filter(|e| !cri_dests.contains(&clean(&e.container_path))),
    );
    wanted.sort_by_key(|m| clean(&m.container_path).components().count());

    let dests: HashSet<PathBuf> = wanted.iter().map(|m| clean(&m.container_path)).collect();
    let dev_replaced = dests.contains(Path::new("/dev"));
    let mut out: Vec<Mount> = defaults::default_mounts(writable_sys)?
        .into_iter()
        .filter(|m| {
            let d = m.destination();
            !(dests.contains(d) || (dev_replaced && d.starts_with("/dev")))
        })
        .collect();
    let mut propagation: Option<&str> = None;
    for m in wanted {
        out.push(bind_mount(m)?);
        match MountPropagation::try_from(m.propagation) {
            Ok(MountPropagation::PropagationBidirectional) => propagation = Some("rshared"),
            Ok(MountPropagation::PropagationHostToContainer) if propagation.is_none() => {
                propagation = Some("rslave")
            }
            _ => {}
        }
    }
    Ok((out, propagation.map(String::from)))
}

/// A path with `.` and repeated or trailing slashes gone, for comparing mount points.
fn clean(p: &str) -> PathBuf {
    Path::new(p)
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}

/// A CRI mount as an OCI bind mount: `rbind`, the propagation, `ro`/`rw`.
pub fn bind_mount(m: &CriMount) -> Result<Mount, SpecError> {
    let bad = |reason| SpecError::InvalidMount {
        container_path: m.container_path.clone(),
        reason,
    };
    let dest = Path::new(&m.container_path);
    if !dest.is_absolute() {
        return Err(bad("container path is not absolute"));
    }
    if dest.components().any(|c| c == Component::ParentDir) {
        return Err(bad("container path contains `..`"));
    }
    if m.host_path.is_empty() {
        return Err(bad("host path is empty"));
    }
    let propagation = match MountPropagation::try_from(m.propagation) {
        Ok(MountPropagation::PropagationPrivate) => "rprivate",
        Ok(MountPropagation::PropagationHostToContainer) => "rslave",
        Ok(MountPropagation::PropagationBidirectional) => "rshared",
        Err(_) => return Err(bad("unknown propagation")),
    };
    let mode = if m.readonly { "ro" } else { "rw" };
    Ok(MountBuilder::default()
        .destination(dest)
        .source(PathBuf::from(&m.host_path))
        .typ("bind")
        .options(vec![
            "rbind".to_string(),
            propagation.to_string(),
            mode.to_string(),
        ])
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn m(path: &str, prop: MountPropagation, ro: bool) -> CriMount {
        CriMount {
            container_path: path.into(),
            host_path: "/host/x".into(),
            readonly: ro,
            propagation: prop as i32,
            ..Default::default()
        }
    }

    fn dests(mounts: &[Mount]) -> Vec<&str> {
        mounts
            .iter()
            .map(|m| m.destination().to_str().unwrap())
            .collect()
    }

    #[test]
    fn bind_options_follow_propagation_and_mode() {
        let b = bind_mount(&m(
            "/data",
            MountPropagation::PropagationHostToContainer,
            true,
        ))
        .unwrap();
        assert_eq!(b.destination(), Path::new("/data"));
        assert_eq!(b.source().as_deref(), Some(Path::new("/host/x")));
        assert_eq!(b.typ().as_deref(), Some("bind"));
        assert_eq!(
            b.options().clone().unwrap(),
            strings(&["rbind", "rslave", "ro"])
        );
        let b = bind_mount(&m("/d", MountPropagation::PropagationBidirectional, false)).unwrap();
        assert_eq!(
            b.options().clone().unwrap(),
            strings(&["rbind", "rshared", "rw"])
        );
        let b = bind_mount(&m("/d", MountPropagation::PropagationPrivate, false)).unwrap();
        assert_eq!(
            b.options().clone().unwrap(),
            strings(&["rbind", "rprivate", "rw"])
        );
        for bad in ["/a/../etc", "relative", ""] {
            assert!(matches!(
                bind_mount(&m(bad, MountPropagation::PropagationPrivate, false)),
                Err(SpecError::InvalidMount { .. })
            ));
        }
    }

    #[test]
    fn sandbox_files_become_binds() {
        let files = SandboxFiles {
            hostname: Some("/run/pod/hostname".into()),
            hosts: Some("/run/pod/hosts".into()),
            resolv: Some("/run/pod/resolv.conf".into()),
            shm: Some("/run/pod/shm".into()),
        };
        let got = sandbox_file_mounts(&files, true, false);
        let pairs: Vec<(&str, &str, bool)> = got
            .iter()
            .map(|m| (m.container_path.as_str(), m.host_path.as_str(), m.readonly))
            .collect();
        assert_eq!(
            pairs,
            [
                ("/etc/hostname", "/run/pod/hostname", true),
                ("/etc/hosts", "/run/pod/hosts", true),
                ("/etc/resolv.conf", "/run/pod/resolv.conf", true),
                ("/dev/shm", "/run/pod/shm", false),
            ]
        );
        // host IPC shares the host's /dev/shm; missing files are left out
        let got = sandbox_file_mounts(
            &SandboxFiles {
                hosts: Some("/run/pod/hosts".into()),
                ..Default::default()
            },
            false,
            true,
        );
        let pairs: Vec<(&str, &str, bool)> = got
            .iter()
            .map(|m| (m.container_path.as_str(), m.host_path.as_str(), m.readonly))
            .collect();
        assert_eq!(
            pairs,
            [
                ("/etc/hosts", "/run/pod/hosts", false),
                ("/dev/shm", "/dev/shm", false)
            ]
        );
        assert!(sandbox_file_mounts(&SandboxFiles::default(), false, false).is_empty());
    }

    #[test]
    fn cri_mounts_win_replace_defaults_and_sort_by_depth() {
        let c = ContainerConfig {
            mounts: vec![
                m("/data/sub", MountPropagation::PropagationPrivate, false),
                m("/etc/hosts/", MountPropagation::PropagationPrivate, true),
                m("/data", MountPropagation::PropagationPrivate, false),
            ],
            ..Default::default()
        };
        let extra = sandbox_file_mounts(
            &SandboxFiles {
                hosts: Some("/run/pod/hosts".into()),
                resolv: Some("/run/pod/resolv.conf".into()),
                shm: Some("/run/pod/shm".into()),
                ..Default::default()
            },
            false,
            false,
        );
        let (mounts, prop) = container_mounts(&c, &extra, false).unwrap();
        assert_eq!(
            dests(&mounts),
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/data",
                "/data/sub",
                "/etc/hosts/",
                "/etc/resolv.conf",
                "/dev/shm",
            ]
        );
        // the CRI /etc/hosts, not the sandbox's
        let hosts = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/etc/hosts"))
            .unwrap();
        assert_eq!(hosts.source().as_deref(), Some(Path::new("/host/x")));
        assert_eq!(prop, None);

        let c = ContainerConfig {
            mounts: vec![m("/dev", MountPropagation::PropagationPrivate, false)],
            ..Default::default()
        };
        let (mounts, _) = container_mounts(&c, &[], false).unwrap();
        assert_eq!(dests(&mounts), ["/proc", "/sys", "/sys/fs/cgroup", "/dev"]);
    }

    #[test]
    fn propagation_needs_a_shared_or_slave_rootfs() {
        let with = |props: &[MountPropagation]| {
            let c = ContainerConfig {
                mounts: props
                    .iter()
                    .enumerate()
                    .map(|(i, p)| m(&format!("/m{i}"), *p, false))
                    .collect(),
                ..Default::default()
            };
            container_mounts(&c, &[], false).unwrap().1
        };
        use MountPropagation::*;
        assert_eq!(with(&[PropagationPrivate]), None);
        assert_eq!(
            with(&[PropagationHostToContainer]).as_deref(),
            Some("rslave")
        );
        assert_eq!(
            with(&[PropagationBidirectional, PropagationHostToContainer]).as_deref(),
            Some("rshared")
        );
        assert_eq!(
            with(&[PropagationHostToContainer, PropagationBidirectional]).as_deref(),
            Some("rshared")
        );
    }
}
