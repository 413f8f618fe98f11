//! Containers through limpetd, driven by a CRI gRPC client: OOM kills, users and a read-only
//! rootfs, stop signals and timeouts, stats, the container event stream, the List filters and
//! idempotent stops and removals, resource updates, and bad requests answered with a clear
//! code and nothing left behind.

mod pod_support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use limpet_protos::cri::tonic::Code;
use limpet_protos::cri::v1::{
    ContainerConfig, ContainerEventType, ContainerFilter, ContainerStateValue,
    ContainerStatsFilter, ContainerStatsRequest, GetEventsRequest, Int64Value,
    LinuxContainerResources, ListContainerStatsRequest, ListContainersRequest,
    ListPodSandboxRequest, ListPodSandboxStatsRequest, PodSandboxFilter, PodSandboxStateValue,
    PodSandboxStatsFilter, PodSandboxStatsRequest, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StopContainerRequest, StopPodSandboxRequest,
    UpdateContainerResourcesRequest,
};
use limpet_tests::limpetd::{block_on, ready, Options};
use limpet_tests::pods::{container_config, PodEnv};
use limpet_tests::registry::layout;
use pod_support::{
    assert_nothing_left, code_of, leftovers, wait_for, Cri, CREATED, EXITED, RUNNING,
};

const MIB: i64 = 1 << 20;

fn with_resources(mut c: ContainerConfig, r: LinuxContainerResources) -> ContainerConfig {
    if let Some(l) = c.linux.as_mut() {
        l.resources = Some(r);
    }
    c
}

fn memory(bytes: i64) -> LinuxContainerResources {
    LinuxContainerResources {
        memory_limit_in_bytes: bytes,
        ..Default::default()
    }
}

/// Waits until the container's log holds `text`.
async fn wait_log(env: &PodEnv, pod: &str, container: &str, text: &str) {
    let path = env.log_dir.join(pod).join(format!("{container}.log"));
    wait_for(10, &format!("{text:?} in {}", path.display()), || {
        let found = std::fs::read_to_string(&path).is_ok_and(|l| l.contains(text));
        async move { found.then_some(()) }
    })
    .await
}

#[test]
fn memory_hog_is_oom_killed_with_reason_and_137() {
    let case = "memory_hog_is_oom_killed_with_reason_and_137";
    let Some(env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let pod_config = env.pod("oom");
        let pod = cri.run_pod(&pod_config).await;
        // tail keeps every byte of a file without newlines
        let hog = with_resources(
            env.container("hog", "exec tail /dev/zero"),
            memory(32 * MIB),
        );
        let id = cri.run(&pod, &pod_config, hog).await;
        let st = cri.wait_exited(&id, 20).await;
        assert_eq!(st.exit_code, 137, "{st:?}");
        assert_eq!(st.reason, "OOMKilled", "the first exited status: {st:?}");
        assert!(st.finished_at >= st.started_at, "{st:?}");
        let limit = st
            .resources
            .and_then(|r| r.linux)
            .map(|l| l.memory_limit_in_bytes);
        assert_eq!(limit, Some(32 * MIB));
        cri.remove_pod(&pod).await;
    });
    assert_nothing_left(&env);
}

