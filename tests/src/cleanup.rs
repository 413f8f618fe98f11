//! Removal of whatever a case leaves behind when the polite path (`ctr tasks delete -f`)
//! was not enough: shim processes, container processes, runc state, mounts, cgroups.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::ctr::run_command;
use crate::proc::{all_pids, flag_value, pid_alive, read_cmdline, read_pid_file};

/// Where the Go shim (and so a drop-in) keeps runc state: `<root>/<namespace>/<id>`.
pub const RUNC_ROOT: &str = "/run/containerd/runc";

/// Removes everything a private containerd in `dir` may have left once containerd itself
/// is stopped: its shims, container processes and runc state, mounts, the cgroups of
/// `namespaces` (plus those found in its state dir), and finally the dir.
pub fn teardown_dir(dir: &Path, namespaces: &[String]) {
    let address = dir.join("c.sock");
    kill_pids(&shim_pids(&address, None));
    // Anything else still running from this dir (a containerd whose owner died).
    let owned: Vec<i32> = all_pids()
        .into_iter()
        .filter(|pid| {
            read_cmdline(*pid)
                .is_some_and(|argv| argv.iter().any(|a| Path::new(a).starts_with(dir)))
        })
        .collect();
    kill_pids(&owned);
    let task_dir = dir.join("state/io.containerd.runtime.v2.task");
    let mut namespaces = namespaces.to_vec();
    namespaces.extend(bundles(&task_dir).into_iter().map(|(ns, _, _)| ns));
    namespaces.sort();
    namespaces.dedup();
    kill_bundles(&task_dir);
    let leftover = unmount_all_under(dir);
    // `k8s.io` is shared by every CRI runtime on the host: CRI cases keep their runc root and
    // cgroups under private paths, which their own teardown removes.
    for ns in namespaces.iter().filter(|ns| ns.as_str() != "k8s.io") {
        remove_runc_root(ns);
        remove_namespace_cgroups(ns);
    }
    if leftover.is_empty() {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        eprintln!(
            "WARNING: {} kept: still mounted: {leftover:?}",
            dir.display()
        );
    }
}

/// The test process that owns a `<prefix><pid>-<n>` name.
pub fn owner_pid(name: &str, prefix: &str) -> Option<i32> {
    name.strip_prefix(prefix)?.split('-').next()?.parse().ok()
}

/// Tears down `<base>/<prefix><pid>-<n>` dirs whose owning test process is gone (killed
/// before its cleanup ran).
pub fn sweep_stale_dirs(base: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = owner_pid(&name, prefix) {
            if !pid_alive(pid) && entry.path().join("config.toml").is_file() {
                eprintln!(
                    "cleaning up after a dead test process: {}",
                    entry.path().display()
                );
                teardown_dir(&entry.path(), &[]);
            }
        }
    }
}

/// Mount points at or below `dir`, deepest first, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|mount_point| mount_point.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts everything under `dir`; returns what is still mounted afterwards.
pub fn unmount_all_under(dir: &Path) -> Vec<PathBuf> {
    for _ in 0..3 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            break;
        }
        for mount_point in mounts {
            let _ = umount2(&mount_point, MntFlags::MNT_DETACH);
        }
    }
    mounts_under(dir)
}

/// Shim processes serving the containerd at `address` (and, if given, one namespace):
/// containerd starts every shim with `-namespace NS -id ID -address ADDR`.
pub fn shim_pids(address: &Path, namespace: Option<&str>) -> Vec<i32> {
    let address = address.to_string_lossy();
    all_pids()
        .into_iter()
        .filter(|pid| {
            read_cmdline(*pid).is_some_and(|argv| {
                flag_value(&argv, "-address") == Some(address.as_ref())
                    && namespace.is_none_or(|ns| flag_value(&argv, "-namespace") == Some(ns))
            })
        })
        .collect()
}

pub fn kill_pids(pids: &[i32]) {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    wait_gone(pids, Duration::from_secs(3));
}

