//! PodSandboxConfig as a pod config file writes it.

use limpet_protos::cri::v1 as cri;
use serde::Deserialize;

use super::common::{
    enum_field, nullable, GroupsPolicy, Int64Value, LinuxContainerResources, Map, NamespaceOption,
    Protocol, SeLinuxOption, SecurityProfile,
};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PodSandboxConfig {
    pub metadata: Option<PodSandboxMetadata>,
    pub hostname: String,
    pub log_directory: String,
    pub dns_config: Option<DnsConfig>,
    #[serde(deserialize_with = "nullable")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(deserialize_with = "nullable")]
    pub labels: Map,
    #[serde(deserialize_with = "nullable")]
    pub annotations: Map,
    pub linux: Option<LinuxPodSandboxConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PodSandboxMetadata {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    #[serde(deserialize_with = "nullable")]
    pub servers: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub searches: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub options: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortMapping {
    #[serde(deserialize_with = "enum_field::<Protocol, _>")]
    pub protocol: i32,
    pub container_port: i32,
    pub host_port: i32,
    pub host_ip: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinuxPodSandboxConfig {
    pub cgroup_parent: String,
    pub security_context: Option<LinuxSandboxSecurityContext>,
    #[serde(deserialize_with = "nullable")]
    pub sysctls: Map,
    pub overhead: Option<LinuxContainerResources>,
    pub resources: Option<LinuxContainerResources>,
    /// A key of the CRI before v1 that crictl's own example file still carries; crictl's
    /// decoder drops it, and so do we (with a warning).
    pub namespaces: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinuxSandboxSecurityContext {
    pub namespace_options: Option<NamespaceOption>,
    pub selinux_options: Option<SeLinuxOption>,
    pub run_as_user: Option<Int64Value>,
    pub run_as_group: Option<Int64Value>,
    pub readonly_rootfs: bool,
    #[serde(deserialize_with = "nullable")]
    pub supplemental_groups: Vec<i64>,
    #[serde(deserialize_with = "enum_field::<GroupsPolicy, _>")]
    pub supplemental_groups_policy: i32,
    pub privileged: bool,
    pub seccomp: Option<SecurityProfile>,
    pub apparmor: Option<SecurityProfile>,
    pub seccomp_profile_path: String,
}

impl PodSandboxConfig {
    /// The CRI message, and warnings about what was dropped.
    pub fn into_cri(self) -> (cri::PodSandboxConfig, Vec<String>) {
        let mut warnings = Vec::new();
        let linux = self.linux.map(|l| {
            if l.namespaces.is_some() {
                warnings.push(
                    "linux.namespaces is not a CRI v1 field (use linux.security_context.namespace_options); ignored"
                        .to_string(),
                );
            }
            cri::LinuxPodSandboxConfig {
                cgroup_parent: l.cgroup_parent,
                security_context: l.security_context.map(sandbox_security),
                sysctls: l.sysctls,
                overhead: l.overhead.map(Into::into),
                resources: l.resources.map(Into::into),
            }
        });
        let config = cri::PodSandboxConfig {
            metadata: self.metadata.map(|m| cri::PodSandboxMetadata {
                name: m.name,
                uid: m.uid,
                namespace: m.namespace,
                attempt: m.attempt,
            }),
            hostname: self.hostname,
            log_directory: self.log_directory,
            dns_config: self.dns_config.map(|d| cri::DnsConfig {
                servers: d.servers,
                searches: d.searches,
                options: d.options,
            }),
            port_mappings: self
                .port_mappings
                .into_iter()
                .map(|p| cri::PortMapping {
                    protocol: p.protocol,
                    container_port: p.container_port,
                    host_port: p.host_port,
                    host_ip: p.host_ip,
                })
                .collect(),
            labels: self.labels,
            annotations: self.annotations,
            linux,
            windows: None,
        };
        (config, warnings)
    }
}

#[allow(deprecated)] // seccomp_profile_path: still honoured by runtimes that predate `seccomp`
fn sandbox_security(s: LinuxSandboxSecurityContext) -> cri::LinuxSandboxSecurityContext {
    cri::LinuxSandboxSecurityContext {
        namespace_options: s.namespace_options.map(Into::into),
        selinux_options: s.selinux_options.map(Into::into),
        run_as_user: s.run_as_user.map(Into::into),
        run_as_group: s.run_as_group.map(Into::into),
        readonly_rootfs: s.readonly_rootfs,
        supplemental_groups: s.supplemental_groups,
        supplemental_groups_policy: s.supplemental_groups_policy,
        privileged: s.privileged,
        seccomp: s.seccomp.map(Into::into),
        apparmor: s.apparmor.map(Into::into),
        seccomp_profile_path: s.seccomp_profile_path,
    }
}
