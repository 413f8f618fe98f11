//! A private containerd: own root, state, opt and sockets in a temp dir; the shim under test
//! first on its PATH. It can be SIGKILLed and restarted on the same dirs, and leaves nothing
//! behind when dropped. [`Containerd::start_cri`] also enables the CRI plugin, with the shim
//! under test as its runc runtime and everything CRI touches kept under the temp dir too.

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cleanup;
use crate::config::{self, ConfigPaths, CriConfig};
use crate::ctr::{kill_and_reap, run_command, wait_deadline, CtrOutput, CTR_TIMEOUT};
use crate::env::{ContainerdBins, ShimUnderTest};
use crate::error::{io_path_err, HarnessError, Result};
use crate::image::PAUSE_IMAGE_REF;

const DIR_PREFIX: &str = "lt-";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Set to 1 to run containerd (and so the shims, via `-debug`) at debug log level.
const DEBUG_ENV: &str = "LIMPET_TEST_DEBUG";

pub struct Containerd {
    bins: ContainerdBins,
    dir: PathBuf,
    config: PathBuf,
    address: PathBuf,
    log: PathBuf,
    path_env: OsString,
    child: Mutex<Option<Child>>,
    /// Namespaces that `ctr` was pointed at, for cleanup even when containerd is down.
    namespaces: Mutex<Vec<String>>,
    cri: Option<CriSetup>,
}

/// The containerd namespace the CRI plugin keeps pods in (fixed by containerd).
pub const CRI_NAMESPACE: &str = "k8s.io";

/// What containerd looks up on its PATH for runtime type `io.containerd.runc.v2`.
const RUNC_SHIM_NAME: &str = "containerd-shim-runc-v2";

/// What a case needs to know about a containerd started with its CRI plugin.
#[derive(Debug, Clone)]
pub struct CriSetup {
    /// runc's `Root` option as configured.
    pub runc_root: PathBuf,
    /// The cgroup parent to give pods: unique to this containerd, so its cgroups are found and
    /// removed by path. It ends in `/k8s.io` so that the generic cleanup of a dead test's dir
    /// (which matches `/<namespace>/<id>` in a process's cgroup) still kills its containers.
    pub cgroup_parent: String,
    /// A dir for pod log dirs.
    pub log_dir: PathBuf,
    pub sandbox_image: &'static str,
    /// False when this containerd drops CRI's `runtime_path` on the floor (1.6.0 to 1.6.20 and
    /// 1.7.0: the client never copied it into the task request; fixed in 1.6.21 and 1.7.1).
    /// The shim under test is then installed as `containerd-shim-runc-v2` on containerd's PATH.
    pub runtime_path_honoured: bool,
}

impl CriSetup {
    /// Where the shim keeps runc state for CRI containers: `<Root>/<namespace>`.
    pub fn runc_state_root(&self) -> PathBuf {
        self.runc_root.join(CRI_NAMESPACE)
    }

    /// The cgroup dirs of a pod container (or sandbox) `id` that still exist.
    pub fn cgroups(&self, id: &str) -> Vec<PathBuf> {
        let relative = self.cgroup_parent.trim_start_matches('/');
        cgroup_hierarchies()
            .into_iter()
            .map(|h| h.join(relative).join(id))
            .filter(|p| p.is_dir())
            .collect()
    }

    /// Removes what CRI pods left once containerd is stopped, by this containerd's own paths
    /// (runc root, bundles, cgroup parent) rather than by the `k8s.io` namespace, which other
    /// CRI users on the host share.
    fn teardown(&self, dir: &Path, address: &Path) {
        cleanup::kill_pids(&cleanup::shim_pids(address, None));
        let runc_root = self.runc_state_root();
        let task_dir = dir.join("state/io.containerd.runtime.v2.task");
        for (namespace, id, bundle) in cleanup::bundles(&task_dir) {
            if namespace != CRI_NAMESPACE {
                continue;
            }
            if runc_root.join(&id).exists() {
                let args: Vec<OsString> = vec![
                    "--root".into(),
                    runc_root.clone().into(),
                    "delete".into(),
                    "--force".into(),
                    id.into(),
                ];
                run_command(Path::new("runc"), &args, Duration::from_secs(20));
            }
            // Never recurse into a rootfs that is still mounted.
            if cleanup::unmount_all_under(&bundle).is_empty() {
                let _ = std::fs::remove_dir_all(&bundle);
            }
        }
        cleanup::remove_namespace_cgroups(self.cgroup_parent.trim_start_matches('/'));
        if let Some(top) = self.cgroup_parent.trim_start_matches('/').split('/').next() {
            for hierarchy in cgroup_hierarchies() {
                let _ = std::fs::remove_dir(hierarchy.join(top));
            }
        }
    }
}

