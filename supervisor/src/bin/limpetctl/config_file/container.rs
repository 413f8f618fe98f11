//! ContainerConfig as a container config file writes it.

use limpet_protos::cri::v1 as cri;
use serde::Deserialize;

use super::common::{
    convert, enum_field, nullable, GroupsPolicy, IdMapping, ImageSpec, Int64Value,
    LinuxContainerResources, Map, NamespaceOption, Propagation, SeLinuxOption, SecurityProfile,
};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerConfig {
    pub metadata: Option<ContainerMetadata>,
    pub image: Option<ImageSpec>,
    #[serde(deserialize_with = "nullable")]
    pub command: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub args: Vec<String>,
    pub working_dir: String,
    #[serde(deserialize_with = "nullable")]
    pub envs: Vec<KeyValue>,
    #[serde(deserialize_with = "nullable")]
    pub mounts: Vec<Mount>,
    #[serde(deserialize_with = "nullable")]
    pub devices: Vec<Device>,
    #[serde(deserialize_with = "nullable")]
    pub labels: Map,
    #[serde(deserialize_with = "nullable")]
    pub annotations: Map,
    pub log_path: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub linux: Option<LinuxContainerConfig>,
    #[serde(deserialize_with = "nullable")]
    pub cdi_devices: Vec<CdiDevice>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerMetadata {
    pub name: String,
    pub attempt: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mount {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub selinux_relabel: bool,
    #[serde(deserialize_with = "enum_field::<Propagation, _>")]
    pub propagation: i32,
    #[serde(deserialize_with = "nullable")]
    pub uid_mappings: Vec<IdMapping>,
    #[serde(deserialize_with = "nullable")]
    pub gid_mappings: Vec<IdMapping>,
    pub recursive_read_only: bool,
    pub image: Option<ImageSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Device {
    pub container_path: String,
    pub host_path: String,
    pub permissions: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdiDevice {
    pub name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinuxContainerConfig {
    pub resources: Option<LinuxContainerResources>,
    pub security_context: Option<LinuxContainerSecurityContext>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capability {
    #[serde(deserialize_with = "nullable")]
    pub add_capabilities: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub drop_capabilities: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub add_ambient_capabilities: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinuxContainerSecurityContext {
    pub capabilities: Option<Capability>,
    pub privileged: bool,
    pub namespace_options: Option<NamespaceOption>,
    pub selinux_options: Option<SeLinuxOption>,
    pub run_as_user: Option<Int64Value>,
    pub run_as_group: Option<Int64Value>,
    pub run_as_username: String,
    pub readonly_rootfs: bool,
    #[serde(deserialize_with = "nullable")]
    pub supplemental_groups: Vec<i64>,
    #[serde(deserialize_with = "enum_field::<GroupsPolicy, _>")]
    pub supplemental_groups_policy: i32,
    pub no_new_privs: bool,
    #[serde(deserialize_with = "nullable")]
    pub masked_paths: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub readonly_paths: Vec<String>,
    pub seccomp: Option<SecurityProfile>,
    pub apparmor: Option<SecurityProfile>,
    pub apparmor_profile: String,
    pub seccomp_profile_path: String,
}

impl From<ContainerConfig> for cri::ContainerConfig {
    fn from(c: ContainerConfig) -> Self {
        cri::ContainerConfig {
            metadata: c.metadata.map(|m| cri::ContainerMetadata {
                name: m.name,
                attempt: m.attempt,
            }),
            image: c.image.map(Into::into),
            command: c.command,
            args: c.args,
            working_dir: c.working_dir,
            envs: c
                .envs
                .into_iter()
                .map(|e| cri::KeyValue {
                    key: e.key,
                    value: e.value,
                })
                .collect(),
            mounts: c.mounts.into_iter().map(mount).collect(),
            devices: c
                .devices
                .into_iter()
                .map(|d| cri::Device {
                    container_path: d.container_path,
                    host_path: d.host_path,
                    permissions: d.permissions,
                })
                .collect(),
            labels: c.labels,
            annotations: c.annotations,
            log_path: c.log_path,
            stdin: c.stdin,
            stdin_once: c.stdin_once,
            tty: c.tty,
            linux: c.linux.map(|l| cri::LinuxContainerConfig {
                resources: l.resources.map(Into::into),
                security_context: l.security_context.map(security),
            }),
            windows: None,
            cdi_devices: c
                .cdi_devices
                .into_iter()
                .map(|d| cri::CdiDevice { name: d.name })
                .collect(),
        }
    }
}

fn mount(m: Mount) -> cri::Mount {
    cri::Mount {
        container_path: m.container_path,
        host_path: m.host_path,
        readonly: m.readonly,
        selinux_relabel: m.selinux_relabel,
        propagation: m.propagation,
        uid_mappings: convert(m.uid_mappings),
        gid_mappings: convert(m.gid_mappings),
        recursive_read_only: m.recursive_read_only,
        image: m.image.map(Into::into),
    }
}

#[allow(deprecated)] // apparmor_profile, seccomp_profile_path: older runtimes read only these
fn security(s: LinuxContainerSecurityContext) -> cri::LinuxContainerSecurityContext {
    cri::LinuxContainerSecurityContext {
        capabilities: s.capabilities.map(|c| cri::Capability {
            add_capabilities: c.add_capabilities,
            drop_capabilities: c.drop_capabilities,
            add_ambient_capabilities: c.add_ambient_capabilities,
        }),
        privileged: s.privileged,
        namespace_options: s.namespace_options.map(Into::into),
        selinux_options: s.selinux_options.map(Into::into),
        run_as_user: s.run_as_user.map(Into::into),
        run_as_group: s.run_as_group.map(Into::into),
        run_as_username: s.run_as_username,
        readonly_rootfs: s.readonly_rootfs,
        supplemental_groups: s.supplemental_groups,
        supplemental_groups_policy: s.supplemental_groups_policy,
        no_new_privs: s.no_new_privs,
        masked_paths: s.masked_paths,
        readonly_paths: s.readonly_paths,
        seccomp: s.seccomp.map(Into::into),
        apparmor: s.apparmor.map(Into::into),
        apparmor_profile: s.apparmor_profile,
        seccomp_profile_path: s.seccomp_profile_path,
    }
}
