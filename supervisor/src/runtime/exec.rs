//! ExecSync: a command run in a container to completion, its output collected through FIFOs
//! up to a cap, killed when the timeout passes.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use super::error::{Result, RuntimeError};
use super::exec_stream::{fifo, open_reader, ExecTarget};
use super::shim_pool::TaskStdio;
use super::{remove_dir, Runtime};

pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// Reads a FIFO to its end, keeping at most `cap` bytes (the rest is drained and dropped so
/// that the writer never blocks).
async fn collect(mut rx: pipe::Receiver, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = cap.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

impl Runtime {
    pub async fn exec_sync(&self, id: &str, cmd: Vec<String>, timeout: i64) -> Result<ExecOutput> {
        let (target, process) = self.prepare_exec(id, cmd)?;
        let result = self.run_exec(&target, process, timeout).await;
        let _ = remove_dir(&target.dir);
        result
    }

    async fn run_exec(
        &self,
        target: &ExecTarget,
        process: oci_spec::runtime::Process,
        timeout: i64,
    ) -> Result<ExecOutput> {
        let (address, id, exec_id, dir) = target.parts();
        let (out_path, err_path) = (fifo(dir, "stdout")?, fifo(dir, "stderr")?);
        let (out_rx, err_rx) = (open_reader(&out_path)?, open_reader(&err_path)?);
        let stdio = TaskStdio {
            stdin: String::new(),
            stdout: out_path.to_string_lossy().into_owned(),
            stderr: err_path.to_string_lossy().into_owned(),
            terminal: false,
        };
        self.shims
            .exec(address, id, exec_id, &process, stdio)
            .await?;
        let cap = self.config.runtime.max_exec_output;
        let stdout = tokio::spawn(collect(out_rx, cap));
        let stderr = tokio::spawn(collect(err_rx, cap));
        if let Err(e) = self.shims.start_task(address, id, exec_id).await {
            let _ = self.shims.delete_exec(address, id, exec_id).await;
            return Err(e);
        }

        let wait = self.shims.wait(address, id, exec_id);
        let exit = if timeout > 0 {
            match tokio::time::timeout(Duration::from_secs(timeout as u64), wait).await {
                Ok(r) => Some(r?),
                Err(_) => None,
            }
        } else {
            Some(wait.await?)
        };
        let Some((code, _)) = exit else {
            let _ = self
                .shims
                .kill_and_wait(address, id, exec_id, libc::SIGKILL as u32)
                .await;
            let _ = self.shims.delete_exec(address, id, exec_id).await;
            return Err(RuntimeError::DeadlineExceeded(format!(
                "command timed out after {timeout}s"
            )));
        };
        self.shims.delete_exec(address, id, exec_id).await?;
        // The shim closes the FIFOs once the exec is deleted; whatever is left is drained.
        let drained = |h: tokio::task::JoinHandle<Vec<u8>>| async move {
            tokio::time::timeout(Duration::from_secs(5), h)
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default()
        };
        Ok(ExecOutput {
            stdout: drained(stdout).await,
            stderr: drained(stderr).await,
            exit_code: code as i32,
        })
    }

    /// The container's own process (user, env, cwd, capabilities) running `cmd`.
    pub(super) fn exec_process(
        &self,
        id: &str,
        cmd: Vec<String>,
    ) -> Result<oci_spec::runtime::Process> {
        let path = self.dirs.bundle(id).join("config.json");
        let spec = oci_spec::runtime::Spec::load(&path)
            .map_err(|e| RuntimeError::Internal(format!("reading {}: {e}", path.display())))?;
        let mut process = spec
            .process()
            .clone()
            .ok_or_else(|| RuntimeError::Internal(format!("{} has no process", path.display())))?;
        process.set_args(Some(cmd));
        process.set_terminal(Some(false));
        process.set_console_size(None);
        Ok(process)
    }
}
