//! The shim's containers and their processes, and every task operation on them. Plain Rust:
//! the ttrpc glue in `service.rs` only converts to and from the wire.
//!
//! One lock guards the table. It is held while runc creates or starts a process and until
//! the new pid is recorded, so the exit of a process that dies at once is always matched to
//! it: exits are applied by a thread of their own that takes the same lock.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use limpet_protos::api::{self, ProcessInfo};
use limpet_protos::events::task as ev;
use limpet_protos::protobuf::well_known_types::any::Any;
use limpet_protos::runc_options::{CheckpointOptions, ProcessDetails};
use limpet_protos::{protobuf::Message, topics};

use crate::error::{validate_id, Context, Error, Result};
use crate::events::{timestamp, to_any, Publisher};
use crate::mount::{self, Mount};
use crate::oom::OomWatcher;
use crate::options::{is_type, RuncOptions};
use crate::reaper::Exit;
use crate::runc::{read_pid_file, CheckpointOpts, CreateOpts, ProcessStdio, Runc};
use crate::state::{Status, Transition};
use crate::stdio::{Prepared, ProcessIo, StdioPaths};

/// How long Delete waits for a process's output to drain after it exited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Process {
    pub pid: i32,
    pub status: Status,
    pub exit: Option<(u32, SystemTime)>,
    pub stdio: StdioPaths,
    io: Option<ProcessIo>,
    /// An exec's OCI process (JSON), kept until it starts.
    spec: Vec<u8>,
}

impl Process {
    fn new(stdio: StdioPaths, spec: Vec<u8>) -> Process {
        Process {
            pid: 0,
            status: Status::Created,
            exit: None,
            stdio,
            io: None,
            spec,
        }
    }

    fn transition(&mut self, t: Transition) -> Result<()> {
        self.status = self.status.apply(t)?;
        Ok(())
    }

    fn exit_status(&self) -> (u32, Option<SystemTime>) {
        match self.exit {
            Some((status, at)) => (status, Some(at)),
            None => (0, None),
        }
    }
}

pub struct Container {
    pub bundle: PathBuf,
    runc: Runc,
    pub init: Process,
    pub execs: BTreeMap<String, Process>,
    rootfs_mounted: bool,
    /// Loaded at Create, so that Stats still answers after the init has exited.
    cgroup: Option<crate::cgroups::Cgroup>,
    /// Without a pid namespace of its own, the container's processes do not die with its
    /// init: the shim kills them.
    kill_all_on_exit: bool,
}

impl Container {
    fn process(&self, exec_id: &str) -> Result<&Process> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .ok_or_else(|| Error::NotFound(format!("process {exec_id}")))
    }

    fn process_mut(&mut self, exec_id: &str) -> Result<&mut Process> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| Error::NotFound(format!("process {exec_id}")))
    }
}

#[derive(Default)]
pub struct Tasks {
    containers: HashMap<String, Container>,
    /// Live pids → (container id, exec id); the exec id is empty for an init.
    pids: HashMap<i32, (String, String)>,
}

impl Tasks {
    fn container(&self, id: &str) -> Result<&Container> {
        self.containers
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("container {id}")))
    }

    fn container_mut(&mut self, id: &str) -> Result<&mut Container> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(format!("container {id}")))
    }
}

/// What a Delete or Wait reports about an exited process.
#[derive(Debug, Clone, Copy)]
pub struct Exited {
    pub pid: u32,
    pub status: u32,
    pub at: Option<SystemTime>,
}

pub struct Shim {
    tasks: Mutex<Tasks>,
    exited: Condvar,
    publisher: Arc<Publisher>,
    oom: Option<OomWatcher>,
    namespace: String,
}

