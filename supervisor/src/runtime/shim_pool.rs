//! The shims of every pod: how each handler's shim is started (the `start` protocol
//! containerd uses), one connection per shim address, and the task calls the runtime makes,
//! each run off the async threads. NotFound answers are folded into "already gone" where the
//! CRI wants idempotence.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use limpet_protos::protobuf::well_known_types::any::Any;
use limpet_protos::protobuf::Message;
use limpet_protos::runc_options::Options as RuncOptions;
use limpet_protos::type_urls;

use super::error::{shim_err, Result, RuntimeError};
use super::events::nanos;
use super::stats::Sample;
use super::{blocking, Dirs};
use crate::config::Config;
use crate::config_runtime::Handler;
use crate::shims::{CreateTask, ShimClient, ShimLauncher, Stdio, TaskStatus};

/// How long connecting to a shim may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The namespace limpetd's shims run in (part of each shim's socket name and runc root).
pub const NAMESPACE: &str = "k8s.io";

/// The stdio of a task or exec.
#[derive(Debug, Clone, Default)]
pub struct TaskStdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// What a shim says of a task on re-attach.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Created {
        pid: u32,
    },
    Running {
        pid: u32,
    },
    Stopped {
        exit_status: u32,
        exited_at: i64,
    },
    /// The shim answers but knows no such task.
    NoTask,
    /// The shim is gone (nothing accepts on its socket, or none was recorded), and why.
    NoShim(String),
    /// The shim is there but did not answer properly (a timeout, say), and why.
    Unreachable(String),
}

struct HandlerShim {
    launcher: ShimLauncher,
    handler: Handler,
    root: PathBuf,
}

pub struct ShimPool {
    handlers: HashMap<String, HandlerShim>,
    pause: PathBuf,
    grpc_address: PathBuf,
}

impl From<TaskStdio> for Stdio {
    fn from(s: TaskStdio) -> Stdio {
        Stdio {
            stdin: s.stdin,
            stdout: s.stdout,
            stderr: s.stderr,
            terminal: s.terminal,
        }
    }
}

fn time(t: Option<std::time::SystemTime>) -> i64 {
    t.map(nanos).unwrap_or(0)
}

/// A shim given by name is looked up beside limpetd first, then in PATH.
fn find_binary(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)));
    let path = std::env::var_os("PATH").unwrap_or_default();
    beside
        .into_iter()
        .chain(std::env::split_paths(&path).map(|d| d.join(name)))
        .find(|p| p.is_file())
}

impl ShimPool {
    pub fn new(config: &Config, dirs: &Dirs) -> Result<ShimPool> {
        let mut handlers = HashMap::new();
        for (name, h) in &config.runtime.runtimes {
            let Some(binary) = find_binary(&h.shim) else {
                tracing::warn!(
                    handler = name,
                    shim = h.shim,
                    "shim not found; the handler cannot run pods"
                );
                continue;
            };
            let root = if h.root.is_empty() {
                config.state.join("runtime").join(name)
            } else {
                PathBuf::from(&h.root)
            };
            handlers.insert(
                name.clone(),
                HandlerShim {
                    launcher: ShimLauncher {
                        debug: config.debug.level == "debug" || config.debug.level == "trace",
                        ..ShimLauncher::new(
                            binary,
                            NAMESPACE,
                            &config.grpc.address,
                            &dirs.events_socket,
                        )
                    },
                    handler: h.clone(),
                    root,
                },
            );
        }
        let default = &config.runtime.default_runtime;
        let pause = handlers
            .get(default)
            .map(|h| h.launcher.binary.clone())
            .or_else(|| find_binary("containerd-shim-limpet-v2"))
            .unwrap_or_else(|| PathBuf::from("/usr/local/bin/containerd-shim-limpet-v2"));
        Ok(ShimPool {
            handlers,
            pause,
            grpc_address: config.grpc.address.clone(),
        })
    }

    /// The binary whose `pause` mode is the built-in sandbox process.
    pub fn pause_binary(&self) -> &Path {
        &self.pause
    }

    fn handler(&self, name: &str) -> Result<&HandlerShim> {
        self.handlers.get(name).ok_or_else(|| {
            RuntimeError::FailedPrecondition(format!(
                "runtime handler {name:?}: its shim binary is not installed"
            ))
        })
    }

    fn runc_options(&self, h: &HandlerShim, systemd: bool) -> Any {
        let o = RuncOptions {
            binary_name: h.handler.binary_name.clone(),
            root: h.root.to_string_lossy().into_owned(),
            no_pivot_root: h.handler.no_pivot_root,
            systemd_cgroup: systemd,
            ..Default::default()
        };
        Any {
            type_url: type_urls::RUNC_OPTIONS.into(),
            value: o.write_to_bytes().unwrap_or_default(),
            ..Default::default()
        }
    }

