//! Builds the OCI runtime spec for one CRI container, as containerd's CRI plugin does:
//! defaults, then the image config, then the CRI container config on top.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use limpet_protos::cri::v1::{
    ContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext, MountPropagation,
    NamespaceMode,
};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    UserBuilder,
};

use super::defaults::{self, DEFAULT_NOFILE, DEFAULT_PATH_ENV};
use super::user::resolve_user;
use super::SpecError;
use crate::images::manifest::ContainerConfig as ImageConfig;

/// Namespace files of the pod sandbox a container joins; `None` gives it a fresh one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxNamespaces {
    pub network: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// The sandbox's pid namespace, joined when the CRI pid mode is POD.
    pub pid: Option<PathBuf>,
}

/// Everything a container's spec is made from.
#[derive(Debug, Clone, Copy)]
pub struct SpecInput<'a> {
    pub container: &'a ContainerConfig,
    /// The image config's `config` object (Env, Entrypoint, Cmd, WorkingDir, User).
    pub image: &'a ImageConfig,
    /// The rootfs on the host, read for /etc/passwd and /etc/group.
    pub rootfs: &'a Path,
    pub hostname: &'a str,
    pub cgroups_path: Option<&'a str>,
    pub namespaces: &'a SandboxNamespaces,
    /// With `restrict_oom_score_adj`, the daemon's own score: a container may not go lower.
    pub min_oom_score_adj: Option<i64>,
}

/// Builds the spec; its root is `rootfs` relative to the bundle.
pub fn build_spec(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let c = input.container;
    let linux = c.linux.as_ref();
    let sc = linux.and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);

    let user = resolve_user(input.rootfs, sc, input.image.user.as_deref())?;
    let caps = capabilities(sc)?;
    let mut caps = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    // The builder fills unset sets with the crate's defaults; containerd leaves these empty.
    caps.set_inheritable(None);
    caps.set_ambient(None);
    let mut process = ProcessBuilder::default()
        .terminal(c.tty)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids)
                .build()?,
        )
        .args(process_args(c, input.image)?)
        .env(merge_env(input.hostname, input.image, c))
        .cwd(working_dir(c, input.image))
        .capabilities(caps)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(DEFAULT_NOFILE)
            .soft(DEFAULT_NOFILE)
            .build()?])
        .no_new_privileges(sc.is_some_and(|s| s.no_new_privs))
        .build()?;
    if let Some(adj) = oom_score_adj(
        linux.and_then(|l| l.resources.as_ref()),
        input.min_oom_score_adj,
    ) {
        process.set_oom_score_adj(Some(adj));
    }

    let mut builder = LinuxBuilder::default()
        .namespaces(namespaces(sc, input.namespaces)?)
        .resources(resources(
            linux.and_then(|l| l.resources.as_ref()),
            privileged,
        )?);
    if let Some(path) = input.cgroups_path {
        builder = builder.cgroups_path(PathBuf::from(path));
    }
    let (masked, readonly) = if privileged {
        (Vec::new(), Vec::new())
    } else {
        let masked = sc.map(|s| s.masked_paths.clone()).unwrap_or_default();
        let readonly = sc.map(|s| s.readonly_paths.clone()).unwrap_or_default();
        (
            if masked.is_empty() {
                defaults::default_masked_paths()
            } else {
                masked
            },
            if readonly.is_empty() {
                defaults::default_readonly_paths()
            } else {
                readonly
            },
        )
    };
    let linux_spec = builder
        .masked_paths(masked)
        .readonly_paths(readonly)
        .build()?;

    let mut spec = Spec::default();
    spec.set_version("1.0.2-dev".to_string());
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(sc.is_some_and(|s| s.readonly_rootfs))
            .build()?,
    ));
    spec.set_hostname(Some(input.hostname.to_string()));
    spec.set_mounts(Some(mounts(c, privileged)?));
    spec.set_annotations(None);
    spec.set_linux(Some(linux_spec));
    Ok(spec)
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

