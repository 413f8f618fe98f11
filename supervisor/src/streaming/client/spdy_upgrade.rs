//! The HTTP/1.1 upgrade to SPDY/3.1 (over TCP or TLS) that starts a SPDY streaming session.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{CONNECTION, HOST, UPGRADE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use super::connect;
use super::target::Target;
use super::{ClientError, ClientTls, Transport};
use crate::streaming::spdy::{Incoming, Role, Session};

const SPDY_31: &str = "SPDY/3.1";
/// One header per offered protocol, and the chosen one in the answer.
const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// How much of a refusal's body goes into the error, and how long we wait for it.
const MAX_REFUSAL_TEXT: usize = 4096;
const REFUSAL_BODY_WAIT: Duration = Duration::from_secs(5);

pub(crate) struct SpdyConn {
    pub session: Session,
    pub incoming: Incoming,
    /// The protocol the server chose ("" if it named none).
    pub protocol: String,
}

/// Upgrades `url` to SPDY/3.1 offering `protocols` (most preferred first).
pub(crate) async fn upgrade(
    url: &str,
    protocols: &[&str],
    tls: &ClientTls,
) -> Result<SpdyConn, ClientError> {
    let target = Target::parse(url)?;
    let io = connect::connect(&target, tls).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    // Drives the HTTP exchange and hands the connection over once it is upgraded.
    tokio::spawn(conn.with_upgrades());

    // POST, as kubectl and crictl send it (kubelet's server routes GET and POST alike).
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(target.path_and_query.as_str())
        .header(HOST, target.host_header.as_str())
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, SPDY_31);
    for p in protocols {
        request = request.header(PROTOCOL_HEADER, *p);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::Protocol(format!("upgrade request: {e}")))?;
    let mut response = sender.send_request(request).await?;

    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_REFUSAL_TEXT);
        let text = match tokio::time::timeout(REFUSAL_BODY_WAIT, body.collect()).await {
            Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
            _ => String::new(),
        };
        return Err(ClientError::UpgradeRefused {
            transport: Transport::Spdy,
            status: status.as_u16(),
            message: if text.is_empty() {
                status.canonical_reason().unwrap_or("").to_string()
            } else {
                text
            },
        });
    }
    let upgrade_to = response
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !upgrade_to.eq_ignore_ascii_case(SPDY_31) {
        return Err(ClientError::Negotiation {
            transport: Transport::Spdy,
            reason: format!("the server upgraded to {upgrade_to:?}, not {SPDY_31}"),
        });
    }
    let protocol = response
        .headers()
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_string();
    if !protocol.is_empty() && !protocols.contains(&protocol.as_str()) {
        return Err(ClientError::Negotiation {
            transport: Transport::Spdy,
            reason: format!("the server chose {protocol:?}, which was not offered ({protocols:?})"),
        });
    }
    let upgraded = hyper::upgrade::on(&mut response).await?;
    let (session, incoming) = Session::new(TokioIo::new(upgraded), Role::Client);
    Ok(SpdyConn {
        session,
        incoming,
        protocol,
    })
}
