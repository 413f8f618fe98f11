//! Tests against the host's real cgroup hierarchies. Those that need root, or a hierarchy
//! this host does not run, say so on stderr and pass.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{SystemTime, UNIX_EPOCH};

use limpet_protos::cgroups::metrics::Metrics as V1Metrics;
use limpet_protos::cgroups_v2::metrics::Metrics as V2Metrics;
use limpet_protos::protobuf::Message;

use super::{add_process, mode, v2, Cgroup, Mode};

fn skip(reason: &str) {
    eprintln!("SKIPPED: {reason}");
}

fn own_pid() -> i32 {
    std::process::id() as i32
}

/// A cgroup name no other test run uses.
pub(crate) fn unique_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("limpet-test-{}-{nanos}", std::process::id())
}

/// The `0::` path of this process.
fn own_unified_path() -> String {
    let text = fs::read_to_string("/proc/self/cgroup").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap()
        .trim_start_matches('/')
        .to_string()
}

#[test]
fn metrics_of_this_process() {
    let any = Cgroup::for_pid(own_pid()).unwrap().metrics().unwrap();
    if mode().is_v1() {
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = V1Metrics::parse_from_bytes(&any.value).unwrap();
        assert!(m.cpu.usage.total > 0, "cpu usage: {:?}", m.cpu);
        assert!(!m.cpu.usage.per_cpu.is_empty());
        assert!(m.memory.usage.usage > 0, "memory: {:?}", m.memory);
        assert!(m.memory.usage.limit > 0);
        assert!(m.memory.total_rss + m.memory.total_cache > 0);
        assert!(m.memory_oom_control.is_some());
        assert!(m.blkio.is_some());
    } else {
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = V2Metrics::parse_from_bytes(&any.value).unwrap();
        assert!(m.cpu.usage_usec > 0, "cpu: {:?}", m.cpu);
        assert!(m.memory.usage > 0, "memory: {:?}", m.memory);
        assert!(m.pids.current > 0);
    }
}

#[test]
fn v2_metrics_of_the_hybrid_unified_hierarchy() {
    if mode() != Mode::Hybrid {
        return skip("not a hybrid host; the unified case is covered by metrics_of_this_process");
    }
    let dir = Path::new("/sys/fs/cgroup/unified").join(own_unified_path());
    let m = v2::Cgroup::at(dir).metrics().unwrap();
    // cpu.stat exists in every v2 cgroup, with or without the cpu controller.
    assert!(m.cpu.usage_usec > 0, "cpu: {:?}", m.cpu);
}

/// Removes a test cgroup, retrying while the kernel still counts a just-reaped process.
pub(crate) fn remove_cgroup(dir: &Path) {
    for _ in 0..50 {
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eprintln!("could not remove test cgroup {}", dir.display());
}

/// A child process parked in `sleep`, killed and reaped on drop.
struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Cgroup directories made by a test, removed on drop.
struct Dirs(Vec<PathBuf>);

impl Drop for Dirs {
    fn drop(&mut self) {
        for dir in &self.0 {
            remove_cgroup(dir);
        }
    }
}

#[test]
fn add_process_moves_a_real_process() {
    if !nix::unistd::geteuid().is_root() {
        return skip("add_process_moves_a_real_process needs root");
    }
    let name = unique_name();
    let mounts: Vec<PathBuf> = if mode().is_v1() {
        ["memory", "pids"]
            .iter()
            .map(|c| Path::new("/sys/fs/cgroup").join(c))
            .filter(|m| m.is_dir())
            .collect()
    } else {
        vec![PathBuf::from("/sys/fs/cgroup")]
    };
    let dirs = Dirs(mounts.iter().map(|m| m.join(&name)).collect());
    for dir in &dirs.0 {
        fs::create_dir(dir).unwrap();
    }
    let child = Sleeper(Command::new("sleep").arg("30").spawn().unwrap());
    let pid = child.0.id() as i32;

    add_process(&format!("/{name}"), pid).unwrap();

    let procs = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let in_cgroup = procs.lines().filter(|l| l.ends_with(&format!(":/{name}")));
    assert_eq!(in_cgroup.count(), dirs.0.len(), "{procs}");
    for dir in &dirs.0 {
        let members = fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert_eq!(members.trim(), pid.to_string());
    }
    drop(child);
}
