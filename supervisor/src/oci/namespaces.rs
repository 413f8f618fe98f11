//! The Linux namespaces of pods and containers. A pod sandbox makes the pod's network, IPC,
//! UTS and pid namespaces; its containers join them. NODE mode means the host's: no entry.

use std::path::{Path, PathBuf};

use limpet_protos::cri::v1::{NamespaceMode, NamespaceOption};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType};

use super::SpecError;

/// Namespace files of the pod sandbox a container joins (`/proc/<sandbox pid>/ns/*` or a
/// pinned netns); `None` gives the container a fresh one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxNamespaces {
    pub network: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// The pid namespace joined in pid mode POD (the sandbox's) or TARGET (the target
    /// container's).
    pub pid: Option<PathBuf>,
}

/// The namespace modes of a CRI `NamespaceOption`; a missing option is all POD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    pub network: NamespaceMode,
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
}

impl Modes {
    pub fn of(opts: Option<&NamespaceOption>) -> Result<Modes, SpecError> {
        let mode = |m: Option<i32>| {
            m.and_then(|m| NamespaceMode::try_from(m).ok())
                .unwrap_or(NamespaceMode::Pod)
        };
        if let Some(u) = opts.and_then(|o| o.userns_options.as_ref()) {
            if NamespaceMode::try_from(u.mode) != Ok(NamespaceMode::Node) {
                return Err(SpecError::Unsupported("a pod user namespace"));
            }
        }
        Ok(Modes {
            network: mode(opts.map(|o| o.network)),
            pid: mode(opts.map(|o| o.pid)),
            ipc: mode(opts.map(|o| o.ipc)),
        })
    }

    pub fn host_network(&self) -> bool {
        self.network == NamespaceMode::Node
    }

    pub fn host_ipc(&self) -> bool {
        self.ipc == NamespaceMode::Node
    }

    pub fn host_pid(&self) -> bool {
        self.pid == NamespaceMode::Node
    }
}

/// A container's namespaces: pid, ipc, uts, mount, network, and cgroup when `cgroupns`.
/// The host network also means the host UTS namespace, as for its sandbox.
pub fn container_namespaces(
    modes: Modes,
    sandbox: &SandboxNamespaces,
    cgroupns: bool,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let pid = match modes.pid {
        NamespaceMode::Node => None,
        NamespaceMode::Container => Some(None),
        NamespaceMode::Pod | NamespaceMode::Target => Some(sandbox.pid.as_deref()),
    };
    let wanted = [
        (LinuxNamespaceType::Pid, pid),
        (
            LinuxNamespaceType::Ipc,
            join(modes.host_ipc(), sandbox.ipc.as_ref()),
        ),
        (
            LinuxNamespaceType::Uts,
            join(modes.host_network(), sandbox.uts.as_ref()),
        ),
        (LinuxNamespaceType::Mount, Some(None)),
        (
            LinuxNamespaceType::Network,
            join(modes.host_network(), sandbox.network.as_ref()),
        ),
        (LinuxNamespaceType::Cgroup, cgroupns.then_some(None)),
    ];
    build(&wanted)
}

/// A pod sandbox's namespaces: new pid, ipc, uts, mount and network ones unless the pod
/// uses the host's; the network one is `netns` when given.
pub fn sandbox_namespaces(
    modes: Modes,
    netns: Option<&Path>,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let new = |host: bool| (!host).then_some(None);
    let wanted = [
        (LinuxNamespaceType::Pid, new(modes.host_pid())),
        (LinuxNamespaceType::Ipc, new(modes.host_ipc())),
        (LinuxNamespaceType::Uts, new(modes.host_network())),
        (LinuxNamespaceType::Mount, Some(None)),
        (
            LinuxNamespaceType::Network,
            (!modes.host_network()).then_some(netns),
        ),
    ];
    build(&wanted)
}

/// Nothing in the host's namespace, else `path` to join or a new one.
fn join(host: bool, path: Option<&PathBuf>) -> Option<Option<&Path>> {
    (!host).then_some(path.map(PathBuf::as_path))
}

