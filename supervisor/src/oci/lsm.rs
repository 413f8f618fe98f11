//! Linux security modules: the AppArmor profile and SELinux label of a process. A host
//! without the module ignores what a pod asks for (with a warning): there is nothing to
//! confine it with.

use limpet_protos::cri::v1::{security_profile::ProfileType, SeLinuxOption, SecurityProfile};

use super::host::HostFeatures;
use super::seccomp::profile_from_path;
use super::SpecError;

const APPARMOR_PROFILES: &str = "/sys/kernel/security/apparmor/profiles";

/// `process.apparmorProfile`: the `apparmor` field, else the deprecated `apparmor_profile`
/// string. Only Localhost profiles are applied: limpetd loads no default profile of its own.
pub fn apparmor_profile(
    profile: Option<&SecurityProfile>,
    deprecated: &str,
    privileged: bool,
    host: &HostFeatures,
) -> Result<Option<String>, SpecError> {
    let requested = match profile {
        Some(p) => Some(p.clone()),
        None => profile_from_path(deprecated).map_err(|_| {
            SpecError::SecurityProfile(format!("invalid apparmor profile {deprecated:?}"))
        })?,
    };
    let Some(p) = requested else {
        return Ok(None);
    };
    let typ = ProfileType::try_from(p.profile_type).map_err(|_| {
        SpecError::SecurityProfile(format!("unknown apparmor profile type {}", p.profile_type))
    })?;
    if typ != ProfileType::Localhost && !p.localhost_ref.is_empty() {
        return Err(SpecError::SecurityProfile(
            "apparmor localhost_ref may only be set with profile type Localhost".into(),
        ));
    }
    if typ == ProfileType::Unconfined {
        return Ok(None);
    }
    if !host.apparmor {
        tracing::warn!(
            profile = ?typ,
            "AppArmor is not enabled on this host: running without an AppArmor profile"
        );
        return Ok(None);
    }
    match typ {
        ProfileType::Localhost => {
            let name = p
                .localhost_ref
                .strip_prefix("localhost/")
                .unwrap_or(&p.localhost_ref);
            let loaded =
                std::fs::read_to_string(APPARMOR_PROFILES).map_err(|source| SpecError::Io {
                    path: APPARMOR_PROFILES.into(),
                    source,
                })?;
            if !profile_loaded(&loaded, name) {
                return Err(SpecError::SecurityProfile(format!(
                    "apparmor profile {name:?} is not loaded"
                )));
            }
            Ok(Some(name.to_string()))
        }
        _ => {
            if !privileged {
                tracing::warn!("limpetd has no default AppArmor profile: running unconfined");
            }
            Ok(None)
        }
    }
}

/// Whether the kernel's profile list (`<name> (<mode>)` per line) has `name`.
fn profile_loaded(list: &str, name: &str) -> bool {
    !name.is_empty()
        && list
            .lines()
            .any(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(" (")))
}

/// `process.selinuxLabel` from the CRI options: applied when SELinux is enabled and the
/// label is complete (`user:role:type:level`).
pub fn selinux_label(opts: Option<&SeLinuxOption>, host: &HostFeatures) -> Option<String> {
    let o = opts?;
    let fields = [&o.user, &o.role, &o.r#type, &o.level];
    if fields.iter().all(|f| f.is_empty()) {
        return None;
    }
    if !host.selinux {
        tracing::warn!("SELinux is not enabled on this host: ignoring the SELinux options");
        return None;
    }
    if fields.iter().any(|f| f.is_empty()) {
        tracing::warn!(
            ?o,
            "partial SELinux options are not supported: using the default label"
        );
        return None;
    }
    Some(format!("{}:{}:{}:{}", o.user, o.role, o.r#type, o.level))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(t: ProfileType, r: &str) -> SecurityProfile {
        SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        }
    }

    #[test]
    fn without_apparmor_requests_are_ignored() {
        let host = HostFeatures::default();
        for p in [
            profile(ProfileType::RuntimeDefault, ""),
            profile(ProfileType::Localhost, "my-profile"),
            profile(ProfileType::Unconfined, ""),
        ] {
            assert_eq!(apparmor_profile(Some(&p), "", false, &host).unwrap(), None);
        }
        assert_eq!(
            apparmor_profile(None, "localhost/x", false, &host).unwrap(),
            None
        );
        assert!(apparmor_profile(None, "bogus", false, &host).is_err());
        assert!(apparmor_profile(
            Some(&profile(ProfileType::RuntimeDefault, "x")),
            "",
            false,
            &host
        )
        .is_err());
    }

    #[test]
    fn loaded_profiles_are_matched_by_name() {
        let list = "docker-default (enforce)\nmy-profile (complain)\nmy (enforce)\n";
        assert!(profile_loaded(list, "my-profile"));
        assert!(profile_loaded(list, "my"));
        assert!(!profile_loaded(list, "my-prof"));
        assert!(!profile_loaded(list, ""));
    }

    #[test]
    fn selinux_label_needs_selinux_and_all_fields() {
        let full = SeLinuxOption {
            user: "system_u".into(),
            role: "system_r".into(),
            r#type: "container_t".into(),
            level: "s0:c1,c2".into(),
        };
        let on = HostFeatures {
            selinux: true,
            ..Default::default()
        };
        assert_eq!(
            selinux_label(Some(&full), &on).as_deref(),
            Some("system_u:system_r:container_t:s0:c1,c2")
        );
        assert_eq!(selinux_label(Some(&full), &HostFeatures::default()), None);
        let partial = SeLinuxOption {
            level: "s0".into(),
            ..Default::default()
        };
        assert_eq!(selinux_label(Some(&partial), &on), None);
        assert_eq!(selinux_label(None, &on), None);
    }
}
