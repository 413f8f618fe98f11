//! Streaming `exec -i/-t` and `attach`: the CRI Exec or Attach call, then the returned URL
//! upgraded to WebSocket (SPDY, on a fresh URL, if the server refuses it) with our terminal
//! at the other end.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::{AttachRequest, ExecRequest};
use limpetd::streaming::client::{ClientTls, CommandIo, Exit, RemoteCommand, Transport};

use crate::client::call;
use crate::containers;
use crate::terminal;

type Client = RuntimeServiceClient<Channel>;

/// Which transport to upgrade a streaming URL to.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportChoice {
    /// WebSocket, then SPDY (on a fresh URL) if the server refuses WebSocket.
    Auto,
    /// WebSocket only.
    Websocket,
    /// SPDY/3.1 only.
    Spdy,
}

/// How to reach the streaming server a CRI call points at.
#[derive(clap::Args, Debug)]
pub struct StreamFlags {
    /// The transport the streaming URL is upgraded to.
    #[arg(long, value_enum, default_value = "auto")]
    pub transport: TransportChoice,
    /// CA certificates (PEM) to trust for an https streaming URL, instead of the system's.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
}

impl StreamFlags {
    pub fn tls(&self) -> ClientTls {
        ClientTls {
            ca: self.tls_ca.clone(),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct AttachArgs {
    /// Keep stdin open and send it to the container.
    #[arg(long, short = 'i')]
    pub stdin: bool,
    /// Use the container's terminal (needs -i; the container must have one).
    #[arg(long, short = 't')]
    pub tty: bool,
    #[command(flatten)]
    pub stream: StreamFlags,
    pub id: String,
}

/// crictl refuses a terminal without stdin: keys could not reach it.
fn check_tty_needs_stdin(stdin: bool, tty: bool) -> anyhow::Result<()> {
    if tty && !stdin {
        anyhow::bail!("tty=true must be specified with interactive=true (-t needs -i)");
    }
    Ok(())
}

/// A terminal only when our stdin is one (kubectl's rule); otherwise plain streams.
fn usable_tty(stdin: bool, tty: bool) -> bool {
    if !(stdin && tty) {
        return false;
    }
    let ok = terminal::stdin_is_terminal();
    if !ok {
        eprintln!("Unable to use a TTY - input is not a terminal");
    }
    ok
}

/// The CRI call that hands out the streaming URL; made again for a fresh URL when the
/// first one was spent on a refused WebSocket upgrade.
enum Call {
    Exec(ExecRequest),
    Attach(AttachRequest),
}

impl Call {
    fn stdin(&self) -> bool {
        match self {
            Call::Exec(r) => r.stdin,
            Call::Attach(r) => r.stdin,
        }
    }

    fn tty(&self) -> bool {
        match self {
            Call::Exec(r) => r.tty,
            Call::Attach(r) => r.tty,
        }
    }

    async fn url(&self, client: &Client, t: Duration) -> anyhow::Result<String> {
        let mut c = client.clone();
        Ok(match self {
            Call::Exec(r) => {
                let what = format!("exec in container {}", r.container_id);
                call(&what, t, c.exec(r.clone())).await?.url
            }
            Call::Attach(r) => {
                let what = format!("attach to container {}", r.container_id);
                call(&what, t, c.attach(r.clone())).await?.url
            }
        })
    }
}

/// `exec -i/-t`: returns the command's exit code.
pub async fn exec(
    client: &Client,
    t: Duration,
    id: &str,
    cmd: Vec<String>,
    stdin: bool,
    tty: bool,
    flags: &StreamFlags,
) -> anyhow::Result<i32> {
    check_tty_needs_stdin(stdin, tty)?;
    let tty = usable_tty(stdin, tty);
    let req = ExecRequest {
        container_id: id.to_string(),
        cmd,
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    };
    stream(client, t, Call::Exec(req), flags).await
}

/// `attach`: returns 0 once the container's output ends (or the server ends the session).
pub async fn attach(client: &Client, t: Duration, args: &AttachArgs) -> anyhow::Result<i32> {
    check_tty_needs_stdin(args.stdin, args.tty)?;
    let id = &args.id;
    // The request's tty must match the container's, as kubectl and crictl make it.
    let tty = match container_tty(client, t, id).await? {
        Some(false) if args.tty => {
            eprintln!("Unable to use a TTY - container {id} did not allocate one");
            false
        }
        Some(has) => has,
        None => args.tty,
    };
    let tty = usable_tty(args.stdin, tty);
    let req = AttachRequest {
        container_id: id.to_string(),
        stdin: args.stdin,
        tty,
        stdout: true,
        stderr: !tty,
    };
    stream(client, t, Call::Attach(req), &args.stream).await
}

/// Whether the container has a terminal, when the runtime's verbose status tells
/// (containerd's `info.config.tty`, or a top-level `tty`).
async fn container_tty(client: &Client, t: Duration, id: &str) -> anyhow::Result<Option<bool>> {
    let resp = containers::status(client, t, id, true).await?;
    Ok(resp
        .info
        .get("info")
        .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
        .and_then(|info| {
            info.pointer("/config/tty")
                .or_else(|| info.get("tty"))
                .and_then(|v| v.as_bool())
        }))
}

/// What `auto` offers over WebSocket. Piped stdin must be closable, which only v5 can do:
/// like kubectl, offer nothing older then, so that servers without v5 refuse and SPDY
/// carries the session.
fn websocket_offer(stdin: bool, tty: bool) -> Option<&'static [&'static str]> {
    (stdin && !tty).then_some(&["v5.channel.k8s.io"][..])
}

async fn connect(
    client: &Client,
    t: Duration,
    what: &Call,
    flags: &StreamFlags,
) -> anyhow::Result<RemoteCommand> {
    let tls = flags.tls();
    let url = what.url(client, t).await?;
    let attempt = match flags.transport {
        TransportChoice::Websocket => {
            RemoteCommand::connect(&url, Transport::WebSocket, None, &tls).await
        }
        TransportChoice::Spdy => RemoteCommand::connect(&url, Transport::Spdy, None, &tls).await,
        TransportChoice::Auto => {
            let offer = websocket_offer(what.stdin(), what.tty());
            match RemoteCommand::connect(&url, Transport::WebSocket, offer, &tls).await {
                Err(e) if e.is_upgrade_refused() => {
                    tracing::debug!("{e}; using SPDY");
                    // The refused upgrade may have spent the URL: ask for another.
                    let url = what.url(client, t).await?;
                    return RemoteCommand::connect(&url, Transport::Spdy, None, &tls)
                        .await
                        .map_err(|e| anyhow::anyhow!("stream {url}: {e}"));
                }
                other => other,
            }
        }
    };
    attempt.map_err(|e| anyhow::anyhow!("stream {url}: {e}"))
}

async fn stream(
    client: &Client,
    t: Duration,
    what: Call,
    flags: &StreamFlags,
) -> anyhow::Result<i32> {
    let (stdin, tty) = (what.stdin(), what.tty());
    let conn = connect(client, t, &what, flags).await?;
    // Raw mode and resizes only with a terminal at both ends.
    let raw = if tty {
        Some(terminal::RawMode::enable()?)
    } else {
        None
    };
    let resize = if tty {
        Some(terminal::watch_size()?)
    } else {
        None
    };
    let io = CommandIo {
        stdin: if stdin {
            Some(Box::new(terminal::async_stdio(std::io::stdin().as_fd())?))
        } else {
            None
        },
        stdout: Some(Box::new(terminal::async_stdio(std::io::stdout().as_fd())?)),
        stderr: if tty {
            None
        } else {
            Some(Box::new(terminal::async_stdio(std::io::stderr().as_fd())?))
        },
        tty,
        resize,
    };
    let result = conn.run(io).await;
    // The terminal is ours again before anything is printed.
    drop(raw);
    match result? {
        Exit::Code(code) => Ok(code),
        Exit::Error(msg) => anyhow::bail!("{msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_needs_stdin() {
        assert!(check_tty_needs_stdin(false, true).is_err());
        assert!(check_tty_needs_stdin(true, true).is_ok());
        assert!(check_tty_needs_stdin(true, false).is_ok());
        assert!(!usable_tty(true, false));
        assert!(!usable_tty(false, false));
    }

    #[test]
    fn piped_stdin_asks_for_v5_only() {
        assert_eq!(
            websocket_offer(true, false),
            Some(&["v5.channel.k8s.io"][..])
        );
        assert_eq!(websocket_offer(true, true), None);
        assert_eq!(websocket_offer(false, false), None);
    }
}
