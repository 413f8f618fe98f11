//! Exec through the streaming server: a process started in the container by the pod's shim,
//! its stdio on FIFOs relayed to and from the client, resizes passed to the shim. A client
//! that goes away takes the process with it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use limpet_protos::cri::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::error::{io_err, Result, RuntimeError};
use super::ids::new_id;
use super::records::ContainerState;
use super::shim_pool::TaskStdio;
use super::{remove_dir, Runtime};
use crate::streaming::io::{Channel, CommandIo, Outcome, TermSize};
use crate::streaming::status::exit_message;

/// How long output may keep coming after the process has been deleted.
const DRAIN: Duration = Duration::from_secs(10);

pub(super) fn fifo(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| io_err(format!("mkfifo {}", path.display()))(e.into()))?;
    Ok(path)
}

/// Copies a FIFO to the client's output queue until its writer closes.
pub(super) async fn pump_out(
    mut rx: pipe::Receiver,
    channel: Channel,
    out: mpsc::Sender<(Channel, Bytes)>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out
                    .send((channel, Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    // The client is gone: keep draining so the process never blocks.
                    while matches!(rx.read(&mut buf).await, Ok(n) if n > 0) {}
                    return;
                }
            }
        }
    }
}

/// Copies the client's stdin into a FIFO; returns when the client closed stdin.
pub(super) async fn pump_in(mut stdin: mpsc::Receiver<Bytes>, mut tx: pipe::Sender) {
    while let Some(data) = stdin.recv().await {
        if tx.write_all(&data).await.is_err() {
            return;
        }
    }
}

/// Opens the reading end of a FIFO (at once, before any writer).
pub(super) fn open_reader(path: &Path) -> Result<pipe::Receiver> {
    pipe::OpenOptions::new()
        .open_receiver(path)
        .map_err(io_err(format!("open {}", path.display())))
}

/// Opens the writing end of a FIFO whose reader (the shim) may not be there yet.
pub(super) fn open_writer(path: &Path) -> Result<pipe::Sender> {
    pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .map_err(io_err(format!("open {}", path.display())))
}

/// One exec: its container, the pod's shim, the exec id and its FIFO directory.
pub(super) struct ExecTarget {
    pub id: String,
    pub address: String,
    pub exec_id: String,
    pub dir: PathBuf,
}

impl ExecTarget {
    /// (address, container id, exec id, FIFO directory), as the shim calls take them.
    pub fn parts(&self) -> (&str, &str, &str, &Path) {
        (&self.address, &self.id, &self.exec_id, &self.dir)
    }
}

impl Runtime {
    /// An exec's FIFO directory, `<container>.<exec>`: what a crash leaves behind names the
    /// process to kill at the next start.
    pub(super) fn exec_dir(&self, container: &str, exec_id: &str) -> PathBuf {
        self.dirs.exec.join(format!("{container}.{exec_id}"))
    }

