//! runc options of the CRI runtime that the shim itself applies: `IoUid`/`IoGid` (the owner of
//! the container's stdio pipes; runc resets the uid to the container user's, so the gid is what
//! shows) and `ShimCgroup` (the cgroup the shim moves itself into).
//! Each assertion is what the Go shim (containerd-shim-runc-v2) does under the same containerd.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};
use limpet_tests::cri_pod::{host_network, host_network_pod};
use limpet_tests::limpetd::block_on;
use limpet_tests::{pid_alive, Flavor, Harness};

const IO_OWNER: u32 = 1000;

/// `/limpet-test-shim-<pid>-<major>`: unique per test process and flavor.
fn shim_cgroup_name(flavor: Flavor) -> String {
    let major = match flavor {
        Flavor::Containerd1 => 1,
        Flavor::Containerd2 => 2,
    };
    format!("/limpet-test-shim-{}-{major}", std::process::id())
}

/// The shim cgroup's dirs, made before containerd starts and removed after it is gone (the
/// shim only joins controllers where the path exists).
struct ShimCgroup {
    dirs: Vec<PathBuf>,
}

impl ShimCgroup {
    fn create(name: &str) -> ShimCgroup {
        let base = Path::new("/sys/fs/cgroup");
        let hierarchies: Vec<PathBuf> = if base.join("cgroup.controllers").exists() {
            vec![base.to_path_buf()]
        } else {
            ["memory", "cpu,cpuacct", "pids"]
                .iter()
                .map(|c| base.join(c))
                .filter(|p| p.is_dir())
                .collect()
        };
        let mut dirs = Vec::new();
        for hierarchy in hierarchies {
            let dir = hierarchy.join(name.trim_start_matches('/'));
            // Not fatal here: the case then finds the shim outside it and says so.
            if std::fs::create_dir_all(&dir).is_ok() {
                dirs.push(dir);
            }
        }
        ShimCgroup { dirs }
    }
}

impl Drop for ShimCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for dir in &self.dirs {
            // The shim may take a moment to exit after containerd's teardown.
            while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn run_with_options(flavor: Flavor) {
    let name = shim_cgroup_name(flavor);
    let _cgroup = ShimCgroup::create(&name); // dropped after the harness
    let options = [
        ("IoUid".to_string(), IO_OWNER.to_string()),
        ("IoGid".to_string(), IO_OWNER.to_string()),
        ("ShimCgroup".to_string(), format!("{name:?}")),
    ];
    Harness::run_cri_case_with(
        flavor,
        "io_owner_and_shim_cgroup",
        &options,
        io_owner_and_shim_cgroup,
    );
}

mod containerd_1 {
    #[test]
    fn io_owner_and_shim_cgroup() {
        super::run_with_options(limpet_tests::Flavor::Containerd1);
    }
}

mod containerd_2 {
    #[test]
    fn io_owner_and_shim_cgroup() {
        super::run_with_options(limpet_tests::Flavor::Containerd2);
    }
}

fn io_owner_and_shim_cgroup(h: &Harness) {
    block_on(io_owner_and_shim_cgroup_async(h));
}

async fn io_owner_and_shim_cgroup_async(h: &Harness) {
    let channel = limpet_protos::cri::connect(&h.cri_endpoint())
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", h.cri_endpoint()));
    let mut cri = RuntimeServiceClient::new(channel);
    let pod_config = host_network_pod(h, "opts");
    let pod_id = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}"))
        .into_inner()
        .pod_sandbox_id;
    let container_id = cri
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config(h)),
            sandbox_config: Some(pod_config),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}"))
        .into_inner()
        .container_id;
    cri.start_container(StartContainerRequest {
        container_id: container_id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer: {e}"));

    // IoUid/IoGid: the shim chowns the pipes the container writes its stdout and stderr into;
    // runc then gives their uid to the container's user (root here), keeping the gid.
    let pid = runc_pid(h, &container_id);
    for fd in [1, 2] {
        let path = format!("/proc/{pid}/fd/{fd}");
        let target = std::fs::read_link(&path).unwrap_or_default();
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            target.to_string_lossy().starts_with("pipe:"),
            "{path} -> {}",
            target.display()
        );
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, IO_OWNER),
            "owner of {path} -> {}",
            target.display()
        );
    }

    // ShimCgroup: the pod's one shim moved itself there.
    let shims = h.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the pod, found {shims:?}");
    let shim = shims[0];
    let want = shim_cgroup_name(h.flavor);
    let cgroups = std::fs::read_to_string(format!("/proc/{shim}/cgroup")).unwrap_or_default();
    let path_of = |wanted: &dyn Fn(&str) -> bool| {
        cgroups.lines().find_map(|line| {
            let mut cols = line.splitn(3, ':');
            let (_, controllers, path) = (cols.next()?, cols.next()?, cols.next()?);
            wanted(controllers).then_some(path)
        })
    };
    // v1: the memory controller's line; v2: the single `0::` line.
    let memory = path_of(&|c| c.split(',').any(|c| c == "memory")).or(path_of(&str::is_empty));
    assert_eq!(
        memory,
        Some(want.as_str()),
        "shim {shim}'s cgroups:\n{cgroups}"
    );

    cri.stop_container(StopContainerRequest {
        container_id: container_id.clone(),
        timeout: 0,
    })
    .await
    .unwrap_or_else(|e| panic!("StopContainer: {e}"));
    cri.remove_container(RemoveContainerRequest { container_id })
        .await
        .unwrap_or_else(|e| panic!("RemoveContainer: {e}"));
    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StopPodSandbox: {e}"));
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(shim) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!pid_alive(shim), "shim {shim} outlived its pod");
}

fn container_config(h: &Harness) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "main".to_string(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: h.image().to_string(),
            ..Default::default()
        }),
        command: ["sh", "-c", "echo up; sleep 1000"]
            .map(String::from)
            .to_vec(),
        log_path: "main.log".to_string(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(host_network()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container's init pid from `runc --root <Root>/k8s.io state ID`.
fn runc_pid(h: &Harness, id: &str) -> i64 {
    let out = Command::new("runc")
        .arg("--root")
        .arg(h.cri().runc_state_root())
        .args(["state", id])
        .output()
        .unwrap_or_else(|e| panic!("run runc: {e}"));
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "runc state {id}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    state["pid"]
        .as_i64()
        .filter(|p| *p > 0)
        .unwrap_or_else(|| panic!("runc state {id}: {state}"))
}
