//! A Bearer token service for a private `docker-registry`: the registry's `auth: token:` sends
//! clients here (its realm) and trusts the certificate made here with the openssl CLI (its
//! `rootcertbundle`). Tokens are ES256 JWTs carrying that certificate in the `x5c` header,
//! which distribution checks against the bundle before it checks the signature, `iss`,
//! `aud` (= service), `exp`/`nbf` and the `access` claims. One user may pull and push.
//!
//! `GET /token?service=…&scope=…` with that user's Basic credentials, or
//! `POST /token` with `grant_type=refresh_token` (the refresh token below) or
//! `grant_type=password`, answers `{"token", "access_token", "expires_in"}`; anything else
//! gets 401. Every request is counted.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

use crate::env::which;
use crate::error::{io_err, HarnessError, Result};

pub const SERVICE: &str = "limpet-test-registry";
pub const ISSUER: &str = "limpet-test-token-issuer";
/// What the token service answers `expires_in`, and how long its tokens live.
const LIFETIME: u64 = 300;

/// The signing key and the certificate the registry trusts.
struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// The certificate, base64 DER (the `x5c` entry).
    cert_b64: String,
}

struct Shared {
    signer: Signer,
    user: String,
    password: String,
    refresh_token: String,
    requests: AtomicUsize,
    issued: AtomicUsize,
    stop: AtomicBool,
}