    /// Connects to the shim and runs `f` off the async threads. A connection per call: an
    /// idle ttrpc connection holds two threads, which with hundreds of pods would cost more
    /// than connecting (tens of microseconds).
    async fn with_client<T: Send + 'static>(
        &self,
        address: &str,
        f: impl FnOnce(&ShimClient) -> std::result::Result<T, crate::shims::ShimError> + Send + 'static,
        what: String,
    ) -> Result<T> {
        if address.is_empty() {
            return Err(RuntimeError::FailedPrecondition(
                "no shim for this task".into(),
            ));
        }
        let address = address.to_string();
        blocking(move || {
            let client = ShimClient::connect(&address, CONNECT_TIMEOUT)?.with_namespace(NAMESPACE);
            f(&client)
        })
        .await?
        .map_err(shim_err(what))
    }

    pub async fn start_shim(&self, handler: &str, id: &str, bundle: &Path) -> Result<String> {
        let launcher = self.handler(handler)?.launcher.clone();
        let (id2, bundle) = (id.to_string(), bundle.to_path_buf());
        blocking(move || launcher.start(&id2, &bundle))
            .await?
            .map_err(shim_err(format!("starting the shim for {id}")))
    }

    pub async fn create_task(
        &self,
        handler: &str,
        address: &str,
        id: &str,
        bundle: &Path,
        stdio: TaskStdio,
        systemd: bool,
    ) -> Result<u32> {
        let options = self.runc_options(self.handler(handler)?, systemd);
        let req = CreateTask {
            id: id.to_string(),
            bundle: bundle.to_string_lossy().into_owned(),
            stdio: stdio.into(),
            rootfs: Vec::new(),
            options: Some(options),
        };
        self.with_client(
            address,
            move |c| c.create(&req),
            format!("create task {id}"),
        )
        .await
    }

    pub async fn start_task(&self, address: &str, id: &str, exec_id: &str) -> Result<u32> {
        let (i, e) = (id.to_string(), exec_id.to_string());
        self.with_client(
            address,
            move |c| c.start(&i, &e),
            format!("start {id} {exec_id}"),
        )
        .await
    }

    /// Signals a task; a task already gone is not an error.
    pub async fn kill(
        &self,
        address: &str,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<()> {
        let (i, e) = (id.to_string(), exec_id.to_string());
        let r = self
            .with_client(
                address,
                move |c| c.kill(&i, &e, signal, all),
                format!("kill {id}"),
            )
            .await;
        match r {
            Err(RuntimeError::Shim { source, .. }) if source.is_not_found() => Ok(()),
            r => r,
        }
    }

    /// Waits for a task's exit: (exit status, unix nanos).
    pub async fn wait(&self, address: &str, id: &str, exec_id: &str) -> Result<(u32, i64)> {
        let (i, e) = (id.to_string(), exec_id.to_string());
        let exited = self
            .with_client(
                address,
                move |c| c.wait(&i, &e),
                format!("wait for {id} {exec_id}"),
            )
            .await?;
        Ok((exited.exit_status, time(exited.exited_at)))
    }

    /// SIGKILLs a task (and everything in its cgroup) and waits for its exit.
    pub async fn kill_and_wait(
        &self,
        address: &str,
        id: &str,
        exec_id: &str,
        signal: u32,
    ) -> Result<(u32, i64)> {
        self.kill(address, id, exec_id, signal, exec_id.is_empty())
            .await?;
        match self.wait(address, id, exec_id).await {
            Err(RuntimeError::Shim { source, .. }) if source.is_not_found() || source.is_gone() => {
                Ok((137, crate::store::now()))
            }
            r => r,
        }
    }

    pub async fn exec(
        &self,
        address: &str,
        id: &str,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
        stdio: TaskStdio,
    ) -> Result<()> {
        let (i, e, p) = (id.to_string(), exec_id.to_string(), process.clone());
        self.with_client(
            address,
            move |c| c.exec(&i, &e, &p, &stdio.into()),
            format!("exec in {id}"),
        )
        .await
    }

    /// The process sees the end of its stdin once what is already written has been read.
    pub async fn close_io(&self, address: &str, id: &str, exec_id: &str) -> Result<()> {
        let (i, e) = (id.to_string(), exec_id.to_string());
        self.with_client(
            address,
            move |c| c.close_io(&i, &e),
            format!("close stdin of {id}"),
        )
        .await
    }

    pub async fn resize_pty(
        &self,
        address: &str,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<()> {
        let (i, e) = (id.to_string(), exec_id.to_string());
        self.with_client(
            address,
            move |c| c.resize_pty(&i, &e, width, height),
            format!("resize the terminal of {id}"),
        )
        .await
    }

    pub async fn delete_exec(&self, address: &str, id: &str, exec_id: &str) -> Result<()> {
        let (i, e) = (id.to_string(), exec_id.to_string());
        let r = self
            .with_client(
                address,
                move |c| c.delete(&i, &e).map(|_| ()),
                format!("delete exec {exec_id}"),
            )
            .await;
        match r {
            Err(RuntimeError::Shim { source, .. }) if source.is_not_found() => Ok(()),
            r => r,
        }
    }

    /// Deletes a task whatever state it is in: killed first if it runs; through the shim's
    /// `delete` action when the shim is gone. Nothing there is fine.
    pub async fn destroy_task(
        &self,
        handler: &str,
        address: &str,
        id: &str,
        bundle: &Path,
    ) -> Result<()> {
        if !address.is_empty() {
            match self.probe(address, id).await {
                Probe::NoTask | Probe::NoShim(_) | Probe::Unreachable(_) => {}
                Probe::Running { .. } | Probe::Created { .. } => {
                    self.kill_and_wait(address, id, "", libc::SIGKILL as u32)
                        .await?;
                    self.delete_exec(address, id, "").await?;
                    return Ok(());
                }
                Probe::Stopped { .. } => {
                    self.delete_exec(address, id, "").await?;
                    return Ok(());
                }
            }
        }
        if bundle.join("config.json").exists() && !handler.is_empty() {
            let _ = self.delete_action(handler, id, bundle).await;
        }
        Ok(())
    }

    /// The shim binary's `delete` action, for a task whose shim is gone.
    pub async fn delete_action(
        &self,
        handler: &str,
        id: &str,
        bundle: &Path,
    ) -> Result<(u32, i64)> {
        let launcher = self.handler(handler)?.launcher.clone();
        let (i, b) = (id.to_string(), bundle.to_path_buf());
        let out = blocking(move || launcher.delete(&i, &b))
            .await?
            .map_err(shim_err(format!("shim delete of {id}")))?;
        Ok((out.exit_status, time(out.exited_at)))
    }

    pub async fn probe(&self, address: &str, id: &str) -> Probe {
        let i = id.to_string();
        match self
            .with_client(address, move |c| c.state(&i, ""), format!("state of {id}"))
            .await
        {
            Ok(s) => match s.status {
                TaskStatus::Created => Probe::Created { pid: s.pid },
                TaskStatus::Running | TaskStatus::Paused | TaskStatus::Pausing => {
                    Probe::Running { pid: s.pid }
                }
                TaskStatus::Stopped => Probe::Stopped {
                    exit_status: s.exit_status,
                    exited_at: time(s.exited_at),
                },
                TaskStatus::Unknown => Probe::Unreachable("task state unknown".into()),
            },
            Err(RuntimeError::Shim { source, .. }) if source.is_not_found() => Probe::NoTask,
            Err(RuntimeError::Shim { source, .. }) if source.is_shim_dead() => {
                Probe::NoShim(source.to_string())
            }
            Err(e @ RuntimeError::FailedPrecondition(_)) => Probe::NoShim(e.to_string()),
            Err(e) => Probe::Unreachable(e.to_string()),
        }
    }

    pub async fn stats(&self, address: &str, id: &str) -> Result<Sample> {
        let i = id.to_string();
        let any = self
            .with_client(address, move |c| c.stats_raw(&i), format!("stats of {id}"))
            .await?;
        super::stats::decode(&any.type_url, &any.value)
    }

    pub async fn update(
        &self,
        address: &str,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<()> {
        let (i, r) = (id.to_string(), resources.clone());
        self.with_client(
            address,
            move |c| c.update(&i, &r, &HashMap::new()),
            format!("update {id}"),
        )
        .await
    }

    pub async fn reopen_log(&self, address: &str, id: &str) -> Result<()> {
        let i = id.to_string();
        self.with_client(
            address,
            move |c| c.reopen_log(&i),
            format!("reopen the log of {id}"),
        )
        .await
    }

    /// Asks a shim to exit; it does once it runs no task. A gone shim is fine.
    pub async fn shutdown(&self, address: &str, id: &str) {
        let i = id.to_string();
        let _ = self
            .with_client(
                address,
                move |c| c.shutdown(&i, false),
                format!("shutdown {address}"),
            )
            .await;
    }

    /// Kills shim processes started for this limpetd (`-address` is its socket) whose `-id`
    /// no record knows. Returns how many.
    pub fn kill_unknown_shims(&self, known: &dyn Fn(&str) -> bool) -> usize {
        let ours = self.grpc_address.to_string_lossy().into_owned();
        let mut killed = 0;
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return 0;
        };
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let flag = |name: &str| {
                args.iter()
                    .position(|a| a == name)
                    .and_then(|i| args.get(i + 1))
                    .cloned()
            };
            // By file name: the `start` action spawns the serving shim by its own resolved
            // path, which need not be the (symlinked) path limpetd ran.
            let is_shim = args
                .first()
                .and_then(|a| Path::new(a).file_name())
                .is_some_and(|n| {
                    self.handlers
                        .values()
                        .any(|h| h.launcher.binary.file_name() == Some(n))
                });
            if !is_shim || flag("-address").as_deref() != Some(ours.as_str()) {
                continue;
            }
            if args.iter().any(|a| a == "start" || a == "delete") {
                continue;
            }
            if let Some(id) = flag("-id") {
                if !known(&id) {
                    tracing::info!(pid, id, "killing a shim no record knows");
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    killed += 1;
                }
            }
        }
        killed
    }
}
