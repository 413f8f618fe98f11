//! The end of a WebSocket connection we close: the client's answer to our Close, then a clean
//! shutdown of the socket (over TLS, a close_notify).

use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long a client has to answer our Close before the connection is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Sends our Close with the Normal Closure code (1000): Go's clients read any other close,
/// a bare one included, as an error instead of the end of the streams.
pub async fn close_normally<S>(sink: &mut SplitSink<WebSocketStream<S>, Message>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
}

/// Ends a connection whose Close we have sent: once the reading side is done (the client
/// answered), the socket is shut down cleanly, which over TLS sends close_notify.
pub async fn finish<S>(
    sink: SplitSink<WebSocketStream<S>, Message>,
    mut reader: JoinHandle<SplitStream<WebSocketStream<S>>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(CLOSE_WAIT, &mut reader).await {
        Ok(Ok(source)) => {
            if let Ok(mut ws) = sink.reunite(source) {
                let _ = ws.get_mut().shutdown().await;
            }
        }
        _ => reader.abort(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::Role;

    #[tokio::test]
    async fn the_close_names_a_normal_closure() {
        let (a, b) = tokio::io::duplex(1024);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let (mut sink, _source) = server.split();
        close_normally(&mut sink).await;
        match client.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
            other => panic!("expected a normal close, got {other:?}"),
        }
    }
}
