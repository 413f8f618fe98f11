//! The OCI spec limpetd builds for a CRI container, run by the real runc: a busybox rootfs
//! with its own /etc/passwd and /etc/group, the user resolved by name, the env and workdir
//! merged, and a read-only rootfs enforced.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use limpet_protos::cri::v1::{
    Capability, ContainerConfig, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxContainerSecurityContext, Mount, MountPropagation,
};
use limpetd::images::manifest::ContainerConfig as ImageConfig;
use limpetd::oci::{build_spec, SandboxNamespaces, SpecInput};

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
    let st = Command::new("chroot")
        .arg(&rootfs)
        .args(["/bin/busybox", "--install", "-s", "/bin"])
        .status()
        .unwrap();
    assert!(st.success(), "busybox --install in the rootfs");
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
    fn run(&self, bundle: &Path) -> Output {
        Command::new("runc")
            .arg("--root")
            .arg(&self.root)
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&self.root)
            .args(["delete", "-f", &self.id])
            .stderr(Stdio::null())
            .status();
    }
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
    let rootfs = make_bundle(&bundle);
    let image = ImageConfig {
        env: Some(vec!["FOO=from-image".into(), "BAR=image".into()]),
        entrypoint: Some(vec!["/bin/false".into()]),
        working_dir: Some("/work".into()),
        ..Default::default()
    };
    let id = format!("limpet-oci-{name}-{}", std::process::id());
    // one level under the root, so that runc removes all of it when the container exits
    let cgroups_path = format!("/{id}");
    let spec = build_spec(&SpecInput {
        container: c,
        image: &image,
        rootfs: &rootfs,
        hostname: "oci-test",
        cgroups_path: Some(&cgroups_path),
        namespaces: &SandboxNamespaces::default(),
        min_oom_score_adj: None,
    })
    .unwrap();
    spec.save(bundle.join("config.json")).unwrap();
    let runc = Runc {
        root: dir.join("runc-root"),
        id,
    };
    let out = runc.run(&bundle);
    drop(runc);
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(hierarchy.path().join(cgroups_path.trim_start_matches('/')));
    }
    out
}

#[test]
fn runc_runs_the_spec_as_the_named_user() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("SKIPPED runc_runs_the_spec_as_the_named_user: {reason}");
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
        eprintln!("SKIPPED runc_enforces_a_readonly_rootfs: {reason}");
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
        eprintln!("SKIPPED runc_applies_capabilities_mounts_and_no_new_privs: {reason}");
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
