//! `port-forward POD [LOCAL:]REMOTE...`: listens on 127.0.0.1 and carries each accepted
//! connection to the pod through the runtime's streaming server: a WebSocket per connection
//! (a fresh PortForward URL each, since one serves a single connection), or one SPDY session
//! for all of them once the server refuses WebSocket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::PortForwardRequest;
use limpetd::streaming::client::{websocket_port_forward_with, ForwardedConn, SpdyPortForward};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Mutex};

use crate::client::call;
use crate::stream::{StreamFlags, TransportChoice};

type Client = RuntimeServiceClient<Channel>;

/// A URL from the PortForward call is used for the first connection only while this fresh
/// (runtimes expire unused ones after a minute or so).
const URL_FRESH: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct PortForwardArgs {
    #[command(flatten)]
    pub stream: StreamFlags,
    pub pod_id: String,
    /// [LOCAL:]REMOTE: listen on 127.0.0.1:LOCAL (REMOTE if not given, any free port if
    /// empty) and forward to REMOTE in the pod.
    #[arg(required = true, value_parser = parse_port)]
    pub ports: Vec<PortSpec>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSpec {
    /// 0: any free port.
    pub local: u16,
    pub remote: u16,
}

fn parse_port(s: &str) -> Result<PortSpec, String> {
    let number = |p: &str, what: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("{s:?}: {what} port {p:?} is not a number from 0 to 65535"))
    };
    let (local, remote) = match s.split_once(':') {
        None => {
            let r = number(s, "remote")?;
            (r, r)
        }
        Some(("", r)) => (0, number(r, "remote")?),
        Some((l, r)) => (number(l, "local")?, number(r, "remote")?),
    };
    if remote == 0 {
        return Err(format!("{s:?}: the remote port must not be 0"));
    }
    Ok(PortSpec { local, remote })
}

/// Runs until Ctrl-C (exit 0) or until a SPDY session to the pod is lost.
pub async fn port_forward(
    client: &Client,
    t: Duration,
    args: PortForwardArgs,
) -> anyhow::Result<i32> {
    let remotes: Vec<u16> = args.ports.iter().map(|p| p.remote).collect();
    let (lost_tx, mut lost) = mpsc::channel(1);
    let fwd = Arc::new(Forwarder {
        client: client.clone(),
        t,
        pod: args.pod_id,
        transport: args.stream.transport,
        tls: args.stream.tls(),
        fresh: Mutex::new(None),
        ws_refused: AtomicBool::new(false),
        spdy: Mutex::new(None),
        lost: lost_tx,
    });
    // Asking once up front checks the pod before we listen.
    let url = fwd.request_url(&remotes).await?;
    *fwd.fresh.lock().await = Some((url, Instant::now()));

    let mut listening = 0;
    for spec in &args.ports {
        match TcpListener::bind(("127.0.0.1", spec.local)).await {
            Ok(listener) => {
                let local = listener.local_addr().context("listener address")?.port();
                println!("Forwarding from 127.0.0.1:{local} -> {}", spec.remote);
                tokio::spawn(accept_loop(fwd.clone(), listener, local, spec.remote));
                listening += 1;
            }
            Err(e) => eprintln!("Unable to listen on port {}: {e}", spec.local),
        }
    }
    if listening == 0 {
        anyhow::bail!("unable to listen on any of the requested ports");
    }
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            r.context("wait for Ctrl-C")?;
            Ok(0)
        }
        _ = lost.recv() => anyhow::bail!("lost connection to pod {}", fwd.pod),
    }
}

async fn accept_loop(fwd: Arc<Forwarder>, listener: TcpListener, local: u16, remote: u16) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                tokio::spawn(handle(fwd.clone(), conn, local, remote));
            }
            Err(e) => {
                eprintln!("error accepting a connection on port {local}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(fwd: Arc<Forwarder>, mut local_conn: TcpStream, local: u16, remote: u16) {
    println!("Handling connection for {local}");
    let mut remote_conn = match fwd.open(remote).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error forwarding {local} -> {remote}: {e:#}");
            return;
        }
    };
    let _ = local_conn.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional(&mut local_conn, &mut remote_conn).await {
        tracing::debug!("forwarding {local} -> {remote}: {e}");
    }
    if let Some(msg) = remote_conn.error() {
        eprintln!("an error occurred forwarding {local} -> {remote}: {msg}");
    }
}

struct Forwarder {
    client: Client,
    t: Duration,
    pod: String,
    transport: TransportChoice,
    tls: limpetd::streaming::client::ClientTls,
    /// The URL asked for at start, until used or stale.
    fresh: Mutex<Option<(String, Instant)>>,
    /// The server refused WebSocket once: SPDY from then on.
    ws_refused: AtomicBool,
    spdy: Mutex<Option<Arc<SpdyPortForward>>>,
    /// Told when the SPDY session ends.
    lost: mpsc::Sender<()>,
}

impl Forwarder {
    async fn request_url(&self, ports: &[u16]) -> anyhow::Result<String> {
        let mut c = self.client.clone();
        let req = PortForwardRequest {
            pod_sandbox_id: self.pod.clone(),
            port: ports.iter().map(|p| i32::from(*p)).collect(),
        };
        let resp = call(
            &format!("port forward to pod {}", self.pod),
            self.t,
            c.port_forward(req),
        )
        .await?;
        Ok(resp.url)
    }

    async fn url(&self, port: u16) -> anyhow::Result<String> {
        if let Some((url, at)) = self.fresh.lock().await.take() {
            if at.elapsed() < URL_FRESH {
                return Ok(url);
            }
        }
        self.request_url(&[port]).await
    }

    async fn open(&self, port: u16) -> anyhow::Result<ForwardedConn> {
        let try_ws = match self.transport {
            TransportChoice::Spdy => false,
            TransportChoice::Websocket => true,
            TransportChoice::Auto => !self.ws_refused.load(Ordering::Relaxed),
        };
        if try_ws {
            let url = self.url(port).await?;
            match websocket_port_forward_with(&url, &[port], &self.tls).await {
                Ok(mut conns) => {
                    return conns.pop().context("the WebSocket forwarded no connection")
                }
                Err(e) if e.is_upgrade_refused() && self.transport == TransportChoice::Auto => {
                    tracing::debug!("{e}; forwarding over SPDY");
                    self.ws_refused.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e).context(format!("WebSocket to {url}")),
            }
        }
        let session = self.spdy_session(port).await?;
        Ok(session.open(port).await?)
    }

    /// The one SPDY session, made on first use.
    async fn spdy_session(&self, port: u16) -> anyhow::Result<Arc<SpdyPortForward>> {
        let mut slot = self.spdy.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let url = self.url(port).await?;
        let session = Arc::new(
            SpdyPortForward::connect_with(&url, &self.tls)
                .await
                .with_context(|| format!("SPDY to {url}"))?,
        );
        let (watched, lost) = (session.clone(), self.lost.clone());
        tokio::spawn(async move {
            watched.closed().await;
            let _ = lost.send(()).await;
        });
        *slot = Some(session.clone());
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs() {
        let p = |s| parse_port(s).unwrap();
        assert_eq!(
            p("8080"),
            PortSpec {
                local: 8080,
                remote: 8080
            }
        );
        assert_eq!(
            p("5000:80"),
            PortSpec {
                local: 5000,
                remote: 80
            }
        );
        assert_eq!(
            p(":80"),
            PortSpec {
                local: 0,
                remote: 80
            }
        );
        for bad in ["", "x", "0", "80:0", "1:2:3", "70000", "-1:80"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }
}
