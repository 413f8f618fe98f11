//! Bad requests get clear errors with the right error class (ctr prints the gRPC code as
//! the last word: "not found", "already exists", "unknown"), and a failed create leaves
//! nothing behind: no shim, no mount, no cgroup, no runc state, no bundle.

use std::path::Path;
use std::time::Duration;

use limpet_tests::{shim_cases, Harness};

const SECOND: Duration = Duration::from_secs(1);

fn unknown_container_is_not_found(h: &Harness) {
    let ns = h.namespace().to_string();
    let expected = format!("container \"nosuch\" in namespace \"{ns}\": not found");
    h.ctr(&["tasks", "kill", "nosuch"])
        .fails()
        .stderr_has(&[&expected]);
    h.ctr(&["tasks", "delete", "nosuch"])
        .fails()
        .stderr_has(&[&expected]);
    h.ctr(&["tasks", "exec", "--exec-id", "x", "nosuch", "true"])
        .fails()
        .stderr_has(&[&expected]);
}

fn unknown_process_and_stopped_task_errors(h: &Harness) {
    h.run_detached("box", &["sleep", "1000"]);
    // Requests for an exec id the shim never saw.
    h.ctr(&["tasks", "kill", "--exec-id", "nosuch", "box"])
        .fails()
        .stderr_has(&["nosuch", "not found"]);
    h.ctr(&["tasks", "delete", "--exec-id", "nosuch", "box"])
        .fails()
        .stderr_has(&["nosuch", "not found"]);
    // A created-but-never-started container has no task.
    h.ctr(&["containers", "create", h.image(), "idle", "true"])
        .ok();
    h.ctr(&["tasks", "kill", "idle"])
        .fails()
        .stderr_has(&["idle", "not found"]);
    h.ctr(&["containers", "rm", "idle"]).ok();

    // Once the task has stopped: kill says the process is gone, exec and pause refuse.
    h.ctr(&["tasks", "kill", "-s", "SIGKILL", "box"]).ok();
    h.wait_status("box", "STOPPED", 10 * SECOND);
    h.ctr(&["tasks", "kill", "box"])
        .fails()
        .stderr_has(&["not found"]);
    h.ctr(&["tasks", "exec", "--exec-id", "late", "box", "true"])
        .fails();
    h.ctr(&["tasks", "pause", "box"]).fails();
    // None of that disturbed the recorded exit.
    assert_eq!(h.delete_task("box"), 137);
    h.ctr(&["containers", "rm", "box"]).ok();
}

/// A process that cannot start: the create fails with runc's reason, and `--rm` leaves
/// neither the container nor anything of its task.
fn missing_binary_leaves_nothing_behind(h: &Harness) {
    h.run(&["--rm"], "bad", &["/nonexistent"])
        .fails()
        .stderr_has(&[
            "failed to create shim task",
            "OCI runtime create failed",
            "/nonexistent",
            "no such file or directory",
        ]);
    assert!(h.ctr(&["containers", "ls", "-q"]).ok().lines().is_empty());
    assert_no_leftovers(h, "bad");
}

/// A bundle whose config.json names a bind mount source that does not exist: runc fails
/// after the shim mounted the rootfs, which must be unmounted again.
fn bad_mount_leaves_nothing_behind(h: &Harness) {
    let mount = "type=bind,src=/nonexistent-limpet-src,dst=/x,options=rbind:ro";
    h.run(&["-d", "--mount", mount], "badmount", &["true"])
        .fails()
        .stderr_has(&["failed to create shim task", "/nonexistent-limpet-src"]);
    // Without --rm the container record stays, task-less, and removes cleanly.
    assert_eq!(
        h.ctr(&["containers", "ls", "-q"]).ok().lines(),
        ["badmount"]
    );
    assert!(h.task("badmount").is_none());
    assert_no_leftovers(h, "badmount");
    h.ctr(&["containers", "rm", "badmount"]).ok();
    // The same id works once the cause is gone.
    let out = h.run(&["--rm"], "badmount", &["echo", "ok"]).ok();
    assert_eq!(out.stdout, "ok\n");
}

#[track_caller]
fn assert_no_leftovers(h: &Harness, id: &str) {
    assert!(h.task(id).is_none(), "no task {id}");
    assert!(
        h.wait_shims_gone(10 * SECOND),
        "shim processes left for {id}: {:?}",
        h.shim_pids()
    );
    assert_eq!(
        h.bundle_mounts(id),
        Vec::<std::path::PathBuf>::new(),
        "mounts of {id}"
    );
    assert!(
        !h.bundle(id).exists(),
        "bundle {} left",
        h.bundle(id).display()
    );
    assert_eq!(
        h.container_cgroups(id),
        Vec::<std::path::PathBuf>::new(),
        "cgroups of {id}"
    );
    let runc_state = Path::new("/run/containerd/runc")
        .join(h.namespace())
        .join(id);
    assert!(
        !runc_state.exists(),
        "runc state {} left",
        runc_state.display()
    );
}

shim_cases!(
    unknown_container_is_not_found,
    unknown_process_and_stopped_task_errors,
    missing_binary_leaves_nothing_behind,
    bad_mount_leaves_nothing_behind,
);
