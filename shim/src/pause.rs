//! `containerd-shim-limpet-v2 pause`: the sandbox process of a pod. It holds the pod's
//! namespaces open and does nothing else: as PID 1 of a pod-shared PID namespace it reaps
//! every orphan that ends up its child, and it exits 0 on SIGTERM or SIGINT. It takes
//! signals synchronously with sigwait, so it needs no handler, no thread and no socket.

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub fn run() -> ! {
    let mut signals = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(s);
    }
    // Blocked signals stay pending even for a namespace's PID 1, which would otherwise
    // never see a SIGTERM sent from inside its namespace.
    if let Err(e) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None) {
        eprintln!("pause: block signals: {e}");
        std::process::exit(1);
    }
    // Children that ended before the mask was in place sent a SIGCHLD nobody saw.
    reap(ANY_CHILD);
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => reap(ANY_CHILD),
            Ok(Signal::SIGTERM | Signal::SIGINT) => std::process::exit(0),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                eprintln!("pause: sigwait: {e}");
                std::process::exit(1);
            }
        }
    }
}

const ANY_CHILD: Pid = Pid::from_raw(-1);

/// Collects every ended child among `children` (a pid, or [`ANY_CHILD`]); several exits
/// may share one SIGCHLD.
fn reap(children: Pid) {
    loop {
        match waitpid(children, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_children_are_reaped() {
        // Other tests of this binary run children too: waiting for any child here could
        // take theirs, so this reaps its own only (the pause suite in tests/ covers any).
        let child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id() as i32;
        let stat = format!("/proc/{pid}/stat");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !std::fs::read_to_string(&stat)
            .unwrap()
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        {
            assert!(std::time::Instant::now() < deadline, "child never ended");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        reap(Pid::from_raw(pid));
        assert!(!std::path::Path::new(&stat).exists(), "zombie {pid} left");
        std::mem::forget(child);
    }
}
