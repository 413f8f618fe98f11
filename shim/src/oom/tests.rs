//! Tests of the OOM watcher: v2 on fake `memory.events` files (inotify works on any file),
//! v1 and v2 with real OOM kills in real memory cgroups when the host allows.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use super::*;
use crate::cgroups::host_tests::{remove_cgroup, unique_name};
use crate::cgroups::{mode, Mode};

const QUIET: Duration = Duration::from_millis(300);
const SOON: Duration = Duration::from_secs(10);

fn watcher() -> (OomWatcher, Receiver<String>) {
    let (tx, rx) = channel();
    let on_oom = move |id: &str| {
        let _ = tx.send(id.to_string());
    };
    (OomWatcher::start(Box::new(on_oom)).unwrap(), rx)
}

/// A fake v2 cgroup directory.
fn fake_cgroup(dir: &Path, oom_kill: u64) {
    set_oom_kill(dir, oom_kill);
    fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
}

fn set_oom_kill(dir: &Path, oom_kill: u64) {
    let text = format!("low 0\nhigh 0\nmax 9\noom 1\noom_kill {oom_kill}\noom_group_kill 0\n");
    fs::write(dir.join("memory.events"), text).unwrap();
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn assert_quiet(rx: &Receiver<String>) {
    if let Ok(id) = rx.recv_timeout(QUIET) {
        panic!("unexpected OOM event for {id}");
    }
}

#[test]
fn v2_fires_once_per_increase_of_oom_kill() {
    let dir = tempfile::tempdir().unwrap();
    fake_cgroup(dir.path(), 0);
    let (oom, rx) = watcher();
    oom.watch_memory_events("c1", dir.path()).unwrap();
    assert!(oom.is_watching("c1"));

    set_oom_kill(dir.path(), 1);
    assert_eq!(rx.recv_timeout(SOON).unwrap(), "c1");
    assert_quiet(&rx);

    // Other counters change: no OOM.
    fs::write(dir.path().join("memory.events"), "max 12\noom_kill 1\n").unwrap();
    assert_quiet(&rx);

    // Several kills between two looks are one event, as in containerd.
    set_oom_kill(dir.path(), 3);
    assert_eq!(rx.recv_timeout(SOON).unwrap(), "c1");
    assert_quiet(&rx);

    // The cgroup empties: the watch ends by itself.
    fs::write(dir.path().join("cgroup.events"), "populated 0\nfrozen 0\n").unwrap();
    wait_until("the empty cgroup is unwatched", SOON, || {
        !oom.is_watching("c1")
    });
    set_oom_kill(dir.path(), 4);
    assert_quiet(&rx);
    assert!(!oom.unwatch("c1"));
}

#[test]
fn v2_watch_ends_when_the_file_goes() {
    let dir = tempfile::tempdir().unwrap();
    set_oom_kill(dir.path(), 0);
    let (oom, rx) = watcher();
    // No cgroup.events: only memory.events is watched.
    oom.watch_memory_events("c2", dir.path()).unwrap();
    fs::remove_file(dir.path().join("memory.events")).unwrap();
    wait_until("the deleted file is unwatched", SOON, || {
        !oom.is_watching("c2")
    });
    assert_quiet(&rx);
}

#[test]
fn unwatch_stops_events_and_shared_files_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    fake_cgroup(dir.path(), 0);
    let (oom, rx) = watcher();
    oom.watch_memory_events("a", dir.path()).unwrap();
    oom.watch_memory_events("b", dir.path()).unwrap();
    assert!(oom.unwatch("a"));
    assert!(!oom.is_watching("a"));

    set_oom_kill(dir.path(), 1);
    assert_eq!(rx.recv_timeout(SOON).unwrap(), "b");
    assert_quiet(&rx);

    // Watching an id again replaces its watch.
    oom.watch_memory_events("b", dir.path()).unwrap();
    set_oom_kill(dir.path(), 2);
    assert_eq!(rx.recv_timeout(SOON).unwrap(), "b");
    assert_quiet(&rx);
    assert!(oom.unwatch("b"));
    set_oom_kill(dir.path(), 3);
    assert_quiet(&rx);
}

