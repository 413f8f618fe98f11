//! The spec of a pod sandbox: the small process (pause) that holds the pod's namespaces
//! for its containers to join, built as containerd's CRI plugin builds it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use limpet_protos::cri::v1::{
    LinuxContainerSecurityContext, LinuxSandboxSecurityContext, PodSandboxConfig,
};
use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder,
    RootBuilder, Spec,
};

use super::defaults::{self, DEFAULT_PATH_ENV};
use super::host::HostFeatures;
use super::lsm;
use super::mounts::{SandboxFiles, DEV_SHM, RESOLV_CONF};
use super::namespaces::{has_new_uts, sandbox_namespaces, Modes};
use super::resources::{device_cgroup, restrict_oom_score_adj};
use super::seccomp::seccomp_for;
use super::spec::{capability_sets, process_user, SPEC_VERSION};
use super::sysctls::{self, HostNamespaces};
use super::user::resolve_user_in;
use super::SpecError;
use crate::images::manifest::ContainerConfig as ImageConfig;

/// CPU shares of the sandbox process: it only waits, and must not compete.
pub const SANDBOX_CPU_SHARES: u64 = 2;

/// OOM score of the sandbox: killing it kills the pod (kubernetes#47938).
pub const SANDBOX_OOM_SCORE_ADJ: i64 = -998;

/// Everything a pod sandbox's spec is made from.
#[derive(Debug, Clone, Copy)]
pub struct SandboxSpecInput<'a> {
    /// The RunPodSandbox config: hostname, namespace options, security context, sysctls.
    pub config: &'a PodSandboxConfig,
    /// The sandbox image's config (Entrypoint, Cmd, Env, WorkingDir, User); `None` for the
    /// built-in pause.
    pub image: Option<&'a ImageConfig>,
    /// The process to run, replacing the image's Entrypoint and Cmd: the built-in pause is
    /// `["/pause", "pause"]`. Empty: the image's.
    pub args: &'a [String],
    /// The sandbox rootfs on the host, read for user names; `None` (the built-in pause)
    /// resolves numeric users only.
    pub rootfs: Option<&'a Path>,
    /// The pod's network namespace. Ignored when the pod uses the host network (network
    /// mode NODE); `None` otherwise gives the pod a new, unconnected one.
    pub netns: Option<&'a Path>,
    pub cgroups_path: Option<&'a str>,
    /// The pod's /dev/shm and resolv.conf are bound in read-only; the other files are for
    /// the containers.
    pub files: &'a SandboxFiles,
    /// Mounts the caller adds (the built-in pause binary, host libraries). They replace a
    /// default mount at the same destination.
    pub extra_mounts: &'a [Mount],
    /// Spec annotations (see [`super::annotations::sandbox_annotations`]).
    pub annotations: &'a HashMap<String, String>,
    /// With `restrict_oom_score_adj`, the daemon's own score: the sandbox may not go lower.
    pub min_oom_score_adj: Option<i64>,
    /// Host features: [`HostFeatures::current`] outside tests.
    pub host: &'a HostFeatures,
}