impl Shim {
    pub fn new(namespace: &str, publisher: Arc<Publisher>, oom: Option<OomWatcher>) -> Shim {
        Shim {
            tasks: Mutex::default(),
            exited: Condvar::new(),
            publisher,
            oom,
            namespace: namespace.into(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_empty(&self) -> bool {
        self.lock().containers.is_empty()
    }

    pub fn create(&self, req: &api::CreateTaskRequest) -> Result<u32> {
        validate_id("container id", &req.id)?;
        let bundle = PathBuf::from(&req.bundle);
        if !bundle.is_absolute() || !bundle.join("config.json").is_file() {
            return Err(Error::InvalidArgument(format!(
                "bundle {:?} has no config.json",
                req.bundle
            )));
        }
        let mut tasks = self.lock();
        if tasks.containers.contains_key(&req.id) {
            return Err(Error::AlreadyExists(format!("container {}", req.id)));
        }
        let opts = RuncOptions::from_any(req.options.as_ref())?;
        opts.save(&bundle)?;
        let runc = Runc::new(&opts, &self.namespace, &bundle);
        let rootfs = bundle.join("rootfs");
        let mounts: Vec<Mount> = req
            .rootfs
            .iter()
            .map(|m| Mount {
                kind: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        if !mounts.is_empty() {
            std::fs::create_dir_all(&rootfs).context(format!("create {}", rootfs.display()))?;
            mount::mount_all(&mounts, &rootfs)?;
        }
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let created = self.create_init(&req.id, &bundle, &runc, &opts, &stdio, &req.checkpoint);
        let (pid, io) = match created {
            Ok(v) => v,
            Err(e) => {
                // Leave nothing behind: no runc container, no mount.
                let _ = runc.delete(&req.id, true);
                if !mounts.is_empty() {
                    let _ = mount::unmount_all(&rootfs);
                }
                return Err(e);
            }
        };
        let mut init = Process::new(stdio.clone(), Vec::new());
        init.pid = pid;
        init.io = Some(io);
        tasks.pids.insert(pid, (req.id.clone(), String::new()));
        let cgroup = crate::cgroups::Cgroup::for_pid(pid)
            .inspect_err(|e| log::warn!("container {}: no cgroup stats: {e}", req.id))
            .ok();
        if let (Some(oom), Some(cg)) = (&self.oom, &cgroup) {
            if let Err(e) = oom.watch_cgroup(&req.id, cg) {
                log::warn!("container {}: no OOM events: {e}", req.id);
            }
        }
        let container = Container {
            bundle: bundle.clone(),
            runc,
            init,
            execs: BTreeMap::new(),
            rootfs_mounted: !mounts.is_empty(),
            cgroup,
            kill_all_on_exit: kill_all_on_exit(&bundle),
        };
        tasks.containers.insert(req.id.clone(), container);
        self.publisher.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            &ev::TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: Some(ev::TaskIO {
                    stdin: stdio.stdin,
                    stdout: stdio.stdout,
                    stderr: stdio.stderr,
                    terminal: stdio.terminal,
                    ..Default::default()
                })
                .into(),
                checkpoint: req.checkpoint.clone(),
                pid: pid as u32,
                ..Default::default()
            },
        );
        Ok(pid as u32)
    }

    fn create_init(
        &self,
        id: &str,
        bundle: &Path,
        runc: &Runc,
        opts: &RuncOptions,
        stdio: &StdioPaths,
        checkpoint: &str,
    ) -> Result<(i32, ProcessIo)> {
        let mut prepared = stdio.prepare(id, &self.namespace, opts.io_owner())?;
        prepared.bind_attach(bundle)?;
        let pid_file = bundle.join("init.pid");
        let runc_stdio = take_stdio(&mut prepared);
        let create = CreateOpts {
            pid_file: pid_file.clone(),
            console_socket: prepared.console.as_ref().map(|c| c.path()),
            no_pivot: opts.no_pivot_root,
            no_new_keyring: opts.no_new_keyring,
        };
        if checkpoint.is_empty() {
            runc.create(id, bundle, &create, runc_stdio)?;
        } else {
            runc.restore(
                id,
                bundle,
                checkpoint,
                &opts.criu_work_path,
                &create,
                runc_stdio,
            )?;
        }
        let pid = read_pid_file(&pid_file)?;
        Ok((pid, prepared.start(id)?))
    }

    pub fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        let mut tasks = self.lock();
        let c = tasks.container_mut(id)?;
        if exec_id.is_empty() {
            c.init.status.apply(Transition::Start)?;
            c.runc.start(id)?;
            c.init.transition(Transition::Start)?;
            let pid = c.init.pid as u32;
            self.publisher.publish(
                topics::TASK_START_EVENT_TOPIC,
                &ev::TaskStart {
                    container_id: id.into(),
                    pid,
                    ..Default::default()
                },
            );
            return Ok(pid);
        }
        let (runc, bundle) = (c.runc.clone(), c.bundle.clone());
        let p = c.process_mut(exec_id)?;
        p.status.apply(Transition::Start)?;
        match self.start_exec(id, exec_id, &runc, &bundle, p) {
            Ok((pid, io)) => {
                p.pid = pid;
                p.io = Some(io);
                p.transition(Transition::Start)?;
                tasks
                    .pids
                    .insert(pid, (id.to_string(), exec_id.to_string()));
                self.publisher.publish(
                    topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                    &ev::TaskExecStarted {
                        container_id: id.into(),
                        exec_id: exec_id.into(),
                        pid: pid as u32,
                        ..Default::default()
                    },
                );
                Ok(pid as u32)
            }
            Err(e) => {
                // It never ran: whoever waits for it learns so.
                p.exit = Some((255, SystemTime::now()));
                let _ = p.transition(Transition::Exit);
                self.exited.notify_all();
                Err(e)
            }
        }
    }

    fn start_exec(
        &self,
        id: &str,
        exec_id: &str,
        runc: &Runc,
        bundle: &Path,
        p: &Process,
    ) -> Result<(i32, ProcessIo)> {
        let opts = RuncOptions::load(bundle)?;
        let mut prepared = p.stdio.prepare(id, &self.namespace, opts.io_owner())?;
        let spec_path = bundle.join(format!(".exec-{exec_id}.json"));
        let pid_file = bundle.join(format!(".exec-{exec_id}.pid"));
        std::fs::write(&spec_path, &p.spec).context(format!("write {}", spec_path.display()))?;
        let console = prepared.console.as_ref().map(|c| c.path().to_path_buf());
        let runc_stdio = take_stdio(&mut prepared);
        let ran = runc.exec(id, &spec_path, &pid_file, console.as_deref(), runc_stdio);
        let _ = std::fs::remove_file(&spec_path);
        ran?;
        let pid = read_pid_file(&pid_file);
        let _ = std::fs::remove_file(&pid_file);
        Ok((pid?, prepared.start(&format!("{id}-{exec_id}"))?))
    }

    /// Applies an exit the reaper collected.
    pub fn on_exit(&self, exit: Exit) {
        let mut tasks = self.lock();
        let Some((id, exec_id)) = tasks.pids.remove(&exit.pid) else {
            return;
        };
        let Ok(c) = tasks.container_mut(&id) else {
            return;
        };
        let kill_all = exec_id.is_empty() && c.kill_all_on_exit;
        let runc = c.runc.clone();
        let Ok(p) = c.process_mut(&exec_id) else {
            return;
        };
        if p.transition(Transition::Exit).is_err() {
            return;
        }
        p.exit = Some((exit.status, exit.at));
        if kill_all {
            if let Err(e) = runc.kill(&id, libc::SIGKILL as u32, true) {
                log::debug!("container {id}: kill remaining processes: {e}");
            }
        }
        self.publisher.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            &ev::TaskExit {
                container_id: id.clone(),
                id: if exec_id.is_empty() {
                    id.clone()
                } else {
                    exec_id
                },
                pid: exit.pid as u32,
                exit_status: exit.status,
                exited_at: Some(timestamp(exit.at)).into(),
                ..Default::default()
            },
        );
        self.exited.notify_all();
    }

    pub fn exec(&self, req: &api::ExecProcessRequest) -> Result<()> {
        validate_id("exec id", &req.exec_id)?;
        let spec = match req.spec.as_ref() {
            Some(any) => any.value.clone(),
            None => return Err(Error::InvalidArgument("exec without a process spec".into())),
        };
        serde_json::from_slice::<serde_json::Value>(&spec).context("exec process spec")?;
        let mut tasks = self.lock();
        let c = tasks.container_mut(&req.id)?;
        if c.execs.contains_key(&req.exec_id) {
            return Err(Error::AlreadyExists(format!("id {}", req.exec_id)));
        }
        if matches!(c.init.status, Status::Stopped | Status::Deleted) {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                req.id
            )));
        }
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        c.execs
            .insert(req.exec_id.clone(), Process::new(stdio, spec));
        self.publisher.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            &ev::TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            },
        );
        Ok(())
    }

    pub fn state(&self, id: &str, exec_id: &str) -> Result<api::StateResponse> {
        let tasks = self.lock();
        let c = tasks.container(id)?;
        let p = c.process(exec_id)?;
        let (status, at) = p.exit_status();
        Ok(api::StateResponse {
            id: if exec_id.is_empty() {
                id.into()
            } else {
                exec_id.into()
            },
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: p.pid as u32,
            status: p.status.wire().into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: status,
            exited_at: at.map(timestamp).into(),
            exec_id: exec_id.into(),
            ..Default::default()
        })
    }

    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let tasks = self.lock();
        let c = tasks.container(id)?;
        let p = c.process(exec_id)?;
        if matches!(p.status, Status::Stopped | Status::Deleted) {
            return Err(Error::NotFound("process already finished".into()));
        }
        if exec_id.is_empty() {
            return c.runc.kill(id, signal, all);
        }
        if p.pid == 0 {
            return Err(Error::NotFound(format!("process {exec_id} not started")));
        }
        let sig = nix::sys::signal::Signal::try_from(signal as i32)
            .map_err(|_| Error::InvalidArgument(format!("bad signal {signal}")))?;
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), sig) {
            Err(nix::errno::Errno::ESRCH) => {
                Err(Error::NotFound("process already finished".into()))
            }
            r => r.context(format!("signal process {exec_id}")),
        }
    }

    /// Blocks until the process has exited.
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<Exited> {
        let mut tasks = self.lock();
        loop {
            let p = tasks.container(id)?.process(exec_id)?;
            if let Some((status, at)) = p.exit {
                return Ok(Exited {
                    pid: p.pid as u32,
                    status,
                    at: Some(at),
                });
            }
            tasks = self.exited.wait(tasks).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub fn delete(&self, id: &str, exec_id: &str) -> Result<Exited> {
        let mut tasks = self.lock();
        let c = tasks.container_mut(id)?;
        if !exec_id.is_empty() {
            let p = c.process_mut(exec_id)?;
            p.status.apply(Transition::Delete)?;
            let mut p = c
                .execs
                .remove(exec_id)
                .ok_or_else(|| Error::NotFound(format!("process {exec_id}")))?;
            drop(tasks);
            if let Some(io) = p.io.as_mut() {
                io.finish(DRAIN_TIMEOUT);
            }
            let (status, at) = p.exit_status();
            return Ok(Exited {
                pid: p.pid as u32,
                status,
                at,
            });
        }
        c.init.status.apply(Transition::Delete)?;
        if c.init.status == Status::Created {
            // Never started: runc kills the waiting init; its exit is the status reported.
            c.runc.delete(id, true)?;
            let pid = c.init.pid;
            let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
            while tasks.pids.contains_key(&pid) && std::time::Instant::now() < deadline {
                tasks = self
                    .exited
                    .wait_timeout(tasks, Duration::from_millis(50))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        } else {
            c.runc.delete(id, false).or_else(|e| {
                // Already gone from runc's state (e.g. deleted by a `delete` action) is fine.
                if c.runc.root.join(id).exists() {
                    Err(e)
                } else {
                    Ok(())
                }
            })?;
        }
        let mut c = tasks
            .containers
            .remove(id)
            .ok_or_else(|| Error::NotFound(format!("container {id}")))?;
        tasks.pids.retain(|_, (cid, _)| cid != id);
        drop(tasks);
        if let Some(oom) = &self.oom {
            oom.unwatch(id);
        }
        for p in c.execs.values_mut().chain(std::iter::once(&mut c.init)) {
            if let Some(io) = p.io.as_mut() {
                io.finish(DRAIN_TIMEOUT);
            }
        }
        if c.rootfs_mounted {
            mount::unmount_all(&c.bundle.join("rootfs"))?;
        }
        let (status, at) = c.init.exit_status();
        let at = at.unwrap_or_else(SystemTime::now);
        self.publisher.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            &ev::TaskDelete {
                container_id: id.into(),
                pid: c.init.pid as u32,
                exit_status: status,
                exited_at: Some(timestamp(at)).into(),
                ..Default::default()
            },
        );
        Ok(Exited {
            pid: c.init.pid as u32,
            status,
            at: Some(at),
        })
    }

    pub fn pids(&self, id: &str) -> Result<Vec<ProcessInfo>> {
        let tasks = self.lock();
        let c = tasks.container(id)?;
        let pids = c.runc.ps(id)?;
        let execs: HashMap<i32, &str> = c
            .execs
            .iter()
            .map(|(eid, p)| (p.pid, eid.as_str()))
            .collect();
        Ok(pids
            .into_iter()
            .map(|pid| {
                let info = execs.get(&(pid as i32)).map(|eid| {
                    to_any(
                        "containerd.runc.v1.ProcessDetails",
                        &ProcessDetails {
                            exec_id: eid.to_string(),
                            ..Default::default()
                        },
                    )
                });
                ProcessInfo {
                    pid,
                    info: info.into(),
                    ..Default::default()
                }
            })
            .collect())
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        let mut tasks = self.lock();
        let c = tasks.container_mut(id)?;
        c.init.status.apply(Transition::Pause)?;
        c.runc.pause(id)?;
        c.init.transition(Transition::Pause)?;
        self.publisher.publish(
            topics::TASK_PAUSED_EVENT_TOPIC,
            &ev::TaskPaused {
                container_id: id.into(),
                ..Default::default()
            },
        );
        Ok(())
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        let mut tasks = self.lock();
        let c = tasks.container_mut(id)?;
        c.init.status.apply(Transition::Resume)?;
        c.runc.resume(id)?;
        c.init.transition(Transition::Resume)?;
        self.publisher.publish(
            topics::TASK_RESUMED_EVENT_TOPIC,
            &ev::TaskResumed {
                container_id: id.into(),
                ..Default::default()
            },
        );
        Ok(())
    }

    pub fn checkpoint(&self, id: &str, path: &str, options: Option<&Any>) -> Result<()> {
        let o = match options {
            Some(any) if is_type(any, "containerd.runc.v1.CheckpointOptions") => {
                CheckpointOptions::parse_from_bytes(&any.value)
                    .context("decode checkpoint options")?
            }
            _ => CheckpointOptions::default(),
        };
        let image_path = if path.is_empty() {
            o.image_path.clone()
        } else {
            path.to_string()
        };
        if image_path.is_empty() {
            return Err(Error::InvalidArgument(
                "checkpoint needs an image path".into(),
            ));
        }
        let tasks = self.lock();
        let c = tasks.container(id)?;
        if c.init.status != Status::Running && c.init.status != Status::Paused {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        let opts = CheckpointOpts {
            image_path: image_path.clone(),
            work_path: o.work_path.clone(),
            leave_running: !o.exit,
            tcp_established: o.open_tcp,
            ext_unix_sk: o.external_unix_sockets,
            shell_job: o.terminal,
            file_locks: o.file_locks,
            empty_ns: o.empty_namespaces.clone(),
            cgroups_mode: o.cgroups_mode.clone(),
        };
        c.runc.checkpoint(id, &opts)?;
        self.publisher.publish(
            topics::TASK_CHECKPOINTED_EVENT_TOPIC,
            &ev::TaskCheckpointed {
                container_id: id.into(),
                checkpoint: image_path,
                ..Default::default()
            },
        );
        Ok(())
    }

    pub fn update(&self, id: &str, resources: Option<&Any>) -> Result<()> {
        let Some(resources) = resources else {
            return Err(Error::InvalidArgument("update without resources".into()));
        };
        serde_json::from_slice::<serde_json::Value>(&resources.value)
            .context("update resources")?;
        let tasks = self.lock();
        let c = tasks.container(id)?;
        c.runc.update(id, &resources.value)
    }

    pub fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let tasks = self.lock();
        let p = tasks.container(id)?.process(exec_id)?;
        match &p.io {
            Some(io) => io.resize(width, height),
            None => Err(Error::FailedPrecondition(format!(
                "process {exec_id} not started"
            ))),
        }
    }

    pub fn close_io(&self, id: &str, exec_id: &str, stdin: bool) -> Result<()> {
        let tasks = self.lock();
        let p = tasks.container(id)?.process(exec_id)?;
        if let (true, Some(io)) = (stdin, &p.io) {
            io.close_stdin();
        }
        Ok(())
    }

    pub fn stats(&self, id: &str) -> Result<Any> {
        let cgroup = self.lock().container(id)?.cgroup.clone();
        match cgroup {
            Some(cg) => Ok(cg.metrics()?),
            None => Err(Error::NotFound(format!("cgroup of container {id}"))),
        }
    }

    /// Reopens the CRI log of a container's init (log rotation).
    pub fn reopen_log(&self, id: &str) -> Result<()> {
        let tasks = self.lock();
        match &tasks.container(id)?.init.io {
            Some(io) => io.reopen_log(),
            None => Err(Error::FailedPrecondition(format!(
                "container {id} has no output"
            ))),
        }
    }

    /// The pid of a container's init, for Connect.
    pub fn task_pid(&self, id: &str) -> u32 {
        self.lock()
            .containers
            .get(id)
            .map(|c| c.init.pid as u32)
            .unwrap_or_default()
    }
}

fn take_stdio(p: &mut Prepared) -> ProcessStdio {
    use std::process::Stdio;
    ProcessStdio {
        stdin: std::mem::replace(&mut p.stdin, Stdio::null()),
        stdout: std::mem::replace(&mut p.stdout, Stdio::null()),
        stderr: std::mem::replace(&mut p.stderr, Stdio::null()),
    }
}

/// True unless the bundle's spec gives the container a new pid namespace of its own.
pub fn kill_all_on_exit(bundle: &Path) -> bool {
    let Ok(text) = std::fs::read(bundle.join("config.json")) else {
        return true;
    };
    let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return true;
    };
    let own_pid_ns = spec
        .pointer("/linux/namespaces")
        .and_then(|v| v.as_array())
        .is_some_and(|nss| {
            nss.iter().any(|ns| {
                ns.get("type").and_then(|t| t.as_str()) == Some("pid")
                    && ns
                        .get("path")
                        .and_then(|p| p.as_str())
                        .unwrap_or("")
                        .is_empty()
            })
        });
    !own_pid_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_outside_a_private_pid_namespace_are_killed_with_init() {
        let dir = tempfile::tempdir().unwrap();
        let write = |s: &str| std::fs::write(dir.path().join("config.json"), s).unwrap();
        write(r#"{"linux":{"namespaces":[{"type":"pid"},{"type":"mount"}]}}"#);
        assert!(!kill_all_on_exit(dir.path()));
        write(r#"{"linux":{"namespaces":[{"type":"pid","path":"/proc/1/ns/pid"}]}}"#);
        assert!(kill_all_on_exit(dir.path()));
        write(r#"{"linux":{"namespaces":[{"type":"mount"}]}}"#);
        assert!(kill_all_on_exit(dir.path()));
    }

    fn shim() -> Shim {
        let publisher = Publisher::start("", "default").unwrap();
        Shim::new("default", publisher, None)
    }

    #[test]
    fn bad_requests_are_refused_before_anything_happens() {
        let s = shim();
        let mut req = api::CreateTaskRequest {
            id: "../x".into(),
            bundle: "/nonexistent".into(),
            ..Default::default()
        };
        assert_eq!(
            s.create(&req).unwrap_err().code(),
            limpet_protos::ttrpc::Code::INVALID_ARGUMENT
        );
        req.id = "ok".into();
        assert_eq!(
            s.create(&req).unwrap_err().code(),
            limpet_protos::ttrpc::Code::INVALID_ARGUMENT
        );
        assert_eq!(
            s.state("nosuch", "").unwrap_err().code(),
            limpet_protos::ttrpc::Code::NOT_FOUND
        );
        assert_eq!(
            s.kill("nosuch", "", 9, false).unwrap_err().code(),
            limpet_protos::ttrpc::Code::NOT_FOUND
        );
        assert_eq!(
            s.reopen_log("nosuch").unwrap_err().code(),
            limpet_protos::ttrpc::Code::NOT_FOUND
        );
        let exec = api::ExecProcessRequest {
            id: "nosuch".into(),
            exec_id: "a/b".into(),
            ..Default::default()
        };
        assert_eq!(
            s.exec(&exec).unwrap_err().code(),
            limpet_protos::ttrpc::Code::INVALID_ARGUMENT
        );
        assert!(s.is_empty());
    }
}