#[test]
fn run_as_user_or_username_and_a_readonly_rootfs() {
    let case = "run_as_user_or_username_and_a_readonly_rootfs";
    let Some(env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let pod_config = env.pod("users");
        let pod = cri.run_pod(&pod_config).await;

        let mut by_uid = env.container("by-uid", "exec sleep 3600");
        if let Some(sc) = by_uid
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
        {
            sc.run_as_user = Some(Int64Value { value: 65534 });
            sc.readonly_rootfs = true;
        }
        let uid_c = cri.run(&pod, &pod_config, by_uid).await;
        assert_eq!(cri.sh_ok(&uid_c, "id -u; id -g").await, "65534\n65534\n");
        // the rootfs is read-only, /tmp included (no tmpfs is added, as with containerd);
        // the pod's /dev/shm is not part of it
        for path in ["/x", "/tmp/x"] {
            let r = cri.sh(&uid_c, &format!("echo hi > {path}")).await;
            assert_ne!(r.exit_code, 0, "{path} writable");
            let err = String::from_utf8_lossy(&r.stderr);
            assert!(err.contains("Read-only file system"), "{path}: {err}");
        }
        cri.sh_ok(&uid_c, "echo hi > /dev/shm/x && cat /dev/shm/x")
            .await;
        let user = cri.status(&uid_c).await.user.and_then(|u| u.linux);
        let user = user.expect("ContainerStatus.user");
        assert_eq!((user.uid, user.gid), (65534, 65534), "{user:?}");

        let mut by_name = env.container("by-name", "exec sleep 3600");
        if let Some(sc) = by_name
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
        {
            sc.run_as_username = "nobody".into();
        }
        let name_c = cri.run(&pod, &pod_config, by_name).await;
        assert_eq!(cri.sh_ok(&name_c, "id -un; id -u").await, "nobody\n65534\n");
        // a writable rootfs, but / belongs to root
        let r = cri.sh(&name_c, "echo hi > /tmp/x && echo hi > /x").await;
        assert_ne!(r.exit_code, 0);
        assert!(
            String::from_utf8_lossy(&r.stderr).contains("Permission denied"),
            "{r:?}"
        );
        let user = cri.status(&name_c).await.user.and_then(|u| u.linux);
        assert_eq!(user.map(|u| (u.uid, u.gid)), Some((65534, 65534)));
        cri.remove_pod(&pod).await;
    });
    assert_nothing_left(&env);
}

/// Pushes the busybox base layer with `StopSignal: SIGUSR1` and pulls it into the daemon.
fn stop_signal_image(env: &PodEnv, dir: &std::path::Path) -> String {
    let mut l = layout::Layout::create(dir).expect("layout");
    let base = layout::busybox_layer_tar().expect("busybox layer");
    let layer = layout::Layer::new(base, layout::Compression::Gzip);
    let desc = l
        .image(
            &[&layer],
            layout::host_arch(),
            serde_json::json!({"StopSignal": "SIGUSR1"}),
            false,
        )
        .expect("image");
    l.tag("v1", &desc);
    l.save().expect("save layout");
    env.reg
        .push(&l.dir, "v1", "limpet/stop-usr1:v1")
        .expect("push");
    let image = format!("{}/limpet/stop-usr1:v1", env.reg.addr);
    env.d.ctl_ok(&["pull", &image]);
    image
}

#[test]
fn stop_uses_the_image_stop_signal_then_sigkill_after_the_timeout() {
    let case = "stop_uses_the_image_stop_signal_then_sigkill_after_the_timeout";
    let Some(env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    let files = tempfile::tempdir().expect("temp dir");
    let usr1_image = stop_signal_image(&env, &files.path().join("layout"));
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let pod_config = env.pod("stops");
        let pod = cri.run_pod(&pod_config).await;
        let polite = cri
            .run(
                &pod,
                &pod_config,
                env.container(
                    "polite",
                    "trap 'exit 0' TERM; echo ready; sleep 1000 & wait",
                ),
            )
            .await;
        let stubborn = cri
            .run(
                &pod,
                &pod_config,
                env.container("stubborn", "trap '' TERM; echo ready; sleep 1000 & wait"),
            )
            .await;
        let usr1 = container_config(
            "usr1",
            &usr1_image,
            "trap 'exit 0' USR1; trap 'exit 3' TERM; echo ready; sleep 1000 & wait",
        );
        let usr1 = cri.run(&pod, &pod_config, usr1).await;
        for name in ["polite", "stubborn", "usr1"] {
            wait_log(&env, "stops", name, "ready").await;
        }

        let stop = |id: &str, timeout: i64| StopContainerRequest {
            container_id: id.to_string(),
            timeout,
        };
        for (id, what) in [(&polite, "TERM"), (&usr1, "the image's SIGUSR1")] {
            let started = Instant::now();
            cri.rt.stop_container(stop(id, 10)).await.expect("stop");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{what}: {:?}",
                started.elapsed()
            );
            let st = cri.status(id).await;
            assert_eq!((st.state, st.exit_code), (EXITED, 0), "{what}: {st:?}");
            assert_eq!(st.reason, "Completed");
        }

        let started = Instant::now();
        cri.rt
            .stop_container(stop(&stubborn, 2))
            .await
            .expect("stop");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(4),
            "SIGKILL after the 2 s timeout, took {took:?}"
        );
        let st = cri.status(&stubborn).await;
        assert_eq!((st.state, st.exit_code), (EXITED, 137), "{st:?}");
        assert_eq!(st.reason, "Error");
        // stopping again changes nothing
        cri.rt
            .stop_container(stop(&stubborn, 2))
            .await
            .expect("stop again");
        assert_eq!(cri.status(&stubborn).await.finished_at, st.finished_at);
        cri.remove_pod(&pod).await;
    });
    assert_nothing_left(&env);
}