/// Builds the sandbox's spec; its root is `rootfs` relative to the bundle, read-only.
pub fn build_sandbox_spec(input: &SandboxSpecInput<'_>) -> Result<Spec, SpecError> {
    let config = input.config;
    let linux = config.linux.as_ref();
    let sc = linux.and_then(|l| l.security_context.as_ref());
    let modes = Modes::of(sc.and_then(|s| s.namespace_options.as_ref()))?;
    let privileged = sc.is_some_and(|s| s.privileged);
    let image = input.image.cloned().unwrap_or_default();

    let user = resolve_user_in(
        input.rootfs,
        as_container_context(sc).as_ref(),
        image.user.as_deref(),
    )?;
    let caps = defaults::default_capabilities();
    let seccomp = seccomp_for(
        sc.and_then(|s| s.seccomp.as_ref()),
        deprecated_seccomp_path(sc),
        privileged,
        &caps,
        input.host,
    )?;
    // containerd applies no AppArmor profile to the sandbox either
    let selinux = match privileged {
        true => None,
        false => lsm::selinux_label(sc.and_then(|s| s.selinux_options.as_ref()), input.host),
    };

    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(process_user(user)?)
        .args(sandbox_args(input.args, &image)?)
        .env(sandbox_env(&image))
        .cwd(match image.working_dir.as_deref() {
            Some(w) if !w.is_empty() => PathBuf::from(w),
            _ => PathBuf::from("/"),
        })
        .capabilities(capability_sets(caps)?)
        .no_new_privileges(true)
        .build()?;
    process.set_rlimits(None);
    process.set_oom_score_adj(Some(restrict_oom_score_adj(
        SANDBOX_OOM_SCORE_ADJ,
        input.min_oom_score_adj,
    )));
    process.set_selinux_label(selinux);

    let namespaces = sandbox_namespaces(modes, input.netns)?;
    let new_uts = has_new_uts(&namespaces);
    let sysctls: HashMap<String, String> = linux
        .map(|l| l.sysctls.clone().into_iter().collect())
        .unwrap_or_default();
    sysctls::validate(
        &sysctls,
        HostNamespaces {
            network: modes.host_network(),
            ipc: modes.host_ipc(),
            uts: modes.host_network(),
        },
    )?;

    let mut builder = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(
            LinuxResourcesBuilder::default()
                .devices(device_cgroup(false, Vec::new())?)
                .cpu(
                    LinuxCpuBuilder::default()
                        .shares(SANDBOX_CPU_SHARES)
                        .build()?,
                )
                .build()?,
        )
        .masked_paths(defaults::default_masked_paths())
        .readonly_paths(defaults::default_readonly_paths());
    if !sysctls.is_empty() {
        builder = builder.sysctl(sysctls);
    }
    if let Some(path) = input.cgroups_path {
        builder = builder.cgroups_path(PathBuf::from(path));
    }
    if let Some(s) = seccomp {
        builder = builder.seccomp(s);
    }

    let mut spec = Spec::default();
    spec.set_version(SPEC_VERSION.to_string());
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(true)
            .build()?,
    ));
    spec.set_hostname((new_uts && !config.hostname.is_empty()).then(|| config.hostname.clone()));
    spec.set_mounts(Some(sandbox_mounts(input, modes.host_ipc())?));
    spec.set_annotations((!input.annotations.is_empty()).then(|| input.annotations.clone()));
    spec.set_linux(Some(builder.build()?));
    Ok(spec)
}

/// `args`, else the image's Entrypoint and Cmd.
fn sandbox_args(args: &[String], image: &ImageConfig) -> Result<Vec<String>, SpecError> {
    let all: Vec<String> = if args.is_empty() {
        image
            .entrypoint
            .iter()
            .flatten()
            .chain(image.cmd.iter().flatten())
            .cloned()
            .collect()
    } else {
        args.to_vec()
    };
    if all.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(all)
}

/// The image's Env, with the default PATH when it sets none.
fn sandbox_env(image: &ImageConfig) -> Vec<String> {
    let env = image.env.clone().unwrap_or_default();
    if env.iter().any(|e| e.starts_with("PATH=")) {
        return env;
    }
    std::iter::once(DEFAULT_PATH_ENV.to_string())
        .chain(env)
        .collect()
}

/// The sandbox's identity fields in the shape the user resolver reads.
fn as_container_context(
    sc: Option<&LinuxSandboxSecurityContext>,
) -> Option<LinuxContainerSecurityContext> {
    sc.map(|s| LinuxContainerSecurityContext {
        run_as_user: s.run_as_user,
        run_as_group: s.run_as_group,
        supplemental_groups: s.supplemental_groups.clone(),
        supplemental_groups_policy: s.supplemental_groups_policy,
        ..Default::default()
    })
}

/// The deprecated `seccomp_profile_path`, which clients still send.
#[allow(deprecated)]
fn deprecated_seccomp_path(sc: Option<&LinuxSandboxSecurityContext>) -> &str {
    sc.map(|s| s.seccomp_profile_path.as_str()).unwrap_or("")
}

