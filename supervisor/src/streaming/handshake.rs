//! Choosing the transport and subprotocol of an upgrade request: WebSocket (RFC 6455, the
//! subprotocol in `Sec-WebSocket-Protocol`) or SPDY/3.1 (kubelet's `X-Stream-Protocol-Version`
//! handshake).

use hyper::header::{HeaderMap, HeaderValue, CONNECTION, SEC_WEBSOCKET_KEY, UPGRADE};

pub const STREAM_PROTOCOL: &str = "x-stream-protocol-version";

#[derive(Debug, PartialEq, Eq)]
pub enum Transport {
    WebSocket { protocol: String },
    Spdy { protocol: String },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("upgrade request required (SPDY/3.1 or websocket)")]
    NotUpgrade,
    #[error("unable to negotiate protocol: client supports {client:?}, server accepts {server:?}")]
    NoCommonProtocol {
        client: Vec<String>,
        server: Vec<String>,
    },
}

fn values<'a>(
    headers: &'a HeaderMap,
    name: impl hyper::header::AsHeaderName,
) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v: &HeaderValue| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn has_token(headers: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    values(headers, name).any(|v| v.eq_ignore_ascii_case(token))
}

/// The transport and subprotocol for a request, given the subprotocols each transport serves
/// on this endpoint (`""` in `ws` admits a client that names none).
pub fn negotiate(
    headers: &HeaderMap,
    ws: &[&str],
    spdy: &[&str],
) -> Result<Transport, HandshakeError> {
    if !has_token(headers, CONNECTION, "upgrade") {
        return Err(HandshakeError::NotUpgrade);
    }
    if has_token(headers, UPGRADE, "websocket") && headers.contains_key(SEC_WEBSOCKET_KEY) {
        let offered: Vec<String> = values(headers, "sec-websocket-protocol").collect();
        if offered.is_empty() && ws.contains(&"") {
            return Ok(Transport::WebSocket {
                protocol: String::new(),
            });
        }
        return match offered.iter().find(|p| ws.contains(&p.as_str())) {
            Some(p) => Ok(Transport::WebSocket {
                protocol: p.clone(),
            }),
            None => Err(no_common(offered, ws)),
        };
    }
    if has_token(headers, UPGRADE, "SPDY/3.1") {
        let offered: Vec<String> = values(headers, STREAM_PROTOCOL).collect();
        // kubelet: a client that names no protocol gets the oldest one.
        if offered.is_empty() {
            return Ok(Transport::Spdy {
                protocol: String::new(),
            });
        }
        // The server's preference decides, as in kubelet's handshake.
        return match spdy.iter().find(|p| offered.iter().any(|o| o == *p)) {
            Some(p) => Ok(Transport::Spdy {
                protocol: p.to_string(),
            }),
            None => Err(no_common(offered, spdy)),
        };
    }
    Err(HandshakeError::NotUpgrade)
}

fn no_common(client: Vec<String>, server: &[&str]) -> HandshakeError {
    HandshakeError::NoCommonProtocol {
        client,
        server: server
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| p.to_string())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn websocket_takes_the_clients_first_known_protocol() {
        let h = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            (
                "sec-websocket-protocol",
                "v9.channel.k8s.io, v4.channel.k8s.io, channel.k8s.io",
            ),
        ]);
        assert_eq!(
            negotiate(&h, &["channel.k8s.io", "v4.channel.k8s.io"], &[]),
            Ok(Transport::WebSocket {
                protocol: "v4.channel.k8s.io".into()
            })
        );
    }

    #[test]
    fn spdy_takes_the_servers_preference_and_refuses_strangers() {
        let h = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "channel.k8s.io"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
        ]);
        assert_eq!(
            negotiate(&h, &[], &["v4.channel.k8s.io", "channel.k8s.io"]),
            Ok(Transport::Spdy {
                protocol: "v4.channel.k8s.io".into()
            })
        );
        assert!(matches!(
            negotiate(&h, &[], &["portforward.k8s.io"]),
            Err(HandshakeError::NoCommonProtocol { .. })
        ));
    }

    #[test]
    fn plain_requests_are_not_upgrades() {
        assert_eq!(
            negotiate(&headers(&[]), &[""], &[]),
            Err(HandshakeError::NotUpgrade)
        );
    }
}
