//! A typed client of one shim's task API. Every call but Wait has a deadline, so that a
//! stuck shim cannot hold a limpetd worker forever; errors keep the ttrpc status code.

use std::collections::HashMap;
use std::io;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use limpet_protos::api;
use limpet_protos::protobuf::well_known_types::any::Any;
use limpet_protos::protobuf::Message;
use limpet_protos::runc_options::ProcessDetails;
use limpet_protos::ttrpc::{self, context::Context};
use limpet_protos::{type_urls, TaskClient};
use oci_spec::runtime::{LinuxResources, Process};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::error::{Result, ShimError};
use super::stats::Metrics;
use super::types::{
    is_type, time_of, CreateTask, DeleteOutcome, Exited, ProcessPid, ShimInfo, Stdio, TaskState,
};

/// The ttrpc metadata key containerd puts the namespace in.
const NAMESPACE_KEY: &str = "containerd-namespace-ttrpc";
const PROCESS_DETAILS: &str = "containerd.runc.v1.ProcessDetails";

/// Deadlines of the calls: runc commands may wait on a busy host, queries should not.
const CREATE: Duration = Duration::from_secs(60);
const START: Duration = Duration::from_secs(30);
const CONTROL: Duration = Duration::from_secs(10);
const QUERY: Duration = Duration::from_secs(5);
const DELETE: Duration = Duration::from_secs(30);
const UPDATE: Duration = Duration::from_secs(30);

/// A connection to one shim. Clones share it, and calls on clones may run concurrently.
#[derive(Clone)]
pub struct ShimClient {
    address: String,
    namespace: Option<String>,
    task: TaskClient,
    /// The same connection, for limpet's own services (log reopen).
    raw: ttrpc::Client,
}

