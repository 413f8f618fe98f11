//! Builds the OCI runtime spec for one CRI container, as containerd's CRI plugin does:
//! defaults, then the image config, then the CRI container config on top.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use limpet_protos::cri::v1::{ContainerConfig, LinuxContainerSecurityContext, NamespaceOption};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilities, LinuxCapabilitiesBuilder, ProcessBuilder,
    RootBuilder, Spec, UserBuilder,
};

use super::defaults::{self, DEFAULT_PATH_ENV};
use super::devices::{cri_devices, host_devices};
use super::host::HostFeatures;
use super::lsm;
use super::mounts::{container_mounts, sandbox_file_mounts, SandboxFiles};
use super::namespaces::{container_namespaces, has_new_uts, Modes, SandboxNamespaces};
use super::resources::{container_resources, device_cgroup};
use super::seccomp::seccomp_for;
use super::user::{resolve_user, ResolvedUser};
use super::SpecError;
use crate::images::manifest::ContainerConfig as ImageConfig;

pub use super::mounts::bind_mount;
pub use super::resources::oom_score_adj;

/// The OCI spec version written into every spec.
pub const SPEC_VERSION: &str = "1.0.2-dev";

/// Everything a container's spec is made from.
#[derive(Debug, Clone, Copy)]
pub struct SpecInput<'a> {
    pub container: &'a ContainerConfig,
    /// The image config's `config` object (Env, Entrypoint, Cmd, WorkingDir, User).
    pub image: &'a ImageConfig,
    /// The rootfs on the host, read for /etc/passwd and /etc/group.
    pub rootfs: &'a Path,
    /// The pod's hostname, for `HOSTNAME` (and the hostname of a UTS namespace of its own).
    pub hostname: &'a str,
    pub cgroups_path: Option<&'a str>,
    pub namespaces: &'a SandboxNamespaces,
    /// The pod's namespace options: its network and IPC modes are the container's too.
    /// `None` takes them from the container's own options.
    pub pod_namespaces: Option<&'a NamespaceOption>,
    /// The pod's hostname, hosts, resolv.conf and /dev/shm, bound into the container
    /// unless its own mounts cover those paths.
    pub sandbox_files: &'a SandboxFiles,
    /// Whether the pod sandbox is privileged: only then may its containers be.
    pub sandbox_privileged: bool,
    /// Spec annotations (see [`super::annotations::container_annotations`]).
    pub annotations: &'a HashMap<String, String>,
    /// With `restrict_oom_score_adj`, the daemon's own score: a container may not go lower.
    pub min_oom_score_adj: Option<i64>,
    /// Host features: [`HostFeatures::current`] outside tests.
    pub host: &'a HostFeatures,
}