/// Waits until none of `pids` is alive (children of others: we cannot reap them).
pub fn wait_gone(pids: &[i32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pids.iter().all(|pid| !pid_alive(*pid)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the init process of every bundle under `task_dir` (`<state>/io.containerd.runtime.v2.task`)
/// and removes its runc state. A pid is only killed while its cgroup still names the container,
/// so a recycled pid is left alone.
pub fn kill_bundles(task_dir: &Path) {
    for (namespace, id, bundle) in bundles(task_dir) {
        if let Some(pid) = read_pid_file(&bundle.join("init.pid")) {
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            if cgroup.contains(&format!("/{namespace}/{id}")) {
                kill_pids(&[pid]);
            }
        }
        runc_delete(&namespace, &id);
        if let Some(address) = bundle_shim_address(&bundle) {
            if let Some(socket) = address.strip_prefix("unix://") {
                let _ = std::fs::remove_file(socket);
            }
        }
    }
}

/// The ttrpc address of a bundle's shim: the `address` file (containerd 1.x) or the
/// `address` field of `bootstrap.json` (2.x).
pub fn bundle_shim_address(bundle: &Path) -> Option<String> {
    if let Ok(address) = std::fs::read_to_string(bundle.join("address")) {
        return Some(address.trim().to_string());
    }
    let bootstrap = std::fs::read_to_string(bundle.join("bootstrap.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&bootstrap).ok()?;
    json.get("address")?.as_str().map(str::to_string)
}

/// `(namespace, id, bundle dir)` for every bundle under the task dir.
pub fn bundles(task_dir: &Path) -> Vec<(String, String, PathBuf)> {
    let mut found = Vec::new();
    for ns in subdirs(task_dir) {
        for bundle in subdirs(&ns) {
            if let (Some(n), Some(i)) = (file_name(&ns), file_name(&bundle)) {
                found.push((n, i, bundle));
            }
        }
    }
    found
}

fn runc_delete(namespace: &str, id: &str) {
    let root = Path::new(RUNC_ROOT).join(namespace);
    if root.join(id).exists() {
        let args: Vec<OsString> = vec![
            "--root".into(),
            root.into_os_string(),
            "delete".into(),
            "--force".into(),
            id.into(),
        ];
        run_command(Path::new("runc"), &args, Duration::from_secs(20));
    }
}

/// Force-deletes whatever runc still knows in a namespace's root, then removes the root.
pub fn remove_runc_root(namespace: &str) {
    let root = Path::new(RUNC_ROOT).join(namespace);
    for state in subdirs(&root) {
        if let Some(id) = file_name(&state) {
            runc_delete(namespace, &id);
        }
    }
    let _ = std::fs::remove_dir(root);
}

/// Removes `<hierarchy>/<namespace>/*` and `<hierarchy>/<namespace>` in every cgroup
/// hierarchy: containerd's default cgroups path is `/<namespace>/<id>`. Processes still in
/// those cgroups are orphans of this namespace (its name is unique to one test) and are
/// killed first; then only rmdir is used.
pub fn remove_namespace_cgroups(namespace: &str) {
    let ns_dirs: Vec<PathBuf> = cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(namespace))
        .filter(|d| d.is_dir())
        .collect();
    let mut orphans: Vec<i32> = Vec::new();
    for ns_dir in &ns_dirs {
        for cgroup in std::iter::once(ns_dir.clone()).chain(subdirs(ns_dir)) {
            let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
            orphans.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    orphans.sort();
    orphans.dedup();
    kill_pids(&orphans);
    // A cgroup is removable only once its last process is fully gone: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for ns_dir in &ns_dirs {
            for child in subdirs(ns_dir) {
                let _ = std::fs::remove_dir(child);
            }
            let _ = std::fs::remove_dir(ns_dir);
        }
        if ns_dirs.iter().all(|d| !d.exists()) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// Container cgroup dirs `<hierarchy>/<namespace>/<id>` that exist, in any hierarchy.
pub fn container_cgroups(namespace: &str, id: &str) -> Vec<PathBuf> {
    cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(namespace).join(id))
        .filter(|p| p.is_dir())
        .collect()
}

/// The pure v2 mount, or every v1 controller dir plus the hybrid `unified` one.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_path_buf()];
    }
    subdirs(base)
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

fn file_name(path: &Path) -> Option<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_fields() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/x\\134y"), "/x\\y");
    }

    #[test]
    fn finds_root_mount() {
        assert!(mounts_under(Path::new("/")).contains(&PathBuf::from("/")));
    }
}
