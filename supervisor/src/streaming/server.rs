//! The HTTP(S) server behind the URLs: `/exec/<token>`, `/attach/<token>` and
//! `/portforward/<token>`, each upgraded to WebSocket or SPDY/3.1. A token that is unknown,
//! used or expired gets 404 and nothing runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::WebSocketStream;

use super::handshake::{negotiate, HandshakeError, Transport, STREAM_PROTOCOL};
use super::io::Outcome;
use super::spdy::{Role, Session};
use super::tokens::{Request as Pending, Tokens};
use super::ws_command::Wanted;
use super::{spdy_command, spdy_port_forward, ws_command, ws_port_forward};
use crate::runtime::Runtime;

type Body = Full<Bytes>;

/// Client messages carry keystrokes, resizes and forwarded bytes: a megabyte is plenty.
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// What each connection needs.
pub struct Context {
    pub tokens: Arc<Tokens>,
    pub runtime: Arc<Runtime>,
    pub creation_timeout: Duration,
}

/// Accepts connections until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Arc<Context>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "streaming accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (ctx, tls) = (ctx.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => connection(TokioIo::new(stream), ctx, peer).await,
                    Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake"),
                },
                None => connection(TokioIo::new(tcp), ctx, peer).await,
            }
        });
    }
}

async fn connection<I>(io: I, ctx: Arc<Context>, peer: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, std::convert::Infallible>(route(req, ctx)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "streaming connection");
    }
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn route(req: Request<Incoming>, ctx: Arc<Context>) -> Response<Body> {
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let path = req.uri().path().trim_end_matches('/');
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (Some(kind), Some(token)) = (parts.next(), parts.next()) else {
        return plain(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let pending = match (kind, ctx.tokens.consume(token)) {
        (_, None) => return plain(StatusCode::NOT_FOUND, "404 page not found\n"),
        ("exec", Some(p @ Pending::Exec(_)))
        | ("attach", Some(p @ Pending::Attach(_)))
        | ("portforward", Some(p @ Pending::PortForward(_))) => p,
        _ => return plain(StatusCode::NOT_FOUND, "404 page not found\n"),
    };
    let (ws_protocols, spdy_protocols): (Vec<&str>, &[&str]) = match &pending {
        Pending::PortForward(_) => {
            let mut ws = vec![""];
            ws.extend_from_slice(ws_port_forward::PROTOCOLS);
            (ws, &[spdy_port_forward::PROTOCOL])
        }
        _ => {
            let mut ws = vec![""];
            ws.extend_from_slice(ws_command::PROTOCOLS);
            (ws, spdy_command::PROTOCOLS)
        }
    };
    let transport = match negotiate(req.headers(), &ws_protocols, spdy_protocols) {
        Ok(t) => t,
        Err(e @ HandshakeError::NotUpgrade) => {
            return plain(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
        Err(e @ HandshakeError::NoCommonProtocol { .. }) => {
            let mut r = plain(StatusCode::FORBIDDEN, format!("unable to upgrade: {e}\n"));
            if let Ok(v) = HeaderValue::from_str(&spdy_protocols.join(", ")) {
                r.headers_mut()
                    .insert("x-accepted-stream-protocol-versions", v);
            }
            return r;
        }
    };
    // The port list of a WebSocket port-forward comes from the query.
    let ports = match (&pending, &transport) {
        (Pending::PortForward(_), Transport::WebSocket { .. }) => {
            match ws_port_forward::ports(req.uri().query()) {
                Ok(p) => p,
                Err(e) => return plain(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        }
        _ => Vec::new(),
    };

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    match &transport {
        Transport::WebSocket { protocol } => {
            h.insert(UPGRADE, HeaderValue::from_static("websocket"));
            let key = req
                .headers()
                .get(SEC_WEBSOCKET_KEY)
                .map(|k| k.as_bytes())
                .unwrap_or_default();
            if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key)) {
                h.insert(SEC_WEBSOCKET_ACCEPT, v);
            }
            if !protocol.is_empty() {
                if let Ok(v) = HeaderValue::from_str(protocol) {
                    h.insert(SEC_WEBSOCKET_PROTOCOL, v);
                }
            }
        }
        Transport::Spdy { protocol } => {
            h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            if let Ok(v) = HeaderValue::from_str(protocol) {
                h.insert(STREAM_PROTOCOL, v);
            }
        }
    }
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => run(TokioIo::new(upgraded), transport, pending, ports, ctx).await,
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    response
}

async fn run(
    io: TokioIo<hyper::upgrade::Upgraded>,
    transport: Transport,
    pending: Pending,
    ports: Vec<u16>,
    ctx: Arc<Context>,
) {
    let runtime = ctx.runtime.clone();
    match (transport, pending) {
        (Transport::WebSocket { protocol }, Pending::PortForward(req)) => {
            let ws = WebSocketStream::from_raw_socket(io, WsRole::Server, Some(ws_config())).await;
            match runtime.pod_dialer(&req.pod_sandbox_id) {
                Ok(dialer) => ws_port_forward::serve(ws, &protocol, ports, dialer).await,
                Err(e) => tracing::debug!(error = %e, "port-forward"),
            }
        }
        (Transport::Spdy { .. }, Pending::PortForward(req)) => {
            let (session, incoming) = Session::new(io, Role::Server);
            match runtime.pod_dialer(&req.pod_sandbox_id) {
                Ok(dialer) => {
                    spdy_port_forward::serve(session, incoming, dialer, ctx.creation_timeout).await
                }
                Err(e) => {
                    tracing::debug!(error = %e, "port-forward");
                    session.close().await;
                }
            }
        }
        (transport, pending) => {
            let wanted = match &pending {
                Pending::Exec(r) => Wanted {
                    stdin: r.stdin,
                    stdout: r.stdout,
                    stderr: r.stderr,
                    tty: r.tty,
                },
                Pending::Attach(r) => Wanted {
                    stdin: r.stdin,
                    stdout: r.stdout,
                    stderr: r.stderr,
                    tty: r.tty,
                },
                Pending::PortForward(_) => return,
            };
            let backend = |io| async move {
                let outcome = match pending {
                    Pending::Exec(r) => runtime.exec_stream(r, io).await,
                    Pending::Attach(r) => runtime.attach(r, io).await,
                    Pending::PortForward(_) => Ok(Outcome::Success),
                };
                outcome.unwrap_or_else(|e| Outcome::Failed(format!("Internal error occurred: {e}")))
            };
            match transport {
                Transport::WebSocket { protocol } => {
                    let ws =
                        WebSocketStream::from_raw_socket(io, WsRole::Server, Some(ws_config()))
                            .await;
                    ws_command::serve(ws, &protocol, wanted, backend).await
                }
                Transport::Spdy { protocol } => {
                    let (session, incoming) = Session::new(io, Role::Server);
                    spdy_command::serve(
                        session,
                        incoming,
                        &protocol,
                        wanted,
                        ctx.creation_timeout,
                        backend,
                    )
                    .await
                }
            }
        }
    }
}
