//! Single-use tokens: each `Exec`, `Attach` or `PortForward` call stores its request under a
//! random token that its URL carries; the first request to that URL takes it, later ones and
//! forged ones find nothing. Tokens expire after a minute, as kubelet's do.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use limpet_protos::cri::v1;

use crate::runtime::ids::random_bytes;

pub const TTL: Duration = Duration::from_secs(60);
/// Requests waiting for their client at once; more is a sign of a client gone wrong.
const MAX_IN_FLIGHT: usize = 1000;
const TOKEN_BYTES: usize = 24;

#[derive(Debug, Clone)]
pub enum Request {
    Exec(v1::ExecRequest),
    Attach(v1::AttachRequest),
    PortForward(v1::PortForwardRequest),
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("too many streaming requests in flight ({MAX_IN_FLIGHT})")]
    TooMany,
    #[error("no randomness for a token: {0}")]
    Random(std::io::Error),
}

#[derive(Default)]
pub struct Tokens {
    pending: Mutex<HashMap<String, (Instant, Request)>>,
}

impl Tokens {
    pub fn insert(&self, request: Request) -> Result<String, TokenError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        // No fallback here: a token must not be guessable.
        random_bytes(&mut bytes).map_err(TokenError::Random)?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, (at, _)| now.duration_since(*at) < TTL);
        if pending.len() >= MAX_IN_FLIGHT {
            return Err(TokenError::TooMany);
        }
        pending.insert(token.clone(), (now, request));
        Ok(token)
    }

    /// Takes the request stored under `token`, if it is there and fresh.
    pub fn consume(&self, token: &str) -> Option<Request> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (at, request) = pending.remove(token)?;
        (at.elapsed() < TTL).then_some(request)
    }

    #[cfg(test)]
    fn age(&self, token: &str, by: Duration) {
        let mut pending = self.pending.lock().unwrap();
        if let Some((at, _)) = pending.get_mut(token) {
            *at -= by;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> Request {
        Request::Exec(v1::ExecRequest {
            container_id: "c".into(),
            ..Default::default()
        })
    }

    #[test]
    fn a_token_is_used_once() {
        let t = Tokens::default();
        let token = t.insert(exec()).unwrap();
        assert!(matches!(t.consume(&token), Some(Request::Exec(_))));
        assert!(t.consume(&token).is_none());
    }

    #[test]
    fn forged_and_expired_tokens_find_nothing() {
        let t = Tokens::default();
        let token = t.insert(exec()).unwrap();
        assert!(t.consume("AAAAAAAA").is_none());
        t.age(&token, TTL);
        assert!(t.consume(&token).is_none());
    }

    #[test]
    fn tokens_differ_and_are_url_safe() {
        let t = Tokens::default();
        let (a, b) = (t.insert(exec()).unwrap(), t.insert(exec()).unwrap());
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
