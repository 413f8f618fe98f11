//! The OCI specs limpetd builds, run by the real runc: a busybox rootfs with its own
//! /etc/passwd and /etc/group, the user resolved by name, the env and workdir merged, a
//! read-only rootfs enforced; a pod sandbox whose container joins its namespaces and sees its
//! hostname, files and /dev/shm; the default seccomp profile, devices and masked paths in
//! force; a privileged container with the host's devices.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use limpet_protos::cri::v1::{
    security_profile::ProfileType, Capability, ContainerConfig, Device, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, MountPropagation, PodSandboxConfig, SecurityProfile,
};
use limpetd::images::manifest::ContainerConfig as ImageConfig;
use limpetd::network::netns;
use limpetd::oci::{
    annotations, build_sandbox_spec, build_spec, cgroups_path, CgroupDriver, HostFeatures,
    SandboxFiles, SandboxNamespaces, SandboxSpecInput, SpecInput,
};

fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (runc)".into());
    }
    let runc = Command::new("sh")
        .args(["-c", "command -v runc"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !runc {
        return Some("no runc on PATH".into());
    }
    if busybox().is_none() {
        return Some("no static busybox (busybox-static)".into());
    }
    None
}

fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// A bundle dir with `rootfs/`: busybox and its applet links, and the users of the test.
fn make_bundle(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "work", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(busybox().unwrap(), rootfs.join("bin/busybox")).unwrap();
    // Another test thread forking while the copy was open for writing holds that fd until
    // its exec, and running the copy then fails with ETXTBSY for a moment: retry.
    let installed = (0..50).any(|_| {
        let ok = Command::new("chroot")
            .arg(&rootfs)
            .args(["/bin/busybox", "--install", "-s", "/bin"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        ok
    });
    assert!(installed, "busybox --install in the rootfs");
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/work:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\napp:x:1000:\nextra:x:2000:app\nother:x:3000:root\n",
    )
    .unwrap();
    rootfs
}

/// Removes the runc container (if `runc run` left it) and its private state dir.
struct Runc {
    root: PathBuf,
    id: String,
}

impl Runc {
    fn new(dir: &Path, id: &str) -> Runc {
        Runc {
            root: dir.join("runc-root"),
            id: id.to_string(),
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(&self.root);
        c
    }

    /// Runs the container in the foreground and collects its output.
    fn run(&self, bundle: &Path) -> Output {
        self.command()
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Starts the container in the background and returns its pid. Its stdio goes to a
    /// file: a pipe would stay open in the container, and reading it would never end.
    fn run_detached(&self, bundle: &Path) -> u32 {
        let log = bundle.join("stdio.log");
        let file = std::fs::File::create(&log).unwrap();
        let status = self
            .command()
            .args(["run", "--detach", "--bundle"])
            .arg(bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "runc run --detach {}: {}",
            self.id,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let state = self.command().args(["state", &self.id]).output().unwrap();
        assert!(state.status.success(), "runc state {}", self.id);
        let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
        assert_eq!(state["status"], "running", "{state}");
        state["pid"].as_u64().expect("pid in runc state") as u32
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["delete", "-f", &self.id])
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes cgroup dirs (children before parents) from every hierarchy.
struct Cgroups(Vec<String>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let hierarchies: Vec<PathBuf> = hierarchies.flatten().map(|h| h.path()).collect();
        for path in &self.0 {
            for h in &hierarchies {
                let _ = std::fs::remove_dir(h.join(path.trim_start_matches('/')));
            }
        }
    }
}

/// A private network namespace and the shared mount point holding it.
struct Netns {
    dir: PathBuf,
    path: PathBuf,
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = netns::remove(&self.path);
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The image config of the busybox rootfs cases.
fn busybox_image() -> ImageConfig {
    ImageConfig {
        env: Some(vec!["FOO=from-image".into(), "BAR=image".into()]),
        entrypoint: Some(vec!["/bin/false".into()]),
        working_dir: Some("/work".into()),
        ..Default::default()
    }
}

/// Writes the spec of a standalone container: fresh namespaces, no pod files.
fn write_standalone_spec(bundle: &Path, c: &ContainerConfig, cgroups: &str, privileged: bool) {
    build_spec(&SpecInput {
        container: c,
        image: &busybox_image(),
        rootfs: &bundle.join("rootfs"),
        hostname: "oci-test",
        cgroups_path: Some(cgroups),
        namespaces: &SandboxNamespaces::default(),
        pod_namespaces: None,
        sandbox_files: &SandboxFiles::default(),
        sandbox_privileged: privileged,
        annotations: &HashMap::new(),
        min_oom_score_adj: None,
        host: HostFeatures::current(),
    })
    .unwrap()
    .save(bundle.join("config.json"))
    .unwrap();
}

fn container(readonly_rootfs: bool, script: &str) -> ContainerConfig {
    ContainerConfig {
        command: vec!["sh".into(), "-c".into(), script.into()],
        envs: vec![KeyValue {
            key: "FOO".into(),
            value: "from-cri".into(),
        }],
        linux: Some(LinuxContainerConfig {
            resources: None,
            security_context: Some(LinuxContainerSecurityContext {
                run_as_username: "app".into(),
                readonly_rootfs,
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

fn run_case(name: &str, c: &ContainerConfig) -> Output {
    let dir = tempfile::tempdir().unwrap();
    run_case_in(dir.path(), name, c)
}

fn run_case_in(dir: &Path, name: &str, c: &ContainerConfig) -> Output {
    let bundle = dir.join("bundle");
    make_bundle(&bundle);
    let id = format!("limpet-oci-{name}-{}", std::process::id());
    let cgroups = format!("/{id}");
    let _cgroups = Cgroups(vec![cgroups.clone()]);
    let privileged = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged);
    write_standalone_spec(&bundle, c, &cgroups, privileged);
    Runc::new(dir, &id).run(&bundle)
}

#[test]
fn runc_runs_the_spec_as_the_named_user() {
    if let Some(reason) = missing_prerequisite() {
        limpet_tests::skip(&format!("runc_runs_the_spec_as_the_named_user ({reason})"));
        return;
    }
    let out = run_case(
        "user",
        &container(false, "id; pwd; echo $FOO $BAR; echo $HOSTNAME"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "runc run failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)",
            "/work",
            "from-cri image",
            "oci-test",
        ]
    );
}

#[test]
fn runc_enforces_a_readonly_rootfs() {
    if let Some(reason) = missing_prerequisite() {
        limpet_tests::skip(&format!("runc_enforces_a_readonly_rootfs ({reason})"));
        return;
    }
    let out = run_case("ro", &container(true, "touch /work/x && echo wrote"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "write to / succeeded: {stdout}");
    assert!(!stdout.contains("wrote"));
    assert!(stderr.contains("Read-only file system"), "stderr: {stderr}");
}

#[test]
fn runc_applies_capabilities_mounts_and_no_new_privs() {
    if let Some(reason) = missing_prerequisite() {
        limpet_tests::skip(&format!(
            "runc_applies_capabilities_mounts_and_no_new_privs ({reason})"
        ));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("hello"), "from-host\n").unwrap();
    let script = "grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status; \
                  cat /data/hello; touch /data/new 2>/dev/null || echo ro-ok";
    let c = ContainerConfig {
        command: vec!["sh".into(), "-c".into(), script.into()],
        mounts: vec![Mount {
            container_path: "/data".into(),
            host_path: data.to_string_lossy().into_owned(),
            readonly: true,
            propagation: MountPropagation::PropagationPrivate as i32,
            ..Default::default()
        }],
        linux: Some(LinuxContainerConfig {
            resources: None,
            security_context: Some(LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: 0 }),
                no_new_privs: true,
                capabilities: Some(Capability {
                    add_capabilities: vec!["NET_ADMIN".into(), "CAP_KILL".into()],
                    drop_capabilities: vec!["ALL".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    let out = run_case_in(dir.path(), "caps", &c);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "runc run failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    // CAP_KILL is bit 5, CAP_NET_ADMIN bit 12
    let lines: Vec<&str> = stdout.lines().map(|l| l.trim()).collect();
    assert_eq!(
        lines,
        [
            "CapEff:\t0000000000001020",
            "CapBnd:\t0000000000001020",
            "NoNewPrivs:\t1",
            "from-host",
            "ro-ok",
        ]
    );
    assert!(!data.join("new").exists());
}

/// This process's OOM score: a child may not be given a lower one without
/// CAP_SYS_RESOURCE.
fn own_oom_score_adj() -> i64 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn runtime_default() -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    })
}

fn sh_container(script: &str, sc: LinuxContainerSecurityContext) -> ContainerConfig {
    ContainerConfig {
        command: vec!["sh".into(), "-c".into(), script.into()],
        linux: Some(LinuxContainerConfig {
            resources: None,
            security_context: Some(sc),
        }),
        ..Default::default()
    }
}

fn stdout_lines(out: &Output) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "runc run failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().map(|l| l.trim_end().to_string()).collect()
}

/// The files a pod sandbox shares with its containers, on the host.
fn pod_files(dir: &Path) -> SandboxFiles {
    let d = dir.join("pod");
    std::fs::create_dir_all(d.join("shm")).unwrap();
    std::fs::write(d.join("hostname"), "oci-pod\n").unwrap();
    std::fs::write(d.join("hosts"), "127.0.0.1 localhost\n10.9.8.7 oci-pod\n").unwrap();
    std::fs::write(d.join("resolv.conf"), "nameserver 10.9.0.10\n").unwrap();
    SandboxFiles {
        hostname: Some(d.join("hostname")),
        hosts: Some(d.join("hosts")),
        resolv: Some(d.join("resolv.conf")),
        shm: Some(d.join("shm")),
    }
}

const POD_SCRIPT: &str = "\
    hostname; cat /etc/hostname; grep oci-pod /etc/hosts; cat /etc/resolv.conf; \
    echo from-ctr > /dev/shm/note && echo shm-ok; \
    tr '\\0' ' ' < /proc/1/cmdline; echo; \
    for ns in net ipc uts pid; do readlink /proc/self/ns/$ns; done; \
    cat /proc/sys/net/ipv4/ip_unprivileged_port_start; \
    grep '^Seccomp:' /proc/self/status; \
    unshare -U true 2>/dev/null && echo userns-allowed || echo userns-denied; \
    echo x > /dev/mydev && echo mydev-ok; \
    : < /dev/myloop && echo myloop-read; \
    (: > /dev/myloop) 2>/dev/null && echo myloop-written || echo myloop-denied; \
    echo masked=$(cat /proc/timer_list /proc/keys 2>/dev/null | wc -c) \
        firmware=$(ls /sys/firmware | wc -l)";

#[test]
fn runc_runs_a_pod_whose_container_joins_it() {
    let missing = missing_prerequisite().or_else(|| {
        (!Path::new("/dev/loop-control").exists()).then(|| "no /dev/loop-control".to_string())
    });
    if let Some(reason) = missing {
        limpet_tests::skip(&format!(
            "runc_runs_a_pod_whose_container_joins_it ({reason})"
        ));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let sandbox_id = format!("limpet-oci-pod-{pid}");
    let netns_dir = dir.path().join("netns");
    let netns = Netns {
        path: netns::create(&netns_dir, &sandbox_id).expect("create netns"),
        dir: netns_dir,
    };
    let files = pod_files(dir.path());
    let parent = format!("/limpet-oci-{pid}");
    let sandbox_cgroup = cgroups_path(CgroupDriver::Cgroupfs, &parent, &sandbox_id);
    let app_cgroup = cgroups_path(CgroupDriver::Cgroupfs, &parent, "app");
    let _cgroups = Cgroups(vec![
        sandbox_cgroup.clone(),
        app_cgroup.clone(),
        parent.clone(),
    ]);

    // the sandbox: busybox sleep stands in for pause
    let sandbox_bundle = dir.path().join("sandbox");
    let sandbox_rootfs = make_bundle(&sandbox_bundle);
    let pod = PodSandboxConfig {
        hostname: "oci-pod".into(),
        linux: Some(LinuxPodSandboxConfig {
            sysctls: [(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "0".to_string(),
            )]
            .into(),
            security_context: Some(LinuxSandboxSecurityContext {
                seccomp: runtime_default(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    build_sandbox_spec(&SandboxSpecInput {
        config: &pod,
        image: None,
        args: &["/bin/sleep".to_string(), "3600".to_string()],
        rootfs: Some(&sandbox_rootfs),
        netns: Some(&netns.path),
        cgroups_path: Some(&sandbox_cgroup),
        files: &files,
        extra_mounts: &[],
        annotations: &annotations::sandbox_annotations(&sandbox_id, &pod),
        // -998 needs CAP_SYS_RESOURCE, which a test host may withhold
        min_oom_score_adj: Some(own_oom_score_adj()),
        host: HostFeatures::current(),
    })
    .unwrap()
    .save(sandbox_bundle.join("config.json"))
    .unwrap();
    let sandbox = Runc::new(dir.path(), &sandbox_id);
    let pause = sandbox.run_detached(&sandbox_bundle);
    let ns_of = |kind: &str| PathBuf::from(format!("/proc/{pause}/ns/{kind}"));

    // a container of the pod: joins its namespaces, default seccomp, two devices
    let mut c = sh_container(
        POD_SCRIPT,
        LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 0 }),
            seccomp: runtime_default(),
            ..Default::default()
        },
    );
    c.devices = vec![
        Device {
            container_path: "/dev/mydev".into(),
            host_path: "/dev/null".into(),
            permissions: "rwm".into(),
        },
        // not one of the devices runc allows anyway
        Device {
            container_path: "/dev/myloop".into(),
            host_path: "/dev/loop-control".into(),
            permissions: "r".into(),
        },
    ];
    let app_bundle = dir.path().join("app");
    let app_rootfs = make_bundle(&app_bundle);
    build_spec(&SpecInput {
        container: &c,
        image: &busybox_image(),
        rootfs: &app_rootfs,
        hostname: "oci-pod",
        cgroups_path: Some(&app_cgroup),
        pod_namespaces: None,
        namespaces: &SandboxNamespaces {
            network: Some(ns_of("net")),
            ipc: Some(ns_of("ipc")),
            uts: Some(ns_of("uts")),
            pid: Some(ns_of("pid")),
        },
        sandbox_files: &files,
        sandbox_privileged: false,
        annotations: &annotations::container_annotations(&sandbox_id, &pod, "app", "busybox"),
        min_oom_score_adj: None,
        host: HostFeatures::current(),
    })
    .unwrap()
    .save(app_bundle.join("config.json"))
    .unwrap();
    let app = Runc::new(dir.path(), &format!("{sandbox_id}-app"));
    let lines = stdout_lines(&app.run(&app_bundle));
    drop(app);

    let link = |kind: &str| {
        std::fs::read_link(ns_of(kind))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let expected = [
        "oci-pod".to_string(),
        "oci-pod".into(),
        "10.9.8.7 oci-pod".into(),
        "nameserver 10.9.0.10".into(),
        "shm-ok".into(),
        "/bin/sleep 3600".into(),
        link("net"),
        link("ipc"),
        link("uts"),
        link("pid"),
        // the pod's sysctl, set in the pod's network namespace
        "0".into(),
        "Seccomp:\t2".into(),
        "userns-denied".into(),
        "mydev-ok".into(),
        // the device cgroup lets it read, not write
        "myloop-read".into(),
        "myloop-denied".into(),
        // masked: /proc files read as /dev/null, /sys/firmware is an empty dir
        "masked=0 firmware=0".into(),
    ];
    assert_eq!(lines, expected);
    // the container's /dev/shm is the pod's
    assert_eq!(
        std::fs::read_to_string(files.shm.as_ref().unwrap().join("note")).unwrap(),
        "from-ctr\n"
    );
    // and the network namespace the pause holds is the one made for the pod
    let netns_ino = std::fs::metadata(&netns.path).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    assert_eq!(link("net"), format!("net:[{}]", netns_ino.unwrap()));
    drop(sandbox);
}

const SECCOMP_SCRIPT: &str = "grep '^Seccomp:' /proc/self/status; \
    unshare -U true 2>/dev/null && echo userns-allowed || echo userns-denied; \
    mkdir /tmp/made 2>/dev/null && echo mkdir-allowed || echo mkdir-denied";

#[test]
fn runc_applies_the_seccomp_profile_asked_for() {
    if let Some(reason) = missing_prerequisite() {
        limpet_tests::skip(&format!(
            "runc_applies_the_seccomp_profile_asked_for ({reason})"
        ));
        return;
    }
    let profile = |t: ProfileType, r: &str| LinuxContainerSecurityContext {
        seccomp: Some(SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        }),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("no-mkdir.json");
    std::fs::write(
        &local,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    #[allow(deprecated)]
    let deprecated = LinuxContainerSecurityContext {
        seccomp_profile_path: "runtime/default".into(),
        ..Default::default()
    };
    let cases = [
        (
            "unconfined",
            profile(ProfileType::Unconfined, ""),
            ["Seccomp:\t0", "userns-allowed", "mkdir-allowed"],
        ),
        (
            "default",
            profile(ProfileType::RuntimeDefault, ""),
            ["Seccomp:\t2", "userns-denied", "mkdir-allowed"],
        ),
        (
            "deprecated",
            deprecated,
            ["Seccomp:\t2", "userns-denied", "mkdir-allowed"],
        ),
        (
            "local",
            profile(ProfileType::Localhost, local.to_str().unwrap()),
            ["Seccomp:\t2", "userns-allowed", "mkdir-denied"],
        ),
    ];
    for (name, sc, want) in cases {
        let case_dir = dir.path().join(name);
        let out = run_case_in(
            &case_dir,
            &format!("seccomp-{name}"),
            &sh_container(SECCOMP_SCRIPT, sc),
        );
        assert_eq!(stdout_lines(&out), want, "profile {name}");
    }
}

#[test]
fn runc_runs_a_privileged_container_with_host_devices() {
    if let Some(reason) = missing_prerequisite() {
        limpet_tests::skip(&format!(
            "runc_runs_a_privileged_container_with_host_devices ({reason})"
        ));
        return;
    }
    let script = "test -c /dev/kmsg && echo kmsg; grep '^Seccomp:' /proc/self/status; \
                  ls /sys/firmware | wc -l";
    let c = sh_container(
        script,
        LinuxContainerSecurityContext {
            privileged: true,
            // not applied to a privileged container
            seccomp: runtime_default(),
            ..Default::default()
        },
    );
    let out = run_case("privileged", &c);
    let host_firmware = std::fs::read_dir("/sys/firmware").unwrap().count();
    assert_eq!(
        stdout_lines(&out),
        [
            "kmsg".to_string(),
            "Seccomp:\t0".into(),
            // nothing masked
            host_firmware.to_string(),
        ]
    );
}
