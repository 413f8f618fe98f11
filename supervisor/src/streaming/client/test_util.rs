//! Small servers and sinks for the client's tests: a WebSocket server that negotiates the
//! subprotocol as kubelet's does (the client's first offer it supports), a raw HTTP server
//! that answers one request per connection with a canned response, and a SPDY server.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::WebSocketStream;

use crate::streaming::spdy::{Incoming, Role, Session, StreamReader};

pub(crate) struct Accepted {
    pub ws: WebSocketStream<TcpStream>,
    /// The chosen subprotocol ("" for none).
    pub protocol: String,
    /// The request target, path and query.
    pub uri: String,
}

/// Serves one WebSocket connection on 127.0.0.1 with `handler`; returns the http:// URL of
/// `path` on it and the server task (join it to see the handler's assertions).
// The handshake callback's error type is tungstenite's.
#[allow(clippy::result_large_err)]
pub(crate) async fn ws_server<F, Fut>(
    supported: &'static [&'static str],
    path: &str,
    handler: F,
) -> (String, JoinHandle<()>)
where
    F: FnOnce(Accepted) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let chosen = Arc::new(Mutex::new((String::new(), String::new())));
        let seen = chosen.clone();
        let callback =
            move |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
                let offered = req
                    .headers()
                    .get("Sec-WebSocket-Protocol")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let pick = offered
                    .split(',')
                    .map(str::trim)
                    .find(|p| supported.contains(p));
                let mut seen = seen.lock().unwrap();
                seen.1 = req.uri().to_string();
                match pick {
                    Some(p) => {
                        seen.0 = p.to_string();
                        resp.headers_mut()
                            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
                        Ok(resp)
                    }
                    None if supported.is_empty() => Ok(resp),
                    None => {
                        let mut refusal = ErrorResponse::new(Some(format!(
                            "requested protocol(s) are not supported: {offered}"
                        )));
                        *refusal.status_mut() =
                            tokio_tungstenite::tungstenite::http::StatusCode::FORBIDDEN;
                        Err(refusal)
                    }
                }
            };
        let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
            return;
        };
        let (protocol, uri) = chosen.lock().unwrap().clone();
        handler(Accepted { ws, protocol, uri }).await;
    });
    (url, task)
}

/// Answers each of `responses.len()` connections' request with the next canned response;
/// the task returns the requests' heads as received.
pub(crate) async fn http_server(
    path: &str,
    responses: Vec<&'static str>,
) -> (String, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut heads = Vec::new();
        for response in responses {
            let (mut tcp, _) = listener.accept().await.unwrap();
            heads.push(read_head(&mut tcp).await);
            tcp.write_all(response.as_bytes()).await.unwrap();
            tcp.shutdown().await.ok();
        }
        heads
    });
    (url, task)
}

/// Reads a request head byte by byte, so that nothing after it is consumed.
pub(crate) async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tcp.read_u8().await.unwrap();
        head.push(b);
    }
    String::from_utf8(head).unwrap()
}

/// An AsyncWrite that collects everything, readable from its clones.
#[derive(Clone, Default)]
pub(crate) struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl AsyncWrite for SharedBuf {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Serves one SPDY upgrade on 127.0.0.1, answering 101 with `protocol` as the chosen
/// version, then runs `handler` on the server side of the session with the request head.
pub(crate) async fn spdy_server<F, Fut>(
    path: &str,
    protocol: &'static str,
    handler: F,
) -> (String, JoinHandle<()>)
where
    F: FnOnce(Session, Incoming, String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let head = read_head(&mut tcp).await;
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n\r\n"
        );
        tcp.write_all(answer.as_bytes()).await.unwrap();
        let (session, incoming) = Session::new(tcp, Role::Server);
        handler(session, incoming, head).await;
    });
    (url, task)
}

/// Reads a stream to its end.
pub(crate) async fn read_all(reader: &mut StreamReader) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(b) = reader.read().await {
        all.extend_from_slice(&b);
    }
    all
}