#[test]
fn container_and_pod_stats() {
    let case = "container_and_pod_stats";
    let Some(env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let (a_config, b_config) = (env.pod("stats-a"), env.pod("stats-b"));
        let a = cri.run_pod(&a_config).await;
        let b = cri.run_pod(&b_config).await;
        let writer = cri
            .run(
                &a,
                &a_config,
                env.container(
                    "writer",
                    "head -c 1048576 /dev/urandom > /big && echo written; exec sleep 3600",
                ),
            )
            .await;
        let other = cri
            .run(&b, &b_config, env.container("other", "exec sleep 3600"))
            .await;
        wait_log(&env, "stats-a", "writer", "written").await;

        let stats = cri
            .rt
            .container_stats(ContainerStatsRequest {
                container_id: writer.clone(),
            })
            .await
            .expect("ContainerStats")
            .into_inner()
            .stats
            .expect("stats");
        let attrs = stats.attributes.clone().unwrap_or_default();
        assert_eq!(attrs.id, writer);
        assert_eq!(attrs.metadata.map(|m| m.name).as_deref(), Some("writer"));
        let value =
            |v: Option<limpet_protos::cri::v1::UInt64Value>| v.map(|v| v.value).unwrap_or(0);
        let cpu = stats.cpu.expect("cpu");
        assert!(value(cpu.usage_core_nano_seconds) > 0, "{stats:?}");
        let mem = stats.memory.expect("memory");
        assert!(value(mem.usage_bytes) > 0, "{stats:?}");
        assert!(value(mem.working_set_bytes) > 0, "{stats:?}");
        let layer = stats.writable_layer.clone().expect("writable layer");
        assert!(value(layer.used_bytes) >= MIB as u64, "{stats:?}");
        assert!(value(layer.inodes_used) >= 1, "{stats:?}");

        let list = |pod: &str| ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                pod_sandbox_id: pod.to_string(),
                ..Default::default()
            }),
        };
        let ids = |s: Vec<limpet_protos::cri::v1::ContainerStats>| -> Vec<String> {
            s.into_iter()
                .filter_map(|s| s.attributes.map(|a| a.id))
                .collect()
        };
        let only_a = cri.rt.list_container_stats(list(&a)).await.expect("list");
        assert_eq!(ids(only_a.into_inner().stats), vec![writer.clone()]);
        let only_b = cri
            .rt
            .list_container_stats(list(&b[..12]))
            .await
            .expect("list");
        assert_eq!(ids(only_b.into_inner().stats), vec![other.clone()]);
        let all = cri
            .rt
            .list_container_stats(ListContainerStatsRequest { filter: None })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(all.stats.len(), 2);

        // traffic for the pod's counters: a refused connection is a SYN in, a RST out
        let ip = cri.pod_ip(&a).await;
        let _ = std::net::TcpStream::connect_timeout(
            &format!("{ip}:9").parse().expect("addr"),
            Duration::from_secs(1),
        );
        let pstats = cri
            .rt
            .pod_sandbox_stats(PodSandboxStatsRequest {
                pod_sandbox_id: a.clone(),
            })
            .await
            .expect("PodSandboxStats")
            .into_inner()
            .stats
            .expect("stats");
        assert_eq!(
            pstats.attributes.as_ref().map(|x| x.id.as_str()),
            Some(a.as_str())
        );
        let linux = pstats.linux.clone().expect("linux stats");
        let net = linux.network.clone().expect("network usage");
        let eth0 = net.default_interface.clone().expect("default interface");
        assert_eq!(eth0.name, "eth0");
        assert!(
            value(eth0.rx_bytes) > 0 && value(eth0.tx_bytes) > 0,
            "{net:?}"
        );
        let procs = linux.process.as_ref().and_then(|p| p.process_count);
        // the pod's pause process and the container's sleep
        assert!(value(procs) >= 2, "process count: {:?}", linux.process);
        assert!(value(linux.cpu.and_then(|c| c.usage_core_nano_seconds)) > 0);
        assert!(value(linux.memory.and_then(|m| m.usage_bytes)) > 0);
        assert_eq!(ids(linux.containers), vec![writer.clone()]);

        let all = cri
            .rt
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
            .await
            .expect("ListPodSandboxStats")
            .into_inner();
        let mut pods: Vec<String> = all
            .stats
            .iter()
            .filter_map(|s| s.attributes.as_ref().map(|a| a.id.clone()))
            .collect();
        pods.sort();
        let mut want = vec![a.clone(), b.clone()];
        want.sort();
        assert_eq!(pods, want);
        let labelled = cri
            .rt
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
                filter: Some(PodSandboxStatsFilter {
                    label_selector: HashMap::from([("app".into(), "stats-b".into())]),
                    ..Default::default()
                }),
            })
            .await
            .expect("ListPodSandboxStats")
            .into_inner();
        assert_eq!(labelled.stats.len(), 1);
        assert_eq!(
            labelled.stats[0].attributes.as_ref().map(|x| &x.id),
            Some(&b)
        );
        cri.remove_pod(&a).await;
        cri.remove_pod(&b).await;
    });
    assert_nothing_left(&env);
}

