//! The shim under containerd's CRI plugin, configured as the README documents: runtime type
//! `io.containerd.runc.v2` with `runtime_path` = the shim under test and typed runc options
//! (`BinaryName`, `Root`). A CRI gRPC client drives it as kubelet would: a host-network pod,
//! one container, an exec, the CRI log, stop and removal. Each step asserts what the Go shim
//! (containerd-shim-runc-v2) does under the same containerd.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::tonic::Code;
use limpet_protos::cri::v1::image_service_client::ImageServiceClient;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ImageSpec, ImageStatusRequest, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, ListPodSandboxRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest, UpdateContainerResourcesRequest, VersionRequest,
};
use limpet_tests::cri_pod::{host_network, host_network_pod};
use limpet_tests::limpetd::block_on;
use limpet_tests::{cri_cases, mounts_under, pid_alive, read_cmdline, skip, Harness};

const SECOND: Duration = Duration::from_secs(1);
const GREETING: &str = "hello-from-cri";
const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

struct Cri {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// One pod through its whole life, checking the shim's part at every step.
fn pod_lifecycle(h: &Harness) {
    block_on(pod_lifecycle_async(h));
}

async fn pod_lifecycle_async(h: &Harness) {
    let started = Instant::now();
    let channel = limpet_protos::cri::connect(&h.cri_endpoint())
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", h.cri_endpoint()));
    let mut cri = Cri {
        runtime: RuntimeServiceClient::new(channel.clone()),
        images: ImageServiceClient::new(channel),
    };

    let version = cri
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap_or_else(|e| panic!("Version: {e}"))
        .into_inner();
    assert_eq!(version.runtime_name, "containerd", "{version:?}");
    assert_eq!(version.runtime_api_version, "v1", "{version:?}");

    // Imported with ctr into k8s.io: the CRI plugin must see both without pulling.
    for image in [h.image(), h.cri().sandbox_image] {
        assert_image_present(&mut cri, image).await;
    }

    let pod_config = host_network_pod(h, "pod");
    let pod_id = cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}"))
        .into_inner()
        .pod_sandbox_id;

    let container_id = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config(h)),
            sandbox_config: Some(pod_config),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}"))
        .into_inner()
        .container_id;
    cri.runtime
        .start_container(StartContainerRequest {
            container_id: container_id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}"));
    let status = container_status(&mut cri, &container_id).await;
    assert_eq!(
        status.state(),
        ContainerState::ContainerRunning,
        "{status:?}"
    );

    let shim = assert_one_shim_serves_the_pod(h, &pod_id, &container_id);
    assert_cri_log(&h.cri().log_dir.join("main.log")).await;

    let exec = cri
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: container_id.clone(),
            cmd: ["sh", "-c", "echo out; exit 3"].map(String::from).to_vec(),
            timeout: 10,
        })
        .await
        .unwrap_or_else(|e| panic!("ExecSync: {e}"))
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "out\n", "{exec:?}");
    assert_eq!(String::from_utf8_lossy(&exec.stderr), "", "{exec:?}");
    assert_eq!(exec.exit_code, 3, "{exec:?}");

    // UpdateContainerResources reaches runc through the shim's Update.
    const LIMIT: i64 = 64 << 20;
    cri.runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: container_id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: LIMIT,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("UpdateContainerResources: {e}"));
    assert_eq!(memory_limit(h, &container_id), Some(LIMIT as u64));

    cri.runtime
        .stop_container(StopContainerRequest {
            container_id: container_id.clone(),
            timeout: 2,
        })
        .await
        .unwrap_or_else(|e| panic!("StopContainer: {e}"));
    let stopped = container_status(&mut cri, &container_id).await;
    assert_eq!(
        stopped.state(),
        ContainerState::ContainerExited,
        "{stopped:?}"
    );
    // `sh -c '...; sleep 1000'` execs sleep as pid 1 of the container's pid namespace, where
    // SIGTERM without a handler is ignored: the SIGKILL after the 2 s timeout ends it.
    assert_eq!(stopped.exit_code, 137, "after StopContainer: {stopped:?}");

    cri.runtime
        .remove_container(RemoveContainerRequest {
            container_id: container_id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveContainer: {e}"));
    let gone = cri
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: container_id.clone(),
            verbose: false,
        })
        .await;
    assert_eq!(
        gone.as_ref().map_err(|e| e.code()).err(),
        Some(Code::NotFound),
        "{gone:?}"
    );
    assert!(
        runc_state(h, &container_id).is_none(),
        "runc still knows the container"
    );
    assert!(pid_alive(shim), "the pod's shim lives on for the sandbox");

    cri.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}"));
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}"));
    let pods = cri
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap_or_else(|e| panic!("ListPodSandbox: {e}"))
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");

    assert_pod_left_nothing(h, shim, &pod_id, &container_id).await;
    eprintln!("pod lifecycle took {:?}", started.elapsed());
}

