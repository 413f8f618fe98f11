//! limpetd's shim driver (`limpetd::shims`) against the real shim and runc: the `start`
//! action, the task API over ttrpc, task events through limpetd's events server (also
//! across its restart), pod grouping into one shim, and the `delete` action after a shim
//! was killed. Each case has its own temp dir, runc root and cgroups, removed at its end.
//!
//! Needs root, runc, a static busybox and the shim build (`LIMPET_SHIM` or this
//! workspace's target dir); without them the cases skip, saying why.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ProcStdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use limpet_tests::{pid_alive, shim_under_test, skip, HarnessError};
use limpetd::shims::{
    runc_options, socket_path, CreateTask, EventsServer, Metrics, RuncOptions, ShimClient,
    ShimEvent, ShimLauncher, Stdio, TaskEvent, TaskStatus,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const NAMESPACE: &str = "limpet-shims";
/// Every container's cgroup sits under this, one level per container.
const CGROUP_PARENT: &str = "limpet-shims-test";
const OUR_SHIM: &str = "containerd-shim-limpet-v2";
const CONNECT: Duration = Duration::from_secs(5);
const EVENT_WAIT: Duration = Duration::from_secs(20);
const SIGTERM: u32 = libc::SIGTERM as u32;
const SIGKILL: u32 = libc::SIGKILL as u32;
const APPLETS: [&str; 8] = [
    "sh", "sleep", "echo", "cat", "hostname", "true", "ls", "kill",
];

static CASES: AtomicU32 = AtomicU32::new(0);

/// The shim binary, or why the case cannot run.
fn prerequisites() -> Result<PathBuf, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (runc, cgroups)".into());
    }
    let runc = Command::new("runc")
        .arg("--version")
        .stdout(ProcStdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !runc {
        return Err("runc is not installed".into());
    }
    if busybox().is_none() {
        return Err("no static busybox (busybox-static)".into());
    }
    let shim = match shim_under_test() {
        Ok(s) => s.binary,
        Err(HarnessError::Skip(reason)) => return Err(reason),
        Err(e) => return Err(format!("finding the shim: {e}")),
    };
    // limpetd speaks task API v3, which only our shim serves besides v2.
    if shim.file_name().and_then(|n| n.to_str()) != Some(OUR_SHIM) {
        return Err(format!(
            "limpetd drives {OUR_SHIM}; LIMPET_SHIM is {}",
            shim.display()
        ));
    }
    Ok(shim)
}

fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// One case's world: a temp dir, a launcher whose `-address` and events socket live in it,
/// and a private runc root. Dropping it kills and removes whatever the case left.
struct World {
    dir: tempfile::TempDir,
    launcher: ShimLauncher,
    runc_root: PathBuf,
    tag: String,
    ids: Mutex<Vec<String>>,
    addresses: Mutex<Vec<String>>,
}

macro_rules! world_or_skip {
    ($case:expr) => {
        match World::new() {
            Ok(w) => w,
            Err(reason) => {
                skip(&format!("{}: {reason}", $case));
                return;
            }
        }
    };
}

/// Events as the server delivers them, searched by predicate.
struct Events {
    rx: Receiver<ShimEvent>,
    seen: Vec<ShimEvent>,
}

