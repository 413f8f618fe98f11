//! The WebSocket channel protocol (`channel.k8s.io` and its versions): each message carries one
//! channel's bytes behind a channel byte; the base64 flavour sends text messages with the
//! channel as an ASCII digit and the payload in base64.

use base64::Engine;
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

/// The first byte of the v5 "close this channel" message (followed by the channel).
pub const STREAM_CLOSE: u8 = 255;

/// A message that does not follow the negotiated framing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ChannelError(String);

/// What a negotiated subprotocol name means for framing and for the error channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelProtocol {
    pub base64: bool,
    /// The protocol version: 1 for the unversioned names.
    pub version: u8,
}

impl ChannelProtocol {
    /// `channel.k8s.io`, `base64.channel.k8s.io`, `vN.channel.k8s.io`,
    /// `vN.base64.channel.k8s.io`; the empty name (no subprotocol) is binary v1.
    pub fn parse(name: &str) -> Option<ChannelProtocol> {
        if name.is_empty() {
            return Some(ChannelProtocol {
                base64: false,
                version: 1,
            });
        }
        let (version, rest) = match name.strip_prefix('v').and_then(|r| r.split_once('.')) {
            Some((n, rest)) => (n.parse::<u8>().ok().filter(|v| *v >= 1)?, rest),
            None => (1, name),
        };
        let base64 = match rest {
            "channel.k8s.io" => false,
            "base64.channel.k8s.io" => true,
            _ => return None,
        };
        Some(ChannelProtocol { base64, version })
    }

    /// The error channel carries a Status object (v4 on) rather than plain text.
    pub fn status_json(self) -> bool {
        self.version >= 4
    }

    /// The client may half-close a channel (v5 on).
    pub fn stream_close(self) -> bool {
        self.version >= 5
    }

    pub fn encode(self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
            text.push(char::from(b'0' + channel));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
            Message::text(text)
        } else {
            let mut frame = Vec::with_capacity(1 + data.len());
            frame.push(channel);
            frame.extend_from_slice(data);
            Message::binary(frame)
        }
    }

    /// The v5 message that closes our side of `channel` (always binary).
    pub fn close(channel: u8) -> Message {
        Message::binary(vec![STREAM_CLOSE, channel])
    }

    /// A received message as (channel, payload); `None` for control messages and for
    /// messages without a channel byte.
    pub fn decode(self, msg: Message) -> Result<Option<(u8, Bytes)>, ChannelError> {
        match msg {
            Message::Binary(data) => {
                if data.is_empty() {
                    return Ok(None);
                }
                Ok(Some((data[0], data.slice(1..))))
            }
            Message::Text(text) => {
                let raw = text.as_bytes();
                let Some((&first, rest)) = raw.split_first() else {
                    return Ok(None);
                };
                if !self.base64 {
                    // A binary protocol never sends text; take it as bytes all the same.
                    return Ok(Some((first, Bytes::copy_from_slice(rest))));
                }
                let channel = first
                    .checked_sub(b'0')
                    .ok_or_else(|| ChannelError(format!("bad base64 channel byte {first:#x}")))?;
                let payload = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .map_err(|e| ChannelError(format!("channel {channel}: bad base64: {e}")))?;
                Ok(Some((channel, Bytes::from(payload))))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> Option<(bool, u8)> {
        ChannelProtocol::parse(name).map(|p| (p.base64, p.version))
    }

    #[test]
    fn protocol_names() {
        assert_eq!(p("v5.channel.k8s.io"), Some((false, 5)));
        assert_eq!(p("v4.channel.k8s.io"), Some((false, 4)));
        assert_eq!(p("v4.base64.channel.k8s.io"), Some((true, 4)));
        assert_eq!(p("channel.k8s.io"), Some((false, 1)));
        assert_eq!(p("base64.channel.k8s.io"), Some((true, 1)));
        assert_eq!(p(""), Some((false, 1)));
        assert_eq!(p("v0.channel.k8s.io"), None);
        assert_eq!(p("v4."), None);
        assert_eq!(p("portforward.k8s.io"), None);
        assert_eq!(p("SPDY/3.1+portforward.k8s.io"), None);
        let v5 = ChannelProtocol::parse("v5.channel.k8s.io").unwrap();
        assert!(v5.status_json() && v5.stream_close());
        let v4 = ChannelProtocol::parse("v4.base64.channel.k8s.io").unwrap();
        assert!(v4.status_json() && !v4.stream_close());
        let v1 = ChannelProtocol::parse("base64.channel.k8s.io").unwrap();
        assert!(!v1.status_json());
    }

    #[test]
    fn binary_frames() {
        let bin = ChannelProtocol::parse("v5.channel.k8s.io").unwrap();
        let msg = bin.encode(0, b"hi");
        assert_eq!(msg, Message::binary(vec![0, b'h', b'i']));
        let (ch, data) = bin
            .decode(Message::binary(vec![1, b'o', b'k']))
            .unwrap()
            .unwrap();
        assert_eq!((ch, &data[..]), (1, &b"ok"[..]));
        // the server's empty "ready" write: a channel byte alone
        let (ch, data) = bin.decode(Message::binary(vec![2])).unwrap().unwrap();
        assert_eq!((ch, data.len()), (2, 0));
        assert_eq!(bin.decode(Message::binary(Vec::new())).unwrap(), None);
        assert_eq!(bin.decode(Message::Ping(Bytes::new())).unwrap(), None);
        assert_eq!(ChannelProtocol::close(0), Message::binary(vec![255u8, 0]));
    }

    #[test]
    fn base64_frames() {
        let b64 = ChannelProtocol::parse("base64.channel.k8s.io").unwrap();
        assert_eq!(b64.encode(0, b"hello"), Message::text("0aGVsbG8="));
        assert_eq!(b64.encode(4, b""), Message::text("4"));
        let (ch, data) = b64.decode(Message::text("1aGVsbG8=")).unwrap().unwrap();
        assert_eq!((ch, &data[..]), (1, &b"hello"[..]));
        let (ch, data) = b64.decode(Message::text("3")).unwrap().unwrap();
        assert_eq!((ch, data.len()), (3, 0));
        assert!(b64.decode(Message::text("1!!!")).is_err());
        assert!(b64.decode(Message::text("\u{1}abc")).is_err());
        // a binary message still carries a raw channel byte
        let (ch, data) = b64.decode(Message::binary(vec![1, 7])).unwrap().unwrap();
        assert_eq!((ch, &data[..]), (1, &[7u8][..]));
    }
}