fn container_config(h: &Harness) -> ContainerConfig {
    let script = format!("echo {GREETING}; sleep 1000");
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "main".to_string(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: h.image().to_string(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script],
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

/// Network NODE (no CNI involved), pid and ipc as kubelet's defaults.
async fn assert_image_present(cri: &mut Cri, image: &str) {
    let status = cri
        .images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap_or_else(|e| panic!("ImageStatus {image}: {e}"))
        .into_inner();
    let found = status.image.as_ref().map(|i| &i.repo_tags);
    assert!(
        found.is_some_and(|tags| tags.iter().any(|t| t == image)),
        "CRI does not see {image}: {status:?}"
    );
}

async fn container_status(cri: &mut Cri, id: &str) -> ContainerStatus {
    cri.runtime
        .container_status(ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        })
        .await
        .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
        .into_inner()
        .status
        .unwrap_or_else(|| panic!("ContainerStatus {id}: no status"))
}

/// The sandbox and the container share one shim process (grouped by the sandbox-id
/// annotation), which is the binary under test, runs runc with the configured `Root`, and
/// is the parent of both containers' init processes. Returns its pid.
fn assert_one_shim_serves_the_pod(h: &Harness, pod_id: &str, container_id: &str) -> i32 {
    let shims = h.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the pod, found {shims:?}");
    let shim = shims[0];
    let exe = std::fs::read_link(format!("/proc/{shim}/exe"))
        .unwrap_or_else(|e| panic!("exe of shim {shim}: {e}"));
    let expected = std::fs::canonicalize(&h.shim.binary)
        .unwrap_or_else(|e| panic!("{}: {e}", h.shim.binary.display()));
    assert_eq!(exe, expected, "the pod's shim is not the binary under test");
    let argv = read_cmdline(shim).unwrap_or_default();
    let id = argv
        .iter()
        .position(|a| a == "-id")
        .and_then(|i| argv.get(i + 1));
    assert_eq!(id.map(String::as_str), Some(pod_id), "shim argv: {argv:?}");

    let spec = bundle_spec(h, container_id);
    assert_eq!(
        spec["annotations"][SANDBOX_ID_ANNOTATION].as_str(),
        Some(pod_id),
        "the container's spec names its sandbox"
    );
    let address = h.shim_address(pod_id);
    assert!(address.is_some(), "no shim address in {pod_id}'s bundle");
    assert_eq!(
        h.shim_address(container_id),
        address,
        "the container's task is served on the sandbox shim's socket"
    );

    for id in [pod_id, container_id] {
        let state = runc_state(h, id).unwrap_or_else(|| {
            panic!(
                "{id} is not in runc's state under Root {}",
                h.cri().runc_state_root().display()
            )
        });
        assert_eq!(state["status"], "running", "{state}");
        let pid = state["pid"].as_i64().unwrap_or_default() as i32;
        assert_eq!(parent_of(pid), Some(shim), "parent of {id}'s init {pid}");
        assert!(!h.cri().cgroups(id).is_empty(), "no cgroup for {id}");
    }

    // The bundle records which binary containerd ran for the pod.
    let recorded = std::fs::read_to_string(h.bundle(pod_id).join("shim-binary-path"))
        .unwrap_or_else(|e| panic!("shim-binary-path of {pod_id}: {e}"));
    if h.cri().runtime_path_honoured {
        assert_eq!(
            Path::new(recorded.trim()),
            h.shim.binary,
            "containerd did not run runtime_path"
        );
    } else {
        skip(&format!(
            "pod_lifecycle ({}): runtime_path check: containerd {} ignores CRI runtime_path \
             (fixed in 1.6.21 and 1.7.1); the harness put the shim on its PATH as {}",
            h.flavor,
            h.containerd().bins().version,
            recorded.trim()
        ));
    }
    shim
}

/// The container's stdout line reaches the CRI log file as `<RFC3339Nano> stdout F <line>`.
async fn assert_cri_log(path: &Path) {
    let deadline = Instant::now() + 5 * SECOND;
    let text = loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(GREETING) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let line = text
        .lines()
        .find(|l| l.contains(GREETING))
        .unwrap_or_else(|| panic!("no {GREETING:?} in {}: {text:?}", path.display()));
    let (time, rest) = line.split_once(' ').unwrap_or((line, ""));
    assert_eq!(
        rest,
        format!("stdout F {GREETING}"),
        "CRI log line {line:?}"
    );
    assert!(is_rfc3339(time), "CRI log timestamp {time:?} in {line:?}");
}

/// After the pod is gone: its shim exited, runc knows nothing, and nothing stays mounted or
/// in a cgroup.
async fn assert_pod_left_nothing(h: &Harness, shim: i32, pod_id: &str, container_id: &str) {
    let deadline = Instant::now() + 5 * SECOND;
    while pid_alive(shim) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!pid_alive(shim), "shim {shim} outlived its pod");
    assert!(h.shim_pids().is_empty(), "shims left: {:?}", h.shim_pids());
    let state_dir = h.containerd().state_dir();
    let mounts = mounts_under(&state_dir);
    assert!(mounts.is_empty(), "still mounted: {mounts:?}");
    let runc_left = subdirs(&h.cri().runc_state_root());
    assert!(runc_left.is_empty(), "runc state left: {runc_left:?}");
    for id in [pod_id, container_id] {
        assert!(h.cri().cgroups(id).is_empty(), "cgroups of {id} left");
        assert!(!h.bundle(id).exists(), "bundle of {id} left");
    }
}