impl Events {
    #[track_caller]
    fn wait_for(&mut self, what: &str, matches: impl Fn(&TaskEvent) -> bool) -> ShimEvent {
        let deadline = Instant::now() + EVENT_WAIT;
        loop {
            if let Some(i) = self.seen.iter().position(|e| matches(&e.event)) {
                return self.seen.remove(i);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(e) => self.seen.push(e),
                Err(_) => panic!(
                    "no {what} event within {EVENT_WAIT:?}; got {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Everything delivered so far.
    fn drain(&mut self) -> Vec<ShimEvent> {
        self.seen.extend(self.rx.try_iter());
        std::mem::take(&mut self.seen)
    }
}

impl World {
    fn new() -> Result<World, String> {
        let shim = prerequisites()?;
        let dir = tempfile::Builder::new()
            .prefix("limpet-shims-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let launcher = ShimLauncher::new(
            shim,
            NAMESPACE,
            dir.path().join("limpetd.sock"),
            dir.path().join("events.sock"),
        );
        let tag = format!(
            "{}-{}",
            std::process::id(),
            CASES.fetch_add(1, Ordering::SeqCst)
        );
        Ok(World {
            runc_root: dir.path().join("runc"),
            dir,
            launcher,
            tag,
            ids: Mutex::new(Vec::new()),
            addresses: Mutex::new(Vec::new()),
        })
    }

    fn id(&self, name: &str) -> String {
        format!("{name}-{}", self.tag)
    }

    fn options(&self) -> RuncOptions {
        RuncOptions {
            root: self.runc_root.display().to_string(),
            ..Default::default()
        }
    }

    /// A bundle: a busybox rootfs and `runc spec`'s config, running `args`.
    fn bundle(&self, id: &str, args: &[&str], annotations: Value) -> PathBuf {
        self.ids.lock().unwrap().push(id.to_string());
        let bundle = self.dir.path().join("bundles").join(id);
        let bin = bundle.join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(busybox().unwrap(), bin.join("busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        let out = Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(out.status.success(), "runc spec: {out:?}");
        let config = bundle.join("config.json");
        let mut spec: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        spec["process"]["terminal"] = json!(false);
        spec["process"]["args"] = json!(args);
        spec["hostname"] = json!("shims");
        spec["linux"]["cgroupsPath"] = json!(format!("/{CGROUP_PARENT}/{id}"));
        spec["annotations"] = annotations;
        std::fs::write(&config, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        bundle
    }

    /// The bundle's init process with other args: an exec's spec, as containerd makes one.
    fn process(&self, bundle: &Path, args: &[&str]) -> limpetd::shims::Process {
        let spec: Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
        let mut process = spec["process"].clone();
        process["args"] = json!(args);
        serde_json::from_value(process).unwrap()
    }

    fn events_path(&self) -> PathBuf {
        self.launcher.ttrpc_address.clone()
    }

    fn events(&self) -> (EventsServer, Events) {
        let (tx, rx) = mpsc::channel();
        let server = EventsServer::start(&self.events_path(), tx).unwrap();
        let events = Events {
            rx,
            seen: Vec::new(),
        };
        (server, events)
    }

    fn start_shim(&self, id: &str, bundle: &Path) -> (String, ShimClient) {
        let options = runc_options(&self.options());
        let address = self
            .launcher
            .start_with_options(id, bundle, Some(&options))
            .unwrap_or_else(|e| panic!("shim start: {e}"));
        self.addresses.lock().unwrap().push(address.clone());
        let client = ShimClient::connect(&address, CONNECT)
            .unwrap_or_else(|e| panic!("connect: {e}"))
            .with_namespace(NAMESPACE);
        (address, client)
    }

    fn output_uri(&self, name: &str) -> String {
        format!(
            "file://{}",
            self.dir.path().join(format!("{name}.out")).display()
        )
    }

    /// Creates the task with stdout and stderr appended to `<name>.out`.
    fn create(&self, client: &ShimClient, id: &str, bundle: &Path) -> u32 {
        let out = self.output_uri(id);
        let task = CreateTask {
            id: id.to_string(),
            bundle: bundle.display().to_string(),
            stdio: Stdio {
                stdout: out.clone(),
                stderr: out,
                ..Default::default()
            },
            rootfs: Vec::new(),
            options: Some(runc_options(&self.options())),
        };
        client
            .create(&task)
            .unwrap_or_else(|e| panic!("create {id}: {e}"))
    }

    /// Waits (bounded) until `name`'s output holds `text`: the shim copies it on its own time.
    #[track_caller]
    fn wait_output(&self, name: &str, text: &str) {
        let path = self.dir.path().join(format!("{name}.out"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = std::fs::read_to_string(&path).unwrap_or_default();
            if out.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} wrote {out:?}, not {text:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn runc(&self, args: &[&str]) -> std::process::Output {
        Command::new("runc")
            .arg("--root")
            .arg(self.runc_root.join(NAMESPACE))
            .args(args)
            .stdin(ProcStdio::null())
            .output()
            .unwrap()
    }

    fn runc_knows(&self, id: &str) -> bool {
        self.runc(&["state", id]).status.success()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let addresses =
            std::mem::take(&mut *self.addresses.lock().unwrap_or_else(|p| p.into_inner()));
        let ids = std::mem::take(&mut *self.ids.lock().unwrap_or_else(|p| p.into_inner()));
        for address in &addresses {
            let info =
                ShimClient::connect(address, Duration::from_secs(1)).and_then(|c| c.info(""));
            if let Ok(info) = info {
                let _ = kill(Pid::from_raw(info.shim_pid as i32), Signal::SIGKILL);
                wait_gone(info.shim_pid, Duration::from_secs(5));
            }
        }
        for id in &ids {
            let _ = self.runc(&["delete", "--force", id]);
        }
        for address in &addresses {
            limpetd::shims::remove_stale_socket(address);
        }
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let parent = h.path().join(CGROUP_PARENT);
                for id in &ids {
                    let _ = std::fs::remove_dir(parent.join(id));
                }
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while pid_alive(pid as i32) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn is_exit_of(e: &TaskEvent, id: &str, exec: &str) -> bool {
    matches!(e, TaskEvent::Exit { container_id, exec_id, .. }
        if container_id == id && exec_id == exec)
}

fn exit_status(e: &ShimEvent) -> (u32, u32, SystemTime) {
    match &e.event {
        TaskEvent::Exit {
            pid,
            exit_status,
            exited_at,
            ..
        } => (*pid, *exit_status, *exited_at),
        other => panic!("not an exit: {other:?}"),
    }
}

#[test]
fn a_task_runs_reports_its_exit_and_is_deleted() {
    let w = world_or_skip!("a_task_runs_reports_its_exit_and_is_deleted");
    let (_server, mut events) = w.events();
    let id = w.id("once");
    let bundle = w.bundle(
        &id,
        &["sh", "-c", "echo hello from $(hostname); exit 7"],
        json!({}),
    );
    let (address, client) = w.start_shim(&id, &bundle);
    assert!(address.starts_with("unix://"), "{address}");
    assert_eq!(
        std::fs::read_to_string(bundle.join("address")).unwrap(),
        address
    );

    let before = SystemTime::now();
    let pid = w.create(&client, &id, &bundle);
    assert_eq!(client.state(&id, "").unwrap().status, TaskStatus::Created);
    let created = events.wait_for(
        "create",
        |e| matches!(e, TaskEvent::Create { container_id, .. } if *container_id == id),
    );
    assert_eq!(
        created.event,
        TaskEvent::Create {
            container_id: id.clone(),
            pid
        }
    );
    assert_eq!(created.namespace, NAMESPACE);
    assert!(created.timestamp >= before - Duration::from_secs(1));

    assert_eq!(client.start(&id, "").unwrap(), pid);
    events.wait_for("start", |e| {
        *e == TaskEvent::Start {
            container_id: id.clone(),
            pid,
        }
    });
    let exit = events.wait_for("exit", |e| is_exit_of(e, &id, &id));
    let (exit_pid, status, exited_at) = exit_status(&exit);
    assert_eq!((exit_pid, status), (pid, 7));
    assert!(exit.event.is_init_exit());
    assert!(
        exited_at >= before && exited_at <= SystemTime::now(),
        "{exited_at:?}"
    );
    assert_eq!(client.wait(&id, "").unwrap().exit_status, 7);
    w.wait_output(&id, "hello from shims");

    let state = client.state(&id, "").unwrap();
    assert_eq!(
        (state.status, state.exit_status, state.pid),
        (TaskStatus::Stopped, 7, pid)
    );
    assert_eq!(state.stdio.stdout, w.output_uri(&id));
    assert_eq!(state.exited_at, Some(exited_at));

    let deleted = client.delete(&id, "").unwrap();
    assert_eq!((deleted.pid, deleted.exit_status), (pid, 7));
    events.wait_for("delete", |e| {
        matches!(e, TaskEvent::Delete { container_id, exit_status: 7, .. } if *container_id == id)
    });
    assert!(!w.runc_knows(&id), "runc still has {id}");
    let gone = client.state(&id, "").unwrap_err();
    assert!(gone.is_not_found() && gone.is_gone(), "{gone}");
    assert!(client.delete(&id, "").unwrap_err().is_not_found());

    // With no task left, Shutdown ends the shim, which is then known as dead.
    let shim_pid = client.info(&id).unwrap().shim_pid;
    client.shutdown(&id, false).unwrap();
    assert!(
        wait_gone(shim_pid, Duration::from_secs(10)),
        "shim {shim_pid} lives on"
    );
    let dead = ShimClient::connect(&address, CONNECT).unwrap_err();
    assert!(dead.is_shim_dead(), "{dead}");
}

#[test]
fn execs_stats_update_and_sigterm() {
    let w = world_or_skip!("execs_stats_update_and_sigterm");
    let (_server, mut events) = w.events();
    let id = w.id("long");
    let script = "trap 'exit 143' TERM; echo ready; while :; do sleep 0.1; done";
    let bundle = w.bundle(&id, &["sh", "-c", script], json!({}));
    let (_, client) = w.start_shim(&id, &bundle);
    let pid = w.create(&client, &id, &bundle);
    client.start(&id, "").unwrap();
    w.wait_output(&id, "ready");

    // An exec: its events, its exit code, its output.
    let exec_out = w.output_uri("exec");
    let stdio = Stdio {
        stdout: exec_out.clone(),
        stderr: exec_out,
        ..Default::default()
    };
    let process = w.process(&bundle, &["sh", "-c", "echo from exec; exit 5"]);
    client.exec(&id, "e1", &process, &stdio).unwrap();
    let added = TaskEvent::ExecAdded {
        container_id: id.clone(),
        exec_id: "e1".into(),
    };
    events.wait_for("exec added", |e| *e == added);
    let exec_pid = client.start(&id, "e1").unwrap();
    assert_ne!(exec_pid, pid);
    let started = TaskEvent::ExecStarted {
        container_id: id.clone(),
        exec_id: "e1".into(),
        pid: exec_pid,
    };
    events.wait_for("exec started", |e| *e == started);
    assert_eq!(client.wait(&id, "e1").unwrap().exit_status, 5);
    let exit = events.wait_for("exec exit", |e| is_exit_of(e, &id, "e1"));
    assert_eq!(exit_status(&exit).0, exec_pid);
    assert_eq!(exit_status(&exit).1, 5);
    assert!(!exit.event.is_init_exit());
    w.wait_output("exec", "from exec");
    assert_eq!(client.delete(&id, "e1").unwrap().exit_status, 5);
    assert!(client.state(&id, "e1").unwrap_err().is_not_found());

    // Queries of the running init.
    let state = client.state(&id, "").unwrap();
    assert_eq!((state.status, state.pid), (TaskStatus::Running, pid));
    let pids = client.pids(&id).unwrap();
    assert!(pids.iter().any(|p| p.pid == pid), "{pids:?}");
    let info = client.info(&id).unwrap();
    assert_eq!(info.task_pid, pid);
    assert!(pid_alive(info.shim_pid as i32));
    let raw = client.stats_raw(&id).unwrap();
    assert!(
        raw.type_url.starts_with("io.containerd.cgroups.v"),
        "{}",
        raw.type_url
    );
    let metrics = client.stats(&id).unwrap();
    assert!(metrics.pids_current().unwrap_or(0) >= 1, "{metrics:?}");

    // Update: a pids limit the next stats show.
    let resources = serde_json::from_value(json!({"pids": {"limit": 64}})).unwrap();
    client.update(&id, &resources, &HashMap::new()).unwrap();
    let limit = match client.stats(&id).unwrap() {
        Metrics::V1(m) => m.pids.limit,
        Metrics::V2(m) => m.pids.limit,
    };
    assert_eq!(limit, 64);

    // SIGTERM reaches the init, which exits through its trap.
    client.kill(&id, "", SIGTERM, false).unwrap();
    let exit = events.wait_for("exit", |e| is_exit_of(e, &id, &id));
    assert_eq!(exit_status(&exit).1, 143);
    assert_eq!(client.wait(&id, "").unwrap().exit_status, 143);
    assert_eq!(client.delete(&id, "").unwrap().exit_status, 143);
    client.shutdown(&id, false).unwrap();
    assert!(wait_gone(info.shim_pid, Duration::from_secs(10)));
}

#[test]
fn containers_of_one_pod_share_a_shim() {
    let w = world_or_skip!("containers_of_one_pod_share_a_shim");
    let (_server, mut events) = w.events();
    let pod = json!({ "io.kubernetes.cri.sandbox-id": format!("pod-{}", w.tag) });
    let ids = [w.id("pod-a"), w.id("pod-b")];
    let bundles: Vec<PathBuf> = ids
        .iter()
        .map(|id| w.bundle(id, &["sleep", "300"], pod.clone()))
        .collect();
    let (address, client) = w.start_shim(&ids[0], &bundles[0]);
    let second = w
        .launcher
        .start_with_options(&ids[1], &bundles[1], Some(&runc_options(&w.options())))
        .unwrap();
    assert_eq!(second, address, "one shim per pod");

    let mut pids = Vec::new();
    for (id, bundle) in ids.iter().zip(&bundles) {
        w.create(&client, id, bundle);
        pids.push(client.start(id, "").unwrap());
    }
    assert_ne!(pids[0], pids[1]);
    let shim_a = client.info(&ids[0]).unwrap();
    let shim_b = client.info(&ids[1]).unwrap();
    assert_eq!(shim_a.shim_pid, shim_b.shim_pid);
    assert_eq!((shim_a.task_pid, shim_b.task_pid), (pids[0], pids[1]));

    for id in &ids {
        client.kill(id, "", SIGKILL, true).unwrap();
        let exit = events.wait_for("exit", |e| is_exit_of(e, id, id));
        assert_eq!(exit_status(&exit).1, 137);
        client.delete(id, "").unwrap();
        // The shim stays while it serves the other container.
        client.shutdown(id, false).unwrap();
    }
    assert!(wait_gone(shim_a.shim_pid, Duration::from_secs(10)));
}

#[test]
fn exits_survive_a_restart_of_the_events_server() {
    let w = world_or_skip!("exits_survive_a_restart_of_the_events_server");
    let (server, mut before) = w.events();
    let id = w.id("restart");
    let bundle = w.bundle(&id, &["sleep", "300"], json!({}));
    let (_, client) = w.start_shim(&id, &bundle);
    let pid = w.create(&client, &id, &bundle);
    client.start(&id, "").unwrap();
    before.wait_for("start", |e| matches!(e, TaskEvent::Start { .. }));

    // limpetd is down while the container exits.
    drop(server);
    client.kill(&id, "", SIGKILL, false).unwrap();
    assert_eq!(client.wait(&id, "").unwrap().exit_status, 137);
    std::thread::sleep(Duration::from_secs(1));
    let missed = before.drain();
    assert!(
        !missed.iter().any(|e| is_exit_of(&e.event, &id, &id)),
        "an exit reached a stopped server: {missed:?}"
    );

    // Back, with a store that fails once: the refused exit comes again.
    let (tx, rx) = mpsc::channel();
    let refusals = Arc::new(AtomicU32::new(0));
    let handler = {
        let (tx, refusals) = (Mutex::new(tx), refusals.clone());
        move |e: ShimEvent| {
            if matches!(e.event, TaskEvent::Exit { .. })
                && refusals.fetch_add(1, Ordering::SeqCst) == 0
            {
                return Err("store unavailable");
            }
            tx.lock().unwrap().send(e).map_err(|_| "receiver gone")
        }
    };
    let _server = EventsServer::start(&w.events_path(), handler).unwrap();
    let mut after = Events {
        rx,
        seen: Vec::new(),
    };
    let exit = after.wait_for("exit after restart", |e| is_exit_of(e, &id, &id));
    assert_eq!(exit_status(&exit).0, pid);
    assert_eq!(exit_status(&exit).1, 137);
    assert!(
        refusals.load(Ordering::SeqCst) >= 2,
        "the refused exit was not sent again"
    );

    client.delete(&id, "").unwrap();
    client.shutdown(&id, false).unwrap();
}

#[test]
fn the_delete_action_cleans_up_after_a_killed_shim() {
    let w = world_or_skip!("the_delete_action_cleans_up_after_a_killed_shim");
    let (_server, _events) = w.events();
    let id = w.id("orphan");
    let bundle = w.bundle(&id, &["sleep", "300"], json!({}));
    let (address, client) = w.start_shim(&id, &bundle);
    let pid = w.create(&client, &id, &bundle);
    client.start(&id, "").unwrap();
    let shim = client.info(&id).unwrap().shim_pid;

    kill(Pid::from_raw(shim as i32), Signal::SIGKILL).unwrap();
    assert!(
        wait_gone(shim, Duration::from_secs(10)),
        "shim {shim} survived SIGKILL"
    );
    let broken = client.state(&id, "").unwrap_err();
    assert!(broken.is_shim_dead() && broken.is_gone(), "{broken}");
    let refused = ShimClient::connect(&address, CONNECT).unwrap_err();
    assert!(refused.is_shim_dead(), "{refused}");
    assert!(pid_alive(pid as i32), "the container outlives its shim");
    assert!(w.runc_knows(&id));

    let outcome = w.launcher.delete(&id, &bundle).unwrap();
    assert_eq!((outcome.pid, outcome.exit_status), (pid, 137));
    assert!(outcome.exited_at.is_some());
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "container {pid} still runs"
    );
    assert!(!w.runc_knows(&id), "runc still has {id}");
    let socket = socket_path(&address).unwrap();
    assert!(!socket.exists(), "{} left behind", socket.display());
}
