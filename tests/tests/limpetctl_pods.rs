//! limpetctl's pod and container commands, driven as an operator drives crictl: config files
//! on disk, `runp`/`create`/`start`/`run`, the listings and their filters, `inspect(p)` JSON,
//! `exec` exit codes, `logs` (tail, timestamps, follow across a log reopen, stop at exit),
//! `stats`, `update`, and removal.
//!
//! Every case takes a [`Target`]: a CRI endpoint, the image its containers run and where its
//! pods' cgroups and logs go. Each case runs against stock containerd's CRI plugin and against
//! a private limpetd.

use std::io::Read;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::ReopenContainerLogRequest;
use limpet_tests::limpetd::{binary, block_on, ready, Options};
use limpet_tests::pods::PodEnv;
use limpet_tests::registry::{layout, Registry};
use limpet_tests::{cri_cases, skip, Harness, HarnessError, IMAGE_REF};
use serde_json::{json, Value};

/// A CRI runtime under test, and files for the configs a case writes.
struct Target {
    endpoint: String,
    cgroup_parent: String,
    log_dir: PathBuf,
    ctl: PathBuf,
    /// The busybox image as this runtime has it.
    image: String,
    files: tempfile::TempDir,
    /// Pod namespace of this test process.
    namespace: String,
}

impl Target {
    /// `None` (after a loud skip) when limpetctl is not built.
    fn new(endpoint: &str, cgroup_parent: &str, log_dir: &Path, image: &str) -> Option<Target> {
        let ctl = match binary("limpetctl") {
            Ok(b) => b,
            Err(e) => {
                skip(&format!("limpetctl_pods: {e}"));
                return None;
            }
        };
        let files = tempfile::Builder::new()
            .prefix("limpetctl-pods-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        Some(Target {
            endpoint: endpoint.to_string(),
            cgroup_parent: cgroup_parent.to_string(),
            log_dir: log_dir.to_path_buf(),
            ctl,
            image: image.to_string(),
            files,
            namespace: format!("limpetctl-{}", std::process::id()),
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.ctl);
        cmd.env_remove("CONTAINER_RUNTIME_ENDPOINT")
            .args(["-r", &self.endpoint])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("run limpetctl {args:?}: {e}"))
    }

    /// Runs limpetctl, asserting success; returns stdout.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "limpetctl {args:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs limpetctl, asserting failure; returns stderr.
    #[track_caller]
    fn fails(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            !out.status.success(),
            "limpetctl {args:?} should fail\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    #[track_caller]
    fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}\n{text}"))
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.files.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {name}: {e}"));
        path.display().to_string()
    }

    /// A host-network pod config file in crictl's JSON (snake_case keys, enums by name).
    fn pod_file(&self, name: &str) -> String {
        let config = json!({
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "uid": format!("uid-{name}-{}", std::process::id()),
                "attempt": 0
            },
            "log_directory": self.log_dir.join(name).display().to_string(),
            "labels": {"suite": "limpetctl", "case": name},
            "linux": {
                "cgroup_parent": self.cgroup_parent,
                "security_context": {
                    "namespace_options": {"network": "NODE", "pid": "CONTAINER", "ipc": "POD"}
                }
            }
        });
        self.write(&format!("{name}-pod.json"), &config.to_string())
    }

    /// A container config file in crictl's YAML running `script` with sh.
    fn container_file(&self, name: &str, image: &str, script: &str) -> String {
        let text = format!(
            "metadata:\n  name: {name}\nimage:\n  image: {image}\ncommand: [/bin/sh, -c]\nargs:\n  - {script:?}\nlabels:\n  role: {name}\nlog_path: {name}.log\nlinux:\n  resources:\n    cpu_shares: 256\n",
        );
        self.write(&format!("{name}-container.yaml"), &text)
    }

    async fn reopen_log(&self, id: &str) {
        let channel = limpet_protos::cri::connect(&self.endpoint)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.endpoint));
        RuntimeServiceClient::new(channel)
            .reopen_container_log(ReopenContainerLogRequest {
                container_id: id.to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("ReopenContainerLog: {e}"));
    }
}

