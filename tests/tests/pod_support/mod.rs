//! What the limpetd pod and container suites share: a CRI client with one call per step a
//! case takes (each failing the case with the daemon's log tail), polling, and the list of
//! whatever a daemon still holds of its pods.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::tonic::{Code, Status};
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::{
    ContainerConfig, ContainerStatus, ContainerStatusRequest, CreateContainerRequest,
    ExecSyncRequest, ExecSyncResponse, PodSandboxConfig, PodSandboxStatus, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
};
use limpet_tests::pods::PodEnv;

/// A CRI client of one [`PodEnv`].
pub struct Cri<'a> {
    pub rt: RuntimeServiceClient<Channel>,
    pub env: &'a PodEnv,
}

/// The CRI `ContainerState` numbers.
pub const CREATED: i32 = 0;
pub const RUNNING: i32 = 1;
pub const EXITED: i32 = 2;

impl<'a> Cri<'a> {
    pub async fn new(env: &'a PodEnv) -> Cri<'a> {
        Cri {
            rt: env.runtime().await,
            env,
        }
    }

    #[track_caller]
    fn fail(&self, what: &str, e: &Status) -> ! {
        panic!("{what}: {e:?}\nlimpetd log:\n{}", self.env.d.log_tail())
    }

    pub async fn run_pod(&mut self, config: &PodSandboxConfig) -> String {
        match self
            .rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
        {
            Ok(r) => r.into_inner().pod_sandbox_id,
            Err(e) => self.fail("RunPodSandbox", &e),
        }
    }

    /// CreateContainer's answer, as it is.
    pub async fn try_create(
        &mut self,
        pod: &str,
        pod_config: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> Result<String, Status> {
        self.rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.to_string(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    pub async fn create(
        &mut self,
        pod: &str,
        pod_config: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> String {
        match self.try_create(pod, pod_config, config).await {
            Ok(id) => id,
            Err(e) => self.fail("CreateContainer", &e),
        }
    }

    pub async fn start(&mut self, id: &str) {
        if let Err(e) = self
            .rt
            .start_container(StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
        {
            self.fail("StartContainer", &e)
        }
    }

    /// CreateContainer and StartContainer.
    pub async fn run(
        &mut self,
        pod: &str,
        pod_config: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> String {
        let id = self.create(pod, pod_config, config).await;
        self.start(&id).await;
        id
    }

    /// ExecSync of `cmd` as it is.
    pub async fn try_exec(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<ExecSyncResponse, Status> {
        self.rt
            .exec_sync(ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// ExecSync of `sh -c script` (10 s timeout); the answer must be OK.
    pub async fn sh(&mut self, id: &str, script: &str) -> ExecSyncResponse {
        match self.try_exec(id, &["sh", "-c", script], 10).await {
            Ok(r) => r,
            Err(e) => self.fail(&format!("ExecSync {script:?}"), &e),
        }
    }

    /// The stdout of `sh -c script`, which must exit 0.
    pub async fn sh_ok(&mut self, id: &str, script: &str) -> String {
        let r = self.sh(id, script).await;
        assert_eq!(
            r.exit_code,
            0,
            "{script:?}: stdout {:?} stderr {:?}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
        String::from_utf8_lossy(&r.stdout).into_owned()
    }

    pub async fn status(&mut self, id: &str) -> ContainerStatus {
        match self
            .rt
            .container_status(ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
        {
            Ok(r) => r.into_inner().status.unwrap_or_default(),
            Err(e) => self.fail("ContainerStatus", &e),
        }
    }

    pub async fn pod_status(&mut self, id: &str) -> PodSandboxStatus {
        match self
            .rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: false,
            })
            .await
        {
            Ok(r) => r.into_inner().status.unwrap_or_default(),
            Err(e) => self.fail("PodSandboxStatus", &e),
        }
    }

    /// The pod's primary IP.
    pub async fn pod_ip(&mut self, id: &str) -> String {
        self.pod_status(id)
            .await
            .network
            .map(|n| n.ip)
            .unwrap_or_default()
    }

    /// Polls ContainerStatus until the container exited.
    pub async fn wait_exited(&mut self, id: &str, secs: u64) -> ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let st = self.status(id).await;
            if st.state == EXITED {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} still not exited after {secs}s: {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn remove_pod(&mut self, id: &str) {
        if let Err(e) = self
            .rt
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
        {
            self.fail("RemovePodSandbox", &e)
        }
    }
}

/// The gRPC code of a call that must fail.
#[track_caller]
pub fn code_of<T: std::fmt::Debug>(r: Result<T, Status>) -> (Code, String) {
    match r {
        Ok(v) => panic!("the call should have failed, it answered {v:?}"),
        Err(s) => (s.code(), s.message().to_string()),
    }
}

/// Waits until `f` returns Some, or panics with `what` after `secs`.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `sh -c script` as a container command.
pub fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

/// What the daemon still holds of pods and containers: netns files, pod addresses, shims,
/// mounts (the netns directory itself stays a shared mount point, as /run/netns does),
/// bundles, pod files and shm, exec FIFO dirs, runc state and writable layers.
pub fn leftovers(env: &PodEnv) -> Vec<String> {
    let state = env.d.dir().join("state");
    let entries = |base: &std::path::Path, dir: &str| -> Vec<String> {
        std::fs::read_dir(base.join(dir))
            .map(|rd| {
                rd.flatten()
                    .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut left = Vec::new();
    for dir in ["netns", "bundles", "shm", "exec", "runtime/runc/k8s.io"] {
        left.extend(entries(&state, dir));
    }
    for dir in ["sandboxes", "snapshots/rootfs"] {
        left.extend(entries(&env.d.root, dir));
    }
    // host-local keeps one file per address it gave out
    if let Some(net) = &env.d.network {
        let ipam = env.d.dir().join("ipam").join(&net.bridge);
        if let Ok(rd) = std::fs::read_dir(&ipam) {
            left.extend(rd.flatten().filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(&net.prefix)
                    .then(|| format!("address {name} still reserved"))
            }));
        }
    }
    left.extend(
        limpet_tests::shim_pids(&env.d.socket, None)
            .into_iter()
            .map(|pid| format!("shim process {pid}")),
    );
    left.extend(
        limpet_tests::mounts_under(env.d.dir())
            .into_iter()
            .filter(|m| !m.ends_with("state/netns"))
            .map(|m| format!("mount {}", m.display())),
    );
    left.sort();
    left
}

/// Asserts that nothing is left (see [`leftovers`]) once the last shim had a moment to exit:
/// a shim answers Shutdown first, then flushes its events and exits.
#[track_caller]
pub fn assert_nothing_left(env: &PodEnv) {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut left = leftovers(env);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = leftovers(env);
    }
    assert_eq!(left, Vec::<String>::new(), "left behind");
}
