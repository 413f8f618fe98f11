//! A private containerd: own root, state, opt and sockets in a temp dir; the shim under test
//! first on its PATH. It can be SIGKILLed and restarted on the same dirs, and leaves nothing
//! behind when dropped.

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
use crate::config::{self, ConfigPaths};
use crate::ctr::{kill_and_reap, run_command, wait_deadline, CtrOutput, CTR_TIMEOUT};
use crate::env::{ContainerdBins, ShimUnderTest};
use crate::error::{io_path_err, HarnessError, Result};

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
}

impl Containerd {
    /// Starts a containerd whose PATH resolves `shim.runtime` to `shim.binary`.
    pub fn start(bins: ContainerdBins, shim: &ShimUnderTest) -> Result<Self> {
        let dir = make_temp_dir()?;
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).map_err(io_path_err("create", &bin))?;
        let link = bin.join(shim.binary_name());
        std::os::unix::fs::symlink(&shim.binary, &link).map_err(io_path_err("symlink", &link))?;

        let mut path_dirs = vec![bin];
        path_dirs.extend(bins.bin_dir.clone());
        if let Some(host) = std::env::var_os("PATH") {
            path_dirs.extend(std::env::split_paths(&host));
        }
        let path_env = std::env::join_paths(path_dirs)
            .map_err(|e| HarnessError::Setup(format!("PATH for containerd: {e}")))?;

        let address = dir.join("c.sock");
        let config = dir.join("config.toml");
        let debug = std::env::var(DEBUG_ENV).is_ok_and(|v| v == "1");
        let text = config::render(
            bins.major,
            &ConfigPaths {
                root: &dir.join("root"),
                state: &dir.join("state"),
                address: &address,
                opt: &dir.join("opt"),
            },
            debug,
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
        };
        containerd.spawn()?;
        Ok(containerd)
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
        let namespaces = self
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        cleanup::teardown_dir(&self.dir, &namespaces);
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
    SWEPT.call_once(|| cleanup::sweep_stale_dirs(&base, DIR_PREFIX));
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