#[test]
fn container_events_arrive_in_order_with_the_pod_status() {
    let case = "container_events_arrive_in_order_with_the_pod_status";
    let Some(env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let pod_config = env.pod("events");
        let pod = cri.run_pod(&pod_config).await;
        let mut events = cri
            .rt
            .get_container_events(GetEventsRequest {})
            .await
            .expect("GetContainerEvents")
            .into_inner();
        let id = cri
            .run(
                &pod,
                &pod_config,
                env.container("watched", "exec sleep 3600"),
            )
            .await;
        cri.rt
            .stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await
            .expect("stop");
        cri.rt
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("remove");

        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        // everything up to the deletion, then a moment for anything sent twice
        loop {
            let left = if seen.last().map(|(k, _)| *k)
                == Some(ContainerEventType::ContainerDeletedEvent)
            {
                Duration::from_millis(500)
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            let Ok(next) = tokio::time::timeout(left, events.message()).await else {
                break;
            };
            let ev = next.expect("event stream").expect("stream ended");
            if ev.container_id != id {
                continue;
            }
            let kind = ContainerEventType::try_from(ev.container_event_type).expect("event type");
            seen.push((kind, ev));
        }
        let kinds: Vec<_> = seen.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                ContainerEventType::ContainerCreatedEvent,
                ContainerEventType::ContainerStartedEvent,
                ContainerEventType::ContainerStoppedEvent,
                ContainerEventType::ContainerDeletedEvent,
            ]
        );
        let mut last = 0;
        for (kind, ev) in &seen {
            assert!(ev.created_at >= last, "{kind:?} out of time order");
            last = ev.created_at;
            let p = ev.pod_sandbox_status.as_ref().expect("pod status attached");
            assert_eq!(p.id, pod, "{kind:?}");
            assert_eq!(p.metadata.as_ref().map(|m| m.name.as_str()), Some("events"));
            let own = ev.containers_statuses.iter().find(|c| c.id == id);
            let want = match kind {
                ContainerEventType::ContainerCreatedEvent => Some(CREATED),
                ContainerEventType::ContainerStartedEvent => Some(RUNNING),
                ContainerEventType::ContainerStoppedEvent => Some(EXITED),
                _ => None,
            };
            assert_eq!(
                own.map(|c| c.state),
                want,
                "{kind:?}: {:?}",
                ev.containers_statuses
            );
        }
        cri.remove_pod(&pod).await;
    });
    assert_nothing_left(&env);
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn list_filters_idempotent_stop_and_remove_and_resource_updates() {
    let case = "list_filters_idempotent_stop_and_remove_and_resource_updates";
    let Some(env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let (a_config, b_config) = (env.pod("filt-a"), env.pod("filt-b"));
        let a = cri.run_pod(&a_config).await;
        let b = cri.run_pod(&b_config).await;
        let a1 = cri
            .run(&a, &a_config, env.container("a1", "exec sleep 3600"))
            .await;
        let a2 = cri
            .create(&a, &a_config, env.container("a2", "exec sleep 3600"))
            .await;
        let b1 = cri
            .run(&b, &b_config, env.container("b1", "exec sleep 3600"))
            .await;

        let mut rt = cri.rt.clone();
        let lister = cri.rt.clone();
        let pods = |f: PodSandboxFilter| {
            let mut rt = lister.clone();
            async move {
                let items = rt
                    .list_pod_sandbox(ListPodSandboxRequest { filter: Some(f) })
                    .await
                    .expect("ListPodSandbox")
                    .into_inner()
                    .items;
                sorted(items.into_iter().map(|p| p.id).collect())
            }
        };
        let state = |s: i32| Some(PodSandboxStateValue { state: s });
        let label = |v: &str| HashMap::from([("app".to_string(), v.to_string())]);
        let both = sorted(vec![a.clone(), b.clone()]);
        assert_eq!(
            pods(PodSandboxFilter {
                id: a[..8].into(),
                ..Default::default()
            })
            .await,
            vec![a.clone()]
        );
        assert_eq!(
            pods(PodSandboxFilter {
                state: state(0),
                ..Default::default()
            })
            .await,
            both
        );
        assert!(pods(PodSandboxFilter {
            state: state(1),
            ..Default::default()
        })
        .await
        .is_empty());
        assert_eq!(
            pods(PodSandboxFilter {
                label_selector: label("filt-b"),
                ..Default::default()
            })
            .await,
            vec![b.clone()]
        );
        assert!(pods(PodSandboxFilter {
            label_selector: label("nope"),
            ..Default::default()
        })
        .await
        .is_empty());

        let containers = |f: ContainerFilter| {
            let mut rt = lister.clone();
            async move {
                let list = rt
                    .list_containers(ListContainersRequest { filter: Some(f) })
                    .await
                    .expect("ListContainers")
                    .into_inner()
                    .containers;
                sorted(list.into_iter().map(|c| c.id).collect())
            }
        };
        let cstate = |s: i32| Some(ContainerStateValue { state: s });
        let by = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(
            containers(ContainerFilter {
                id: a1[..8].into(),
                ..Default::default()
            })
            .await,
            vec![a1.clone()]
        );
        assert_eq!(
            containers(ContainerFilter {
                state: cstate(RUNNING),
                ..Default::default()
            })
            .await,
            sorted(vec![a1.clone(), b1.clone()])
        );
        assert_eq!(
            containers(ContainerFilter {
                state: cstate(CREATED),
                ..Default::default()
            })
            .await,
            vec![a2.clone()]
        );
        assert_eq!(
            containers(ContainerFilter {
                label_selector: by("container", "a2"),
                ..Default::default()
            })
            .await,
            vec![a2.clone()]
        );
        assert_eq!(
            containers(ContainerFilter {
                pod_sandbox_id: a.clone(),
                ..Default::default()
            })
            .await,
            sorted(vec![a1.clone(), a2.clone()])
        );
        assert_eq!(
            containers(ContainerFilter {
                pod_sandbox_id: a.clone(),
                state: cstate(RUNNING),
                ..Default::default()
            })
            .await,
            vec![a1.clone()]
        );

        // stopping and removing what is not there succeeds
        let missing = "0".repeat(64);
        rt.stop_container(StopContainerRequest {
            container_id: missing.clone(),
            timeout: 1,
        })
        .await
        .expect("stop a missing container");
        rt.remove_container(RemoveContainerRequest {
            container_id: missing.clone(),
        })
        .await
        .expect("remove a missing container");
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: missing.clone(),
        })
        .await
        .expect("stop a missing pod");
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: missing,
        })
        .await
        .expect("remove a missing pod");

        // UpdateContainerResources reaches the cgroup and the status
        const LIMIT: i64 = 96 * MIB;
        rt.update_container_resources(UpdateContainerResourcesRequest {
            container_id: a1.clone(),
            linux: Some(memory(LIMIT)),
            ..Default::default()
        })
        .await
        .expect("UpdateContainerResources");
        let limit = cri
            .sh_ok(
                &a1,
                "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
            )
            .await;
        assert_eq!(limit.trim(), LIMIT.to_string());
        let res = cri.status(&a1).await.resources.and_then(|r| r.linux);
        assert_eq!(res.map(|r| r.memory_limit_in_bytes), Some(LIMIT));

        // a created container is removed without ever running
        rt.remove_container(RemoveContainerRequest {
            container_id: a2.clone(),
        })
        .await
        .expect("remove created");
        assert_eq!(
            containers(ContainerFilter {
                pod_sandbox_id: a.clone(),
                ..Default::default()
            })
            .await,
            vec![a1.clone()]
        );

        // StopPodSandbox twice
        for _ in 0..2 {
            rt.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: b.clone(),
            })
            .await
            .expect("StopPodSandbox");
        }
        assert_eq!(
            pods(PodSandboxFilter {
                state: state(1),
                ..Default::default()
            })
            .await,
            vec![b.clone()]
        );
        assert_eq!(cri.status(&b1).await.state, EXITED);
        let (code, msg) = code_of(
            cri.try_create(&b, &b_config, env.container("late", "true"))
                .await,
        );
        assert_eq!(
            code,
            Code::FailedPrecondition,
            "a container in a stopped pod: {msg}"
        );
        let (code, msg) = code_of(cri.try_exec(&b1, &["true"], 5).await);
        assert_eq!(
            code,
            Code::FailedPrecondition,
            "exec in an exited container: {msg}"
        );
        assert_eq!(
            containers(ContainerFilter {
                state: cstate(EXITED),
                ..Default::default()
            })
            .await,
            vec![b1.clone()]
        );
        cri.remove_pod(&a).await;
        cri.remove_pod(&b).await;
        cri.remove_pod(&b).await;
        assert!(pods(PodSandboxFilter::default()).await.is_empty());
    });
    assert_nothing_left(&env);
}

