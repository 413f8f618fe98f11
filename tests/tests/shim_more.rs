//! Less common `ctr` paths through the shim: the OOM event, `binary://` log URIs and exit
//! statuses matched to the right process when many exit close together. Each case asserts
//! what the Go shim (containerd-shim-runc-v2) does under the same containerd.

use std::path::Path;
use std::time::{Duration, Instant};

use limpet_tests::{shim_cases, Harness};

const SECOND: Duration = Duration::from_secs(1);

/// A container that allocates past its memory limit is OOM-killed: ctr reports 137, and the
/// shim publishes `/tasks/oom` for it before its `/tasks/delete`.
fn oom_kill_reports_event_and_137(h: &Harness) {
    let events = h.events();
    // busybox tail keeps everything since the last newline, and /dev/zero has none.
    h.run(
        &["--rm", "--memory-limit", "16777216"],
        "oom",
        &["sh", "-c", "tail /dev/zero"],
    )
    .exits_with(137);
    let exit = events.wait_for(5 * SECOND, |e| {
        e.topic == "/tasks/exit" && e.str("container_id") == "oom"
    });
    assert!(
        exit.is_some(),
        "no /tasks/exit; saw {:?}",
        events.task_topics()
    );
    let oom = events.wait_for(5 * SECOND, |e| {
        e.topic == "/tasks/oom" && e.str("container_id") == "oom"
    });
    assert!(
        oom.is_some(),
        "no /tasks/oom; saw {:?}",
        events.task_topics()
    );
    let deleted = events.wait_for(5 * SECOND, |e| {
        e.topic == "/tasks/delete" && e.str("container_id") == "oom"
    });
    assert!(
        deleted.is_some(),
        "no /tasks/delete; saw {:?}",
        events.task_topics()
    );
    // The OOM notification and the reaped exit come from two sources in either shim, so
    // their order is not guaranteed (the Go shim has been seen to send the exit first); the
    // OOM must still be reported before the task is deleted.
    let topics = events.task_topics();
    let at = |topic: &str| topics.iter().position(|t| t == topic);
    assert!(
        at("/tasks/oom") < at("/tasks/delete"),
        "oom before delete: {topics:?}"
    );
}

/// `binary://PATH?key=value`: the shim starts PATH with the container's stdout on fd 3, its
/// stderr on fd 4 and a ready pipe on fd 5, `CONTAINER_ID` and `CONTAINER_NAMESPACE` in its
/// environment and the query as arguments.
fn log_uri_binary_runs_the_logger(h: &Harness) {
    let dir = h.containerd().dir().join("logger");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let script = dir.join("logger.sh");
    let d = dir.display();
    // The shim gives the logger no PATH: every command is spelled out.
    let text = format!(
        "#!/bin/sh\n\
         echo \"$CONTAINER_ID\" > {d}/id\n\
         echo \"$CONTAINER_NAMESPACE\" > {d}/ns\n\
         echo \"$@\" > {d}/args\n\
         exec 5>&-\n\
         /bin/cat <&3 > {d}/out &\n\
         exec /bin/cat <&4 > {d}/err\n"
    );
    std::fs::write(&script, text).unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    set_executable(&script);

    let uri = format!("binary://{}?key=value", script.display());
    let out = h
        .run(
            &["-d", "--log-uri", &uri],
            "bl",
            &["sh", "-c", "echo to-out; echo to-err >&2"],
        )
        .ok();
    assert_eq!(out.stdout, "", "{}", out.describe());
    h.wait_status("bl", "STOPPED", 10 * SECOND);
    assert_eq!(h.delete_task("bl"), 0);
    h.ctr(&["containers", "rm", "bl"]).ok();

    let expect = |name: &str, want: &str, what: &str| {
        let got = wait_content(&dir.join(name), want, 5 * SECOND);
        assert_eq!(got, want, "{what} ({})", dir.join(name).display());
    };
    expect("out", "to-out\n", "the container's stdout on fd 3");
    expect("err", "to-err\n", "the container's stderr on fd 4");
    expect("id", "bl\n", "CONTAINER_ID");
    expect("ns", &format!("{}\n", h.namespace()), "CONTAINER_NAMESPACE");
    expect("args", "key value\n", "the URI query as arguments");
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The content of `path` once it is `want`, or whatever it holds after `timeout` (the logger
/// writes as the container does, and may still be copying when the task is deleted).
fn wait_content(path: &Path, want: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text == want || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// 30 execs that exit close together from three threads: each one's status is its own.
fn exec_exit_codes_match_under_load(h: &Harness) {
    h.run_detached("box", &["sleep", "1000"]);
    std::thread::scope(|scope| {
        for worker in 0..3 {
            scope.spawn(move || {
                for n in (1..=30).filter(|n| n % 3 == worker) {
                    let id = format!("e{n}");
                    let script = format!("exit {}", n % 256);
                    h.ctr(&[
                        "tasks",
                        "exec",
                        "--exec-id",
                        &id,
                        "box",
                        "sh",
                        "-c",
                        &script,
                    ])
                    .exits_with(n % 256);
                }
            });
        }
    });
    assert_eq!(h.task("box").map(|t| t.status).as_deref(), Some("RUNNING"));
    h.remove("box");
}

/// Containers whose init exits at once, two at a time: each `ctr run` reports 7.
fn init_exit_codes_match_under_load(h: &Harness) {
    std::thread::scope(|scope| {
        for worker in 0..2 {
            scope.spawn(move || {
                for n in (0..10).filter(|n| n % 2 == worker) {
                    let id = format!("quick{n}");
                    h.run(&["--rm"], &id, &["sh", "-c", "exit 7"]).exits_with(7);
                }
            });
        }
    });
    assert!(h.ctr(&["containers", "ls", "-q"]).ok().lines().is_empty());
}

shim_cases!(
    oom_kill_reports_event_and_137,
    log_uri_binary_runs_the_logger,
    exec_exit_codes_match_under_load,
    init_exit_codes_match_under_load,
);
