//! Pods and containers through limpetd, driven by a CRI gRPC client: a pod on a bridge +
//! host-local network with two containers sharing it, logs in the CRI format, ExecSync, and
//! the status a client reads back.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use limpet_protos::cri::v1::{
    ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, ListContainersRequest,
    PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};
use limpet_tests::limpetd::{block_on, ready, Options};
use limpet_tests::pods::PodEnv;

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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn http_get(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn pod_ip_reachable_two_containers_share_the_network_logs_and_exec() {
    let case = "pod_ip_reachable_two_containers_share_the_network_logs_and_exec";
    let Some(env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    block_on(async {
        let mut rt = env.runtime().await;
        let pod_config = env.pod("web");
        let pod = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", env.d.log_tail()))
            .into_inner()
            .pod_sandbox_id;
        let status = rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner();
        let ip = status
            .status
            .as_ref()
            .and_then(|s| s.network.as_ref())
            .map(|n| n.ip.clone())
            .unwrap_or_default();
        let prefix = &env.d.network.as_ref().expect("network").prefix;
        assert!(ip.starts_with(prefix.as_str()), "pod ip {ip:?} not in {prefix}");

        let server = env.container(
            "server",
            "mkdir -p /www && echo hello-from-pod > /www/index.html && echo serving && exec httpd -f -p 8080 -h /www",
        );
        let client = env.container(
            "client",
            "for i in $(seq 50); do wget -q -O - http://127.0.0.1:8080/ && break; sleep 0.1; done; echo done >&2; sleep 3600",
        );
        let mut ids = Vec::new();
        for c in [server, client] {
            let id = rt
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod.clone(),
                    config: Some(c),
                    sandbox_config: Some(pod_config.clone()),
                })
                .await
                .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", env.d.log_tail()))
                .into_inner()
                .container_id;
            rt.start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", env.d.log_tail()));
            ids.push(id);
        }

        // the host reaches the pod on its IP
        let addr = format!("{ip}:8080");
        let page = wait_for(10, "the pod's web server", || {
            let addr = addr.clone();
            async move { http_get(&addr).filter(|p| p.contains("hello-from-pod")) }
        })
        .await;
        assert!(page.starts_with("HTTP/1."), "{page}");

        // the second container reached the first on 127.0.0.1; its log is in CRI format
        let log = env.log_dir.join("web").join("client.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            if t.contains("hello-from-pod") && t.contains("done") {
                break t;
            }
            assert!(
                Instant::now() < deadline,
                "client log lacks the page: {t:?}\nserver log: {:?}",
                std::fs::read_to_string(env.log_dir.join("web").join("server.log"))
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for line in text.lines() {
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            assert_eq!(parts.len(), 4, "{line:?}");
            assert!(parts[0].ends_with('Z') && parts[0].contains('T'), "{line:?}");
            assert!(["stdout", "stderr"].contains(&parts[1]), "{line:?}");
            assert!(["F", "P"].contains(&parts[2]), "{line:?}");
        }
        assert!(text.contains(" stdout F hello-from-pod"), "{text}");
        assert!(text.contains(" stderr F done"), "{text}");

        // ExecSync: output, exit code
        let out = rt
            .exec_sync(ExecSyncRequest {
                container_id: ids[0].clone(),
                cmd: vec!["sh".into(), "-c".into(), "hostname; echo err >&2; exit 3".into()],
                timeout: 10,
            })
            .await
            .expect("ExecSync")
            .into_inner();
        assert_eq!(out.exit_code, 3);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "web\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

        let list = rt
            .list_containers(ListContainersRequest { filter: None })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(list.containers.len(), 2);
        let st = rt
            .container_status(ContainerStatusRequest {
                container_id: ids[0].clone(),
                verbose: false,
            })
            .await
            .expect("status")
            .into_inner()
            .status
            .expect("status");
        assert_eq!(st.state, 1, "running");
        assert!(st.log_path.ends_with("web/server.log"));

        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("stop pod");
        let st = rt
            .container_status(ContainerStatusRequest {
                container_id: ids[1].clone(),
                verbose: false,
            })
            .await
            .expect("status")
            .into_inner()
            .status
            .expect("status");
        assert_eq!(st.state, 2, "exited after the pod stopped");
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("remove pod");
        assert!(http_get(&addr).is_none(), "pod still answers after removal");
        let list = rt
            .list_containers(ListContainersRequest { filter: None })
            .await
            .expect("list")
            .into_inner();
        assert!(list.containers.is_empty());
    });
    assert!(
        limpet_tests::shim_pids(&env.d.socket, None).is_empty(),
        "shims left after the pod was removed"
    );
    // the netns directory itself stays a shared mount point, as /run/netns does
    let mounts: Vec<_> = limpet_tests::mounts_under(env.d.dir())
        .into_iter()
        .filter(|m| !m.ends_with("state/netns"))
        .collect();
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
}
