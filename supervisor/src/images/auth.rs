//! Registry credentials from a CRI `AuthConfig`, and the `WWW-Authenticate` challenges that
//! say how to use them (Basic, or Bearer through a token service).

use base64::Engine as _;

/// Credentials for one pull. Never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// OAuth2 refresh token, traded at the token service.
    pub identity_token: String,
    /// A bearer token sent as is.
    pub registry_token: String,
    /// When set, the credentials are for this registry only.
    pub server_address: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid auth config: {0}")]
pub struct AuthError(pub &'static str);

impl Credentials {
    /// From the fields of a CRI `AuthConfig` (`auth` is base64 of `user:password`).
    pub fn new(
        username: &str,
        password: &str,
        auth: &str,
        server_address: &str,
        identity_token: &str,
        registry_token: &str,
    ) -> Result<Credentials, AuthError> {
        let mut c = Credentials {
            username: username.into(),
            password: password.into(),
            identity_token: identity_token.into(),
            registry_token: registry_token.into(),
            server_address: server_address.into(),
        };
        if !auth.is_empty() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| AuthError("`auth` is not base64"))?;
            let text = String::from_utf8(raw).map_err(|_| AuthError("`auth` is not UTF-8"))?;
            let (u, p) = text
                .split_once(':')
                .ok_or(AuthError("`auth` is not user:password"))?;
            c.username = u.into();
            c.password = p.into();
        }
        Ok(c)
    }

    pub fn is_anonymous(&self) -> bool {
        self.username.is_empty() && self.identity_token.is_empty() && self.registry_token.is_empty()
    }

    /// Whether these credentials may be sent to `host` (host[:port]).
    pub fn applies_to(&self, host: &str) -> bool {
        if self.server_address.is_empty() {
            return true;
        }
        let addr = self.server_address.as_str();
        let addr = addr.split_once("://").map(|(_, r)| r).unwrap_or(addr);
        let addr = addr.split('/').next().unwrap_or(addr);
        addr == host
            || (addr == "docker.io" || addr == "index.docker.io") && host == "registry-1.docker.io"
    }

    /// `Authorization: Basic …` value.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// What a 401 answer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header (one challenge; Bearer preferred when several).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let params = parse_params(params);
            let get = |k: &str| {
                params
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
            };
            Some(Challenge::Bearer {
                realm: get("realm")?,
                service: get("service"),
                scope: get("scope"),
            })
        }
        _ => None,
    }
}

/// `key="value", key2=value2` with quoted commas kept.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let mut val = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => val.push(c),
                }
            }
            (val, &q[end.min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((key, value));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// The token service's answer.
#[derive(Debug, serde::Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub access_token: String,
}

impl TokenResponse {
    pub fn bearer(&self) -> Option<&str> {
        [self.token.as_str(), self.access_token.as_str()]
            .into_iter()
            .find(|t| !t.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            parse_challenge("Basic realm=\"Registry Realm\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn decodes_auth_and_scopes_it() {
        let c =
            Credentials::new("", "", "dXNlcjpwYTpzcw==", "http://127.0.0.1:5000", "", "").unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("user", "pa:ss")
        );
        assert!(c.applies_to("127.0.0.1:5000"));
        assert!(!c.applies_to("127.0.0.1:5001"));
        assert!(Credentials::new("", "", "!!", "", "", "").is_err());
        assert!(!format!("{c:?}").contains("pa:ss"));
    }
}