/// `runc --root <Root>/k8s.io state ID`, as JSON; None when runc does not know it.
fn runc_state(h: &Harness, id: &str) -> Option<serde_json::Value> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(h.cri().runc_state_root())
        .args(["state", id])
        .output()
        .unwrap_or_else(|e| panic!("run runc: {e}"));
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The memory limit of a container's cgroup (v1 `memory.limit_in_bytes`, v2 `memory.max`).
fn memory_limit(h: &Harness, id: &str) -> Option<u64> {
    let pid = runc_state(h, id)?.get("pid")?.as_i64()?;
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let v1 = cgroups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_string())
    });
    let file = match v1 {
        Some(path) => format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"),
        None => {
            let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
            format!("/sys/fs/cgroup{path}/memory.max")
        }
    };
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn bundle_spec(h: &Harness, id: &str) -> serde_json::Value {
    let path = h.bundle(id).join("config.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parent_of(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// `2006-01-02T15:04:05.999999999Z07:00`: date, `T`, time with optional fraction, zone.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let fixed = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !fixed {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    rest == "Z" || (rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-'))
}

#[test]
fn rfc3339_timestamps() {
    assert!(is_rfc3339("2026-11-25T21:30:10.085767361Z"));
    assert!(is_rfc3339("2026-11-25T21:30:10Z"));
    assert!(is_rfc3339("2026-11-25T21:30:10.5+01:00"));
    assert!(!is_rfc3339("2026-11-25 21:30:10Z"));
    assert!(!is_rfc3339("2026-11-25T21:30:10."));
}

cri_cases!(pod_lifecycle);
