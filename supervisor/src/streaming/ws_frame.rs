//! Kubernetes' WebSocket channel framing: each message is one channel's data, the channel
//! number first. `channel.k8s.io` protocols send it as a byte before binary data;
//! `base64.channel.k8s.io` ones as an ASCII digit before base64 text.

use std::time::Duration;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long a client has to answer our Close before the connection is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// `v5.channel.k8s.io`: a message on this channel closes the channel named by its byte.
pub const CLOSE_CHANNEL: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub base64: bool,
}

impl Framing {
    /// The framing a negotiated subprotocol uses.
    pub fn of(protocol: &str) -> Framing {
        Framing {
            base64: protocol.contains("base64."),
        }
    }

    pub fn encode(self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
            text.push(char::from(b'0' + channel));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
            Message::text(text)
        } else {
            let mut buf = BytesMut::with_capacity(1 + data.len());
            buf.put_u8(channel);
            buf.put_slice(data);
            Message::Binary(buf.freeze())
        }
    }

    /// The channel and data of a data message; None for control messages, empty messages
    /// and malformed ones (which kubelet drops too).
    pub fn decode(self, message: Message) -> Option<(u8, Bytes)> {
        match message {
            Message::Binary(b) if !self.base64 && !b.is_empty() => Some((b[0], b.slice(1..))),
            Message::Text(t) if self.base64 && !t.is_empty() => {
                let s = t.as_str();
                let channel = s.as_bytes()[0].checked_sub(b'0')?;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(&s[1..])
                    .ok()?;
                Some((channel, Bytes::from(data)))
            }
            _ => None,
        }
    }
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

    #[test]
    fn binary_frames_lead_with_the_channel_byte() {
        let f = Framing::of("v4.channel.k8s.io");
        let m = f.encode(2, b"err");
        assert_eq!(m, Message::Binary(Bytes::from_static(b"\x02err")));
        assert_eq!(f.decode(m), Some((2, Bytes::from_static(b"err"))));
    }

    #[test]
    fn base64_frames_lead_with_a_digit() {
        let f = Framing::of("base64.channel.k8s.io");
        let m = f.encode(1, b"hi");
        assert_eq!(m, Message::text("1aGk="));
        assert_eq!(f.decode(m), Some((1, Bytes::from_static(b"hi"))));
        assert_eq!(f.decode(Message::text("1!!")), None);
        assert_eq!(
            f.decode(Message::Binary(Bytes::from_static(b"\x01x"))),
            None
        );
    }

    #[test]
    fn empty_messages_carry_no_channel() {
        let f = Framing::of("channel.k8s.io");
        assert_eq!(f.decode(Message::Binary(Bytes::new())), None);
    }
}
