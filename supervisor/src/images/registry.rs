//! A small client of the registry v2 API: resolve a reference to a manifest, fetch manifests,
//! configs and layer blobs, trying the configured hosts in order and answering the
//! registry's auth challenges (Basic, or Bearer tokens from its token service).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use reqwest::{Client, Response, StatusCode};

use super::auth::{parse_challenge, Challenge, Credentials, TokenResponse};
use super::hosts::{Host, HostsConfig, HostsError};
use super::manifest::{Descriptor, ACCEPT as MANIFEST_ACCEPT};
use super::reference::Reference;
use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Hosts(#[from] HostsError),
    #[error("{what} not found in any registry host ({tried})")]
    NotFound { what: String, tried: String },
    #[error("{url}: the registry refused the credentials (401 Unauthorized){detail}")]
    Unauthorized { url: String, detail: String },
    #[error("{url}: registry answered {status}{detail}")]
    Status {
        url: String,
        status: StatusCode,
        detail: String,
    },
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url}: no answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("{what} is larger than {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("{what}: digest mismatch, expected {expected}, got {actual}")]
    Digest {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("cannot set up TLS for {host}: {message}")]
    Tls { host: String, message: String },
    #[error("no registry host of {registry} may {capability}")]
    NoHost {
        registry: String,
        capability: &'static str,
    },
}

impl RegistryError {
    fn transport(url: &str, e: reqwest::Error) -> RegistryError {
        // reqwest's Display hides the cause ("error sending request"): add the chain.
        let mut message = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            message.push_str(": ");
            message.push_str(&s.to_string());
            src = s.source();
        }
        RegistryError::Transport {
            url: url.into(),
            message,
        }
    }
}

/// Builds and caches one HTTP client per TLS setup.
pub struct RegistryClient {
    hosts: HostsConfig,
    timeout: Duration,
    max_manifest: u64,
    clients: Mutex<HashMap<String, Client>>,
}

