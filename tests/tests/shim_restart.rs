//! The shim's master may crash: containers run on, and their exit codes survive until a
//! restarted containerd asks for them.

use std::time::Duration;

use limpet_tests::{pid_alive, shim_cases, Harness};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const SECOND: Duration = Duration::from_secs(1);

fn trap_script(code: u32) -> String {
    format!("trap 'exit {code}' TERM; while :; do sleep 0.1; done")
}

fn containers_survive_containerd_sigkill(h: &Harness) {
    let ids: Vec<String> = (0..5).map(|i| format!("c{i}")).collect();
    let mut before = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let script = trap_script(40 + i as u32);
        before.push(h.run_detached(id, &["sh", "-c", &script]));
    }
    let mut shims = h.shim_pids();
    shims.sort();
    assert_eq!(shims.len(), 5, "one shim per container");

    h.containerd().kill();
    assert!(
        before.iter().all(|t| pid_alive(t.pid as i32)),
        "containers outlive containerd"
    );
    h.containerd()
        .restart()
        .unwrap_or_else(|e| panic!("restart: {e}"));

    for task in &before {
        let now = h.task(&task.id);
        assert_eq!(
            now.as_ref().map(|t| (t.pid, t.status.as_str())),
            Some((task.pid, "RUNNING"))
        );
    }
    let mut shims_after = h.shim_pids();
    shims_after.sort();
    assert_eq!(shims_after, shims, "the same shims serve after the restart");

    // Every operation still reaches the shims.
    h.ctr(&["tasks", "kill", "c2"]).ok();
    h.wait_status("c2", "STOPPED", 10 * SECOND);
    assert_eq!(h.delete_task("c2"), 42);
    h.ctr(&["tasks", "kill", "-s", "SIGKILL", "c4"]).ok();
    h.wait_status("c4", "STOPPED", 10 * SECOND);
    assert_eq!(h.delete_task("c4"), 137);
    let out = h.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "after",
        "c0",
        "sh",
        "-c",
        "echo up; exit 4",
    ]);
    assert_eq!(out.exits_with(4).stdout, "up\n");
    for id in ["c0", "c1", "c3"] {
        assert_eq!(
            h.task(id).map(|t| t.status).as_deref(),
            Some("RUNNING"),
            "{id}"
        );
    }
    let out = h.run(&["--rm"], "fresh", &["echo", "new"]).ok();
    assert_eq!(out.stdout, "new\n");
    for id in ["c2", "c4"] {
        h.ctr(&["containers", "rm", id]).ok();
    }
    for id in ["c0", "c1", "c3"] {
        h.remove(id);
    }
    assert!(
        h.wait_shims_gone(10 * SECOND),
        "shims left: {:?}",
        h.shim_pids()
    );
}

fn exit_while_containerd_down_is_reported(h: &Harness) {
    let wait_for_file = "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 7";
    let seven = h.run_detached("seven", &["sh", "-c", wait_for_file]);
    let killed = h.run_detached("killed", &["sleep", "1000"]);

    h.containerd().kill();
    // Make both exit while nobody listens: one by its own choice, one by SIGKILL.
    let trigger = h.bundle("seven").join("rootfs/tmp/go");
    std::fs::write(&trigger, b"").unwrap_or_else(|e| panic!("{}: {e}", trigger.display()));
    kill(Pid::from_raw(killed.pid as i32), Signal::SIGKILL)
        .unwrap_or_else(|e| panic!("kill {}: {e}", killed.pid));
    let deadline = std::time::Instant::now() + 10 * SECOND;
    while pid_alive(seven.pid as i32) || pid_alive(killed.pid as i32) {
        assert!(
            std::time::Instant::now() < deadline,
            "containers did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The shim must have reaped them and kept the status.
    assert_eq!(
        h.shim_pids().len(),
        2,
        "shims wait for containerd to collect the exits"
    );

    h.containerd()
        .restart()
        .unwrap_or_else(|e| panic!("restart: {e}"));
    if h.containerd().bins().major >= 2 && h.task("seven").is_none() {
        // containerd 2.x, restoring a shim whose Pids() is empty (the Go shim's answer once
        // the init has exited), deletes the task and the shim at startup ("cleaning leaked
        // shim process"): the exit is dropped, and so must be every trace of the task. A
        // shim that still reports the pid keeps the task, which must then read as below.
        for id in ["seven", "killed"] {
            assert!(h.task(id).is_none(), "{id} cleaned up like seven");
            h.ctr(&["containers", "rm", id]).ok();
            assert!(!h.bundle(id).exists(), "bundle of {id} removed");
        }
        assert!(
            h.wait_shims_gone(10 * SECOND),
            "shims left: {:?}",
            h.shim_pids()
        );
        return;
    }
    assert_eq!(
        h.wait_status("seven", "STOPPED", 10 * SECOND).pid,
        seven.pid
    );
    assert_eq!(
        h.wait_status("killed", "STOPPED", 10 * SECOND).pid,
        killed.pid
    );
    assert_eq!(h.delete_task("seven"), 7);
    assert_eq!(h.delete_task("killed"), 137);
    for id in ["seven", "killed"] {
        h.ctr(&["containers", "rm", id]).ok();
    }
    assert!(
        h.wait_shims_gone(10 * SECOND),
        "shims left: {:?}",
        h.shim_pids()
    );
}

shim_cases!(
    containers_survive_containerd_sigkill,
    exit_while_containerd_down_is_reported
);