/// Default kernel mounts (no cgroup fs: pause needs none), the pod's /dev/shm and
/// resolv.conf read-only, then the caller's.
fn sandbox_mounts(input: &SandboxSpecInput<'_>, host_ipc: bool) -> Result<Vec<Mount>, SpecError> {
    let shm = if host_ipc {
        Some(Path::new(DEV_SHM))
    } else {
        input.files.shm.as_deref()
    };
    let mut binds = Vec::new();
    for (dest, src) in [(DEV_SHM, shm), (RESOLV_CONF, input.files.resolv.as_deref())] {
        if let Some(src) = src {
            binds.push(
                MountBuilder::default()
                    .destination(dest)
                    .source(src)
                    .typ("bind")
                    .options(
                        ["rbind", "ro", "nosuid", "nodev", "noexec"]
                            .map(String::from)
                            .to_vec(),
                    )
                    .build()?,
            );
        }
    }
    binds.extend(input.extra_mounts.iter().cloned());
    let mut out: Vec<Mount> = defaults::default_mounts(false)?
        .into_iter()
        .filter(|m| m.destination() != Path::new("/sys/fs/cgroup"))
        .collect();
    // a later mount at the same destination replaces the earlier one
    for m in binds {
        out.retain(|o| o.destination() != m.destination());
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use limpet_protos::cri::v1::{
        security_profile::ProfileType, Int64Value, LinuxPodSandboxConfig, NamespaceMode,
        NamespaceOption, SecurityProfile,
    };
    use serde_json::json;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn pod(sc: LinuxSandboxSecurityContext, sysctls: &[(&str, &str)]) -> PodSandboxConfig {
        PodSandboxConfig {
            hostname: "web-0".into(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(sc),
                sysctls: sysctls
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn host_ns(network: bool, pid: bool, ipc: bool) -> LinuxSandboxSecurityContext {
        let m = |host| {
            if host {
                NamespaceMode::Node as i32
            } else {
                NamespaceMode::Pod as i32
            }
        };
        LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: m(network),
                pid: m(pid),
                ipc: m(ipc),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    struct Case {
        config: PodSandboxConfig,
        image: Option<ImageConfig>,
        args: Vec<String>,
        netns: Option<PathBuf>,
        files: SandboxFiles,
        extra: Vec<Mount>,
        min_oom: Option<i64>,
        host: HostFeatures,
    }

    impl Case {
        fn new(config: PodSandboxConfig) -> Case {
            Case {
                config,
                image: None,
                args: strings(&["/pause", "pause"]),
                netns: Some("/run/netns/pod".into()),
                files: SandboxFiles {
                    shm: Some("/run/pod/shm".into()),
                    resolv: Some("/run/pod/resolv.conf".into()),
                    ..Default::default()
                },
                extra: Vec::new(),
                min_oom: None,
                host: HostFeatures {
                    seccomp: true,
                    kernel: (6, 1),
                    ..Default::default()
                },
            }
        }

        fn build(&self) -> Result<Spec, SpecError> {
            build_sandbox_spec(&SandboxSpecInput {
                config: &self.config,
                image: self.image.as_ref(),
                args: &self.args,
                rootfs: None,
                netns: self.netns.as_deref(),
                cgroups_path: Some("/kubepods/pod1/sb1"),
                files: &self.files,
                extra_mounts: &self.extra,
                annotations: &HashMap::from([(
                    "io.kubernetes.cri.container-type".to_string(),
                    "sandbox".to_string(),
                )]),
                min_oom_score_adj: self.min_oom,
                host: &self.host,
            })
        }

        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self.build().unwrap()).unwrap()
        }
    }

    #[test]
    fn builtin_pause_defaults() {
        let v = Case::new(pod(Default::default(), &[])).json();
        assert_eq!(v["root"], json!({"path": "rootfs", "readonly": true}));
        assert_eq!(v["hostname"], "web-0");
        let p = &v["process"];
        assert_eq!(p["args"], json!(["/pause", "pause"]));
        assert_eq!(p["env"], json!([DEFAULT_PATH_ENV]));
        assert_eq!(p["cwd"], "/");
        assert_eq!(
            p["user"],
            json!({"uid": 0, "gid": 0, "additionalGids": [0]})
        );
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(p["oomScoreAdj"], -998);
        assert!(p.get("rlimits").is_none());
        assert_eq!(
            v["annotations"],
            json!({"io.kubernetes.cri.container-type": "sandbox"})
        );
        let l = &v["linux"];
        assert_eq!(l["cgroupsPath"], "/kubepods/pod1/sb1");
        assert_eq!(
            l["namespaces"],
            json!([
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                {"type": "network", "path": "/run/netns/pod"},
            ])
        );
        assert_eq!(
            l["resources"],
            json!({"devices": [{"allow": false, "access": "rwm"}], "cpu": {"shares": 2}})
        );
        assert_eq!(l["maskedPaths"], json!(defaults::default_masked_paths()));
        assert!(l.get("seccomp").is_none());
        assert!(l.get("sysctl").is_none());
        let mounts: Vec<(&str, &str)> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["destination"].as_str().unwrap(),
                    m["source"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            mounts,
            [
                ("/proc", "proc"),
                ("/dev", "tmpfs"),
                ("/dev/pts", "devpts"),
                ("/dev/mqueue", "mqueue"),
                ("/sys", "sysfs"),
                ("/dev/shm", "/run/pod/shm"),
                ("/etc/resolv.conf", "/run/pod/resolv.conf"),
            ]
        );
        assert_eq!(
            v["mounts"][5]["options"],
            json!(["rbind", "ro", "nosuid", "nodev", "noexec"])
        );
    }

    #[test]
    fn host_namespaces_and_extra_mounts() {
        let mut case = Case::new(pod(host_ns(true, true, true), &[]));
        case.extra = vec![MountBuilder::default()
            .destination("/pause")
            .source("/usr/bin/limpet-pause")
            .typ("bind")
            .options(strings(&["rbind", "ro"]))
            .build()
            .unwrap()];
        let v = case.json();
        assert_eq!(v["linux"]["namespaces"], json!([{"type": "mount"}]));
        // no UTS namespace of its own: the host's hostname stays
        assert!(v.get("hostname").is_none());
        let mounts = v["mounts"].as_array().unwrap();
        let shm = mounts
            .iter()
            .find(|m| m["destination"] == "/dev/shm")
            .unwrap();
        assert_eq!(shm["source"], "/dev/shm");
        assert_eq!(mounts.last().unwrap()["destination"], "/pause");
        // only the host network: new pid and ipc namespaces
        let v = Case::new(pod(host_ns(true, false, false), &[])).json();
        assert_eq!(
            v["linux"]["namespaces"],
            json!([{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}])
        );
        // no netns for a pod network: a new one
        let mut case = Case::new(pod(Default::default(), &[]));
        case.netns = None;
        assert_eq!(
            case.json()["linux"]["namespaces"][4],
            json!({"type": "network"})
        );
    }

    #[test]
    fn sysctls_only_in_own_namespaces() {
        let v = Case::new(pod(
            Default::default(),
            &[
                ("net.ipv4.ip_unprivileged_port_start", "0"),
                ("kernel.shmmax", "1"),
            ],
        ))
        .json();
        assert_eq!(
            v["linux"]["sysctl"],
            json!({"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shmmax": "1"})
        );
        let host_net = Case::new(pod(
            host_ns(true, false, false),
            &[("net.ipv4.ip_forward", "1")],
        ));
        assert!(matches!(host_net.build(), Err(SpecError::Sysctl { .. })));
        let host_ipc = Case::new(pod(host_ns(false, false, true), &[("kernel.shmmax", "1")]));
        assert!(matches!(host_ipc.build(), Err(SpecError::Sysctl { .. })));
    }

    #[test]
    fn image_process_user_and_security() {
        let sc = LinuxSandboxSecurityContext {
            run_as_user: Some(Int64Value { value: 65535 }),
            run_as_group: Some(Int64Value { value: 65534 }),
            supplemental_groups: vec![5],
            seccomp: Some(SecurityProfile {
                profile_type: ProfileType::RuntimeDefault as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut case = Case::new(pod(sc.clone(), &[]));
        case.args.clear();
        case.image = Some(ImageConfig {
            entrypoint: Some(strings(&["/pause"])),
            env: Some(strings(&["PATH=/bin", "X=1"])),
            working_dir: Some("/w".into()),
            ..Default::default()
        });
        case.min_oom = Some(-500);
        let v = case.json();
        let p = &v["process"];
        assert_eq!(p["args"], json!(["/pause"]));
        assert_eq!(p["env"], json!(["PATH=/bin", "X=1"]));
        assert_eq!(p["cwd"], "/w");
        assert_eq!(
            p["user"],
            json!({"uid": 65535, "gid": 65534, "additionalGids": [65534, 5]})
        );
        assert_eq!(p["oomScoreAdj"], -500);
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");

        // privileged: no seccomp
        let mut case = Case::new(pod(
            LinuxSandboxSecurityContext {
                privileged: true,
                ..sc
            },
            &[],
        ));
        case.args = Vec::new();
        assert!(matches!(case.build(), Err(SpecError::NoCommand)));
        case.args = strings(&["/pause"]);
        assert!(case.json()["linux"].get("seccomp").is_none());
    }
}
