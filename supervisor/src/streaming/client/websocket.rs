//! Opening a WebSocket to a streaming URL and negotiating the channel protocol.

use futures::stream::{SplitStream, StreamExt};
use futures::SinkExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::connect::{self, BoxIo};
use super::target::Target;
use super::{ClientError, ClientTls, Transport};
use crate::streaming::ws_channel::ChannelProtocol;

/// How many outgoing messages may queue before senders wait.
const SEND_QUEUE: usize = 16;
/// How much of a refusal's body goes into the error.
const MAX_REFUSAL_TEXT: usize = 512;

pub(crate) type WsStream = WebSocketStream<BoxIo>;

pub(crate) struct WsConn {
    pub stream: WsStream,
    pub protocol: ChannelProtocol,
    /// The subprotocol's name as the server chose it ("" for none).
    pub name: String,
}

/// Upgrades `url` to a WebSocket offering `protocols` (most preferred first).
pub(crate) async fn connect(
    url: &str,
    protocols: &[&str],
    tls: &ClientTls,
) -> Result<WsConn, ClientError> {
    let target = Target::parse(url)?;
    let io = connect::connect(&target, tls).await?;
    let mut request = target.ws_url().into_client_request()?;
    if !protocols.is_empty() {
        let offer =
            HeaderValue::from_str(&protocols.join(", ")).map_err(|_| ClientError::Negotiation {
                transport: Transport::WebSocket,
                reason: format!("protocol names {protocols:?} are not a valid header"),
            })?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", offer);
    }
    let (stream, response) = match tokio_tungstenite::client_async(request, io).await {
        Ok(ok) => ok,
        Err(WsError::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(MAX_REFUSAL_TEXT)]).into_owned())
                .unwrap_or_default();
            let status = response.status();
            let message = match body.trim() {
                "" => status.canonical_reason().unwrap_or("").to_string(),
                text => text.to_string(),
            };
            return Err(ClientError::UpgradeRefused {
                transport: Transport::WebSocket,
                status: status.as_u16(),
                message,
            });
        }
        Err(WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(e))) => {
            return Err(ClientError::Negotiation {
                transport: Transport::WebSocket,
                reason: format!("{e} (offered {protocols:?})"),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap_or("?"))
        .unwrap_or("");
    let protocol = ChannelProtocol::parse(chosen).ok_or_else(|| ClientError::Negotiation {
        transport: Transport::WebSocket,
        reason: format!("the server chose {chosen:?}, not a channel protocol"),
    })?;
    Ok(WsConn {
        stream,
        protocol,
        name: chosen.to_string(),
    })
}

/// Splits a connection into a queue of messages to send (drained by a task of its own, so
/// that senders never block the reader) and the stream of received messages.
pub(crate) fn split(
    stream: WsStream,
) -> (mpsc::Sender<Message>, SplitStream<WsStream>, JoinHandle<()>) {
    let (mut sink, stream) = stream.split();
    let (tx, mut rx) = mpsc::channel::<Message>(SEND_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if sink.send(msg).await.is_err() {
                break;
            }
        }
    });
    (tx, stream, writer)
}

/// Whether a read error is just the end of the connection.
pub(crate) fn is_end(e: &WsError) -> bool {
    matches!(
        e,
        WsError::ConnectionClosed
            | WsError::AlreadyClosed
            | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
    )
}