#[test]
fn watch_errors_name_what_failed() {
    let (oom, _rx) = watcher();
    let err = oom
        .watch_memory_events("x", Path::new("/nonexistent/cg"))
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/cg/memory.events"),
        "{err}"
    );
    let err = oom
        .watch_oom_control("x", Path::new("/nonexistent/cg"))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("/nonexistent/cg/memory.oom_control"),
        "{err}"
    );
    assert!(matches!(
        oom.watch("x", -5),
        Err(OomError::Cgroup { pid: -5, .. })
    ));
    assert!(!oom.is_watching("x"));
}

#[test]
fn drop_stops_the_thread() {
    let (oom, rx) = watcher();
    drop(oom);
    // The callback, and with it the sender, went with the thread.
    assert!(rx.recv_timeout(SOON).is_err());
}

/// A shell parked on `read` in a cgroup until released, then eating memory until killed.
struct Hog(Child);

impl Hog {
    fn start() -> Hog {
        let child = Command::new("sh")
            .args(["-c", "read go; exec tail /dev/zero"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Hog(child)
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    fn release(&mut self) {
        let stdin = self.0.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A memory cgroup made by a test, removed on drop.
struct TestCgroup(std::path::PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove_cgroup(&self.0);
    }
}

/// Runs a memory hog in the cgroup `dir` (limited by the caller) and checks that the watcher
/// reports its OOM kill, then ends the watch by itself once the cgroup is removed or empty.
fn hog_is_reported(dir: TestCgroup) {
    let (oom, rx) = watcher();
    let mut hog = Hog::start();
    fs::write(dir.0.join("cgroup.procs"), hog.pid().to_string()).unwrap();
    oom.watch("hog", hog.pid()).unwrap();
    hog.release();

    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), "hog");
    let status = hog.0.wait().unwrap();
    assert!(!status.success(), "the hog was not killed: {status}");
    // Let every signal of this OOM arrive before the cgroup goes.
    while rx.recv_timeout(QUIET).is_ok() {}

    drop(dir);
    wait_until("the removed cgroup is unwatched", SOON, || {
        !oom.is_watching("hog")
    });
    // Removing the cgroup is not an OOM.
    assert_quiet(&rx);
}

#[test]
fn v1_reports_a_real_oom_kill() {
    if !mode().is_v1() {
        return eprintln!(
            "SKIPPED: v1_reports_a_real_oom_kill needs cgroup v1 (host is {:?})",
            mode()
        );
    }
    if !nix::unistd::geteuid().is_root() {
        return eprintln!("SKIPPED: v1_reports_a_real_oom_kill needs root");
    }
    let dir = TestCgroup(Path::new("/sys/fs/cgroup/memory").join(unique_name()));
    fs::create_dir(&dir.0).unwrap();
    let limit = (8u64 << 20).to_string();
    fs::write(dir.0.join("memory.limit_in_bytes"), &limit).unwrap();
    if dir.0.join("memory.memsw.limit_in_bytes").exists() {
        fs::write(dir.0.join("memory.memsw.limit_in_bytes"), &limit).unwrap();
    }
    hog_is_reported(dir);
}

#[test]
fn v2_reports_a_real_oom_kill() {
    if mode() != Mode::Unified {
        return eprintln!(
            "SKIPPED: v2_reports_a_real_oom_kill needs a cgroup v2 host (host is {:?})",
            mode()
        );
    }
    if !nix::unistd::geteuid().is_root() {
        return eprintln!("SKIPPED: v2_reports_a_real_oom_kill needs root");
    }
    let controllers =
        fs::read_to_string("/sys/fs/cgroup/cgroup.subtree_control").unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return eprintln!(
            "SKIPPED: v2_reports_a_real_oom_kill: memory controller not delegated at the root"
        );
    }
    let dir = TestCgroup(Path::new("/sys/fs/cgroup").join(unique_name()));
    fs::create_dir(&dir.0).unwrap();
    fs::write(dir.0.join("memory.max"), (8u64 << 20).to_string()).unwrap();
    if dir.0.join("memory.swap.max").exists() {
        fs::write(dir.0.join("memory.swap.max"), "0").unwrap();
    }
    hog_is_reported(dir);
}
