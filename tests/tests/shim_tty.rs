//! Terminals: `ctr run -t` and `ctr tasks exec -t` on a real pseudo-terminal. ctr puts the
//! terminal in raw mode, relays keystrokes, and forwards the window size at start and on
//! every SIGWINCH (ResizePty); the container's `stty size` must see it.

use std::process::Command;
use std::time::{Duration, Instant};

use limpet_tests::pty::PtyChild;
use limpet_tests::{shim_cases, Harness};

/// Prints the size, then again after every line typed; exits at end of input. ctr sends the
/// first size only after starting the task or exec, so the shell may briefly see 0x0 (busybox
/// stty then prints nothing, and still exits 0): wait for a real size first.
const SIZE_LOOP: &str = "while s=$(stty size 2>/dev/null); [ -z \"$s\" ] || [ \"$s\" = '0 0' ]; \
     do sleep 0.02; done; echo \"$s\"; while read x; do stty size; done";

fn spawn_ctr(h: &Harness, args: &[&str], rows: u16, cols: u16) -> PtyChild {
    let mut cmd = Command::new(h.containerd().ctr_binary());
    cmd.args(h.containerd().ctr_args(h.namespace(), args));
    PtyChild::spawn(cmd, rows, cols).unwrap_or_else(|e| panic!("spawn ctr on a pty: {e}"))
}

/// Checks the initial size, resizes, types lines until the new size shows, then ends input
/// with ^D and expects a clean exit.
fn follow_resize(mut term: PtyChild) {
    assert!(
        term.wait_for("31 97", Duration::from_secs(15)),
        "initial size 31x97 not seen: {:?}",
        term.screen()
    );
    term.resize(45, 132)
        .unwrap_or_else(|e| panic!("resize: {e}"));
    // The resize travels ctr → containerd → shim while our keystroke takes the stdin path:
    // type until the new size shows up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = false;
    while !seen && Instant::now() < deadline {
        term.write(b"\r")
            .unwrap_or_else(|e| panic!("write to pty: {e}"));
        seen = term.wait_for("45 132", Duration::from_millis(200));
    }
    assert!(seen, "resized 45x132 not seen: {:?}", term.screen());
    term.write(b"\x04")
        .unwrap_or_else(|e| panic!("write to pty: {e}"));
    let status = term.wait(Duration::from_secs(15));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "screen: {:?}",
        term.screen()
    );
}

fn run_tty_follows_resize(h: &Harness) {
    let args = h.run_args(&["-t", "--rm"], "tty", &["sh", "-c", SIZE_LOOP]);
    follow_resize(spawn_ctr(h, &args, 31, 97));
    assert!(h.ctr(&["containers", "ls", "-q"]).ok().lines().is_empty());
}

fn exec_tty_follows_resize(h: &Harness) {
    h.run_detached("box", &["sleep", "1000"]);
    let args = [
        "tasks",
        "exec",
        "-t",
        "--exec-id",
        "term",
        "box",
        "sh",
        "-c",
        SIZE_LOOP,
    ];
    follow_resize(spawn_ctr(h, &args, 31, 97));
    // The exec is gone, the container unharmed.
    let ps = h.ctr(&["tasks", "ps", "box"]).ok();
    assert_eq!(ps.lines().len(), 2, "{}", ps.describe());
    h.remove("box");
}

/// A terminal container's exit code still comes through ctr.
fn run_tty_exit_code(h: &Harness) {
    let args = h.run_args(
        &["-t", "--rm"],
        "ttyexit",
        &["sh", "-c", "echo ready; exit 9"],
    );
    let mut term = spawn_ctr(h, &args, 24, 80);
    assert!(
        term.wait_for("ready", Duration::from_secs(15)),
        "{:?}",
        term.screen()
    );
    let status = term.wait(Duration::from_secs(15));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(9),
        "screen: {:?}",
        term.screen()
    );
}

shim_cases!(
    run_tty_follows_resize,
    exec_tty_follows_resize,
    run_tty_exit_code
);