#[test]
fn bad_requests_get_clear_codes_and_leave_nothing_behind() {
    let case = "bad_requests_get_clear_codes_and_leave_nothing_behind";
    let Some(env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let pod_config = env.pod("good");
        let pod = cri.run_pod(&pod_config).await;
        let good = cri
            .run(&pod, &pod_config, env.container("main", "exec sleep 3600"))
            .await;
        let before = leftovers(&env);
        // what a pod holds is seen: its address, netns, shim, bundles and mounts
        for kind in [
            "address ",
            "netns/",
            "shim process ",
            "bundles/",
            "mount ",
            "shm/",
            "runtime/runc/k8s.io/",
            "sandboxes/",
            "snapshots/rootfs/",
        ] {
            assert!(
                before.iter().any(|l| l.starts_with(kind)),
                "no {kind}: {before:#?}"
            );
        }
        let mut rt = cri.rt.clone();
        let after = |what: &str| {
            let now = leftovers(&env);
            assert_eq!(now, before, "{what} left something");
        };

        let run_pod = |config, handler: &str| RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: handler.to_string(),
        };
        // pods
        let (code, msg) = code_of(rt.run_pod_sandbox(run_pod(pod_config.clone(), "")).await);
        assert_eq!(code, Code::AlreadyExists, "duplicate pod: {msg}");
        after("a duplicate pod");
        for bad in ["..", "a/b"] {
            let mut c = env.pod("x");
            if let Some(m) = c.metadata.as_mut() {
                m.name = bad.into();
            }
            let (code, msg) = code_of(rt.run_pod_sandbox(run_pod(c, "")).await);
            assert_eq!(code, Code::InvalidArgument, "pod name {bad:?}: {msg}");
            assert!(msg.contains(bad), "{msg}");
            after("a bad pod name");
        }
        let (code, msg) = code_of(rt.run_pod_sandbox(run_pod(env.pod("h"), "no-such")).await);
        assert_eq!(code, Code::InvalidArgument, "unknown handler: {msg}");
        assert!(msg.contains("no-such"), "{msg}");
        after("an unknown runtime handler");
        let mut nameless = env.pod("nameless");
        nameless.metadata = None;
        let (code, msg) = code_of(rt.run_pod_sandbox(run_pod(nameless, "")).await);
        assert_eq!(code, Code::InvalidArgument, "no metadata: {msg}");
        after("a pod without metadata");
        // refused late: after its netns, address and shm were made
        let mut node_sysctl = env.pod("sysctl");
        if let Some(l) = node_sysctl.linux.as_mut() {
            l.sysctls = HashMap::from([("vm.swappiness".into(), "1".into())]);
        }
        let (code, msg) = code_of(rt.run_pod_sandbox(run_pod(node_sysctl, "")).await);
        assert_eq!(code, Code::InvalidArgument, "a node-wide sysctl: {msg}");
        assert!(msg.contains("vm.swappiness"), "{msg}");
        after("a pod refused after its network was set up");

        // containers
        let (code, msg) = code_of(
            cri.try_create(
                &"f".repeat(64),
                &pod_config,
                env.container("orphan", "true"),
            )
            .await,
        );
        assert_eq!(code, Code::NotFound, "missing pod: {msg}");
        after("a container of a missing pod");
        let (code, msg) = code_of(
            cri.try_create(&pod, &pod_config, env.container("main", "true"))
                .await,
        );
        assert_eq!(code, Code::AlreadyExists, "duplicate container: {msg}");
        after("a duplicate container");
        for bad in ["..", "x/y"] {
            let (code, msg) = code_of(
                cri.try_create(&pod, &pod_config, env.container(bad, "true"))
                    .await,
            );
            assert_eq!(code, Code::InvalidArgument, "container name {bad:?}: {msg}");
            after("a bad container name");
        }
        let mut escaping = env.container("escaping", "true");
        escaping.log_path = "../../escape.log".into();
        let (code, msg) = code_of(cri.try_create(&pod, &pod_config, escaping).await);
        assert_eq!(code, Code::InvalidArgument, "log path: {msg}");
        after("a log path with '..'");
        let mut unknown = env.container("unknown", "true");
        if let Some(i) = unknown.image.as_mut() {
            i.image = format!("{}/limpet/never-pushed:v1", env.reg.addr);
        }
        let (code, msg) = code_of(cri.try_create(&pod, &pod_config, unknown).await);
        assert_eq!(code, Code::NotFound, "unknown image: {msg}");
        assert!(msg.contains("never-pushed"), "{msg}");
        after("an unknown image");
        // refused late: after its rootfs was mounted
        let mut no_user = env.container("no-user", "true");
        if let Some(sc) = no_user
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
        {
            sc.run_as_username = "no-such-user".into();
        }
        let (code, msg) = code_of(cri.try_create(&pod, &pod_config, no_user).await);
        assert_eq!(code, Code::InvalidArgument, "unknown user: {msg}");
        assert!(msg.contains("no-such-user"), "{msg}");
        after("a container refused after its rootfs was mounted");

        // nothing of the failed requests is listed; the good pod still works
        let listed = rt
            .list_containers(ListContainersRequest { filter: None })
            .await
            .expect("list")
            .into_inner()
            .containers;
        assert_eq!(listed.iter().map(|c| &c.id).collect::<Vec<_>>(), [&good]);
        let pods = rt
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .expect("list")
            .into_inner()
            .items;
        assert_eq!(
            pods.iter().map(|p| &p.id).collect::<HashSet<_>>(),
            HashSet::from([&pod])
        );
        assert_eq!(cri.sh_ok(&good, "echo alive").await, "alive\n");

        // a command that does not exist: runc checks it on create, and its error is named
        let (code, msg) = code_of(
            cri.try_create(
                &pod,
                &pod_config,
                ContainerConfig {
                    command: vec!["/no/such/command".into()],
                    ..env.container("missing", "")
                },
            )
            .await,
        );
        assert_ne!(code, Code::Ok);
        assert!(msg.contains("/no/such/command"), "{msg}");
        after("a container whose command is missing");
        cri.remove_pod(&pod).await;
    });
    assert_nothing_left(&env);
}