impl RegistryClient {
    pub fn new(hosts: HostsConfig, timeout: Duration, max_manifest: u64) -> RegistryClient {
        RegistryClient {
            hosts,
            timeout,
            max_manifest,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client_for(&self, host: &Host) -> Result<Client, RegistryError> {
        let key = if host.custom_tls() {
            format!("{:?}{:?}{:?}", host.ca, host.client, host.skip_verify)
        } else {
            String::new()
        };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let tls = |message: String| RegistryError::Tls {
            host: host.host.clone(),
            message,
        };
        let mut b = Client::builder()
            .use_rustls_tls()
            .connect_timeout(self.timeout)
            .read_timeout(self.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("limpetd/", env!("CARGO_PKG_VERSION")));
        for ca in &host.ca {
            let pem =
                std::fs::read(ca).map_err(|e| tls(format!("read CA {}: {e}", ca.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| tls(format!("CA {}: {e}", ca.display())))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        for (cert, key) in &host.client {
            let mut pem =
                std::fs::read(cert).map_err(|e| tls(format!("read {}: {e}", cert.display())))?;
            if !key.as_os_str().is_empty() {
                pem.push(b'\n');
                pem.extend(
                    std::fs::read(key).map_err(|e| tls(format!("read {}: {e}", key.display())))?,
                );
            }
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| tls(format!("client certificate {}: {e}", cert.display())))?;
            b = b.identity(id);
        }
        if host.skip_verify == Some(true) {
            b = b.danger_accept_invalid_certs(true);
        }
        let client = b.build().map_err(|e| tls(e.to_string()))?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Starts a session for one reference with one set of credentials.
    pub fn session(
        &self,
        reference: &Reference,
        creds: Credentials,
    ) -> Result<Session<'_>, RegistryError> {
        let hosts = self
            .hosts
            .hosts(&reference.registry)?
            .into_iter()
            .map(|h| Ok((self.client_for(&h)?, h)))
            .collect::<Result<Vec<_>, RegistryError>>()?;
        Ok(Session {
            registry: self,
            reference: reference.clone(),
            hosts,
            creds,
            auth: Mutex::new(HashMap::new()),
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// The resolved top of a reference.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

pub struct Session<'a> {
    registry: &'a RegistryClient,
    reference: Reference,
    hosts: Vec<(Client, Host)>,
    creds: Credentials,
    /// Authorization header value per host, once a challenge was answered.
    auth: Mutex<HashMap<String, String>>,
}

enum Capability {
    Resolve,
    Pull,
}

impl Session<'_> {
    /// How long the registry may stay silent.
    pub fn timeout(&self) -> Duration {
        self.registry.timeout
    }

    /// Resolves the reference (tag or digest) to its manifest or index, verified.
    pub async fn resolve(&self) -> Result<Resolved, RegistryError> {
        let object = self.reference.object();
        let what = format!("image {}", self.reference);
        let resp = self
            .get_first(
                Capability::Resolve,
                &format!("manifests/{object}"),
                MANIFEST_ACCEPT,
                &what,
            )
            .await?;
        let media_type = header(&resp, CONTENT_TYPE);
        let bytes = self.read_limited(resp, &what).await?;
        let digest = Digest::of(&bytes);
        if let Some(pinned) = &self.reference.digest {
            if &digest != pinned {
                return Err(RegistryError::Digest {
                    what,
                    expected: pinned.clone(),
                    actual: digest,
                });
            }
        }
        Ok(Resolved {
            digest,
            media_type,
            bytes,
        })
    }

    /// Fetches a manifest or config by descriptor, verified against its digest and size.
    pub async fn fetch_small(
        &self,
        desc: &Descriptor,
        manifest: bool,
    ) -> Result<Vec<u8>, RegistryError> {
        let limit = self.registry.max_manifest;
        let what = format!(
            "{} {}",
            if manifest { "manifest" } else { "config" },
            desc.digest
        );
        if desc.size > limit {
            return Err(RegistryError::TooLarge { what, limit });
        }
        let path = if manifest {
            format!("manifests/{}", desc.digest)
        } else {
            format!("blobs/{}", desc.digest)
        };
        let resp = self
            .get_first(Capability::Pull, &path, MANIFEST_ACCEPT, &what)
            .await?;
        let bytes = self.read_limited(resp, &what).await?;
        let actual = Digest::of(&bytes);
        if actual != desc.digest {
            return Err(RegistryError::Digest {
                what,
                expected: desc.digest.clone(),
                actual,
            });
        }
        if bytes.len() as u64 != desc.size {
            return Err(RegistryError::Status {
                url: what,
                status: StatusCode::OK,
                detail: format!(
                    ": {} bytes where the descriptor says {}",
                    bytes.len(),
                    desc.size
                ),
            });
        }
        Ok(bytes)
    }

    /// Opens a layer blob; the caller streams and verifies the body.
    pub async fn open_blob(&self, desc: &Descriptor) -> Result<Response, RegistryError> {
        let what = format!("layer {}", desc.digest);
        self.get_first(
            Capability::Pull,
            &format!("blobs/{}", desc.digest),
            "*/*",
            &what,
        )
        .await
    }

    /// GETs `path` from the first host with `cap` that has it.
    async fn get_first(
        &self,
        cap: Capability,
        path: &str,
        accept: &str,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let mut tried = Vec::new();
        let mut last_err = None;
        for (client, host) in &self.hosts {
            let ok = match cap {
                Capability::Resolve => host.capabilities.resolve,
                Capability::Pull => host.capabilities.pull,
            };
            if !ok {
                continue;
            }
            let mut url = format!("{}/{}/{}", host.base(), self.reference.repository, path);
            if host.host != self.reference.registry {
                url.push_str(&format!("?ns={}", self.reference.registry));
            }
            tried.push(host.host.clone());
            match self.get(client, host, &url, accept).await {
                Ok(resp) => return Ok(resp),
                Err(RegistryError::Status {
                    status: StatusCode::NOT_FOUND,
                    ..
                }) => {}
                Err(e) => {
                    tracing::debug!(host = %host.host, error = %e, "registry host failed, trying the next");
                    last_err = Some(e);
                }
            }
        }
        if tried.is_empty() {
            let capability = match cap {
                Capability::Resolve => "resolve",
                Capability::Pull => "pull",
            };
            return Err(RegistryError::NoHost {
                registry: self.reference.registry.clone(),
                capability,
            });
        }
        Err(last_err.unwrap_or_else(|| RegistryError::NotFound {
            what: what.into(),
            tried: tried.join(", "),
        }))
    }

    async fn get(
        &self,
        client: &Client,
        host: &Host,
        url: &str,
        accept: &str,
    ) -> Result<Response, RegistryError> {
        let creds_ok =
            self.creds.applies_to(&host.host) || self.creds.applies_to(&self.reference.registry);
        let mut answered = false;
        loop {
            let mut headers = HeaderMap::new();
            for (k, v) in &host.headers {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    headers.append(k, v);
                }
            }
            headers.insert(
                ACCEPT,
                HeaderValue::from_str(accept).unwrap_or(HeaderValue::from_static("*/*")),
            );
            let cached = self
                .auth
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&host.host)
                .cloned();
            let auth = cached.or_else(|| {
                (creds_ok && !self.creds.registry_token.is_empty())
                    .then(|| format!("Bearer {}", self.creds.registry_token))
            });
            if let Some(a) = &auth {
                if let Ok(v) = HeaderValue::from_str(a) {
                    headers.insert(AUTHORIZATION, v);
                }
            }
            let resp = self.send(client.get(url).headers(headers), url).await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !answered {
                answered = true;
                let challenge = header(&resp, WWW_AUTHENTICATE);
                let value = self.answer(client, host, &challenge, url, creds_ok).await?;
                self.auth
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(host.host.clone(), value);
                continue;
            }
            if status.is_success() {
                return Ok(resp);
            }
            let detail = error_detail(resp).await;
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(RegistryError::Unauthorized {
                    url: url.into(),
                    detail,
                });
            }
            return Err(RegistryError::Status {
                url: url.into(),
                status,
                detail,
            });
        }
    }

    /// The Authorization value that answers a 401 challenge.
    async fn answer(
        &self,
        client: &Client,
        host: &Host,
        challenge: &str,
        url: &str,
        creds_ok: bool,
    ) -> Result<String, RegistryError> {
        let unauthorized = |detail: &str| RegistryError::Unauthorized {
            url: url.into(),
            detail: detail.into(),
        };
        match parse_challenge(challenge) {
            Some(Challenge::Basic) if creds_ok && !self.creds.username.is_empty() => {
                Ok(self.creds.basic())
            }
            Some(Challenge::Basic) => Err(unauthorized(
                ": the registry wants a username and password (none given)",
            )),
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope
                    .unwrap_or_else(|| format!("repository:{}:pull", self.reference.repository));
                let mut req = if creds_ok && !self.creds.identity_token.is_empty() {
                    let mut form = vec![
                        ("grant_type", "refresh_token".to_string()),
                        ("refresh_token", self.creds.identity_token.clone()),
                        ("client_id", "limpetd".to_string()),
                        ("scope", scope.clone()),
                    ];
                    if let Some(s) = &service {
                        form.push(("service", s.clone()));
                    }
                    client.post(&realm).form(&form)
                } else {
                    let mut q = vec![("scope", scope.clone())];
                    if let Some(s) = &service {
                        q.push(("service", s.clone()));
                    }
                    let r = client.get(&realm).query(&q);
                    if creds_ok && !self.creds.username.is_empty() {
                        r.basic_auth(&self.creds.username, Some(&self.creds.password))
                    } else {
                        r
                    }
                };
                for (k, v) in &host.headers {
                    req = req.header(k, v);
                }
                let resp = self.send(req, &realm).await?;
                if !resp.status().is_success() {
                    let status = resp.status();
                    let detail = error_detail(resp).await;
                    return Err(unauthorized(&format!(
                        ": token service {realm} answered {status}{detail}"
                    )));
                }
                let bytes = self.read_limited(resp, "token").await?;
                let token: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| {
                    unauthorized(&format!(": token service answer is not JSON: {e}"))
                })?;
                let t = token
                    .bearer()
                    .ok_or_else(|| unauthorized(": token service gave no token"))?;
                Ok(format!("Bearer {t}"))
            }
            None => Err(unauthorized(&format!(
                ": unsupported challenge {challenge:?}"
            ))),
        }
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<Response, RegistryError> {
        let timeout = self.registry.timeout;
        match tokio::time::timeout(timeout, req.send()).await {
            Err(_) => Err(RegistryError::Timeout {
                url: url.into(),
                secs: timeout.as_secs(),
            }),
            Ok(Err(e)) if e.is_timeout() => Err(RegistryError::Timeout {
                url: url.into(),
                secs: timeout.as_secs(),
            }),
            Ok(Err(e)) => Err(RegistryError::transport(url, e)),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Reads a whole small body, refusing more than the manifest limit.
    async fn read_limited(&self, resp: Response, what: &str) -> Result<Vec<u8>, RegistryError> {
        let limit = self.registry.max_manifest;
        let url = resp.url().to_string();
        if resp.content_length().unwrap_or(0) > limit {
            return Err(RegistryError::TooLarge {
                what: what.into(),
                limit,
            });
        }
        let timeout = self.registry.timeout;
        let mut out = Vec::new();
        let mut body = resp.bytes_stream();
        loop {
            let next = tokio::time::timeout(timeout, body.next()).await;
            match next {
                Err(_) => {
                    return Err(RegistryError::Timeout {
                        url,
                        secs: timeout.as_secs(),
                    })
                }
                Ok(None) => return Ok(out),
                Ok(Some(Err(e))) if e.is_timeout() => {
                    return Err(RegistryError::Timeout {
                        url,
                        secs: timeout.as_secs(),
                    })
                }
                Ok(Some(Err(e))) => return Err(RegistryError::transport(&url, e)),
                Ok(Some(Ok(chunk))) => {
                    if out.len() as u64 + chunk.len() as u64 > limit {
                        return Err(RegistryError::TooLarge {
                            what: what.into(),
                            limit,
                        });
                    }
                    out.extend_from_slice(&chunk);
                }
            }
        }
    }
}

fn header(resp: &Response, name: HeaderName) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The registry's own error text (its JSON `errors`), shortened.
async fn error_detail(resp: Response) -> String {
    let text = tokio::time::timeout(Duration::from_secs(2), resp.text())
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let text: String = text.trim().chars().take(300).collect();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}
