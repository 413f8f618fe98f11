//! Checkpoint and restore through ctr (criu via runc). Skipped, with criu's own reason, on
//! machines where `criu check` fails (many VMs and containers).

use std::process::Command;
use std::time::Duration;

use limpet_tests::{shim_cases, skip, Harness};

const SECOND: Duration = Duration::from_secs(1);

/// `criu check` as root; Err carries why criu cannot work here.
fn criu_works() -> Result<(), String> {
    let out = Command::new("criu")
        .arg("check")
        .output()
        .map_err(|e| format!("criu is not installed ({e})"))?;
    if out.status.success() {
        return Ok(());
    }
    let why = String::from_utf8_lossy(&out.stderr);
    let first = why
        .lines()
        .find(|l| l.contains("Error"))
        .unwrap_or("no output");
    Err(format!("criu check failed: {}", first.trim()))
}

/// The counter lives in the shell's memory and is mirrored to a file: if the restored task
/// were a fresh start, the count would begin again at 1.
const COUNTER: &str = "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done";

fn read_count(h: &Harness, id: &str, exec_id: &str) -> u64 {
    let out = h
        .ctr(&[
            "tasks",
            "exec",
            "--exec-id",
            exec_id,
            id,
            "cat",
            "/tmp/count",
        ])
        .ok();
    out.stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("count: {}", out.describe()))
}

fn checkpoint_and_restore(h: &Harness) {
    if let Err(reason) = criu_works() {
        skip(&format!("checkpoint_and_restore: {reason}"));
        return;
    }
    let events = h.events();
    h.run_detached("ck", &["sh", "-c", COUNTER]);
    std::thread::sleep(SECOND / 2);
    let before = read_count(h, "ck", "r1");
    assert!(before > 0);

    // Checkpoint the task and its rw layer into an image; the task keeps running.
    h.ctr(&[
        "containers",
        "checkpoint",
        "--task",
        "--rw",
        "ck",
        "limpet/ck:1",
    ])
    .ok();
    let checkpointed = events.wait_for(5 * SECOND, |e| e.topic == "/tasks/checkpointed");
    assert!(
        checkpointed.is_some(),
        "no /tasks/checkpointed; saw {:?}",
        events.task_topics()
    );
    assert_eq!(h.task("ck").map(|t| t.status).as_deref(), Some("RUNNING"));

    h.remove("ck");
    h.ctr(&[
        "containers",
        "restore",
        "--live",
        "--rw",
        "ck",
        "limpet/ck:1",
    ])
    .ok();
    h.wait_status("ck", "RUNNING", 10 * SECOND);
    let after = read_count(h, "ck", "r2");
    assert!(
        after >= before,
        "restored counter {after} continues from {before}"
    );
    std::thread::sleep(SECOND / 4);
    assert!(
        read_count(h, "ck", "r3") > after,
        "the restored process runs"
    );
    h.remove("ck");
    h.ctr(&["images", "rm", "limpet/ck:1"]).ok();
}

shim_cases!(checkpoint_and_restore);