/// A running token service; its thread ends on drop.
pub struct TokenServer {
    /// host:port
    pub addr: String,
    shared: Arc<Shared>,
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    /// Starts a service that gives `user`/`password` pull and push on every repository.
    pub fn start(user: &str, password: &str) -> Result<TokenServer> {
        if which("openssl").is_none() {
            return Err(HarnessError::Skip(
                "openssl is not installed (scripts/setup.sh)".into(),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("limpet-token-")
            .tempdir()
            .map_err(io_err("temp dir"))?;
        let (cert, signer) = make_signer(dir.path())?;
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind token service"))?;
        let addr = listener
            .local_addr()
            .map_err(io_err("token service addr"))?
            .to_string();
        let shared = Arc::new(Shared {
            signer,
            user: user.into(),
            password: password.into(),
            refresh_token: format!("refresh-{}", hex::encode(random_bytes::<8>())),
            requests: AtomicUsize::new(0),
            issued: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                thread::spawn(move || {
                    let _ = serve(conn, &s);
                });
            }
        });
        Ok(TokenServer {
            addr,
            shared,
            cert,
            _dir: dir,
        })
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The `auth:` section of a registry config that trusts this service.
    pub fn registry_auth_config(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm(),
            self.cert.display()
        )
    }

    pub fn user(&self) -> (&str, &str) {
        (&self.shared.user, &self.shared.password)
    }

    /// A refresh token the service trades for access tokens (CRI `identity_token`).
    pub fn refresh_token(&self) -> &str {
        &self.shared.refresh_token
    }

    /// Token requests so far, answered or not.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Tokens handed out so far (by [`TokenServer::mint`] too).
    pub fn issued(&self) -> usize {
        self.shared.issued.load(Ordering::SeqCst)
    }

    /// A token for `scopes` (`repository:NAME:ACTIONS`), as the service would issue it.
    pub fn mint(&self, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        self.shared.jwt(&scopes)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr); // wakes the accept loop
    }
}

/// A P-256 key and a self-signed certificate for it, made with the openssl CLI; the key is
/// read back as PKCS#8 DER for ring.
fn make_signer(dir: &Path) -> Result<(PathBuf, Signer)> {
    let (key_pem, cert, key_der) = (
        dir.join("key.pem"),
        dir.join("cert.pem"),
        dir.join("key.der"),
    );
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .map_err(io_err("run openssl"))?;
        if !out.status.success() {
            return Err(HarnessError::Setup(format!(
                "openssl {}: {}",
                args.first().copied().unwrap_or(""),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    };
    let p = |p: &Path| p.display().to_string();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={ISSUER}"),
        "-keyout",
        &p(&key_pem),
        "-out",
        &p(&cert),
    ])?;
    run(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        &p(&key_pem),
        "-outform",
        "DER",
        "-out",
        &p(&key_der),
    ])?;
    let der = std::fs::read(&key_der).map_err(io_err("read signing key"))?;
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
        .map_err(|e| HarnessError::Setup(format!("signing key: {e}")))?;
    // x5c is the DER in standard base64: the PEM body without its armour and line breaks
    let pem = std::fs::read_to_string(&cert).map_err(io_err("read certificate"))?;
    let cert_b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    STANDARD
        .decode(&cert_b64)
        .map_err(|e| HarnessError::Setup(format!("certificate PEM: {e}")))?;
    Ok((cert, Signer { key, rng, cert_b64 }))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    ring::rand::generate(&SystemRandom::new())
        .map(|r| r.expose())
        .unwrap_or([7; N])
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Shared {
    /// A signed JWT granting pull/push as asked in `scopes`.
    fn jwt(&self, scopes: &[String]) -> String {
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .flat_map(|s| s.split(' '))
            .filter_map(|scope| {
                // repository:NAME:ACTIONS — NAME may hold a port-less path, never a colon
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                let actions: Vec<&str> = actions
                    .split(',')
                    .filter(|a| *a == "pull" || *a == "push")
                    .collect();
                (kind == "repository")
                    .then(|| json!({"type": "repository", "name": name, "actions": actions}))
            })
            .collect();
        let t = now();
        let id = self.issued.fetch_add(1, Ordering::SeqCst);
        let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [self.signer.cert_b64]});
        let claims = json!({
            "iss": ISSUER,
            "sub": self.user,
            "aud": SERVICE,
            "exp": t + LIFETIME,
            "nbf": t.saturating_sub(10),
            "iat": t,
            "jti": format!("limpet-test-{id}"),
            "access": access,
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .signer
            .key
            .sign(&self.signer.rng, signed.as_bytes())
            .map(|s| URL_SAFE_NO_PAD.encode(s.as_ref()))
            .unwrap_or_default();
        format!("{signed}.{sig}")
    }

    /// Whether the request proves it is our user.
    fn authenticate(&self, method: &str, basic: Option<&str>, body: &str) -> bool {
        match method {
            "GET" => {
                let given = basic
                    .and_then(|b| STANDARD.decode(b.trim()).ok())
                    .and_then(|raw| String::from_utf8(raw).ok());
                given.as_deref() == Some(&format!("{}:{}", self.user, self.password))
            }
            "POST" => {
                let form = params(body);
                let get = |k: &str| {
                    form.iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.as_str())
                };
                match get("grant_type") {
                    Some("refresh_token") => get("refresh_token") == Some(&self.refresh_token),
                    Some("password") => {
                        get("username") == Some(&self.user)
                            && get("password") == Some(&self.password)
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

fn serve(mut conn: TcpStream, s: &Shared) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut b)? == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.push(b[0]);
    }
    if s.stop.load(Ordering::Relaxed) {
        return Ok(());
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let mut request = lines.next().unwrap_or("").split(' ');
    let (method, target) = (request.next().unwrap_or(""), request.next().unwrap_or(""));
    let mut basic = None;
    let mut len = 0usize;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "authorization" => basic = v.trim().strip_prefix("Basic ").map(str::to_string),
            "content-length" => len = v.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut body = vec![0u8; len.min(64 * 1024)];
    conn.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    s.requests.fetch_add(1, Ordering::SeqCst);

    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut fields = params(query);
    if method == "POST" {
        fields.extend(params(&body));
    }
    let service_ok = fields.iter().any(|(k, v)| k == "service" && v == SERVICE);
    let (status, answer) = if path != "/token" {
        ("404 Not Found", json!({"details": "no such endpoint"}))
    } else if !service_ok {
        ("400 Bad Request", json!({"details": "unknown service"}))
    } else if !s.authenticate(method, basic.as_deref(), &body) {
        ("401 Unauthorized", json!({"details": "bad credentials"}))
    } else {
        let scopes: Vec<String> = fields
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect();
        let token = s.jwt(&scopes);
        (
            "200 OK",
            json!({"token": token, "access_token": token, "expires_in": LIFETIME}),
        )
    };
    let body = answer.to_string();
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("401") {
        resp.push_str("WWW-Authenticate: Basic realm=\"limpet-test-token\"\r\n");
    }
    resp.push_str("\r\n");
    resp.push_str(&body);
    conn.write_all(resp.as_bytes())
}

/// `a=b&c=d`, percent- and plus-decoded.
fn params(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