impl Containerd {
    /// Starts a containerd whose PATH resolves `shim.runtime` to `shim.binary`.
    pub fn start(bins: ContainerdBins, shim: &ShimUnderTest) -> Result<Self> {
        Self::start_with(bins, shim, None)
    }

    /// [`Containerd::start`] with the CRI plugin enabled, configured as the README documents:
    /// runtime type `io.containerd.runc.v2`, `runtime_path` = the shim under test; plus
    /// `runc_options` (key, TOML value) in the runtime's options table.
    pub fn start_cri(
        bins: ContainerdBins,
        shim: &ShimUnderTest,
        runc_options: &[(String, String)],
    ) -> Result<Self> {
        let containerd = Self::start_with(bins, shim, Some(runc_options))?;
        containerd.check_cri_plugin()?;
        Ok(containerd)
    }

    /// `cri`: enable the CRI plugin, with these extra runc options.
    fn start_with(
        bins: ContainerdBins,
        shim: &ShimUnderTest,
        cri: Option<&[(String, String)]>,
    ) -> Result<Self> {
        let dir = make_temp_dir()?;
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).map_err(io_path_err("create", &bin))?;
        let link = bin.join(shim.binary_name());
        std::os::unix::fs::symlink(&shim.binary, &link).map_err(io_path_err("symlink", &link))?;

        let mut path_dirs = vec![bin.clone()];
        path_dirs.extend(bins.bin_dir.clone());
        if let Some(host) = std::env::var_os("PATH") {
            path_dirs.extend(std::env::split_paths(&host));
        }
        let path_env = std::env::join_paths(path_dirs)
            .map_err(|e| HarnessError::Setup(format!("PATH for containerd: {e}")))?;

        let address = dir.join("c.sock");
        let config = dir.join("config.toml");
        let debug = std::env::var(DEBUG_ENV).is_ok_and(|v| v == "1");
        let runc_options = cri.unwrap_or_default();
        let cri = match cri {
            Some(_) => Some(prepare_cri(&dir, &bin, &bins, shim)?),
            None => None,
        };
        let cni_dir = dir.join("cni");
        let cri_config = cri.as_ref().map(|setup| CriConfig {
            sandbox_image: setup.sandbox_image,
            runtime_path: &shim.binary,
            runc_root: &setup.runc_root,
            cni_dir: &cni_dir,
            runc_options,
        });
        let text = config::render(
            bins.major,
            &ConfigPaths {
                root: &dir.join("root"),
                state: &dir.join("state"),
                address: &address,
                opt: &dir.join("opt"),
            },
            debug,
            cri_config.as_ref(),
        );
        std::fs::write(&config, text).map_err(io_path_err("write", &config))?;

