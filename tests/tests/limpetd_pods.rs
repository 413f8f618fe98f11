//! Pods and containers through limpetd, driven by a CRI gRPC client: a pod on a bridge +
//! host-local network with two containers sharing it, a host port through portmap, host-network
//! pods, pod-shared and target PID namespaces, logs in the CRI format and their rotation,
//! ExecSync (output, exit codes, timeout, output cap), and the status a client reads back.

mod pod_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use limpet_protos::cri::tonic::Code;
use limpet_protos::cri::v1::{
    ContainerConfig, ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest,
    ListContainersRequest, NamespaceMode, PodSandboxStatusRequest, PortMapping, Protocol,
    RemovePodSandboxRequest, ReopenContainerLogRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};
use limpet_tests::limpetd::{block_on, ready, Options};
use limpet_tests::pods::{pod_config, PodEnv};
use pod_support::{assert_nothing_left, code_of, wait_for, Cri};

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
        assert!(
            ip.starts_with(prefix.as_str()),
            "pod ip {ip:?} not in {prefix}"
        );

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
            assert!(
                parts[0].ends_with('Z') && parts[0].contains('T'),
                "{line:?}"
            );
            assert!(["stdout", "stderr"].contains(&parts[1]), "{line:?}");
            assert!(["F", "P"].contains(&parts[2]), "{line:?}");
        }
        assert!(text.contains(" stdout F hello-from-pod"), "{text}");
        assert!(text.contains(" stderr F done"), "{text}");

        // ExecSync: output, exit code
        let out = rt
            .exec_sync(ExecSyncRequest {
                container_id: ids[0].clone(),
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "hostname; echo err >&2; exit 3".into(),
                ],
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
    assert_nothing_left(&env);
}

