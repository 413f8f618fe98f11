//! limpetd's restart guarantees (ARCHITECTURE.md, "State, and what a crash may never do"):
//! SIGKILLed with pods running, or crashed at each named step of making and stopping them, a
//! restarted limpetd still knows every acknowledged pod and container as it was, reports the
//! exits that happened while it was away, started nothing twice, left no half-made pod or
//! container and nothing that belongs to no record; container logs never stopped flowing.
//!
//! The crash-point case needs limpetd built with `--features limpetd/failpoints` (its
//! `--version` then ends in "(failpoints)"); without it that case skips.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::{
    ContainerConfig, ContainerState, ContainerStatusRequest, ContainerStatusResponse,
    CreateContainerRequest, ExecSyncRequest, ListContainersRequest, ListPodSandboxRequest, Mount,
    PodSandboxConfig, PodSandboxState, PodSandboxStatusRequest, PodSandboxStatusResponse,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};
use limpet_tests::limpetd::{binary, block_on, ready, Options};
use limpet_tests::pods::PodEnv;
use limpet_tests::{mounts_under, pid_alive, read_cmdline, shim_pids};

type Client = RuntimeServiceClient<Channel>;

const COUNTER: &str = "i=0; while :; do echo n=$i; i=$((i+1)); sleep 0.05; done";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Waits until `f` returns Some, or panics with `what` after `secs`.
async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A cgroup parent for this case's pods alone, so that whatever is under it is theirs;
/// removed (it is empty by then) after the pods are.
struct CgroupParent(String);

impl CgroupParent {
    fn new(case: &str) -> CgroupParent {
        CgroupParent(format!("/limpet-restart-{}-{case}", std::process::id()))
    }

    /// `<hierarchy>/<parent>` in every mounted hierarchy (v1 controllers and v2).
    fn dirs(&self) -> Vec<PathBuf> {
        let base = Path::new("/sys/fs/cgroup");
        let rel = self.0.trim_start_matches('/');
        if base.join("cgroup.controllers").exists() {
            return vec![base.join(rel)];
        }
        std::fs::read_dir(base)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path().join(rel))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        for d in self.dirs() {
            for child in dir_names(&d) {
                let _ = std::fs::remove_dir(d.join(child));
            }
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// Entry names of a directory (none if it is missing).
fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The pod or container id a path names: its first 64-hex-digit component.
fn id_in(path: &Path) -> String {
    path.components()
        .filter_map(|c| c.as_os_str().to_str())
        .find(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or("")
        .to_string()
}

fn flag<'a>(argv: &'a [String], name: &str) -> &'a str {
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1))
        .map(String::as_str)
        .unwrap_or("")
}

/// The shim serving pod `id` (started with `-id <pod id>`).
fn pod_shim(socket: &Path, id: &str) -> Option<i32> {
    shim_pids(socket, None)
        .into_iter()
        .find(|pid| read_cmdline(*pid).is_some_and(|argv| flag(&argv, "-id") == id))
}