/// Builds the spec; its root is `rootfs` relative to the bundle.
pub fn build_spec(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let c = input.container;
    let linux = c.linux.as_ref();
    let sc = linux.and_then(|l| l.security_context.as_ref());
    let res = linux.and_then(|l| l.resources.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    if privileged && !input.sandbox_privileged {
        return Err(SpecError::PrivilegedNotAllowed);
    }
    let own = Modes::of(sc.and_then(|s| s.namespace_options.as_ref()))?;
    // Without the pod's options (a lone container), the container's own modes stand.
    let pod = match input.pod_namespaces {
        Some(p) => Modes::of(Some(p))?,
        None => own,
    };
    let modes = Modes {
        network: pod.network,
        ipc: pod.ipc,
        pid: own.pid,
    };
    let readonly_rootfs = sc.is_some_and(|s| s.readonly_rootfs);

    let user = resolve_user(input.rootfs, sc, input.image.user.as_deref())?;
    let caps = capabilities(sc, &input.host.all_capabilities())?;
    let (seccomp_path, apparmor_name) = deprecated_profiles(sc);
    let seccomp = seccomp_for(
        sc.and_then(|s| s.seccomp.as_ref()),
        seccomp_path,
        privileged,
        &caps,
        input.host,
    )?;
    let apparmor = lsm::apparmor_profile(
        sc.and_then(|s| s.apparmor.as_ref()),
        apparmor_name,
        privileged,
        input.host,
    )?;
    let selinux = match privileged {
        true => None,
        false => lsm::selinux_label(sc.and_then(|s| s.selinux_options.as_ref()), input.host),
    };

    let mut process = ProcessBuilder::default()
        .terminal(c.tty)
        .user(process_user(user)?)
        .args(process_args(c, input.image)?)
        .env(merge_env(input.hostname, input.image, c))
        .cwd(working_dir(c, input.image))
        .capabilities(capability_sets(caps)?)
        .no_new_privileges(sc.is_some_and(|s| s.no_new_privs))
        .build()?;
    // no rlimits: the process inherits the shim's, as under containerd
    process.set_rlimits(None);
    process.set_oom_score_adj(oom_score_adj(res, input.min_oom_score_adj));
    process.set_apparmor_profile(apparmor);
    process.set_selinux_label(selinux);

    let namespaces = container_namespaces(
        modes,
        input.namespaces,
        input.host.cgroup_unified && !privileged,
    )?;
    let new_uts = has_new_uts(&namespaces);
    let extra = sandbox_file_mounts(input.sandbox_files, readonly_rootfs, modes.host_ipc());
    let (mounts, rootfs_propagation) = container_mounts(c, &extra, privileged)?;
    let (mut devices, device_rules) = cri_devices(&c.devices)?;
    if privileged {
        devices.extend(host_devices()?);
    }
    let (masked, readonly) = masked_and_readonly_paths(sc);

    let mut builder = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(container_resources(
            res,
            device_cgroup(privileged, device_rules)?,
            input.host,
        )?)
        .masked_paths(masked)
        .readonly_paths(readonly);
    if !devices.is_empty() {
        builder = builder.devices(devices);
    }
    if let Some(path) = input.cgroups_path {
        builder = builder.cgroups_path(PathBuf::from(path));
    }
    if let Some(p) = rootfs_propagation {
        builder = builder.rootfs_propagation(p);
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
            .readonly(readonly_rootfs)
            .build()?,
    ));
    // a joined or host UTS namespace keeps the hostname its owner set
    spec.set_hostname(new_uts.then(|| input.hostname.to_string()));
    spec.set_mounts(Some(mounts));
    spec.set_annotations((!input.annotations.is_empty()).then(|| input.annotations.clone()));
    spec.set_linux(Some(builder.build()?));
    Ok(spec)
}

/// The deprecated `seccomp_profile_path` and `apparmor_profile` strings, which clients
/// still send when they do not set the typed profiles.
#[allow(deprecated)]
fn deprecated_profiles(sc: Option<&LinuxContainerSecurityContext>) -> (&str, &str) {
    sc.map(|s| (s.seccomp_profile_path.as_str(), s.apparmor_profile.as_str()))
        .unwrap_or(("", ""))
}

pub(crate) fn process_user(user: ResolvedUser) -> Result<oci_spec::runtime::User, SpecError> {
    Ok(UserBuilder::default()
        .uid(user.uid)
        .gid(user.gid)
        .additional_gids(user.additional_gids)
        .build()?)
}

/// Bounding, effective and permitted sets; no inheritable or ambient ones, as containerd.
pub(crate) fn capability_sets(caps: HashSet<Capability>) -> Result<LinuxCapabilities, SpecError> {
    let mut sets = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    // the builder fills unset sets with the crate's defaults
    sets.set_inheritable(None);
    sets.set_ambient(None);
    Ok(sets)
}

/// The security context's lists, the defaults when it gives none; nothing when privileged.
fn masked_and_readonly_paths(
    sc: Option<&LinuxContainerSecurityContext>,
) -> (Vec<String>, Vec<String>) {
    if sc.is_some_and(|s| s.privileged) {
        return (Vec::new(), Vec::new());
    }
    let or_default = |v: Vec<String>, d: fn() -> Vec<String>| if v.is_empty() { d() } else { v };
    (
        or_default(
            sc.map(|s| s.masked_paths.clone()).unwrap_or_default(),
            defaults::default_masked_paths,
        ),
        or_default(
            sc.map(|s| s.readonly_paths.clone()).unwrap_or_default(),
            defaults::default_readonly_paths,
        ),
    )
}