        let containerd = Containerd {
            bins,
            log: dir.join("containerd.log"),
            dir,
            config,
            address,
            path_env,
            child: Mutex::new(None),
            namespaces: Mutex::new(Vec::new()),
            cri,
        };
        containerd.spawn()?;
        Ok(containerd)
    }

    /// The CRI settings, when started with [`Containerd::start_cri`].
    pub fn cri(&self) -> Option<&CriSetup> {
        self.cri.as_ref()
    }

    /// A build without the CRI plugin skips the case; a plugin that failed to load fails it.
    fn check_cri_plugin(&self) -> Result<()> {
        let out = self.ctr_unnoted("default", &["plugins", "ls"], CTR_TIMEOUT);
        if !out.success() {
            return Err(HarnessError::Setup(format!(
                "ctr plugins ls:\n{}",
                out.describe()
            )));
        }
        let wanted: &[(&str, &str)] = if self.bins.major >= 2 {
            &[
                ("io.containerd.cri.v1", "images"),
                ("io.containerd.cri.v1", "runtime"),
                ("io.containerd.grpc.v1", "cri"),
            ]
        } else {
            &[("io.containerd.grpc.v1", "cri")]
        };
        for (kind, id) in wanted {
            // Columns: TYPE ID PLATFORMS STATUS (PLATFORMS may be empty).
            let row = out.lines().into_iter().find(|line| {
                let mut cols = line.split_whitespace();
                cols.next() == Some(kind) && cols.next() == Some(id)
            });
            match row {
                None => {
                    return Err(HarnessError::Skip(format!(
                        "containerd {} has no {kind}.{id} plugin (built without CRI)",
                        self.bins.version
                    )))
                }
                Some(line) if line.split_whitespace().last() != Some("ok") => {
                    return Err(HarnessError::Setup(format!(
                        "CRI plugin {kind}.{id} did not load: {line}\n{}",
                        self.log_tail(40)
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn spawn(&self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io_path_err("open", &self.log))?;
        let log_err = log.try_clone().map_err(io_path_err("dup", &self.log))?;
        let child = Command::new(&self.bins.containerd)
            .arg("--config")
            .arg(&self.config)
            .current_dir(&self.dir)
            .env("PATH", &self.path_env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Own process group: a Ctrl-C aimed at the test runner is ours to handle.
            .process_group(0)
            .spawn()
            .map_err(io_path_err("spawn", &self.bins.containerd))?;
        *self.lock_child() = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.address.exists() {
                let out = self.ctr_unnoted("default", &["version"], Duration::from_secs(5));
                if out.success() {
                    return Ok(());
                }
            }
            if let Some(child) = self.lock_child().as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(HarnessError::Setup(format!(
                        "containerd exited at startup ({status}):\n{}",
                        self.log_tail(40)
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Setup(format!(
                    "containerd not ready after {READY_TIMEOUT:?}:\n{}",
                    self.log_tail(40)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs containerd (shims live on, as in a crash) and reaps it.
    pub fn kill(&self) {
        if let Some(mut child) = self.lock_child().take() {
            kill_and_reap(&mut child, Duration::from_secs(10));
        }
    }

    /// SIGKILLs containerd if it runs and starts it again on the same root, state and sockets.
    pub fn restart(&self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&self) {
        if let Some(mut child) = self.lock_child().take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            // Kills at the deadline, and never waits unboundedly.
            wait_deadline(&mut child, Duration::from_secs(5));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.lock_child().as_ref().map(Child::id)
    }

    /// Runs `ctr -a SOCK -n NS args...` (no stdin, deadline [`CTR_TIMEOUT`]).
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> CtrOutput {
        self.ctr_in(namespace, args, CTR_TIMEOUT)
    }

    pub fn ctr_in(&self, namespace: &str, args: &[&str], timeout: Duration) -> CtrOutput {
        self.note_namespace(namespace);
        self.ctr_unnoted(namespace, args, timeout)
    }

    /// A ctr call that does not mark `namespace` as ours (its cgroups are not removed).
    fn ctr_unnoted(&self, namespace: &str, args: &[&str], timeout: Duration) -> CtrOutput {
        let mut full: Vec<OsString> = vec![
            "-a".into(),
            self.address.clone().into(),
            "-n".into(),
            namespace.into(),
        ];
        full.extend(args.iter().map(OsString::from));
        let mut out = run_command(&self.bins.ctr, &full, timeout);
        out.stderr = strip_deprecation_notices(&out.stderr);
        out
    }

    /// The argv (after the program) for a `ctr` call, for callers that spawn it themselves.
    pub fn ctr_args<S: AsRef<OsStr>>(&self, namespace: &str, args: &[S]) -> Vec<OsString> {
        self.note_namespace(namespace);
        let mut full: Vec<OsString> = vec![
            "-a".into(),
            self.address.clone().into(),
            "-n".into(),
            namespace.into(),
        ];
        full.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        full
    }

    fn note_namespace(&self, namespace: &str) {
        let mut known = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
        if !known.iter().any(|n| n == namespace) {
            known.push(namespace.to_string());
        }
    }

    pub fn ctr_binary(&self) -> &Path {
        &self.bins.ctr
    }

    pub fn bins(&self) -> &ContainerdBins {
        &self.bins
    }

    pub fn address(&self) -> &Path {
        &self.address
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `<state>/io.containerd.runtime.v2.task`: one bundle dir per task, `<ns>/<id>`.
    pub fn task_dir(&self) -> PathBuf {
        self.state_dir().join("io.containerd.runtime.v2.task")
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of containerd's log (which carries the shims' logs too),
    /// without the plugin-loading chatter of every start.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("loading plugin"))
            .collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deletes every task and container politely through containerd.
    fn delete_everything(&self) {
        let quick = Duration::from_secs(15);
        let namespaces = self
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for ns in &namespaces {
            for task in self.ctr_in(ns, &["tasks", "ls", "-q"], quick).lines() {
                self.ctr_in(ns, &["tasks", "delete", "-f", &task], quick);
            }
            for container in self.ctr_in(ns, &["containers", "ls", "-q"], quick).lines() {
                self.ctr_in(ns, &["containers", "rm", &container], quick);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- containerd log ({}), last lines ---\n{}\n---",
                self.log.display(),
                self.log_tail(60)
            );
        }
        if self.pid().is_some() {
            self.delete_everything();
        }
        self.stop();
        let mut namespaces = self
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(cri) = &self.cri {
            // Cleaned by path above; by name it would reach other CRI users' state.
            cri.teardown(&self.dir, &self.address);
            namespaces.retain(|ns| ns != CRI_NAMESPACE);
        }
        cleanup::teardown_dir(&self.dir, &namespaces);
    }
}

/// Makes the dirs CRI needs and, where containerd ignores `runtime_path`, puts the shim under
/// test on its PATH under the runc shim's name (the README's config alone would run the
/// host's Go shim there; [`CriSetup::runtime_path_honoured`] tells the case).
fn prepare_cri(
    dir: &Path,
    bin: &Path,
    bins: &ContainerdBins,
    shim: &ShimUnderTest,
) -> Result<CriSetup> {
    for sub in ["cni", "pods", "runc"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).map_err(io_path_err("create", &path))?;
    }
    let runtime_path_honoured = !ignores_runtime_path(&bins.version);
    if !runtime_path_honoured {
        let link = bin.join(RUNC_SHIM_NAME);
        // Already there when the shim under test is itself named containerd-shim-runc-v2.
        if !link.exists() {
            std::os::unix::fs::symlink(&shim.binary, &link)
                .map_err(io_path_err("symlink", &link))?;
        }
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("lt-{}", std::process::id()));
    Ok(CriSetup {
        runc_root: dir.join("runc"),
        cgroup_parent: format!("/{name}/{CRI_NAMESPACE}"),
        log_dir: dir.join("pods"),
        sandbox_image: PAUSE_IMAGE_REF,
        runtime_path_honoured,
    })
}

/// The pure v2 mount, or every v1 controller dir plus the hybrid `unified` one.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// Removes the pod cgroup parents (`/<temp dir name>/k8s.io`, see [`CriSetup`]) of test
/// processes that died before their cleanup ran; the generic sweep only kills their processes.
fn sweep_stale_cri_cgroups() {
    for hierarchy in cgroup_hierarchies() {
        let Ok(entries) = std::fs::read_dir(&hierarchy) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if cleanup::owner_pid(&name, DIR_PREFIX).is_some_and(|pid| !crate::proc::pid_alive(pid))
            {
                cleanup::remove_namespace_cgroups(&format!("{name}/{CRI_NAMESPACE}"));
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}

/// containerd 1.6.0-1.6.20 and 1.7.0 accept `runtime_path` but never pass it on
/// (containerd commit 97064b07, "WithRuntimePath uses the TaskInfo.RuntimePath field").
fn ignores_runtime_path(version: &str) -> bool {
    let mut parts = version.split('.').map(|part| {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let (major, minor, patch) = (
        parts.next().flatten(),
        parts.next().flatten(),
        parts.next().flatten(),
    );
    match (major, minor, patch) {
        (Some(1), Some(minor), _) if minor < 6 => true,
        (Some(1), Some(6), Some(patch)) => patch < 21,
        (Some(1), Some(7), Some(patch)) => patch < 1,
        _ => false,
    }
}

/// ctr 2.x warns on every call on a cgroup v1 host; that line is noise to every assertion.
fn strip_deprecation_notices(stderr: &str) -> String {
    stderr
        .split_inclusive('\n')
        .filter(|line| !(line.contains("level=warning") && line.contains("DEPRECATION")))
        .collect()
}

/// A short private dir under /tmp (unix socket paths must stay under 108 bytes), named
/// `lt-<pid>-<n>` so that a later run can tell when its owner died without cleaning up.
fn make_temp_dir() -> Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let base = std::env::temp_dir();
    SWEPT.call_once(|| {
        cleanup::sweep_stale_dirs(&base, DIR_PREFIX);
        sweep_stale_cri_cgroups();
    });
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("{DIR_PREFIX}{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_path_err("create", &dir)(e)),
        }
    }
    Err(HarnessError::Setup("no free temp dir name".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_which_versions_ignore_runtime_path() {
        for old in ["1.6.20~ds1", "1.6.0", "1.7.0", "1.7.0-rc.1", "1.5.13"] {
            assert!(ignores_runtime_path(old), "{old}");
        }
        for fixed in [
            "1.6.21", "1.6.39", "1.7.1", "1.7.27", "2.0.0", "2.3.4", "garbage",
        ] {
            assert!(!ignores_runtime_path(fixed), "{fixed}");
        }
    }
}