/// (id, status) of every container runc knows under `root`.
fn runc_list(root: &Path) -> Vec<(String, String)> {
    let Ok(out) = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["list", "--format", "json"])
        .output()
    else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    let s = |k: &str| c.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
                    (s("id"), s("status"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One case: a limpetd with a pod network and busybox, a CRI client, a cgroup parent.
struct Case {
    env: PodEnv,
    cgroups: CgroupParent,
}

impl Case {
    fn start(case: &str) -> Option<Case> {
        let env = ready(case, PodEnv::start(Options::default()))?;
        Some(Case {
            env,
            cgroups: CgroupParent::new(case),
        })
    }

    fn state(&self) -> PathBuf {
        self.env.d.dir().join("state")
    }

    fn runc_root(&self) -> PathBuf {
        self.state().join("runtime/runc/k8s.io")
    }

    fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let mut c = self.env.pod(name);
        if let Some(l) = c.linux.as_mut() {
            l.cgroup_parent = self.cgroups.0.clone();
        }
        c
    }

    fn log_tail(&self) -> String {
        self.env.d.log_tail()
    }

    async fn run_pod(&self, rt: &mut Client, name: &str) -> String {
        rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(self.pod_config(name)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", self.log_tail()))
        .into_inner()
        .pod_sandbox_id
    }

    async fn create(
        &self,
        rt: &mut Client,
        pod: &str,
        pod_name: &str,
        config: ContainerConfig,
    ) -> Result<String, limpet_protos::cri::tonic::Status> {
        rt.create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(self.pod_config(pod_name)),
        })
        .await
        .map(|r| r.into_inner().container_id)
    }

    /// Creates and starts a container running `script`.
    async fn run(
        &self,
        rt: &mut Client,
        pod: &str,
        pod_name: &str,
        name: &str,
        script: &str,
    ) -> String {
        self.run_config(rt, pod, pod_name, self.env.container(name, script))
            .await
    }

    async fn run_config(
        &self,
        rt: &mut Client,
        pod: &str,
        pod_name: &str,
        config: ContainerConfig,
    ) -> String {
        let name = config.metadata.clone().unwrap_or_default().name;
        let id = self
            .create(rt, pod, pod_name, config)
            .await
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", self.log_tail()));
        rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer {name}: {e}\n{}", self.log_tail()));
        id
    }

    async fn remove_pod(&self, rt: &mut Client, id: &str) {
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", self.log_tail()));
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", self.log_tail()));
    }

    async fn remove_container(&self, rt: &mut Client, id: &str) {
        rt.remove_container(RemoveContainerRequest {
            container_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveContainer: {e}\n{}", self.log_tail()));
    }

    /// SIGKILLs limpetd (if it runs), starts it again with `d.env`, and connects.
    async fn relaunch(&mut self) -> Client {
        self.env.d.kill();
        self.env
            .d
            .launch()
            .unwrap_or_else(|e| panic!("limpetd did not come back: {e}"));
        self.env.runtime().await
    }

    async fn status(&self, rt: &mut Client, id: &str) -> ContainerStatusResponse {
        rt.container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}\n{}", self.log_tail()))
        .into_inner()
    }

    async fn pod_status(&self, rt: &mut Client, id: &str) -> PodSandboxStatusResponse {
        let mut s = rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: {e}\n{}", self.log_tail()))
            .into_inner();
        s.timestamp = 0;
        s
    }

    async fn wait_state(&self, rt: &mut Client, id: &str, state: ContainerState) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = self.status(rt, id).await.status.unwrap_or_default();
            if st.state == state as i32 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} is {:?}, not {state:?}",
                st.state
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything of pods and containers on the host, as (what, the id it belongs to).
    fn host_state(&self) -> Vec<(String, String)> {
        let d = &self.env.d;
        let state = self.state();
        let mut out = Vec::new();
        for (what, dir) in [
            ("netns", state.join("netns")),
            ("bundle", state.join("bundles")),
            ("pod shm", state.join("shm")),
            ("pod files", d.root.join("sandboxes")),
            ("writable layer", d.root.join("snapshots/rootfs")),
        ] {
            for name in dir_names(&dir) {
                out.push((format!("{what} {}", dir.join(&name).display()), name));
            }
        }
        for m in mounts_under(d.dir()) {
            // the netns directory itself stays a shared mount point, as /run/netns does
            if m != state.join("netns") {
                out.push((format!("mount {}", m.display()), id_in(&m)));
            }
        }
        for pid in shim_pids(&d.socket, None) {
            let argv = read_cmdline(pid).unwrap_or_default();
            out.push((
                format!("shim {pid} {argv:?}"),
                flag(&argv, "-id").to_string(),
            ));
        }
        for (id, status) in runc_list(&self.runc_root()) {
            out.push((format!("runc container {id} ({status})"), id));
        }
        for dir in self.cgroups.dirs() {
            for name in dir_names(&dir).into_iter().filter(|n| dir.join(n).is_dir()) {
                out.push((format!("cgroup {}", dir.join(&name).display()), name));
            }
        }
        let ipam = d.dir().join("ipam");
        for net in dir_names(&ipam) {
            for f in dir_names(&ipam.join(&net)) {
                if f == "lock" || f.starts_with("last_reserved_ip") {
                    continue;
                }
                let text = std::fs::read_to_string(ipam.join(&net).join(&f)).unwrap_or_default();
                let owner = text.lines().next().unwrap_or("").trim().to_string();
                out.push((format!("IP lease {f}"), owner));
            }
        }
        out
    }

    /// Fails unless everything on the host belongs to one of `allowed` (shims that were
    /// asked to exit get a moment to do so).
    async fn assert_only(&self, allowed: &BTreeSet<String>, when: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left: Vec<String> = self
                .host_state()
                .into_iter()
                .filter(|(_, owner)| !allowed.contains(owner))
                .map(|(what, owner)| format!("{what} [owner {owner:?}]"))
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{when}: left behind:\n  {}\nlimpetd log:\n{}",
                left.join("\n  "),
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The `n=K` numbers of a counter's CRI log, in order (whole lines only: the shim may be
/// writing the last one).
fn counted(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .filter_map(|msg| msg.strip_prefix("n="))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// Pods, containers and their statuses as a client sees them.
#[derive(Debug, PartialEq)]
struct Seen {
    pods: Vec<limpet_protos::cri::v1::PodSandbox>,
    containers: Vec<limpet_protos::cri::v1::Container>,
    pod_statuses: BTreeMap<String, PodSandboxStatusResponse>,
    statuses: BTreeMap<String, ContainerStatusResponse>,
}

async fn seen(case: &Case, rt: &mut Client) -> Seen {
    let mut pods = rt
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    pods.sort_by(|a, b| a.id.cmp(&b.id));
    let mut containers = rt
        .list_containers(ListContainersRequest { filter: None })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    containers.sort_by(|a, b| a.id.cmp(&b.id));
    let mut pod_statuses = BTreeMap::new();
    for p in &pods {
        let mut st = case.pod_status(rt, &p.id).await;
        // (their order is not part of the answer)
        st.containers_statuses.sort_by(|a, b| a.id.cmp(&b.id));
        pod_statuses.insert(p.id.clone(), st);
    }
    let mut statuses = BTreeMap::new();
    for c in &containers {
        statuses.insert(c.id.clone(), case.status(rt, &c.id).await);
    }
    Seen {
        pods,
        containers,
        pod_statuses,
        statuses,
    }
}

fn info_pid(s: &ContainerStatusResponse) -> i32 {
    s.info
        .get("info")
        .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
        .and_then(|v| v.get("pid").and_then(|p| p.as_i64()))
        .unwrap_or(0) as i32
}

#[test]
fn sigkill_keeps_pods_containers_exits_and_logs() {
    let case_name = "sigkill_keeps_pods_containers_exits_and_logs";
    let Some(mut case) = Case::start(case_name) else {
        return;
    };
    block_on(async {
        let mut rt = case.env.runtime().await;
        let alpha = case.run_pod(&mut rt, "alpha").await;
        let beta = case.run_pod(&mut rt, "beta").await;
        let a = case.run(&mut rt, &alpha, "alpha", "counter", COUNTER).await;
        let b = case.run(&mut rt, &beta, "beta", "counter", COUNTER).await;
        let done = case
            .run(&mut rt, &alpha, "alpha", "done", "echo bye; exit 3")
            .await;
        case.wait_state(&mut rt, &done, ContainerState::ContainerExited)
            .await;
        let logs = [
            case.env.log_dir.join("alpha/counter.log"),
            case.env.log_dir.join("beta/counter.log"),
        ];
        for log in &logs {
            wait_for(10, "the counters' first lines", || async move {
                (counted(log).len() >= 5).then_some(())
            })
            .await;
        }

        let before = seen(&case, &mut rt).await;
        assert_eq!(before.pods.len(), 2);
        assert_eq!(before.containers.len(), 3);
        let mut shims = shim_pids(&case.env.d.socket, None);
        shims.sort();
        assert_eq!(shims.len(), 2, "one shim per pod");

        case.env.d.kill();
        let lines_at_kill: Vec<usize> = logs.iter().map(|l| counted(l).len()).collect();
        std::thread::sleep(Duration::from_millis(1000));
        let lines_at_launch: Vec<usize> = logs.iter().map(|l| counted(l).len()).collect();
        let mut rt = case.relaunch().await;

        let after = seen(&case, &mut rt).await;
        assert_eq!(
            after, before,
            "what a client sees changed across the restart"
        );
        let mut shims_after = shim_pids(&case.env.d.socket, None);
        shims_after.sort();
        assert_eq!(shims_after, shims, "shims were replaced");
        for id in [&a, &b] {
            let pid = info_pid(&after.statuses[id.as_str()]);
            assert!(
                pid > 0 && pid_alive(pid),
                "container {id}: pid {pid} is gone"
            );
        }
        let st = &after.statuses[done.as_str()]
            .status
            .clone()
            .unwrap_or_default();
        assert_eq!(
            (st.state, st.exit_code, st.reason.as_str()),
            (ContainerState::ContainerExited as i32, 3, "Error")
        );

        // ExecSync reaches the re-attached containers
        for id in [&a, &b] {
            let out = rt
                .exec_sync(ExecSyncRequest {
                    container_id: id.clone(),
                    cmd: vec!["sh".into(), "-c".into(), "echo ok".into()],
                    timeout: 10,
                })
                .await
                .unwrap_or_else(|e| panic!("ExecSync after restart: {e}\n{}", case.log_tail()))
                .into_inner();
            assert_eq!(
                (out.exit_code, String::from_utf8_lossy(&out.stdout).as_ref()),
                (0, "ok\n")
            );
        }

        // the logs flowed while limpetd was down, and no line is missing or repeated
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (i, log) in logs.iter().enumerate() {
            assert!(
                lines_at_launch[i] >= lines_at_kill[i] + 5,
                "{}: {} lines at the kill, {} a second later",
                log.display(),
                lines_at_kill[i],
                lines_at_launch[i]
            );
            let n = counted(log);
            let want: Vec<u64> = (0..n.len() as u64).collect();
            assert_eq!(
                n,
                want,
                "{}: lines missing, repeated or restarted",
                log.display()
            );
        }
    });
}

#[test]
fn an_exit_while_limpetd_is_down_is_reported_with_its_code_and_time() {
    let case_name = "an_exit_while_limpetd_is_down_is_reported_with_its_code_and_time";
    let Some(mut case) = Case::start(case_name) else {
        return;
    };
    block_on(async {
        let mut rt = case.env.runtime().await;
        let trigger = case.env.d.dir().join("trigger");
        std::fs::create_dir_all(&trigger).expect("trigger dir");
        let pod = case.run_pod(&mut rt, "gamma").await;
        let mut config = case.env.container(
            "seven",
            "while [ ! -e /trigger/go ]; do sleep 0.05; done; exit 7",
        );
        config.mounts.push(Mount {
            container_path: "/trigger".into(),
            host_path: trigger.display().to_string(),
            readonly: true,
            ..Default::default()
        });
        let id = case.run_config(&mut rt, &pod, "gamma", config).await;
        let before = case.status(&mut rt, &id).await;
        let pid = info_pid(&before);
        assert!(pid > 0, "no pid in {before:?}");

        case.env.d.kill();
        let killed_at = now();
        std::fs::write(trigger.join("go"), b"").expect("trigger");
        wait_for(10, "the container's exit", || async move {
            (!pid_alive(pid)).then_some(())
        })
        .await;
        std::thread::sleep(Duration::from_millis(200));
        let launched_at = now();
        let mut rt = case.relaunch().await;

        let st = case.status(&mut rt, &id).await.status.unwrap_or_default();
        let was = before.status.unwrap_or_default();
        assert_eq!(st.state, ContainerState::ContainerExited as i32, "{st:?}");
        assert_eq!(st.exit_code, 7, "{st:?}");
        assert_eq!(st.reason, "Error", "{st:?}");
        assert_eq!(st.started_at, was.started_at);
        assert!(
            killed_at < st.finished_at && st.finished_at < launched_at,
            "finished_at {} is not between the kill ({killed_at}) and the restart ({launched_at})",
            st.finished_at
        );
        case.remove_pod(&mut rt, &pod).await;
        case.assert_only(&BTreeSet::new(), "after removing the pod")
            .await;
    });
}

#[test]
fn a_shim_killed_while_limpetd_is_down_leaves_an_exited_container_and_nothing_else() {
    let case_name =
        "a_shim_killed_while_limpetd_is_down_leaves_an_exited_container_and_nothing_else";
    let Some(mut case) = Case::start(case_name) else {
        return;
    };
    block_on(async {
        let mut rt = case.env.runtime().await;
        let pod = case.run_pod(&mut rt, "delta").await;
        let id = case
            .run(&mut rt, &pod, "delta", "sleeper", "sleep 3600")
            .await;
        let pid = info_pid(&case.status(&mut rt, &id).await);
        let shim = pod_shim(&case.env.d.socket, &pod).expect("the pod's shim");

        case.env.d.kill();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(shim),
            nix::sys::signal::Signal::SIGKILL,
        );
        wait_for(5, "the shim's death", || async move {
            (!pid_alive(shim)).then_some(())
        })
        .await;
        let mut rt = case.relaunch().await;

        let st = case.status(&mut rt, &id).await.status.unwrap_or_default();
        assert_eq!(st.state, ContainerState::ContainerExited as i32, "{st:?}");
        // the exit code is unknown (the shim's delete action reports SIGKILL); the reason
        // and message say why
        assert_eq!(st.reason, "Unknown", "{st:?}");
        assert!(st.message.contains("shim died"), "no clear message: {st:?}");
        assert!(st.finished_at > 0, "{st:?}");
        let ps = case
            .pod_status(&mut rt, &pod)
            .await
            .status
            .unwrap_or_default();
        assert_eq!(ps.state, PodSandboxState::SandboxNotready as i32);
        // nothing of the pod runs on without its shim
        assert!(!pid_alive(pid), "the container's process {pid} still runs");
        let running: Vec<_> = runc_list(&case.runc_root())
            .into_iter()
            .filter(|(_, status)| status != "stopped")
            .collect();
        assert!(running.is_empty(), "runc containers still up: {running:?}");

        case.remove_pod(&mut rt, &pod).await;
        case.assert_only(&BTreeSet::new(), "after removing the pod")
            .await;
    });
}

/// The request that reaches a crash point.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    RunPod,
    StopPod,
    CreateContainer,
    StartContainer,
    RemoveContainer,
}

/// Every named crash point, the request that reaches it, and whether the store already
/// holds the finished operation when it fires (the result is then wholly there; before
/// that, wholly gone).
const POINTS: &[(&str, Step, bool)] = &[
    ("sandbox-recorded", Step::RunPod, false),
    ("sandbox-netns-created", Step::RunPod, false),
    ("sandbox-network-added", Step::RunPod, false),
    ("sandbox-shim-started", Step::RunPod, false),
    ("sandbox-task-created", Step::RunPod, false),
    ("sandbox-started", Step::RunPod, true),
    ("sandbox-stop-killed", Step::StopPod, true),
    ("sandbox-network-deleted", Step::StopPod, true),
    ("container-recorded", Step::CreateContainer, false),
    ("container-rootfs-mounted", Step::CreateContainer, false),
    ("container-shim-started", Step::CreateContainer, false),
    ("container-created", Step::CreateContainer, true),
    ("container-started", Step::StartContainer, true),
    ("container-task-deleted", Step::RemoveContainer, true),
];

/// Whether this limpetd has named crash points (`--features limpetd/failpoints`).
fn failpoints_built() -> limpet_tests::Result<bool> {
    let bin = binary("limpetd")?;
    let out = Command::new(&bin).arg("--version").output().map_err(|e| {
        limpet_tests::HarnessError::Setup(format!("{} --version: {e}", bin.display()))
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("failpoints"))
}

async fn names_of_pods(rt: &mut Client) -> Vec<(String, String, i32)> {
    rt.list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .into_iter()
        .map(|p| (p.metadata.unwrap_or_default().name, p.id, p.state))
        .collect()
}

async fn names_of_containers(rt: &mut Client) -> Vec<(String, String, i32)> {
    rt.list_containers(ListContainersRequest { filter: None })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
        .into_iter()
        .map(|c| (c.metadata.unwrap_or_default().name, c.id, c.state))
        .collect()
}

#[test]
fn a_crash_at_each_named_point_leaves_the_operation_whole_or_gone() {
    let case_name = "a_crash_at_each_named_point_leaves_the_operation_whole_or_gone";
    match ready(case_name, failpoints_built()) {
        None => return,
        Some(false) => {
            limpet_tests::skip(&format!(
                "{case_name} (limpetd is built without crash points: cargo build --release -p limpetd -p containerd-shim-limpet-v2 --features limpetd/failpoints)"
            ));
            return;
        }
        Some(true) => {}
    }
    let Some(mut case) = Case::start(case_name) else {
        return;
    };
    block_on(async {
        let mut rt = case.env.runtime().await;
        // A pod that lives through every crash, untouched.
        let base = case.run_pod(&mut rt, "base").await;
        let base_ctr = case
            .run(&mut rt, &base, "base", "sleeper", "sleep 3600")
            .await;
        let base_shim = pod_shim(&case.env.d.socket, &base).expect("base pod's shim");
        let base_pid = info_pid(&case.status(&mut rt, &base_ctr).await);
        let base_ids: BTreeSet<String> = [base.clone(), base_ctr.clone()].into();
        // the checks below see every kind of thing a pod and its container leave on the host
        let seen: Vec<(String, String)> = case.host_state();
        for kind in [
            "netns",
            "bundle",
            "pod shm",
            "pod files",
            "writable layer",
            "mount",
            "shim",
            "runc container",
            "cgroup",
            "IP lease",
        ] {
            assert!(
                seen.iter()
                    .any(|(what, owner)| what.starts_with(kind) && base_ids.contains(owner)),
                "no {kind} found for the base pod: {seen:?}"
            );
        }
        case.assert_only(&base_ids, "before any crash").await;

        for &(point, step, kept) in POINTS {
            let started = Instant::now();
            case.env.d.env = vec![("FAILPOINTS".into(), format!("{point}=return"))];
            let mut rt = case.relaunch().await;
            let log_from = case.env.d.log().len();

            // set-up the request needs (no crash point is on its way)
            let mut victim = String::new();
            match step {
                Step::StopPod => {
                    victim = case.run_pod(&mut rt, "crash").await;
                    case.run(&mut rt, &victim, "crash", "sleeper", "sleep 3600")
                        .await;
                }
                Step::StartContainer => {
                    victim = case
                        .create(
                            &mut rt,
                            &base,
                            "base",
                            case.env.container("crash", "sleep 3600"),
                        )
                        .await
                        .expect("CreateContainer");
                }
                Step::RemoveContainer => {
                    victim = case
                        .run(&mut rt, &base, "base", "crash", "sleep 3600")
                        .await;
                }
                _ => {}
            }
            let outcome = match step {
                Step::RunPod => rt
                    .run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(case.pod_config("crash")),
                        runtime_handler: String::new(),
                    })
                    .await
                    .map(|_| ()),
                Step::StopPod => rt
                    .stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: victim.clone(),
                    })
                    .await
                    .map(|_| ()),
                Step::CreateContainer => case
                    .create(
                        &mut rt,
                        &base,
                        "base",
                        case.env.container("crash", "sleep 3600"),
                    )
                    .await
                    .map(|_| ()),
                Step::StartContainer => rt
                    .start_container(StartContainerRequest {
                        container_id: victim.clone(),
                    })
                    .await
                    .map(|_| ()),
                Step::RemoveContainer => rt
                    .remove_container(RemoveContainerRequest {
                        container_id: victim.clone(),
                    })
                    .await
                    .map(|_| ()),
            };
            drop(rt);
            let log = case.env.d.log();
            let crashed = log[log_from.min(log.len())..]
                .lines()
                .any(|l| l.contains("crash point reached") && l.contains(point));
            assert!(
                outcome.is_err() && crashed,
                "{point}: limpetd did not crash there ({step:?} answered {outcome:?})\n{}",
                case.log_tail()
            );

            case.env.d.env.clear();
            let mut rt = case.relaunch().await;
            let pods = names_of_pods(&mut rt).await;
            let containers = names_of_containers(&mut rt).await;
            let crash_pod = pods.iter().find(|p| p.0 == "crash").cloned();
            let crash_ctr = containers.iter().find(|c| c.0 == "crash").cloned();

            match (step, kept) {
                (Step::RunPod, false) => {
                    assert!(
                        crash_pod.is_none(),
                        "{point}: half-made pod listed: {pods:?}"
                    );
                    case.assert_only(&base_ids, point).await;
                }
                (Step::RunPod, true) => {
                    let (_, id, state) = crash_pod
                        .unwrap_or_else(|| panic!("{point}: the made pod is gone: {pods:?}"));
                    assert_eq!(state, PodSandboxState::SandboxReady as i32, "{point}");
                    let st = case
                        .pod_status(&mut rt, &id)
                        .await
                        .status
                        .unwrap_or_default();
                    let ip = st.network.map(|n| n.ip).unwrap_or_default();
                    assert!(!ip.is_empty(), "{point}: pod without its IP");
                    assert!(
                        pod_shim(&case.env.d.socket, &id).is_some(),
                        "{point}: pod without its shim"
                    );
                    case.remove_pod(&mut rt, &id).await;
                    case.assert_only(&base_ids, point).await;
                }
                (Step::StopPod, _) => {
                    let (_, id, _) =
                        crash_pod.unwrap_or_else(|| panic!("{point}: the pod is gone: {pods:?}"));
                    assert_eq!(id, victim);
                    // stopping again finishes the stop: no network left, nothing running
                    rt.stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{point}: StopPodSandbox again: {e}\n{}", case.log_tail())
                    });
                    let st = case
                        .pod_status(&mut rt, &id)
                        .await
                        .status
                        .unwrap_or_default();
                    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32, "{point}");
                    let of_pod: Vec<String> = case
                        .host_state()
                        .into_iter()
                        .filter(|(what, owner)| {
                            owner == &id
                                && (what.starts_with("netns")
                                    || what.starts_with("IP lease")
                                    || what.starts_with("mount")
                                    || (what.starts_with("runc") && !what.ends_with("(stopped)")))
                        })
                        .map(|(what, _)| what)
                        .collect();
                    assert!(
                        of_pod.is_empty(),
                        "{point}: the stopped pod still has {of_pod:?}"
                    );
                    rt.remove_pod_sandbox(RemovePodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{point}: RemovePodSandbox: {e}\n{}", case.log_tail())
                    });
                    case.assert_only(&base_ids, point).await;
                }
                (Step::CreateContainer, false) => {
                    assert!(
                        crash_ctr.is_none(),
                        "{point}: half-made container listed: {containers:?}"
                    );
                    case.assert_only(&base_ids, point).await;
                }
                (Step::CreateContainer | Step::StartContainer, true) => {
                    let (_, id, state) = crash_ctr.unwrap_or_else(|| {
                        panic!("{point}: the made container is gone: {containers:?}")
                    });
                    let want = if step == Step::CreateContainer {
                        ContainerState::ContainerCreated
                    } else {
                        ContainerState::ContainerRunning
                    };
                    assert_eq!(state, want as i32, "{point}");
                    if step == Step::CreateContainer {
                        rt.start_container(StartContainerRequest {
                            container_id: id.clone(),
                        })
                        .await
                        .unwrap_or_else(|e| {
                            panic!("{point}: StartContainer: {e}\n{}", case.log_tail())
                        });
                    }
                    let pid = info_pid(&case.status(&mut rt, &id).await);
                    assert!(pid > 0 && pid_alive(pid), "{point}: not running ({pid})");
                    case.remove_container(&mut rt, &id).await;
                    case.assert_only(&base_ids, point).await;
                }
                (Step::RemoveContainer, _) => {
                    let (_, id, state) = crash_ctr.unwrap_or_else(|| {
                        panic!("{point}: the container is gone: {containers:?}")
                    });
                    assert_eq!(id, victim);
                    assert_eq!(state, ContainerState::ContainerExited as i32, "{point}");
                    case.remove_container(&mut rt, &id).await;
                    case.assert_only(&base_ids, point).await;
                }
                (Step::StartContainer, false) => unreachable!(),
            }

            // the name is free again
            match step {
                Step::RunPod | Step::StopPod => {
                    let id = case.run_pod(&mut rt, "crash").await;
                    case.remove_pod(&mut rt, &id).await;
                }
                _ => {
                    let id = case
                        .run(&mut rt, &base, "base", "crash", "sleep 3600")
                        .await;
                    case.remove_container(&mut rt, &id).await;
                }
            }
            case.assert_only(&base_ids, point).await;

            // the pod that lived through it is untouched
            assert_eq!(
                pod_shim(&case.env.d.socket, &base),
                Some(base_shim),
                "{point}"
            );
            let st = case.status(&mut rt, &base_ctr).await;
            assert_eq!(info_pid(&st), base_pid, "{point}");
            assert!(pid_alive(base_pid), "{point}: the base container died");
            eprintln!("{point}: ok ({} ms)", started.elapsed().as_millis());
        }
        let mut rt = case.env.runtime().await;
        case.remove_pod(&mut rt, &base).await;
        case.assert_only(&BTreeSet::new(), "at the end").await;
    });
}