    /// Kills and deletes the execs whose client went with a crashed limpetd, and removes
    /// their FIFOs. Returns how many there were.
    pub(super) async fn remove_stale_execs(&self) -> usize {
        let mut removed = 0;
        for name in super::reconcile::dir_names(&self.dirs.exec) {
            if let Some((id, exec_id)) = name.split_once('.') {
                let address = self
                    .container(id)
                    .and_then(|c| self.sandbox(&c.record.sandbox_id))
                    .map(|s| s.record.shim_address);
                if let Ok(address) = address {
                    tracing::info!(id, exec_id, "killing an exec whose client is gone");
                    let signal = libc::SIGKILL as u32;
                    let _ = self
                        .shims
                        .kill_and_wait(&address, id, exec_id, signal)
                        .await;
                    let _ = self.shims.delete_exec(&address, id, exec_id).await;
                }
            }
            match remove_dir(&self.dirs.exec.join(&name)) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(name, error = %e, "cannot remove an exec directory"),
            }
        }
        removed
    }

    /// A container the streaming calls may act on: it exists and runs.
    pub fn running_container(&self, id: &str) -> Result<super::Container> {
        let c = self.container(id)?;
        if c.record.state != ContainerState::Running {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {} is in {:?} state, not running",
                c.record.id, c.record.state
            )));
        }
        Ok(c)
    }

    /// What every exec starts from: a running container, its pod's shim, the container's
    /// process running `cmd`, and an empty FIFO directory (the caller removes it).
    pub(super) fn prepare_exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
    ) -> Result<(ExecTarget, oci_spec::runtime::Process)> {
        if cmd.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "exec: no command given".into(),
            ));
        }
        let c = self.running_container(container_id)?;
        let address = self.sandbox(&c.record.sandbox_id)?.record.shim_address;
        let process = self.exec_process(&c.record.id, cmd)?;
        let exec_id = new_id();
        let dir = self.exec_dir(&c.record.id, &exec_id);
        std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        let target = ExecTarget {
            id: c.record.id,
            address,
            exec_id,
            dir,
        };
        Ok((target, process))
    }

    pub async fn exec_stream(&self, req: v1::ExecRequest, io: CommandIo) -> Result<Outcome> {
        let (target, mut process) = self.prepare_exec(&req.container_id, req.cmd.clone())?;
        process.set_terminal(Some(io.tty));
        let result = self.run_exec_stream(&target, process, &req.cmd, io).await;
        let _ = remove_dir(&target.dir);
        result
    }

    async fn run_exec_stream(
        &self,
        target: &ExecTarget,
        process: oci_spec::runtime::Process,
        cmd: &[String],
        io: CommandIo,
    ) -> Result<Outcome> {
        let (address, id, exec_id, dir) = target.parts();
        let CommandIo {
            stdin,
            output,
            resize,
            stdout,
            stderr,
            tty,
            mut gone,
        } = io;
        let path = |p: Option<PathBuf>| {
            p.map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let stdin_path = stdin.as_ref().map(|_| fifo(dir, "stdin")).transpose()?;
        let out_path = stdout.then(|| fifo(dir, "stdout")).transpose()?;
        let err_path = (stderr && !tty).then(|| fifo(dir, "stderr")).transpose()?;
        let out_rx = out_path.as_deref().map(open_reader).transpose()?;
        let err_rx = err_path.as_deref().map(open_reader).transpose()?;
        let stdin_tx = stdin_path.as_deref().map(open_writer).transpose()?;
        let stdio = TaskStdio {
            stdin: path(stdin_path),
            stdout: path(out_path),
            stderr: path(err_path),
            terminal: tty,
        };
        self.shims
            .exec(address, id, exec_id, &process, stdio)
            .await?;

        let mut pumps = Vec::new();
        for (rx, channel) in [(out_rx, Channel::Stdout), (err_rx, Channel::Stderr)] {
            if let Some(rx) = rx {
                pumps.push(tokio::spawn(pump_out(rx, channel, output.clone())));
            }
        }
        drop(output);
        if let Err(e) = self.shims.start_task(address, id, exec_id).await {
            let _ = self.shims.delete_exec(address, id, exec_id).await;
            return Err(e);
        }

        let stdin_task = match (stdin, stdin_tx) {
            (Some(rx), Some(tx)) => {
                let (shims, a, i, e) = (
                    self.shims.clone(),
                    address.to_string(),
                    id.to_string(),
                    exec_id.to_string(),
                );
                Some(tokio::spawn(async move {
                    pump_in(rx, tx).await;
                    let _ = shims.close_io(&a, &i, &e).await;
                }))
            }
            _ => None,
        };
        let resize_task = resize.map(|rx| self.spawn_resizes(rx, address, id, exec_id));

        let exit = tokio::select! {
            r = self.shims.wait(address, id, exec_id) => Some(r),
            _ = gone.wait() => None,
        };
        for t in [stdin_task, resize_task].into_iter().flatten() {
            t.abort();
        }
        let Some(exit) = exit else {
            tracing::debug!(%id, %exec_id, "exec client gone: killing the process");
            let _ = self
                .shims
                .kill_and_wait(address, id, exec_id, libc::SIGKILL as u32)
                .await;
            let _ = self.shims.delete_exec(address, id, exec_id).await;
            for p in pumps {
                p.abort();
            }
            return Ok(Outcome::Failed("client disconnected".into()));
        };
        let deleted = self.shims.delete_exec(address, id, exec_id).await;
        // The shim closes the FIFOs once the exec is deleted: the pumps see the end.
        for p in pumps {
            let _ = tokio::time::timeout(DRAIN, p).await;
        }
        let (code, _) = exit?;
        deleted?;
        Ok(match code {
            0 => Outcome::Success,
            code => Outcome::ExitCode {
                code: code as i32,
                message: exit_message(cmd, code as i32),
            },
        })
    }
}

impl Runtime {
    /// Passes a client's resize events on to the process's terminal; when they pile up,
    /// only the latest counts.
    pub(super) fn spawn_resizes(
        &self,
        mut rx: mpsc::Receiver<TermSize>,
        address: &str,
        id: &str,
        exec_id: &str,
    ) -> tokio::task::JoinHandle<()> {
        let (shims, a, i, e) = (
            self.shims.clone(),
            address.to_string(),
            id.to_string(),
            exec_id.to_string(),
        );
        tokio::spawn(async move {
            while let Some(mut size) = rx.recv().await {
                while let Ok(newer) = rx.try_recv() {
                    size = newer;
                }
                let (w, h) = (size.width.into(), size.height.into());
                let _ = shims.resize_pty(&a, &i, &e, w, h).await;
            }
        })
    }
}