/// CRI `command` replaces the entrypoint and drops the image's Cmd; CRI `args` replace Cmd.
pub fn process_args(c: &ContainerConfig, image: &ImageConfig) -> Result<Vec<String>, SpecError> {
    let (command, args) = if c.command.is_empty() {
        let args = if c.args.is_empty() {
            image.cmd.clone().unwrap_or_default()
        } else {
            c.args.clone()
        };
        (image.entrypoint.clone().unwrap_or_default(), args)
    } else {
        (c.command.clone(), c.args.clone())
    };
    let all: Vec<String> = command.into_iter().chain(args).collect();
    if all.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(all)
}

/// Default PATH, HOSTNAME, then the image's Env, then the CRI envs; a later value for a key
/// replaces the earlier one in place.
pub fn merge_env(hostname: &str, image: &ImageConfig, c: &ContainerConfig) -> Vec<String> {
    let mut env: Vec<String> = vec![DEFAULT_PATH_ENV.to_string()];
    let later = std::iter::once(format!("HOSTNAME={hostname}"))
        .chain(image.env.clone().unwrap_or_default())
        .chain(c.envs.iter().map(|kv| format!("{}={}", kv.key, kv.value)));
    for entry in later {
        let key = entry.split('=').next().unwrap_or("").to_string();
        match env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(key.as_str()))
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }
    env
}

/// CRI working_dir, else the image's WorkingDir, else `/`.
pub fn working_dir(c: &ContainerConfig, image: &ImageConfig) -> PathBuf {
    if !c.working_dir.is_empty() {
        return PathBuf::from(&c.working_dir);
    }
    match image.working_dir.as_deref() {
        Some(w) if !w.is_empty() => PathBuf::from(w),
        _ => PathBuf::from("/"),
    }
}