#[test]
fn reattach_time_for_ten_pods() {
    let case_name = "reattach_time_for_ten_pods";
    let Some(mut case) = Case::start(case_name) else {
        return;
    };
    block_on(async {
        let mut rt = case.env.runtime().await;
        let mut ids = Vec::new();
        for i in 0..10 {
            let name = format!("p{i}");
            let pod = case.run_pod(&mut rt, &name).await;
            let c = case
                .run(&mut rt, &pod, &name, "sleeper", "sleep 3600")
                .await;
            ids.push((pod, c));
        }
        case.env.d.kill();
        let log_from = case.env.d.log().len();
        let started = Instant::now();
        let mut rt = case.relaunch().await;
        let up_ms = started.elapsed().as_millis();
        let log = case.env.d.log();
        let line = log[log_from.min(log.len())..]
            .lines()
            .find(|l| l.contains("re-attached"))
            .unwrap_or_else(|| panic!("no re-attached line:\n{}", case.log_tail()))
            .to_string();
        let elapsed = line
            .split("elapsed_ms: ")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .unwrap_or("?");
        eprintln!(
            "re-attach of 10 pods (10 containers): reconcile {elapsed} ms, socket up after {up_ms} ms\n  {line}"
        );
        for (pod, c) in &ids {
            let ps = case
                .pod_status(&mut rt, pod)
                .await
                .status
                .unwrap_or_default();
            assert_eq!(ps.state, PodSandboxState::SandboxReady as i32);
            let st = case.status(&mut rt, c).await.status.unwrap_or_default();
            assert_eq!(st.state, ContainerState::ContainerRunning as i32);
        }
    });
}