/// Lines of `iptables-save` that name the pod (by id, in portmap's comments) or its IP.
fn iptables_rules_of(pod: &str, ip: &str) -> Vec<String> {
    let out = Command::new("iptables-save")
        .output()
        .unwrap_or_else(|e| panic!("iptables-save: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.contains(pod) || l.contains(&format!("{ip}/")) || l.contains(&format!("{ip}:"))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn host_port_reaches_the_pod_through_portmap_and_its_rules_go_with_the_pod() {
    let case = "host_port_reaches_the_pod_through_portmap_and_its_rules_go_with_the_pod";
    if Command::new("iptables-save").output().is_err() {
        limpet_tests::skip(&format!("{case} (iptables-save is not installed)"));
        return;
    }
    let Some(env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    let host_port = limpet_tests::registry::free_port().expect("free port");
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let mut pod_config = env.pod("ports");
        pod_config.port_mappings = vec![PortMapping {
            protocol: Protocol::Tcp.into(),
            container_port: 8080,
            host_port: host_port.into(),
            host_ip: String::new(),
        }];
        let pod = cri.run_pod(&pod_config).await;
        let ip = cri.pod_ip(&pod).await;
        cri.run(
            &pod,
            &pod_config,
            env.container(
                "server",
                "mkdir -p /www && echo through-portmap > /www/index.html && exec httpd -f -p 8080 -h /www",
            ),
        )
        .await;
        // The host reaches a host port on any of its addresses: the bridge's is one.
        let prefix = &env.d.network.as_ref().expect("network").prefix;
        let addr = format!("{prefix}1:{host_port}");
        wait_for(10, "the pod behind its host port", || {
            let addr = addr.clone();
            async move { http_get(&addr).filter(|p| p.contains("through-portmap")) }
        })
        .await;
        let rules = iptables_rules_of(&pod, &ip);
        assert!(
            rules
                .iter()
                .any(|r| r.contains("DNAT") && r.contains(&format!("{ip}:8080"))),
            "no DNAT rule to the pod: {rules:#?}"
        );

        cri.remove_pod(&pod).await;
        let rules = iptables_rules_of(&pod, &ip);
        assert!(
            rules.is_empty(),
            "rules left after RemovePodSandbox: {rules:#?}"
        );
        assert!(http_get(&addr).is_none(), "the host port still answers");
    });
    assert_nothing_left(&env);
}

#[test]
fn exec_sync_exit_codes_timeout_and_output_cap() {
    let case = "exec_sync_exit_codes_timeout_and_output_cap";
    const CAP: usize = 1 << 20;
    let opts = Options {
        extra_config: format!("[runtime]\nmax_exec_output = {CAP}\n"),
        ..Options::default()
    };
    let Some(env) = ready(case, PodEnv::start(opts)) else {
        return;
    };
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let pod_config = env.pod("execs");
        let pod = cri.run_pod(&pod_config).await;
        let id = cri
            .run(&pod, &pod_config, env.container("idle", "exec sleep 3600"))
            .await;

        for (script, code) in [("true", 0), ("false", 1), ("no-such-command", 127)] {
            let r = cri.sh(&id, script).await;
            assert_eq!(r.exit_code, code, "{script}: {r:?}");
        }
        // no shell: the runtime's own error, not an exit code
        let (code, msg) = code_of(cri.try_exec(&id, &["/no/such/binary"], 5).await);
        assert_ne!(code, Code::Ok);
        assert!(msg.contains("/no/such/binary"), "{msg}");

        // the timeout kills the command and says so
        let started = Instant::now();
        let (code, msg) = code_of(cri.try_exec(&id, &["sleep", "30"], 1).await);
        assert_eq!(code, Code::DeadlineExceeded, "{msg}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        let ps = cri.sh_ok(&id, "ps -o pid,args").await;
        assert!(
            !ps.lines().any(|l| l.trim_end().ends_with(" sleep 30")),
            "the exec is still running:\n{ps}"
        );

        // 20 MiB of output is cut at the cap, and the command still finishes
        let started = Instant::now();
        let r = cri
            .try_exec(
                &id,
                &["sh", "-c", "head -c 20971520 /dev/zero; echo done >&2"],
                30,
            )
            .await
            .expect("ExecSync");
        assert_eq!(r.exit_code, 0);
        assert_eq!(r.stdout.len(), CAP);
        assert_eq!(String::from_utf8_lossy(&r.stderr), "done\n");
        assert!(started.elapsed() < Duration::from_secs(10));
        cri.remove_pod(&pod).await;
    });
    assert_nothing_left(&env);
}

