//! The end of a WebSocket connection we close: the client's answer to our Close, then a clean
//! shutdown of the socket (over TLS, a close_notify).

use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long a client has to answer our Close before the connection is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

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
