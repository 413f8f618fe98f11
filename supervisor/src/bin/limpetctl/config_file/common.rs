//! Pieces both config files share: enums by number or name, nullable collections, and the
//! messages that appear in pod and container configs alike (namespaces, security profiles,
//! resources, SELinux, id values).

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use limpet_protos::cri::v1 as cri;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A CRI enum as config files write it: its number or its name (any case).
pub trait CriEnum {
    const WHAT: &'static str;
    /// (name, value) of every variant.
    const VARIANTS: &'static [(&'static str, i32)];
}

macro_rules! cri_enum {
    ($ty:ident, $what:literal, [$($name:literal => $variant:expr),+ $(,)?]) => {
        pub struct $ty;
        impl CriEnum for $ty {
            const WHAT: &'static str = $what;
            const VARIANTS: &'static [(&'static str, i32)] = &[$(($name, $variant as i32)),+];
        }
    };
}

cri_enum!(Protocol, "protocol", [
    "TCP" => cri::Protocol::Tcp,
    "UDP" => cri::Protocol::Udp,
    "SCTP" => cri::Protocol::Sctp,
]);
cri_enum!(Propagation, "mount propagation", [
    "PROPAGATION_PRIVATE" => cri::MountPropagation::PropagationPrivate,
    "PROPAGATION_HOST_TO_CONTAINER" => cri::MountPropagation::PropagationHostToContainer,
    "PROPAGATION_BIDIRECTIONAL" => cri::MountPropagation::PropagationBidirectional,
]);
cri_enum!(NamespaceMode, "namespace mode", [
    "POD" => cri::NamespaceMode::Pod,
    "CONTAINER" => cri::NamespaceMode::Container,
    "NODE" => cri::NamespaceMode::Node,
    "TARGET" => cri::NamespaceMode::Target,
]);
cri_enum!(ProfileType, "security profile type", [
    "RuntimeDefault" => cri::security_profile::ProfileType::RuntimeDefault,
    "Unconfined" => cri::security_profile::ProfileType::Unconfined,
    "Localhost" => cri::security_profile::ProfileType::Localhost,
]);
cri_enum!(GroupsPolicy, "supplemental groups policy", [
    "Merge" => cri::SupplementalGroupsPolicy::Merge,
    "Strict" => cri::SupplementalGroupsPolicy::Strict,
]);

struct EnumVisitor<E>(PhantomData<E>);

impl<E: CriEnum> EnumVisitor<E> {
    fn names() -> String {
        let names: Vec<String> = E::VARIANTS
            .iter()
            .map(|(n, v)| format!("{n} ({v})"))
            .collect();
        names.join(", ")
    }
}

impl<E: CriEnum> Visitor<'_> for EnumVisitor<E> {
    type Value = i32;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a {}: one of {}", E::WHAT, Self::names())
    }

    fn visit_i64<Er: de::Error>(self, n: i64) -> Result<i32, Er> {
        match E::VARIANTS.iter().find(|(_, v)| i64::from(*v) == n) {
            Some((_, v)) => Ok(*v),
            None => Err(Er::custom(format!(
                "{n} is not a {}: use one of {}",
                E::WHAT,
                Self::names()
            ))),
        }
    }

    fn visit_u64<Er: de::Error>(self, n: u64) -> Result<i32, Er> {
        self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
    }

    fn visit_str<Er: de::Error>(self, s: &str) -> Result<i32, Er> {
        match E::VARIANTS.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
            Some((_, v)) => Ok(*v),
            None => Err(Er::custom(format!(
                "{s:?} is not a {}: use one of {}",
                E::WHAT,
                Self::names()
            ))),
        }
    }
}

/// `deserialize_with` for an enum field, e.g. `"enum_field::<NamespaceMode, _>"`.
pub fn enum_field<'de, E: CriEnum, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    d.deserialize_any(EnumVisitor::<E>(PhantomData))
}

/// `deserialize_with` for a list or map that may be written as null (`labels:` with nothing
/// after it in YAML), which Go's decoder takes as empty.
pub fn nullable<'de, T: Deserialize<'de> + Default, D: Deserializer<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

pub type Map = HashMap<String, String>;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Int64Value {
    pub value: i64,
}