/// The default set, or all for privileged; then CRI `ALL` add/drop, then single adds, drops.
pub fn capabilities(
    sc: Option<&LinuxContainerSecurityContext>,
) -> Result<HashSet<Capability>, SpecError> {
    if sc.is_some_and(|s| s.privileged) {
        return Ok(defaults::all_capabilities());
    }
    let mut caps = defaults::default_capabilities();
    let Some(c) = sc.and_then(|s| s.capabilities.as_ref()) else {
        return Ok(caps);
    };
    let is_all = |n: &String| n.eq_ignore_ascii_case("ALL");
    if c.add_capabilities.iter().any(is_all) {
        caps = defaults::all_capabilities();
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

/// pid, ipc, uts, mount and network namespaces; NODE mode shares the host's, POD joins the
/// sandbox's when its path is given.
fn namespaces(
    sc: Option<&LinuxContainerSecurityContext>,
    sandbox: &SandboxNamespaces,
) -> Result<Vec<oci_spec::runtime::LinuxNamespace>, SpecError> {
    let opts = sc.and_then(|s| s.namespace_options.as_ref());
    let mode = |m: Option<i32>| {
        m.and_then(|m| NamespaceMode::try_from(m).ok())
            .unwrap_or(NamespaceMode::Pod)
    };
    let net = mode(opts.map(|o| o.network));
    let pid = mode(opts.map(|o| o.pid));
    let ipc = mode(opts.map(|o| o.ipc));
    let wanted: [(LinuxNamespaceType, NamespaceMode, Option<&PathBuf>); 5] = [
        (
            LinuxNamespaceType::Pid,
            pid,
            sandbox.pid.as_ref().filter(|_| pid == NamespaceMode::Pod),
        ),
        (LinuxNamespaceType::Ipc, ipc, sandbox.ipc.as_ref()),
        (
            LinuxNamespaceType::Uts,
            NamespaceMode::Pod,
            sandbox.uts.as_ref(),
        ),
        (LinuxNamespaceType::Mount, NamespaceMode::Container, None),
        (LinuxNamespaceType::Network, net, sandbox.network.as_ref()),
    ];
    let mut out = Vec::new();
    for (typ, mode, path) in wanted {
        if mode == NamespaceMode::Node {
            continue;
        }
        let mut b = LinuxNamespaceBuilder::default().typ(typ);
        if let Some(p) = path {
            b = b.path(p.clone());
        }
        out.push(b.build()?);
    }
    Ok(out)
}

/// Default kernel mounts, minus those a CRI mount replaces, then the CRI bind mounts.
fn mounts(c: &ContainerConfig, privileged: bool) -> Result<Vec<Mount>, SpecError> {
    let binds = c
        .mounts
        .iter()
        .map(bind_mount)
        .collect::<Result<Vec<_>, _>>()?;
    let dests: HashSet<PathBuf> = binds.iter().map(|m| m.destination().clone()).collect();
    let dev_replaced = dests.contains(Path::new("/dev"));
    let mut out: Vec<Mount> = defaults::default_mounts(privileged)?
        .into_iter()
        .filter(|m| {
            let d = m.destination();
            // a CRI /dev replaces every default mount under it
            let replaced = dests.contains(d) || (dev_replaced && d.starts_with("/dev"));
            !replaced
        })
        .collect();
    out.extend(binds);
    Ok(out)
}

/// A CRI mount as an OCI bind mount: `rbind`, the propagation, `ro`/`rw`.
pub fn bind_mount(m: &limpet_protos::cri::v1::Mount) -> Result<Mount, SpecError> {
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

/// The CRI score, raised to `min` when the daemon restricts it.
pub fn oom_score_adj(r: Option<&LinuxContainerResources>, min: Option<i64>) -> Option<i32> {
    let requested = r.map(|r| r.oom_score_adj).unwrap_or(0);
    let adj = match min {
        Some(min) => requested.max(min),
        None => requested,
    };
    let adj = adj.clamp(-1000, 1000) as i32;
    (adj != 0 || r.is_some()).then_some(adj)
}

/// Deny all devices (runc allows its default set), and the CRI cpu and memory limits.
fn resources(
    r: Option<&LinuxContainerResources>,
    privileged: bool,
) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let devices = LinuxDeviceCgroupBuilder::default()
        .allow(privileged)
        .access("rwm")
        .build()?;
    let mut b = LinuxResourcesBuilder::default().devices(vec![devices]);
    let Some(r) = r else {
        return Ok(b.build()?);
    };
    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if r.cpu_shares > 0 {
        cpu = cpu.shares(r.cpu_shares as u64);
        any_cpu = true;
    }
    if r.cpu_quota != 0 {
        cpu = cpu.quota(r.cpu_quota);
        any_cpu = true;
    }
    if r.cpu_period > 0 {
        cpu = cpu.period(r.cpu_period as u64);
        any_cpu = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
        any_cpu = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
        any_cpu = true;
    }
    if any_cpu {
        b = b.cpu(cpu.build()?);
    }
    if r.memory_limit_in_bytes > 0 {
        b = b.memory(
            LinuxMemoryBuilder::default()
                .limit(r.memory_limit_in_bytes)
                .build()?,
        );
    }
    Ok(b.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use limpet_protos::cri::v1::{
        Capability as CriCaps, KeyValue, LinuxContainerConfig, Mount as CriMount, NamespaceOption,
    };

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

    fn build(c: &ContainerConfig, ns: &SandboxNamespaces) -> Spec {
        let rootfs = tempfile::tempdir().unwrap();
        build_spec(&SpecInput {
            container: c,
            image: &image(),
            rootfs: rootfs.path(),
            hostname: "pod-a",
            cgroups_path: Some("/limpet/pod-a/ctr"),
            namespaces: ns,
            min_oom_score_adj: None,
        })
        .unwrap()
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
            capabilities(Some(&sc))
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
            capabilities(Some(&privileged)).unwrap(),
            defaults::all_capabilities()
        );
    }

    #[test]
    fn mounts_bind_and_replace_defaults() {
        let m = |path: &str, prop: MountPropagation, ro: bool| CriMount {
            container_path: path.into(),
            host_path: "/host/x".into(),
            readonly: ro,
            propagation: prop as i32,
            ..Default::default()
        };
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

        let c = ContainerConfig {
            mounts: vec![m("/dev/shm", MountPropagation::PropagationPrivate, false)],
            ..cfg()
        };
        let spec = build(&c, &SandboxNamespaces::default());
        let dests: Vec<_> = spec
            .mounts()
            .clone()
            .unwrap()
            .iter()
            .map(|m| m.destination().clone())
            .collect();
        let want: Vec<PathBuf> = [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/dev/shm",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(dests, want);
        assert_eq!(
            spec.mounts().as_ref().unwrap()[6].typ().as_deref(),
            Some("bind")
        );

        let c = ContainerConfig {
            mounts: vec![m("/dev", MountPropagation::PropagationPrivate, false)],
            ..cfg()
        };
        let spec = build(&c, &SandboxNamespaces::default());
        let dests: Vec<_> = spec
            .mounts()
            .clone()
            .unwrap()
            .iter()
            .map(|m| m.destination().clone())
            .collect();
        let want: Vec<PathBuf> = ["/proc", "/sys", "/sys/fs/cgroup", "/dev"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(dests, want);
    }

    #[test]
    fn defaults_match_containerd() {
        let ns = SandboxNamespaces {
            network: Some("/run/netns/a".into()),
            ipc: Some("/proc/1/ns/ipc".into()),
            uts: None,
            pid: Some("/proc/1/ns/pid".into()),
        };
        let spec = build(&ContainerConfig { tty: true, ..cfg() }, &ns);
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            v["root"],
            serde_json::json!({"path": "rootfs", "readonly": false})
        );
        assert_eq!(v["hostname"], "pod-a");
        assert_eq!(v["process"]["terminal"], true);
        assert_eq!(v["process"]["cwd"], "/work");
        assert_eq!(
            v["process"]["user"],
            serde_json::json!({"uid": 0, "gid": 0, "additionalGids": [0]})
        );
        assert_eq!(
            v["process"]["rlimits"],
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}])
        );
        assert_eq!(v["process"]["noNewPrivileges"], false);
        let linux = &v["linux"];
        assert_eq!(linux["cgroupsPath"], "/limpet/pod-a/ctr");
        assert_eq!(
            linux["namespaces"],
            serde_json::json!([
                {"type": "pid", "path": "/proc/1/ns/pid"},
                {"type": "ipc", "path": "/proc/1/ns/ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "network", "path": "/run/netns/a"},
            ])
        );
        assert_eq!(linux["maskedPaths"].as_array().unwrap().len(), 10);
        assert_eq!(
            linux["readonlyPaths"],
            serde_json::json!([
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger"
            ])
        );
        assert_eq!(
            linux["resources"]["devices"],
            serde_json::json!([{"allow": false, "access": "rwm"}])
        );
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
        let sys = &spec.mounts().as_ref().unwrap()[4];
        assert!(sys.options().as_ref().unwrap().contains(&"ro".to_string()));
    }

    #[test]
    fn namespace_modes() {
        let sc = LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                pid: NamespaceMode::Container as i32,
                ipc: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let ns = SandboxNamespaces {
            network: Some("/run/netns/a".into()),
            pid: Some("/proc/1/ns/pid".into()),
            ..Default::default()
        };
        let v = serde_json::to_value(build(&with_sc(sc), &ns)).unwrap();
        assert_eq!(
            v["linux"]["namespaces"],
            serde_json::json!([{"type": "pid"}, {"type": "uts"}, {"type": "mount"}])
        );
    }

    #[test]
    fn security_context_and_privileged() {
        let sc = LinuxContainerSecurityContext {
            readonly_rootfs: true,
            no_new_privs: true,
            masked_paths: strings(&["/proc/x"]),
            ..Default::default()
        };
        let v = serde_json::to_value(build(&with_sc(sc), &SandboxNamespaces::default())).unwrap();
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["linux"]["maskedPaths"], serde_json::json!(["/proc/x"]));
        assert_eq!(v["linux"]["readonlyPaths"].as_array().unwrap().len(), 5);

        let sc = LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        let spec = build(&with_sc(sc), &SandboxNamespaces::default());
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["linux"]["maskedPaths"], serde_json::json!([]));
        assert_eq!(v["linux"]["readonlyPaths"], serde_json::json!([]));
        assert_eq!(
            v["linux"]["resources"]["devices"],
            serde_json::json!([{"allow": true, "access": "rwm"}])
        );
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
    fn resources_and_oom_score() {
        let r = LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: -500,
            ..Default::default()
        };
        let c = ContainerConfig {
            linux: Some(LinuxContainerConfig {
                resources: Some(r.clone()),
                security_context: None,
            }),
            ..cfg()
        };
        let v = serde_json::to_value(build(&c, &SandboxNamespaces::default())).unwrap();
        assert_eq!(
            v["linux"]["resources"]["cpu"],
            serde_json::json!({"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"})
        );
        assert_eq!(
            v["linux"]["resources"]["memory"],
            serde_json::json!({"limit": 67108864})
        );
        assert_eq!(v["process"]["oomScoreAdj"], -500);
        assert_eq!(oom_score_adj(Some(&r), Some(-100)), Some(-100));
        assert_eq!(oom_score_adj(Some(&r), Some(-900)), Some(-500));
        assert_eq!(oom_score_adj(None, None), None);
    }
}