/// Runs a case against this harness's containerd CRI plugin.
fn on_containerd(h: &Harness, case: fn(&Target)) {
    let cri = h.cri();
    if let Some(t) = Target::new(
        &h.cri_endpoint(),
        &cri.cgroup_parent,
        &cri.log_dir,
        IMAGE_REF,
    ) {
        case(&t);
    }
}

/// Runs a case against a private limpetd with the busybox image pulled from a local registry.
fn on_limpetd(name: &str, case: fn(&Target)) {
    let Some(env) = ready(name, PodEnv::start(Options::default())) else {
        return;
    };
    let log_dir = env.log_dir.clone();
    if let Some(t) = Target::new(&env.d.endpoint(), "/limpet-test", &log_dir, &env.image) {
        case(&t);
    }
    // a shim answers Shutdown, then flushes its events and exits
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut shims = limpet_tests::shim_pids(&env.d.socket, None);
    while !shims.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        shims = limpet_tests::shim_pids(&env.d.socket, None);
    }
    assert!(shims.is_empty(), "{name}: shims left: {shims:?}");
}

#[track_caller]
fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

fn pod_and_container_lifecycle(h: &Harness) {
    on_containerd(h, lifecycle);
}

fn lifecycle(t: &Target) {
    let pod_file = t.pod_file("life");
    let pod = t.ok(&["runp", &pod_file]).trim().to_string();
    assert_eq!(pod.len(), 64, "{pod}");

    // pods: crictl's columns, short ids, and the filters
    let table = t.ok(&["pods"]);
    let rows = lines(&table);
    for col in [
        "POD ID",
        "CREATED",
        "STATE",
        "NAME",
        "NAMESPACE",
        "ATTEMPT",
        "RUNTIME",
    ] {
        assert!(rows[0].contains(col), "{table}");
    }
    let row = rows
        .iter()
        .find(|r| r.starts_with(&pod[..13]))
        .unwrap_or_else(|| panic!("no row for {pod}:\n{table}"));
    assert!(!row.contains(&pod[..14]), "id not cut to 13: {row}");
    for cell in ["Ready", "life", &t.namespace, "(default)", "ago"] {
        assert!(row.contains(cell), "{cell} missing: {row}");
    }
    assert!(t.ok(&["pods", "--no-trunc"]).contains(&pod));
    let just = |args: &[&str]| t.ok(args).trim().to_string();
    assert_eq!(just(&["pods", "-q"]), pod);
    assert_eq!(just(&["pods", "-q", "--name", "^life$"]), pod);
    assert_eq!(just(&["pods", "-q", "--name", "nosuch"]), "");
    assert_eq!(just(&["pods", "-q", "--label", "case=life"]), pod);
    assert_eq!(just(&["pods", "-q", "--label", "case=other"]), "");
    assert_eq!(just(&["pods", "-q", "--state", "notready"]), "");
    assert_eq!(
        just(&[
            "pods",
            "-q",
            "--state",
            "ready",
            "--namespace",
            &t.namespace
        ]),
        pod
    );
    assert_eq!(just(&["pods", "-q", "--id", &pod]), pod);
    assert_eq!(just(&["pods", "-q", "--latest"]), pod);
    let listed = t.json(&["pods", "-o", "json"]);
    assert_eq!(listed["items"][0]["id"], pod.as_str(), "{listed}");
    assert_eq!(listed["items"][0]["state"], "SANDBOX_READY", "{listed}");
    assert_eq!(listed["items"][0]["metadata"]["name"], "life", "{listed}");
    t.fails(&["pods", "--state", "sleepy"]);

    // inspectp: status and the runtime's info, as crictl prints them
    let status = t.json(&["inspectp", &pod]);
    assert_eq!(status["status"]["id"], pod.as_str(), "{status}");
    assert_eq!(status["status"]["state"], "SANDBOX_READY", "{status}");
    assert_eq!(
        status["status"]["metadata"]["namespace"],
        t.namespace.as_str()
    );
    assert_eq!(
        status["status"]["linux"]["namespaces"]["options"]["network"], "NODE",
        "{status}"
    );
    assert!(
        status["status"]["createdAt"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z') && !s.starts_with("1970")),
        "{status}"
    );
    assert!(status["info"].is_object(), "verbose info: {status}");
    let quiet = t.json(&["inspectp", "-q", &pod]);
    assert!(quiet.get("info").is_none(), "{quiet}");
    assert!(t
        .ok(&["inspectp", "-o", "yaml", &pod])
        .contains("state: SANDBOX_READY"));

    // create, start
    let script = "echo started; echo warned >&2; exec sleep 300";
    let cfile = t.container_file("main", &t.image, script);
    let cid = t
        .ok(&["create", &pod, &cfile, &pod_file])
        .trim()
        .to_string();
    assert_eq!(cid.len(), 64, "{cid}");
    assert_eq!(just(&["ps", "-q"]), "", "created is not running");
    assert_eq!(just(&["ps", "-q", "--state", "created"]), cid);
    assert!(t.ok(&["ps", "-a"]).contains("Created"));
    assert_eq!(just(&["start", &cid]), cid);

    // ps: crictl's columns and filters
    let table = t.ok(&["ps"]);
    let rows = lines(&table);
    for col in [
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD ID",
        "POD",
        "NAMESPACE",
    ] {
        assert!(rows[0].contains(col), "{table}");
    }
    let row = rows
        .iter()
        .find(|r| r.starts_with(&cid[..13]))
        .unwrap_or_else(|| panic!("no row for {cid}:\n{table}"));
    for cell in ["Running", "main", &pod[..13], "life", &t.namespace] {
        assert!(row.contains(cell), "{cell} missing: {row}");
    }
    assert_eq!(just(&["ps", "-q", "--name", "main"]), cid);
    assert_eq!(just(&["ps", "-q", "--name", "^mai$"]), "");
    assert_eq!(just(&["ps", "-q", "--pod", &pod]), cid);
    assert_eq!(just(&["ps", "-q", "--label", "role=main"]), cid);
    assert_eq!(just(&["ps", "-q", "--label", "role=other"]), "");
    assert_eq!(just(&["ps", "-q", "--image", &t.image]), cid);
    assert_eq!(just(&["ps", "-q", "--namespace", &t.namespace]), cid);
    assert_eq!(just(&["ps", "-q", "--state", "exited"]), "");
    assert_eq!(just(&["ps", "-q", "-l"]), cid);
    let listed = t.json(&["ps", "-o", "json"]);
    assert_eq!(listed["containers"][0]["id"], cid.as_str(), "{listed}");
    assert_eq!(listed["containers"][0]["state"], "CONTAINER_RUNNING");
    assert_eq!(listed["containers"][0]["podSandboxId"], pod.as_str());

    // inspect
    let status = t.json(&["inspect", &cid]);
    let s = &status["status"];
    assert_eq!(s["state"], "CONTAINER_RUNNING", "{status}");
    assert_eq!(s["metadata"]["name"], "main", "{status}");
    assert_eq!(s["labels"]["role"], "main", "{status}");
    assert_eq!(s["finishedAt"], "1970-01-01T00:00:00Z", "{status}");
    assert!(
        s["startedAt"]
            .as_str()
            .is_some_and(|v| !v.starts_with("1970")),
        "{status}"
    );
    let log_path = PathBuf::from(s["logPath"].as_str().unwrap_or_default());
    assert!(
        log_path.ends_with("life/main.log"),
        "log under the pod's log_directory: {status}"
    );
    assert!(status["info"].is_object(), "{status}");
    let table = t.ok(&["inspect", "-o", "table", &cid]);
    assert!(table.contains("State: Running"), "{table}");

    // exec: output on the right streams, the command's exit code
    let out = t.ctl(&["exec", &cid, "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(t.ctl(&["exec", &cid, "true"]).status.code(), Some(0));
    // streaming exec: stdin through, its end closing the command's stdin, the exit code
    // passed on; -t without -i is refused as crictl refuses it
    let mut cmd = t.command(&["exec", "-i", &cid, "sh", "-c", "cat; echo done >&2; exit 4"]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run limpetctl exec -i");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"typed\n")
        .expect("write stdin");
    let out = child.wait_with_output().expect("limpetctl exec -i");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "typed\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "done\n");
    t.fails(&["exec", "-t", &cid, "sh"]);

    // logs: stdout records to stdout, stderr records to stderr
    wait_for("the first log lines", Duration::from_secs(10), || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("warned"))
    });
    let out = t.ctl(&["logs", &cid]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "warned\n");

    // stats: two samples a second apart
    let table = t.ok(&["stats"]);
    let rows = lines(&table);
    for col in ["CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES"] {
        assert!(rows[0].contains(col), "{table}");
    }
    assert!(
        rows.iter()
            .any(|r| r.starts_with(&cid[..13]) && r.contains("main")),
        "{table}"
    );
    let stats = t.json(&["stats", "-o", "json", "--id", &cid]);
    assert_eq!(
        stats["stats"][0]["attributes"]["id"],
        cid.as_str(),
        "{stats}"
    );
    let out = t.ctl(&["statsp"]);
    if out.status.success() {
        let table = String::from_utf8_lossy(&out.stdout);
        assert!(table.starts_with("POD"), "{table}");
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Unimplemented"), "statsp: {err}");
        skip("limpetctl_pods: this runtime has no ListPodSandboxStats; statsp not checked");
    }

    // update reaches the container's cgroup
    const LIMIT: &str = "67108864";
    assert_eq!(just(&["update", "--memory", LIMIT, &cid]), cid);
    let out = t.ctl(&[
        "exec",
        &cid,
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        LIMIT,
        "{out:?}"
    );
    t.fails(&["update", &cid]);

    // stop, rm: crictl prints the ids; rm takes the log files too
    assert_eq!(just(&["stop", "-t", "1", &cid]), cid);
    assert_eq!(just(&["ps", "-q"]), "");
    assert_eq!(just(&["ps", "-q", "--state", "exited"]), cid);
    let status = t.json(&["inspect", &cid]);
    assert_eq!(status["status"]["state"], "CONTAINER_EXITED", "{status}");
    assert!(
        status["status"]["finishedAt"]
            .as_str()
            .is_some_and(|v| !v.starts_with("1970")),
        "{status}"
    );
    assert!(status["status"]["exitCode"].is_i64(), "{status}");
    assert!(t
        .ok(&["inspect", "-o", "table", &cid])
        .contains("Exit Code:"));
    assert_eq!(just(&["rm", &cid]), cid);
    assert!(!log_path.exists(), "rm removes the log");
    assert_eq!(just(&["ps", "-a", "-q"]), "");

    // stopp, rmp
    assert_eq!(just(&["stopp", &pod]), format!("Stopped sandbox {pod}"));
    assert_eq!(just(&["pods", "-q", "--state", "notready"]), pod);
    assert!(t.ok(&["pods"]).contains("NotReady"));
    assert_eq!(just(&["rmp", &pod]), format!("Removed sandbox {pod}"));
    assert_eq!(just(&["pods", "-q"]), "");
    let err = t.fails(&["inspectp", &pod]);
    assert!(
        err.contains(&pod[..13]) || err.contains("not found"),
        "{err}"
    );
}

fn logs_follow_tail_and_rotation(h: &Harness) {
    on_containerd(h, logs);
}

/// Reads a child's pipe to the end on a thread.
fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn logs(t: &Target) {
    let pod_file = t.pod_file("logs");
    let pod = t.ok(&["runp", &pod_file]).trim().to_string();
    // A line longer than the runtime's log line limit (containerd: 16 KiB) is written as
    // partial chunks; ticks give time to follow and to rotate.
    let script = "echo one; echo two >&2; head -c 40000 /dev/zero | tr '\\0' x; echo; sleep 1; for i in $(seq 1 20); do echo tick-$i; sleep 0.3; done; echo bye >&2";
    let cfile = t.container_file("talker", &t.image, script);
    let cid = t
        .ok(&["create", &pod, &cfile, &pod_file])
        .trim()
        .to_string();
    t.ok(&["start", &cid]);
    let status = t.json(&["inspect", &cid]);
    let log_path = PathBuf::from(status["status"]["logPath"].as_str().unwrap_or_default());

    let mut follower = t
        .command(&["logs", "-f", &cid])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn logs -f: {e}"));
    let out = drain(follower.stdout.take().expect("piped stdout"));
    let err = drain(follower.stderr.take().expect("piped stderr"));

    // Rotate as kubelet does: rename, then ask the runtime to reopen the log.
    wait_for("tick-3 in the log", Duration::from_secs(20), || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("tick-3\n"))
    });
    let rotated = log_path.with_extension("log.1");
    std::fs::rename(&log_path, &rotated).unwrap_or_else(|e| panic!("rotate: {e}"));
    block_on(t.reopen_log(&cid));
    assert!(
        log_path.exists(),
        "the runtime reopened {}",
        log_path.display()
    );

    let exited = wait_child(&mut follower, Duration::from_secs(40));
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let exited = exited.unwrap_or_else(|| {
        panic!("logs -f did not stop when the container exited\nstdout:\n{out}\nstderr:\n{err}")
    });
    assert!(exited.success(), "{exited}: {err}");

    let old = std::fs::read_to_string(&rotated).unwrap_or_default();
    assert!(
        old.contains(" stdout P "),
        "no partial chunks written:\n{old}"
    );
    let mut expected = vec!["one".to_string(), "x".repeat(40000)];
    expected.extend((1..=20).map(|i| format!("tick-{i}")));
    assert_eq!(
        lines(&out),
        expected,
        "every stdout record once, partials joined, across the reopen"
    );
    assert_eq!(lines(&err), ["two", "bye"]);

    // What the current file holds: --tail counts records across both streams.
    let tail = t.ctl(&["logs", "--tail", "2", &cid]);
    assert_eq!(
        String::from_utf8_lossy(&tail.stdout),
        "tick-20\n",
        "{tail:?}"
    );
    assert_eq!(String::from_utf8_lossy(&tail.stderr), "bye\n", "{tail:?}");
    let stamped = t.ctl(&["logs", "-t", "--tail", "1", &cid]);
    let line = String::from_utf8_lossy(&stamped.stderr).into_owned();
    let (stamp, text) = line.split_once(' ').unwrap_or_default();
    assert_eq!(text, "bye\n", "{line}");
    assert!(
        stamp.len() >= 20 && stamp.ends_with('Z') && stamp.contains('T'),
        "{line}"
    );
    let since = t.ctl(&["logs", "--since", "2200-01-01T00:00:00Z", &cid]);
    assert!(
        since.status.success() && since.stdout.is_empty() && since.stderr.is_empty(),
        "{since:?}"
    );
    let recent = t.ctl(&["logs", "--since", "1h", "--tail", "1", &cid]);
    assert_eq!(
        String::from_utf8_lossy(&recent.stderr),
        "bye\n",
        "{recent:?}"
    );
    let only_err = t.ctl(&["logs", "--stream", "stderr", &cid]);
    assert!(only_err.stdout.is_empty(), "{only_err:?}");

    // -f on an exited container prints and returns at once
    let started = Instant::now();
    let again = t.ctl(&["logs", "-f", "--tail", "1", &cid]);
    assert!(again.status.success(), "{again:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(String::from_utf8_lossy(&again.stderr), "bye\n");

    t.ok(&["rm", &cid]);
    t.ok(&["rmp", "-f", &pod]);
}

fn run_pulls_a_missing_image(h: &Harness) {
    on_containerd(h, run_and_pull);
}

/// Pushes the busybox layer as `limpet/ctl-busybox:v1` to a fresh local registry.
fn registry_image(dir: &Path) -> Result<(Registry, String), HarnessError> {
    let reg = Registry::start(None)?;
    let mut l = layout::Layout::create(dir)?;
    let layer = layout::Layer::new(layout::busybox_layer_tar()?, layout::Compression::Gzip);
    let desc = l.image(&[&layer], layout::host_arch(), json!({}), false)?;
    l.tag("v1", &desc);
    l.save()?;
    reg.push(&l.dir, "v1", "limpet/ctl-busybox:v1")?;
    let image = format!("{}/limpet/ctl-busybox:v1", reg.addr);
    Ok((reg, image))
}

fn run_and_pull(t: &Target) {
    let (_reg, image) = match registry_image(&t.files.path().join("layout")) {
        Ok(r) => r,
        Err(HarnessError::Skip(why)) => {
            skip(&format!("run_pulls_a_missing_image: {why}"));
            return;
        }
        Err(e) => panic!("registry: {e}"),
    };
    let cfile = t.container_file("pulled", &image, "exec sleep 300");

    // --no-pull leaves a missing image missing: the runtime refuses the container
    let idle_file = t.pod_file("idle");
    let idle = t.ok(&["runp", &idle_file]).trim().to_string();
    let err = t.fails(&["create", "--no-pull", &idle, &cfile, &idle_file]);
    assert!(err.contains("create container"), "{err}");

    // run: runp, pull (the image is missing), create, start
    let pod_file = t.pod_file("runner");
    let out = t.ctl(&["run", &cfile, &pod_file]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run: {stderr}");
    assert!(stderr.contains("Pulling container image"), "{stderr}");
    let cid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(cid.len(), 64, "{out:?}");
    assert_eq!(t.ok(&["ps", "-q", "--image", &image]).trim(), cid);
    let status = t.json(&["inspect", &cid]);
    assert_eq!(status["status"]["state"], "CONTAINER_RUNNING", "{status}");

    // running things are refused without --force, and removed with it
    let err = t.fails(&["rm", &cid]);
    assert!(err.contains("running"), "{err}");
    assert_eq!(t.ok(&["rm", "-f", &cid]).trim(), cid);
    assert!(t.fails(&["rmp", "-a"]).contains("running"));
    let removed = t.ok(&["rmp", "-f", "-a"]);
    assert_eq!(removed.matches("Removed sandbox").count(), 2, "{removed}");
    assert_eq!(t.ok(&["pods", "-q"]).trim(), "");

    // a config mistake is named before anything reaches the runtime
    let bad = t.write(
        "bad.yaml",
        "metadata: {name: x}\nimage: {image: busybox}\nlinux:\n  security_context:\n    privilegd: true\n",
    );
    let err = t.fails(&["create", "nopod", &bad, &pod_file]);
    assert!(
        err.contains("privilegd") && err.contains("bad.yaml"),
        "{err}"
    );
}

cri_cases!(
    pod_and_container_lifecycle,
    logs_follow_tail_and_rotation,
    run_pulls_a_missing_image
);

/// The same cases against limpetd.
mod limpetd {
    #[test]
    fn pod_and_container_lifecycle() {
        super::on_limpetd("pod_and_container_lifecycle (limpetd)", super::lifecycle);
    }

    #[test]
    fn logs_follow_tail_and_rotation() {
        super::on_limpetd("logs_follow_tail_and_rotation (limpetd)", super::logs);
    }

    #[test]
    fn run_pulls_a_missing_image() {
        super::on_limpetd("run_pulls_a_missing_image (limpetd)", super::run_and_pull);
    }
}
