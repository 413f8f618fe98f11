//! `exec` without -i/-t (or with -s): runs a command in a container with ExecSync, prints
//! what it wrote, and returns its exit code for limpetctl to exit with. The streaming exec is
//! in `stream.rs`.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::ExecSyncRequest;

use crate::client::{call, call_unbounded};

type Client = RuntimeServiceClient<Channel>;

/// Runs `cmd` in container `id`; `timeout` seconds (0: none) bound the command in the
/// runtime. Returns the command's exit code.
pub async fn exec_sync(
    client: &Client,
    t: Duration,
    id: &str,
    cmd: Vec<String>,
    timeout: u64,
) -> anyhow::Result<i32> {
    let req = ExecSyncRequest {
        container_id: id.to_string(),
        cmd,
        timeout: i64::try_from(timeout).unwrap_or(i64::MAX),
    };
    let mut c = client.clone();
    let what = format!("exec in container {id}");
    let resp = if timeout > 0 {
        // the runtime's own deadline, plus ours to get the answer back
        call(&what, Duration::from_secs(timeout) + t, c.exec_sync(req)).await?
    } else {
        call_unbounded(&what, c.exec_sync(req)).await?
    };
    std::io::stdout()
        .write_all(&resp.stdout)
        .and_then(|()| std::io::stdout().flush())
        .context("write stdout")?;
    std::io::stderr()
        .write_all(&resp.stderr)
        .and_then(|()| std::io::stderr().flush())
        .context("write stderr")?;
    Ok(resp.exit_code)
}