impl std::fmt::Debug for ShimClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShimClient")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl ShimClient {
    /// Connects to a shim at `address` (`unix:///path`, as `start` printed it, or a path).
    /// Refused or missing sockets mean the shim is dead ([`ShimError::is_shim_dead`]).
    pub fn connect(address: &str, timeout: Duration) -> Result<ShimClient> {
        let connect_err = |source| ShimError::Connect {
            address: address.to_string(),
            source,
        };
        let path = socket_path(address).ok_or_else(|| {
            connect_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a unix socket address",
            ))
        })?;
        let stream = dial(&path, timeout).map_err(connect_err)?;
        let client = ttrpc::Client::new(stream.into_raw_fd()).map_err(|e| ShimError::Ttrpc {
            context: format!("ttrpc client for {address}"),
            detail: e.to_string(),
        })?;
        Ok(ShimClient {
            address: address.to_string(),
            namespace: None,
            task: TaskClient::new(client.clone()),
            raw: client,
        })
    }

    /// Sends `namespace` with every call, as containerd does.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> ShimClient {
        self.namespace = Some(namespace.into());
        self
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn ctx(&self, timeout: Option<Duration>) -> Context {
        let mut ctx = Context {
            timeout_nano: timeout.map_or(0, |t| t.as_nanos() as i64),
            ..Default::default()
        };
        if let Some(ns) = &self.namespace {
            ctx.metadata
                .insert(NAMESPACE_KEY.to_string(), vec![ns.clone()]);
        }
        ctx
    }

    /// Runs one call with its deadline and turns its error into a [`ShimError`].
    fn call<T>(
        &self,
        method: &'static str,
        id: &str,
        timeout: Option<Duration>,
        f: impl FnOnce(&TaskClient, Context) -> ttrpc::Result<T>,
    ) -> Result<T> {
        f(&self.task, self.ctx(timeout)).map_err(|e| ShimError::from_call(method, id, timeout, e))
    }

    /// Creates the container; returns its init's pid.
    pub fn create(&self, task: &CreateTask) -> Result<u32> {
        let req = api::CreateTaskRequest::from(task);
        let resp = self.call("Create", &task.id, Some(CREATE), |c, ctx| {
            c.create(ctx, &req)
        })?;
        Ok(resp.pid)
    }

    /// Starts the init (`exec_id` empty) or an exec; returns its pid.
    pub fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        let req = api::StartRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let resp = self.call("Start", id, Some(START), |c, ctx| c.start(ctx, &req))?;
        Ok(resp.pid)
    }

    /// Signals the init or an exec; `all` signals every process of the container.
    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let req = api::KillRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            signal,
            all,
            ..Default::default()
        };
        self.call("Kill", id, Some(CONTROL), |c, ctx| c.kill(ctx, &req))?;
        Ok(())
    }

    /// Deletes a stopped init (and the runc container) or an exec.
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<DeleteOutcome> {
        let req = api::DeleteRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let resp = self.call("Delete", id, Some(DELETE), |c, ctx| c.delete(ctx, &req))?;
        Ok(DeleteOutcome::from(&resp))
    }

    pub fn state(&self, id: &str, exec_id: &str) -> Result<TaskState> {
        let req = api::StateRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let resp = self.call("State", id, Some(QUERY), |c, ctx| c.state(ctx, &req))?;
        Ok(TaskState::from(resp))
    }

    /// Adds an exec process (started by [`start`](Self::start) with its `exec_id`).
    pub fn exec(&self, id: &str, exec_id: &str, spec: &Process, stdio: &Stdio) -> Result<()> {
        let value = serde_json::to_vec(spec).map_err(|e| ShimError::InvalidRequest {
            method: "Exec",
            id: id.to_string(),
            detail: format!("process spec: {e}"),
        })?;
        let req = api::ExecProcessRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            terminal: stdio.terminal,
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            spec: Some(json_any(type_urls::OCI_PROCESS, value)).into(),
            ..Default::default()
        };
        self.call("Exec", id, Some(CONTROL), |c, ctx| c.exec(ctx, &req))?;
        Ok(())
    }

    pub fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let req = api::ResizePtyRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            width,
            height,
            ..Default::default()
        };
        self.call("ResizePty", id, Some(QUERY), |c, ctx| {
            c.resize_pty(ctx, &req)
        })?;
        Ok(())
    }

    /// Closes the process's stdin (end of input).
    pub fn close_io(&self, id: &str, exec_id: &str) -> Result<()> {
        let req = api::CloseIORequest {
            id: id.into(),
            exec_id: exec_id.into(),
            stdin: true,
            ..Default::default()
        };
        self.call("CloseIO", id, Some(QUERY), |c, ctx| c.close_io(ctx, &req))?;
        Ok(())
    }

    /// Changes the container's cgroup limits.
    pub fn update(
        &self,
        id: &str,
        resources: &LinuxResources,
        annotations: &HashMap<String, String>,
    ) -> Result<()> {
        let value = serde_json::to_vec(resources).map_err(|e| ShimError::InvalidRequest {
            method: "Update",
            id: id.to_string(),
            detail: format!("resources: {e}"),
        })?;
        let req = api::UpdateTaskRequest {
            id: id.into(),
            resources: Some(json_any(type_urls::OCI_LINUX_RESOURCES, value)).into(),
            annotations: annotations.clone(),
            ..Default::default()
        };
        self.call("Update", id, Some(UPDATE), |c, ctx| c.update(ctx, &req))?;
        Ok(())
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        let req = api::PauseRequest {
            id: id.into(),
            ..Default::default()
        };
        self.call("Pause", id, Some(UPDATE), |c, ctx| c.pause(ctx, &req))?;
        Ok(())
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        let req = api::ResumeRequest {
            id: id.into(),
            ..Default::default()
        };
        self.call("Resume", id, Some(UPDATE), |c, ctx| c.resume(ctx, &req))?;
        Ok(())
    }

    /// The cgroup metrics as the shim sent them.
    pub fn stats_raw(&self, id: &str) -> Result<Any> {
        let req = api::StatsRequest {
            id: id.into(),
            ..Default::default()
        };
        let resp = self.call("Stats", id, Some(CONTROL), |c, ctx| c.stats(ctx, &req))?;
        resp.stats.into_option().ok_or_else(|| ShimError::BadReply {
            action: "Stats",
            id: id.to_string(),
            detail: "no metrics".into(),
        })
    }

    /// The cgroup (v1 or v2) metrics, decoded.
    pub fn stats(&self, id: &str) -> Result<Metrics> {
        Metrics::decode(id, &self.stats_raw(id)?)
    }

    /// The processes in the container.
    pub fn pids(&self, id: &str) -> Result<Vec<ProcessPid>> {
        let req = api::PidsRequest {
            id: id.into(),
            ..Default::default()
        };
        let resp = self.call("Pids", id, Some(QUERY), |c, ctx| c.pids(ctx, &req))?;
        Ok(resp
            .processes
            .into_iter()
            .map(|p| ProcessPid {
                pid: p.pid,
                exec_id: p
                    .info
                    .as_ref()
                    .filter(|any| is_type(any, PROCESS_DETAILS))
                    .and_then(|any| ProcessDetails::parse_from_bytes(&any.value).ok())
                    .map(|d| d.exec_id),
            })
            .collect())
    }

    /// Blocks until the init or exec exits; no deadline (call it from a thread of its own).
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<Exited> {
        let req = api::WaitRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let resp = self.call("Wait", id, None, |c, ctx| c.wait(ctx, &req))?;
        Ok(Exited {
            exit_status: resp.exit_status,
            exited_at: time_of(&resp.exited_at),
        })
    }

    /// The shim's own pid (and the task's), as Connect reports them.
    pub fn info(&self, id: &str) -> Result<ShimInfo> {
        let req = api::ConnectRequest {
            id: id.into(),
            ..Default::default()
        };
        let resp = self.call("Connect", id, Some(QUERY), |c, ctx| c.connect(ctx, &req))?;
        Ok(ShimInfo {
            shim_pid: resp.shim_pid,
            task_pid: resp.task_pid,
            version: resp.version,
        })
    }

    /// Reopens the CRI log file of container `id` (limpet's `limpet.log.v1.Log` service).
    pub fn reopen_log(&self, id: &str) -> Result<()> {
        limpet_protos::log::reopen_log(&self.raw, id, QUERY)
            .map_err(|e| ShimError::from_call("Reopen", id, Some(QUERY), e))
    }

    /// Asks the shim to exit; it stays while it serves other containers unless `now`.
    pub fn shutdown(&self, id: &str, now: bool) -> Result<()> {
        let req = api::ShutdownRequest {
            id: id.into(),
            now,
            ..Default::default()
        };
        match self.call("Shutdown", id, Some(QUERY), |c, ctx| c.shutdown(ctx, &req)) {
            // The shim may exit before its reply is read.
            Err(e) if e.is_shim_dead() => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

fn json_any(type_url: &str, value: Vec<u8>) -> Any {
    Any {
        type_url: type_url.to_string(),
        value,
        ..Default::default()
    }
}

/// The socket path of `unix:///path` (or of a bare path).
pub fn socket_path(address: &str) -> Option<PathBuf> {
    let path = match address.split_once("://") {
        Some(("unix", path)) => path,
        Some(_) => return None,
        None => address,
    };
    (!path.is_empty() && path.starts_with('/')).then(|| PathBuf::from(path))
}

/// Connects without blocking past `timeout` (a shim with a full accept queue is stuck).
fn dial(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddrUnix::new(path)?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            // The listener's backlog is full: it has not accepted for a while.
            Err(rustix::io::Errno::AGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(rustix::io::Errno::AGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no accept within {timeout:?}"),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// True when a process accepts connections at `address` (a live shim).
pub fn shim_listening(address: &str) -> bool {
    socket_path(address).is_some_and(|p| UnixStream::connect(p).is_ok())
}

/// Removes the socket of a dead shim (nothing accepts on it); true if it was removed.
pub fn remove_stale_socket(address: &str) -> bool {
    let Some(path) = socket_path(address) else {
        return false;
    };
    let is_socket = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket());
    let refused = matches!(
        UnixStream::connect(&path),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
    );
    is_socket && refused && std::fs::remove_file(&path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn addresses_map_to_paths() {
        assert_eq!(
            socket_path("unix:///run/s/abc"),
            Some(PathBuf::from("/run/s/abc"))
        );
        assert_eq!(socket_path("/run/s/abc"), Some(PathBuf::from("/run/s/abc")));
        assert_eq!(socket_path("vsock://3:1024"), None);
        assert_eq!(socket_path("unix://relative"), None);
    }

    #[test]
    fn a_missing_or_dead_socket_means_a_dead_shim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let address = format!("unix://{}", path.display());
        let e = ShimClient::connect(&address, Duration::from_secs(1)).unwrap_err();
        assert!(e.is_shim_dead(), "{e}");

        drop(UnixListener::bind(&path).unwrap());
        let e = ShimClient::connect(&address, Duration::from_secs(1)).unwrap_err();
        assert!(e.is_shim_dead() && e.is_gone(), "{e}");
        assert!(!shim_listening(&address));
        assert!(remove_stale_socket(&address));
        assert!(!path.exists());
    }

    #[test]
    fn a_live_socket_is_kept_and_a_closed_connection_is_a_dead_shim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let address = format!("unix://{}", path.display());
        let listener = UnixListener::bind(&path).unwrap();
        assert!(!remove_stale_socket(&address));
        assert!(shim_listening(&address));
        let client = ShimClient::connect(&address, Duration::from_secs(1)).unwrap();
        // Accept everything pending, then hang up on all of it: the shim "died".
        listener.set_nonblocking(true).unwrap();
        while let Ok((conn, _)) = listener.accept() {
            drop(conn);
        }
        let e = client.state("c1", "").unwrap_err();
        assert!(e.is_shim_dead(), "{e}");
        assert!(e.to_string().contains("State of c1"), "{e}");
    }
}