/// The default set, or `all` for privileged; then CRI `ALL` add/drop, then single adds,
/// drops. `all` is what the daemon holds ([`HostFeatures::all_capabilities`]).
pub fn capabilities(
    sc: Option<&LinuxContainerSecurityContext>,
    all: &HashSet<Capability>,
) -> Result<HashSet<Capability>, SpecError> {
    if sc.is_some_and(|s| s.privileged) {
        return Ok(all.clone());
    }
    let mut caps = defaults::default_capabilities();
    let Some(c) = sc.and_then(|s| s.capabilities.as_ref()) else {
        return Ok(caps);
    };
    let is_all = |n: &String| n.eq_ignore_ascii_case("ALL");
    if c.add_capabilities.iter().any(is_all) {
        caps = all.clone();
    }
    if c.drop_capabilities.iter().any(is_all) {
        caps.clear();
    }
    for name in c.add_capabilities.iter().filter(|n| !is_all(n)) {
        caps.insert(defaults::parse_capability(name)?);
    }
    for name in c.drop_capabilities.iter().filter(|n| !is_all(n)) {
        caps.remove(&defaults::parse_capability(name)?);
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use limpet_protos::cri::v1::{
        security_profile::ProfileType, Capability as CriCaps, Device, KeyValue,
        LinuxContainerConfig, LinuxContainerResources, Mount as CriMount, MountPropagation,
        NamespaceMode, NamespaceOption, SecurityProfile,
    };
    use oci_spec::runtime::LinuxSeccompAction;
    use serde_json::json;

    fn image() -> ImageConfig {
        ImageConfig {
            env: Some(vec![
                "PATH=/img/bin".into(),
                "A=image".into(),
                "B=image".into(),
            ]),
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["cmd1".into(), "cmd2".into()]),
            working_dir: Some("/work".into()),
            ..Default::default()
        }
    }

    fn cfg() -> ContainerConfig {
        ContainerConfig::default()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn with_sc(sc: LinuxContainerSecurityContext) -> ContainerConfig {
        ContainerConfig {
            linux: Some(LinuxContainerConfig {
                security_context: Some(sc),
                resources: None,
            }),
            ..cfg()
        }
    }

    fn seccomp_host() -> HostFeatures {
        HostFeatures {
            seccomp: true,
            kernel: (6, 1),
            ..Default::default()
        }
    }

    struct Case<'a> {
        ns: SandboxNamespaces,
        files: SandboxFiles,
        sandbox_privileged: bool,
        host: HostFeatures,
        annotations: HashMap<String, String>,
        container: &'a ContainerConfig,
    }

    impl<'a> Case<'a> {
        fn new(container: &'a ContainerConfig) -> Self {
            Case {
                ns: SandboxNamespaces::default(),
                files: SandboxFiles::default(),
                sandbox_privileged: false,
                host: seccomp_host(),
                annotations: HashMap::new(),
                container,
            }
        }

        fn build(&self) -> Result<Spec, SpecError> {
            let rootfs = tempfile::tempdir().unwrap();
            build_spec(&SpecInput {
                container: self.container,
                image: &image(),
                rootfs: rootfs.path(),
                hostname: "pod-a",
                cgroups_path: Some("/limpet/pod-a/ctr"),
                namespaces: &self.ns,
                pod_namespaces: None,
                sandbox_files: &self.files,
                sandbox_privileged: self.sandbox_privileged,
                annotations: &self.annotations,
                min_oom_score_adj: None,
                host: &self.host,
            })
        }

        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self.build().unwrap()).unwrap()
        }
    }

    #[test]
    fn args_follow_cri_rules() {
        let img = image();
        assert_eq!(
            process_args(&cfg(), &img).unwrap(),
            strings(&["/entry", "cmd1", "cmd2"])
        );
        let c = ContainerConfig {
            args: strings(&["x"]),
            ..cfg()
        };
        assert_eq!(process_args(&c, &img).unwrap(), strings(&["/entry", "x"]));
        let c = ContainerConfig {
            command: strings(&["/bin/sh"]),
            ..cfg()
        };
        assert_eq!(process_args(&c, &img).unwrap(), strings(&["/bin/sh"]));
        let c = ContainerConfig {
            command: strings(&["/bin/sh"]),
            args: strings(&["-c", "id"]),
            ..cfg()
        };
        assert_eq!(
            process_args(&c, &img).unwrap(),
            strings(&["/bin/sh", "-c", "id"])
        );
        assert!(matches!(
            process_args(&cfg(), &ImageConfig::default()),
            Err(SpecError::NoCommand)
        ));
    }

    #[test]
    fn env_later_wins_in_place() {
        let c = ContainerConfig {
            envs: vec![
                KeyValue {
                    key: "B".into(),
                    value: "cri".into(),
                },
                KeyValue {
                    key: "C".into(),
                    value: "x=y".into(),
                },
            ],
            ..cfg()
        };
        assert_eq!(
            merge_env("pod-a", &image(), &c),
            strings(&[
                "PATH=/img/bin",
                "HOSTNAME=pod-a",
                "A=image",
                "B=cri",
                "C=x=y"
            ])
        );
        assert_eq!(
            merge_env("h", &ImageConfig::default(), &cfg()),
            strings(&[DEFAULT_PATH_ENV, "HOSTNAME=h"])
        );
    }

    #[test]
    fn workdir_cri_then_image_then_root() {
        let c = ContainerConfig {
            working_dir: "/cri".into(),
            ..cfg()
        };
        assert_eq!(working_dir(&c, &image()), PathBuf::from("/cri"));
        assert_eq!(working_dir(&cfg(), &image()), PathBuf::from("/work"));
        assert_eq!(
            working_dir(&cfg(), &ImageConfig::default()),
            PathBuf::from("/")
        );
    }

    #[test]
    fn capability_add_drop() {
        let caps = |add: &[&str], drop: &[&str]| {
            let sc = LinuxContainerSecurityContext {
                capabilities: Some(CriCaps {
                    add_capabilities: strings(add),
                    drop_capabilities: strings(drop),
                    ..Default::default()
                }),
                ..Default::default()
            };
            capabilities(Some(&sc), &defaults::all_capabilities())
        };
        let got = caps(&["SYS_ADMIN", "CAP_NET_ADMIN"], &["chown", "CAP_KILL"]).unwrap();
        let mut want = defaults::default_capabilities();
        want.extend([Capability::SysAdmin, Capability::NetAdmin]);
        want.remove(&Capability::Chown);
        want.remove(&Capability::Kill);
        assert_eq!(got, want);
        assert_eq!(
            caps(&["NET_RAW"], &["ALL"]).unwrap(),
            HashSet::from([Capability::NetRaw])
        );
        let mut all_but_chown = defaults::all_capabilities();
        all_but_chown.remove(&Capability::Chown);
        assert_eq!(caps(&["ALL"], &["CHOWN"]).unwrap(), all_but_chown);
        assert!(matches!(
            caps(&["BOGUS"], &[]),
            Err(SpecError::UnknownCapability(_))
        ));
        let privileged = LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        assert_eq!(
            capabilities(Some(&privileged), &defaults::all_capabilities()).unwrap(),
            defaults::all_capabilities()
        );
        // privileged and ALL mean what the daemon holds
        let held = HashSet::from([Capability::Chown, Capability::SysAdmin]);
        assert_eq!(capabilities(Some(&privileged), &held).unwrap(), held);
        let all = LinuxContainerSecurityContext {
            capabilities: Some(CriCaps {
                add_capabilities: strings(&["ALL"]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(capabilities(Some(&all), &held).unwrap(), held);
    }

    #[test]
    fn defaults_match_containerd() {
        let c = ContainerConfig { tty: true, ..cfg() };
        let mut case = Case::new(&c);
        case.ns = SandboxNamespaces {
            network: Some("/run/netns/a".into()),
            ipc: Some("/proc/1/ns/ipc".into()),
            uts: None,
            pid: Some("/proc/1/ns/pid".into()),
        };
        let spec = case.build().unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["ociVersion"], SPEC_VERSION);
        assert_eq!(v["root"], json!({"path": "rootfs", "readonly": false}));
        // a UTS namespace of its own gets the pod's hostname
        assert_eq!(v["hostname"], "pod-a");
        assert_eq!(v["process"]["terminal"], true);
        assert_eq!(v["process"]["cwd"], "/work");
        assert_eq!(
            v["process"]["user"],
            json!({"uid": 0, "gid": 0, "additionalGids": [0]})
        );
        assert!(v["process"].get("rlimits").is_none());
        assert!(v["process"].get("oomScoreAdj").is_none());
        assert!(v["process"].get("apparmorProfile").is_none());
        assert_eq!(v["process"]["noNewPrivileges"], false);
        assert!(v.get("annotations").is_none());
        let linux = &v["linux"];
        assert_eq!(linux["cgroupsPath"], "/limpet/pod-a/ctr");
        assert_eq!(
            linux["namespaces"],
            json!([
                {"type": "pid", "path": "/proc/1/ns/pid"},
                {"type": "ipc", "path": "/proc/1/ns/ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "network", "path": "/run/netns/a"},
            ])
        );
        assert_eq!(
            linux["maskedPaths"],
            json!(defaults::default_masked_paths())
        );
        assert_eq!(
            linux["readonlyPaths"],
            json!([
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger"
            ])
        );
        assert_eq!(
            linux["resources"]["devices"],
            json!([{"allow": false, "access": "rwm"}])
        );
        assert!(linux.get("devices").is_none());
        assert!(linux.get("rootfsPropagation").is_none());
        // no profile asked for: unconfined, as containerd
        assert!(linux.get("seccomp").is_none());
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        assert_eq!(
            caps.bounding().clone().unwrap(),
            defaults::default_capabilities()
        );
        assert_eq!(
            caps.effective().clone().unwrap(),
            defaults::default_capabilities()
        );
        assert_eq!(
            caps.permitted().clone().unwrap(),
            defaults::default_capabilities()
        );
        assert!(caps.inheritable().is_none());
        assert!(caps.ambient().is_none());
        let sys = &spec.mounts().as_ref().unwrap()[4];
        assert!(sys.options().as_ref().unwrap().contains(&"ro".to_string()));
    }

    #[test]
    fn joined_or_host_uts_gets_no_hostname() {
        let c = cfg();
        let mut case = Case::new(&c);
        case.ns.uts = Some("/proc/1/ns/uts".into());
        assert!(case.json().get("hostname").is_none());
        let c = with_sc(LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        let v = Case::new(&c).json();
        assert!(v.get("hostname").is_none());
        // HOSTNAME is still the pod's
        assert!(v["process"]["env"]
            .as_array()
            .unwrap()
            .contains(&json!("HOSTNAME=pod-a")));
    }

    #[test]
    fn namespace_modes_and_cgroupns() {
        let sc = LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                pid: NamespaceMode::Container as i32,
                ipc: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = with_sc(sc);
        let mut case = Case::new(&c);
        case.ns = SandboxNamespaces {
            network: Some("/run/netns/a".into()),
            pid: Some("/proc/1/ns/pid".into()),
            ..Default::default()
        };
        case.host.cgroup_unified = true;
        assert_eq!(
            case.json()["linux"]["namespaces"],
            json!([{"type": "pid"}, {"type": "mount"}, {"type": "cgroup"}])
        );
    }

    #[test]
    fn sandbox_files_are_bound_unless_mounted() {
        let c = with_sc(LinuxContainerSecurityContext {
            readonly_rootfs: true,
            ..Default::default()
        });
        let c = ContainerConfig {
            mounts: vec![CriMount {
                container_path: "/etc/resolv.conf".into(),
                host_path: "/my/resolv.conf".into(),
                readonly: false,
                ..Default::default()
            }],
            ..c
        };
        let mut case = Case::new(&c);
        case.files = SandboxFiles {
            hostname: Some("/pod/hostname".into()),
            hosts: Some("/pod/hosts".into()),
            resolv: Some("/pod/resolv.conf".into()),
            shm: Some("/pod/shm".into()),
        };
        let spec = case.build().unwrap();
        let binds: Vec<(String, String, Vec<String>)> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|m| m.typ().as_deref() == Some("bind"))
            .map(|m| {
                (
                    m.destination().display().to_string(),
                    m.source().as_ref().unwrap().display().to_string(),
                    m.options().clone().unwrap(),
                )
            })
            .collect();
        let b = |d: &str, s: &str, mode: &str| {
            (
                d.to_string(),
                s.to_string(),
                strings(&["rbind", "rprivate", mode]),
            )
        };
        assert_eq!(
            binds,
            [
                b("/etc/resolv.conf", "/my/resolv.conf", "rw"),
                b("/etc/hostname", "/pod/hostname", "ro"),
                b("/etc/hosts", "/pod/hosts", "ro"),
                b("/dev/shm", "/pod/shm", "rw"),
            ]
        );
        // the sandbox's /dev/shm replaces the default tmpfs
        let shm: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|m| m.destination() == Path::new("/dev/shm"))
            .collect();
        assert_eq!(shm.len(), 1);

        // host IPC: the host's /dev/shm
        let c = with_sc(LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                ipc: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut case = Case::new(&c);
        case.files.shm = Some("/pod/shm".into());
        let spec = case.build().unwrap();
        let shm = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/dev/shm"))
            .unwrap()
            .clone();
        assert_eq!(shm.source().as_deref(), Some(Path::new("/dev/shm")));
    }

    #[test]
    fn security_context_paths_and_privileged() {
        let sc = LinuxContainerSecurityContext {
            readonly_rootfs: true,
            no_new_privs: true,
            masked_paths: strings(&["/proc/x"]),
            ..Default::default()
        };
        let c = with_sc(sc);
        let v = Case::new(&c).json();
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["linux"]["maskedPaths"], json!(["/proc/x"]));
        assert_eq!(v["linux"]["readonlyPaths"].as_array().unwrap().len(), 5);

        let sc = LinuxContainerSecurityContext {
            privileged: true,
            seccomp: Some(SecurityProfile {
                profile_type: ProfileType::RuntimeDefault as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = with_sc(sc);
        // a privileged container needs a privileged sandbox
        assert!(matches!(
            Case::new(&c).build(),
            Err(SpecError::PrivilegedNotAllowed)
        ));
        let mut case = Case::new(&c);
        case.sandbox_privileged = true;
        let spec = case.build().unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["linux"]["maskedPaths"], json!([]));
        assert_eq!(v["linux"]["readonlyPaths"], json!([]));
        assert!(v["linux"].get("seccomp").is_none());
        assert_eq!(
            v["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
        // every host device
        let devices = v["linux"]["devices"].as_array().unwrap();
        assert!(devices.iter().any(|d| d["path"] == "/dev/null"));
        let sys = &spec.mounts().as_ref().unwrap()[4];
        assert!(sys.options().as_ref().unwrap().contains(&"rw".to_string()));
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        assert_eq!(
            caps.bounding().clone().unwrap(),
            defaults::all_capabilities()
        );
    }

    #[test]
    fn devices_and_their_cgroup_rules() {
        let c = ContainerConfig {
            devices: vec![Device {
                container_path: "/dev/mydev".into(),
                host_path: "/dev/null".into(),
                permissions: "rwm".into(),
            }],
            ..cfg()
        };
        let v = Case::new(&c).json();
        assert_eq!(
            v["linux"]["devices"],
            json!([{"path": "/dev/mydev", "type": "c", "major": 1, "minor": 3,
                    "fileMode": 0o666, "uid": 0, "gid": 0}])
        );
        assert_eq!(
            v["linux"]["resources"]["devices"],
            json!([
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            ])
        );
    }

    #[test]
    fn seccomp_profiles() {
        let profile = |t: ProfileType, r: &str| {
            with_sc(LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile {
                    profile_type: t as i32,
                    localhost_ref: r.into(),
                }),
                ..Default::default()
            })
        };
        let c = profile(ProfileType::RuntimeDefault, "");
        let spec = Case::new(&c).build().unwrap();
        let s = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert!(
            Case::new(&profile(ProfileType::Unconfined, "")).json()["linux"]
                .get("seccomp")
                .is_none()
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.json");
        std::fs::write(
            &file,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let c = profile(ProfileType::Localhost, file.to_str().unwrap());
        let v = Case::new(&c).json();
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(
            v["linux"]["seccomp"]["syscalls"][0]["names"],
            json!(["mkdir"])
        );

        let c = profile(ProfileType::Localhost, "/nonexistent/p.json");
        let err = Case::new(&c).build().unwrap_err();
        assert!(matches!(err, SpecError::SeccompProfile { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/p.json"), "{err}");

        // the deprecated string form
        #[allow(deprecated)]
        let c = with_sc(LinuxContainerSecurityContext {
            seccomp_profile_path: "runtime/default".into(),
            ..Default::default()
        });
        assert!(Case::new(&c).json()["linux"].get("seccomp").is_some());
        // no seccomp in the kernel: a profile cannot be honoured
        let c = profile(ProfileType::RuntimeDefault, "");
        let mut case = Case::new(&c);
        case.host.seccomp = false;
        assert!(matches!(case.build(), Err(SpecError::SecurityProfile(_))));
    }

    #[test]
    fn resources_oom_and_annotations() {
        let r = LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: -500,
            ..Default::default()
        };
        let c = ContainerConfig {
            linux: Some(LinuxContainerConfig {
                resources: Some(r),
                security_context: None,
            }),
            ..cfg()
        };
        let mut case = Case::new(&c);
        case.host.swap_accounting = true;
        case.annotations = HashMap::from([("k".to_string(), "v".to_string())]);
        let v = case.json();
        assert_eq!(v["linux"]["resources"]["cpu"], json!({"shares": 512}));
        assert_eq!(
            v["linux"]["resources"]["memory"],
            json!({"limit": 67108864, "swap": 67108864})
        );
        assert_eq!(v["process"]["oomScoreAdj"], -500);
        assert_eq!(v["annotations"], json!({"k": "v"}));
    }

    #[test]
    fn bidirectional_mounts_share_the_rootfs() {
        let c = ContainerConfig {
            mounts: vec![CriMount {
                container_path: "/shared".into(),
                host_path: "/tmp".into(),
                propagation: MountPropagation::PropagationBidirectional as i32,
                ..Default::default()
            }],
            ..cfg()
        };
        assert_eq!(
            Case::new(&c).json()["linux"]["rootfsPropagation"],
            "rshared"
        );
    }
}