/// `Some(path)` joins, `Some(None)` makes a new one, `None` stays in the host's.
fn build(
    wanted: &[(LinuxNamespaceType, Option<Option<&Path>>)],
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let mut out = Vec::new();
    for (typ, ns) in wanted {
        let Some(path) = ns else { continue };
        let mut b = LinuxNamespaceBuilder::default().typ(*typ);
        if let Some(p) = path {
            b = b.path(p.to_path_buf());
        }
        out.push(b.build()?);
    }
    Ok(out)
}

/// Whether the spec makes a UTS namespace of its own, where a hostname may be set.
pub fn has_new_uts(namespaces: &[LinuxNamespace]) -> bool {
    namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Uts && n.path().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use limpet_protos::cri::v1::UserNamespace;
    use serde_json::json;

    fn opts(network: NamespaceMode, pid: NamespaceMode, ipc: NamespaceMode) -> NamespaceOption {
        NamespaceOption {
            network: network as i32,
            pid: pid as i32,
            ipc: ipc as i32,
            ..Default::default()
        }
    }

    fn pod_ns() -> SandboxNamespaces {
        SandboxNamespaces {
            network: Some("/run/netns/a".into()),
            ipc: Some("/proc/9/ns/ipc".into()),
            uts: Some("/proc/9/ns/uts".into()),
            pid: Some("/proc/9/ns/pid".into()),
        }
    }

    fn container(o: Option<&NamespaceOption>, cgroupns: bool) -> serde_json::Value {
        let modes = Modes::of(o).unwrap();
        serde_json::to_value(container_namespaces(modes, &pod_ns(), cgroupns).unwrap()).unwrap()
    }

    #[test]
    fn containers_join_the_pod() {
        use NamespaceMode::*;
        assert_eq!(
            container(None, false),
            json!([
                {"type": "pid", "path": "/proc/9/ns/pid"},
                {"type": "ipc", "path": "/proc/9/ns/ipc"},
                {"type": "uts", "path": "/proc/9/ns/uts"},
                {"type": "mount"},
                {"type": "network", "path": "/run/netns/a"},
            ])
        );
        // pid CONTAINER: a new one; host network: no net and no uts entry
        assert_eq!(
            container(Some(&opts(Node, Container, Pod)), true),
            json!([
                {"type": "pid"},
                {"type": "ipc", "path": "/proc/9/ns/ipc"},
                {"type": "mount"},
                {"type": "cgroup"},
            ])
        );
        assert_eq!(
            container(Some(&opts(Pod, Node, Node)), false),
            json!([
                {"type": "uts", "path": "/proc/9/ns/uts"},
                {"type": "mount"},
                {"type": "network", "path": "/run/netns/a"},
            ])
        );
        // without sandbox paths every namespace is new
        let modes = Modes::of(None).unwrap();
        let v = container_namespaces(modes, &SandboxNamespaces::default(), false).unwrap();
        assert!(v.iter().all(|n| n.path().is_none()));
        assert!(has_new_uts(&v));
    }

    #[test]
    fn sandboxes_make_the_pod_namespaces() {
        use NamespaceMode::*;
        let s = |o: NamespaceOption, netns: Option<&Path>| {
            serde_json::to_value(sandbox_namespaces(Modes::of(Some(&o)).unwrap(), netns).unwrap())
                .unwrap()
        };
        assert_eq!(
            s(opts(Pod, Container, Pod), Some(Path::new("/run/netns/p"))),
            json!([
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                {"type": "network", "path": "/run/netns/p"},
            ])
        );
        assert_eq!(
            s(opts(Node, Node, Node), Some(Path::new("/run/netns/p"))),
            json!([{"type": "mount"}])
        );
        assert_eq!(
            s(opts(Pod, Pod, Pod), None),
            json!([
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                {"type": "network"},
            ])
        );
    }

    #[test]
    fn pod_user_namespaces_are_refused() {
        let mut o = NamespaceOption {
            userns_options: Some(UserNamespace {
                mode: NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            Modes::of(Some(&o)),
            Err(SpecError::Unsupported(_))
        ));
        o.userns_options.as_mut().unwrap().mode = NamespaceMode::Node as i32;
        assert!(Modes::of(Some(&o)).is_ok());
    }
}
