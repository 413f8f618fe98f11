//! CRI configs the CRI suites share: a host-network pod that the harness can clean up.

use limpet_protos::cri::v1::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata,
};

use crate::Harness;

/// Host network (no CNI needed), a pid namespace per container, the pod's IPC.
pub fn host_network() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node.into(),
        pid: NamespaceMode::Container.into(),
        ipc: NamespaceMode::Pod.into(),
        ..Default::default()
    }
}

/// A host-network pod named `limpet-<tag>-…`, unique to this test process and flavor, in the
/// cgroup parent the harness removes by path.
pub fn host_network_pod(h: &Harness, tag: &str) -> PodSandboxConfig {
    let unique = format!("{}-{}", std::process::id(), h.flavor);
    let unique: String = unique
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("limpet-{tag}-{unique}"),
            uid: format!("uid-{tag}-{unique}"),
            namespace: format!("limpet-{unique}"),
            attempt: 0,
        }),
        log_directory: h.cri().log_dir.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: h.cri().cgroup_parent.clone(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(host_network()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