#[test]
fn host_network_pod_and_pod_or_target_pid_namespaces() {
    let case = "host_network_pod_and_pod_or_target_pid_namespaces";
    let Some(env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let mut config = pod_config(
            "hostnet",
            &env.log_dir.join("hostnet").display().to_string(),
            true,
        );
        if let Some(ns) = config
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            ns.pid = NamespaceMode::Pod.into();
        }
        let pid_mode = |c: &mut ContainerConfig, mode: NamespaceMode, target: &str| {
            if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
                let mut ns = sc.namespace_options.clone().unwrap_or_default();
                ns.pid = mode.into();
                ns.target_id = target.to_string();
                sc.namespace_options = Some(ns);
            }
        };
        let pod = cri.run_pod(&config).await;
        let netns: Vec<_> = std::fs::read_dir(env.d.dir().join("state/netns"))
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            netns.is_empty(),
            "a host-network pod got a netns: {netns:?}"
        );

        let mut c = env.container("shared", "exec sleep 3600");
        pid_mode(&mut c, NamespaceMode::Pod, "");
        let id = cri.run(&pod, &config, c).await;
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert_eq!(cri.sh_ok(&id, "hostname").await.trim(), host);
        let host_net = std::fs::read_link("/proc/self/ns/net").expect("own netns");
        assert_eq!(
            cri.sh_ok(&id, "readlink /proc/self/ns/net").await.trim(),
            host_net.display().to_string()
        );
        // the pod's pause process is pid 1; the container's sleep is another
        let init = cri.sh_ok(&id, "tr '\\0' ' ' < /proc/1/cmdline").await;
        assert!(init.contains("pause"), "pid 1 is {init:?}");
        let ps = cri.sh_ok(&id, "ps -o pid,args").await;
        assert!(ps.contains("sleep 3600"), "{ps}");
        // in the pod's namespace a container's processes do not die with its first one: they
        // are killed when it exits
        let mut leaver = env.container("leaver", "sleep 3603 & echo left; exit 0");
        pid_mode(&mut leaver, NamespaceMode::Pod, "");
        let leaver = cri.run(&pod, &config, leaver).await;
        assert_eq!(cri.wait_exited(&leaver, 10).await.exit_code, 0);
        let ps = cri.sh_ok(&id, "ps -o args").await;
        assert!(
            !ps.contains("sleep 3603"),
            "the exited container's child lives on:\n{ps}"
        );

        // pid mode TARGET: another container's namespace, whose pid 1 is that container's
        let mut own = env.container("own-pid", "exec sleep 3601");
        pid_mode(&mut own, NamespaceMode::Container, "");
        let own = cri.run(&pod, &config, own).await;
        let mut joiner = env.container("joiner", "exec sleep 3602");
        pid_mode(&mut joiner, NamespaceMode::Target, &own);
        let joiner = cri.run(&pod, &config, joiner).await;
        let init = cri.sh_ok(&joiner, "tr '\\0' ' ' < /proc/1/cmdline").await;
        assert_eq!(init.trim(), "sleep 3601", "pid 1 of the target's namespace");
        let ps = cri.sh_ok(&own, "ps -o args").await;
        assert!(ps.contains("sleep 3602") && !ps.contains("pause"), "{ps}");
        let mut orphan = env.container("orphan", "true");
        pid_mode(&mut orphan, NamespaceMode::Target, "no-such-container");
        let (code, msg) = code_of(cri.try_create(&pod, &config, orphan).await);
        assert_eq!(code, Code::NotFound, "{msg}");
        cri.remove_pod(&pod).await;
    });
    assert_nothing_left(&env);
}

#[test]
fn reopen_container_log_after_a_rotation() {
    let case = "reopen_container_log_after_a_rotation";
    let Some(env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let pod_config = env.pod("rotate");
        let pod = cri.run_pod(&pod_config).await;
        let id = cri
            .run(
                &pod,
                &pod_config,
                env.container(
                    "ticker",
                    "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.05; done",
                ),
            )
            .await;
        let log = env.log_dir.join("rotate").join("ticker.log");
        let has = |path: &std::path::Path, text: &str| {
            std::fs::read_to_string(path).is_ok_and(|t| t.contains(text))
        };
        wait_for(10, "tick-3", || {
            let found = has(&log, "tick-3\n");
            async move { found.then_some(()) }
        })
        .await;
        let rotated = log.with_extension("log.1");
        std::fs::rename(&log, &rotated).expect("rotate");
        cri.rt
            .reopen_container_log(ReopenContainerLogRequest {
                container_id: id.clone(),
            })
            .await
            .expect("ReopenContainerLog");
        wait_for(10, "new lines in the reopened log", || {
            let n = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .count();
            async move { (n >= 3).then_some(()) }
        })
        .await;
        // every tick is in one of the files, once
        let old = std::fs::read_to_string(&rotated).expect("rotated log");
        let new = std::fs::read_to_string(&log).expect("new log");
        let ticks = |t: &str| -> Vec<u64> {
            t.lines()
                .filter_map(|l| l.rsplit(' ').next()?.strip_prefix("tick-")?.parse().ok())
                .collect()
        };
        let (old, new) = (ticks(&old), ticks(&new));
        assert!(!old.is_empty() && !new.is_empty());
        assert_eq!(new[0], old[old.len() - 1] + 1, "old {old:?}, new {new:?}");
        cri.remove_pod(&pod).await;
    });
    assert_nothing_left(&env);
}