impl From<Int64Value> for cri::Int64Value {
    fn from(v: Int64Value) -> Self {
        cri::Int64Value { value: v.value }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdMapping {
    pub host_id: u32,
    pub container_id: u32,
    pub length: u32,
}

impl From<IdMapping> for cri::IdMapping {
    fn from(m: IdMapping) -> Self {
        cri::IdMapping {
            host_id: m.host_id,
            container_id: m.container_id,
            length: m.length,
        }
    }
}

/// Converts every element of a list.
pub fn convert<A, B: From<A>>(v: Vec<A>) -> Vec<B> {
    v.into_iter().map(B::from).collect()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserNamespace {
    #[serde(deserialize_with = "enum_field::<NamespaceMode, _>")]
    pub mode: i32,
    #[serde(deserialize_with = "nullable")]
    pub uids: Vec<IdMapping>,
    #[serde(deserialize_with = "nullable")]
    pub gids: Vec<IdMapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceOption {
    #[serde(deserialize_with = "enum_field::<NamespaceMode, _>")]
    pub network: i32,
    #[serde(deserialize_with = "enum_field::<NamespaceMode, _>")]
    pub pid: i32,
    #[serde(deserialize_with = "enum_field::<NamespaceMode, _>")]
    pub ipc: i32,
    pub target_id: String,
    pub userns_options: Option<UserNamespace>,
}

impl From<NamespaceOption> for cri::NamespaceOption {
    fn from(n: NamespaceOption) -> Self {
        cri::NamespaceOption {
            network: n.network,
            pid: n.pid,
            ipc: n.ipc,
            target_id: n.target_id,
            userns_options: n.userns_options.map(|u| cri::UserNamespace {
                mode: u.mode,
                uids: convert(u.uids),
                gids: convert(u.gids),
            }),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeLinuxOption {
    pub user: String,
    pub role: String,
    pub r#type: String,
    pub level: String,
}

impl From<SeLinuxOption> for cri::SeLinuxOption {
    fn from(s: SeLinuxOption) -> Self {
        cri::SeLinuxOption {
            user: s.user,
            role: s.role,
            r#type: s.r#type,
            level: s.level,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityProfile {
    #[serde(deserialize_with = "enum_field::<ProfileType, _>")]
    pub profile_type: i32,
    pub localhost_ref: String,
}

impl From<SecurityProfile> for cri::SecurityProfile {
    fn from(p: SecurityProfile) -> Self {
        cri::SecurityProfile {
            profile_type: p.profile_type,
            localhost_ref: p.localhost_ref,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HugepageLimit {
    pub page_size: String,
    pub limit: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinuxContainerResources {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
    pub oom_score_adj: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    #[serde(deserialize_with = "nullable")]
    pub hugepage_limits: Vec<HugepageLimit>,
    #[serde(deserialize_with = "nullable")]
    pub unified: Map,
    pub memory_swap_limit_in_bytes: i64,
}

impl From<LinuxContainerResources> for cri::LinuxContainerResources {
    fn from(r: LinuxContainerResources) -> Self {
        cri::LinuxContainerResources {
            cpu_period: r.cpu_period,
            cpu_quota: r.cpu_quota,
            cpu_shares: r.cpu_shares,
            memory_limit_in_bytes: r.memory_limit_in_bytes,
            oom_score_adj: r.oom_score_adj,
            cpuset_cpus: r.cpuset_cpus,
            cpuset_mems: r.cpuset_mems,
            hugepage_limits: r
                .hugepage_limits
                .into_iter()
                .map(|h| cri::HugepageLimit {
                    page_size: h.page_size,
                    limit: h.limit,
                })
                .collect(),
            unified: r.unified,
            memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSpec {
    pub image: String,
    #[serde(deserialize_with = "nullable")]
    pub annotations: Map,
    pub user_specified_image: String,
    pub runtime_handler: String,
}

impl From<ImageSpec> for cri::ImageSpec {
    fn from(i: ImageSpec) -> Self {
        cri::ImageSpec {
            image: i.image,
            annotations: i.annotations,
            user_specified_image: i.user_specified_image,
            runtime_handler: i.runtime_handler,
        }
    }
}
