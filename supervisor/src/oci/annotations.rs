//! The spec annotations containerd's CRI plugin writes, which shims and tools read (the shim
//! groups a pod's containers by `sandbox-id`).

use std::collections::HashMap;

use limpet_protos::cri::v1::PodSandboxConfig;

pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const CONTAINER_TYPE_SANDBOX: &str = "sandbox";
pub const CONTAINER_TYPE_CONTAINER: &str = "container";
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
pub const SANDBOX_LOG_DIR: &str = "io.kubernetes.cri.sandbox-log-directory";
pub const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
pub const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
pub const SANDBOX_CPU_SHARES: &str = "io.kubernetes.cri.sandbox-cpu-shares";
pub const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

/// The annotations of a pod sandbox's spec.
pub fn sandbox_annotations(id: &str, config: &PodSandboxConfig) -> HashMap<String, String> {
    let mut a = pod_identity(id, config);
    a.insert(CONTAINER_TYPE.into(), CONTAINER_TYPE_SANDBOX.into());
    a.insert(SANDBOX_LOG_DIR.into(), config.log_directory.clone());
    if let Some(r) = config.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        a.insert(SANDBOX_CPU_PERIOD.into(), r.cpu_period.to_string());
        a.insert(SANDBOX_CPU_QUOTA.into(), r.cpu_quota.to_string());
        a.insert(SANDBOX_CPU_SHARES.into(), r.cpu_shares.to_string());
        a.insert(SANDBOX_MEMORY.into(), r.memory_limit_in_bytes.to_string());
    }
    a
}

/// The annotations of a container's spec in sandbox `sandbox_id`.
pub fn container_annotations(
    sandbox_id: &str,
    sandbox: &PodSandboxConfig,
    container_name: &str,
    image_name: &str,
) -> HashMap<String, String> {
    let mut a = pod_identity(sandbox_id, sandbox);
    a.insert(CONTAINER_TYPE.into(), CONTAINER_TYPE_CONTAINER.into());
    a.insert(CONTAINER_NAME.into(), container_name.into());
    a.insert(IMAGE_NAME.into(), image_name.into());
    a
}

fn pod_identity(id: &str, config: &PodSandboxConfig) -> HashMap<String, String> {
    let meta = config.metadata.clone().unwrap_or_default();
    HashMap::from([
        (SANDBOX_ID.to_string(), id.to_string()),
        (SANDBOX_NAMESPACE.to_string(), meta.namespace),
        (SANDBOX_UID.to_string(), meta.uid),
        (SANDBOX_NAME.to_string(), meta.name),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use limpet_protos::cri::v1::{
        LinuxContainerResources, LinuxPodSandboxConfig, PodSandboxMetadata,
    };

    #[test]
    fn sandbox_and_container_annotations() {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: "/var/log/pods/x".into(),
            linux: Some(LinuxPodSandboxConfig {
                resources: Some(LinuxContainerResources {
                    cpu_shares: 256,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = sandbox_annotations("sb1", &config);
        assert_eq!(s[CONTAINER_TYPE], "sandbox");
        assert_eq!(s[SANDBOX_ID], "sb1");
        assert_eq!(s[SANDBOX_NAME], "web");
        assert_eq!(s[SANDBOX_NAMESPACE], "default");
        assert_eq!(s[SANDBOX_UID], "u1");
        assert_eq!(s[SANDBOX_LOG_DIR], "/var/log/pods/x");
        assert_eq!(s[SANDBOX_CPU_SHARES], "256");
        assert_eq!(s[SANDBOX_MEMORY], "0");

        let c = container_annotations("sb1", &config, "app", "docker.io/library/busybox:1");
        assert_eq!(c[CONTAINER_TYPE], "container");
        assert_eq!(c[SANDBOX_ID], "sb1");
        assert_eq!(c[CONTAINER_NAME], "app");
        assert_eq!(c[IMAGE_NAME], "docker.io/library/busybox:1");
        assert!(!c.contains_key(SANDBOX_CPU_SHARES));
    }
}
