//! Registry hosts, read as containerd reads its `config_path` (one or more roots joined by
//! `:`): for registry `H`, the first of `<root>/H_PORT_` (when H has a port), `<root>/H` and
//! `<root>/_default` that exists. In it, `hosts.toml` lists `[host."…"]` tables (tried in file
//! order) and then `server`; without a `hosts.toml`, `*.crt` files are CA certificates and
//! `*.cert`/`*.key` pairs client certificates for the registry itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What a host may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// One endpoint to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// `http` or `https`.
    pub scheme: String,
    /// host[:port].
    pub host: String,
    /// API root, `/v2` unless `override_path`.
    pub path: String,
    pub capabilities: Capabilities,
    pub skip_verify: Option<bool>,
    pub ca: Vec<PathBuf>,
    /// (certificate, key) files; an empty key means the key is in the certificate file.
    pub client: Vec<(PathBuf, PathBuf)>,
    pub headers: Vec<(String, String)>,
}

impl Host {
    /// Base URL of the API, without a trailing slash.
    pub fn base(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.path)
    }

    /// Whether this host needs a TLS setup of its own.
    pub fn custom_tls(&self) -> bool {
        self.skip_verify.is_some() || !self.ca.is_empty() || !self.client.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The `config_path` roots.
#[derive(Debug, Clone)]
pub struct HostsConfig {
    roots: Vec<PathBuf>,
}

impl HostsConfig {
    pub fn new(config_path: &Path) -> HostsConfig {
        let roots = std::env::split_paths(config_path)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        HostsConfig { roots }
    }

    /// The hosts to try for registry `registry`, in order.
    pub fn hosts(&self, registry: &str) -> Result<Vec<Host>, HostsError> {
        let mut hosts = match self.host_dir(registry) {
            Some(dir) => load_dir(&dir)?,
            None => vec![empty_host()],
        };
        if let Some(last) = hosts.last_mut() {
            if last.host.is_empty() {
                // The registry itself, when no `server` names it.
                if registry == "docker.io" {
                    last.scheme = "https".into();
                    last.host = "registry-1.docker.io".into();
                } else {
                    last.scheme = default_scheme(registry).into();
                    last.host = registry.into();
                }
                last.path = "/v2".into();
                last.capabilities = Capabilities::ALL;
            }
        }
        Ok(hosts)
    }

    fn host_dir(&self, registry: &str) -> Option<PathBuf> {
        let mut names = Vec::new();
        if let Some((h, port)) = registry.rsplit_once(':') {
            if !h.is_empty() {
                names.push(format!("{h}_{port}_"));
            }
        }
        names.push(registry.to_string());
        names.push("_default".into());
        for root in &self.roots {
            for name in &names {
                let dir = root.join(name);
                if dir.is_dir() {
                    return Some(dir);
                }
            }
        }
        None
    }
}

/// Loopback registries speak plain http unless configured otherwise, as with docker.
fn default_scheme(registry: &str) -> &'static str {
    let host = registry
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(registry);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    if loopback {
        "http"
    } else {
        "https"
    }
}

fn empty_host() -> Host {
    Host {
        scheme: String::new(),
        host: String::new(),
        path: String::new(),
        capabilities: Capabilities::ALL,
        skip_verify: None,
        ca: Vec::new(),
        client: Vec::new(),
        headers: Vec::new(),
    }
}

fn load_dir(dir: &Path) -> Result<Vec<Host>, HostsError> {
    let file = dir.join("hosts.toml");
    match std::fs::read_to_string(&file) {
        Ok(text) if !text.trim().is_empty() => {
            parse_hosts(dir, &text).map_err(|message| HostsError::Invalid {
                path: file,
                message,
            })
        }
        Ok(_) => cert_files(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => cert_files(dir),
        Err(source) => Err(HostsError::Read { path: file, source }),
    }
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `client`: a file, files, or [cert, key] pairs.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ClientEntry {
    File(String),
    Pair(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Client {
    One(String),
    Many(Vec<ClientEntry>),
}

/// Unknown keys are ignored, as containerd does.
#[derive(Debug, Default, Deserialize)]
struct HostFields {
    capabilities: Option<Vec<String>>,
    ca: Option<OneOrMany>,
    client: Option<Client>,
    skip_verify: Option<bool>,
    header: Option<BTreeMap<String, OneOrMany>>,
    #[serde(default)]
    override_path: bool,
}

#[derive(Debug, Deserialize)]
struct HostsFile {
    server: Option<String>,
    #[serde(flatten)]
    root: HostFields,
    #[serde(default)]
    host: toml::Table,
}

/// Parses a hosts.toml; relative file names are relative to its directory.
pub fn parse_hosts(dir: &Path, text: &str) -> Result<Vec<Host>, String> {
    let file: HostsFile = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
    // `[host."…"]` tables keep file order: toml's Table is ordered by insertion only with
    // the preserve_order feature, so order them by their position in the text instead.
    let mut names: Vec<(usize, String)> = file
        .host
        .keys()
        .map(|k| (position_of_host(text, k), k.clone()))
        .collect();
    names.sort();
    let mut hosts = Vec::new();
    for (_, name) in names {
        let value = file
            .host
            .get(&name)
            .cloned()
            .unwrap_or(toml::Value::Table(Default::default()));
        let fields: HostFields = value.try_into().map_err(|e: toml::de::Error| {
            format!("[host.{name:?}]: {}", e.to_string().trim_end())
        })?;
        hosts.push(host_entry(dir, &name, fields)?);
    }
    let server = file.server.unwrap_or_default();
    hosts.push(host_entry(dir, &server, file.root)?);
    Ok(hosts)
}

fn position_of_host(text: &str, name: &str) -> usize {
    [
        format!("[host.\"{name}\"]"),
        format!("[host.'{name}']"),
        format!("[host.{name}]"),
    ]
    .iter()
    .filter_map(|pat| text.find(pat.as_str()))
    .min()
    .unwrap_or(usize::MAX)
}

fn host_entry(dir: &Path, server: &str, f: HostFields) -> Result<Host, String> {
    let mut h = empty_host();
    if !server.is_empty() {
        let with_scheme = if server.starts_with("http") {
            server.to_string()
        } else {
            format!("https://{server}")
        };
        let (scheme, rest) = with_scheme
            .split_once("://")
            .ok_or_else(|| format!("server {server:?} is not a URL"))?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("server {server:?}: scheme must be http or https"));
        }
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let host_ok = !host.is_empty()
            && !host.ends_with(':')
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b));
        if !host_ok {
            return Err(format!("server {server:?} has no valid host"));
        }
        let clean = clean_url_path(path);
        h.scheme = scheme.into();
        h.host = host.into();
        h.path = if f.override_path || clean.ends_with("/v2") {
            clean
        } else {
            format!("{clean}/v2")
        };
    }
    h.skip_verify = f.skip_verify;
    if let Some(caps) = f.capabilities.filter(|c| !c.is_empty()) {
        h.capabilities = Capabilities::default();
        for c in caps {
            match c.to_ascii_lowercase().as_str() {
                "pull" => h.capabilities.pull = true,
                "resolve" => h.capabilities.resolve = true,
                "push" => h.capabilities.push = true,
                other => return Err(format!("unknown capability {other:?}")),
            }
        }
    }
    let abs = |p: &str| {
        if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            dir.join(p)
        }
    };
    h.ca = match f.ca {
        None => Vec::new(),
        Some(OneOrMany::One(p)) => vec![abs(&p)],
        Some(OneOrMany::Many(ps)) => ps.iter().map(|p| abs(p)).collect(),
    };
    h.client = match f.client {
        None => Vec::new(),
        Some(Client::One(p)) => vec![(abs(&p), PathBuf::new())],
        Some(Client::Many(entries)) => entries
            .into_iter()
            .map(|e| match e {
                ClientEntry::File(p) => Ok((abs(&p), PathBuf::new())),
                ClientEntry::Pair(pair) if pair.len() == 2 => Ok((abs(&pair[0]), abs(&pair[1]))),
                ClientEntry::Pair(pair) => Err(format!("invalid client pair {pair:?}")),
            })
            .collect::<Result<_, _>>()?,
    };
    for (key, value) in f.header.unwrap_or_default() {
        match value {
            OneOrMany::One(v) => h.headers.push((key, v)),
            OneOrMany::Many(vs) => h.headers.extend(vs.into_iter().map(|v| (key.clone(), v))),
        }
    }
    Ok(h)
}

/// `path.Clean` for URL paths; empty stays empty.
fn clean_url_path(p: &str) -> String {
    if p.is_empty() {
        return String::new();
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        "/".into()
    } else {
        format!("/{}", parts.join("/"))
    }
}

/// The docker `certs.d` layout: `*.crt` are CAs, `X.cert` with `X.key` client pairs.
fn cert_files(dir: &Path) -> Result<Vec<Host>, HostsError> {
    let mut h = empty_host();
    let entries = std::fs::read_dir(dir).map_err(|source| HostsError::Read {
        path: dir.into(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    for f in &files {
        match f.extension().and_then(|e| e.to_str()) {
            Some("crt") => h.ca.push(f.clone()),
            Some("cert") => {
                let key = f.with_extension("key");
                if !key.exists() {
                    return Err(HostsError::Invalid {
                        path: f.clone(),
                        message: format!("client certificate without its key {}", key.display()),
                    });
                }
                h.client.push((f.clone(), key));
            }
            _ => {}
        }
    }
    Ok(vec![h])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_then_server_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("registry.k8s.io");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("hosts.toml"),
            r#"
server = "https://registry.k8s.io"

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
  header = { X-Trace = "a", X-Multi = ["b", "c"] }

[host."https://mirror.example/base/"]
  capabilities = ["pull"]
  skip_verify = true
  ca = "ca.pem"
  client = [["c.pem", "/abs/k.pem"]]

[host."https://raw.example/custom"]
  override_path = true
"#,
        )
        .unwrap();
        let hosts = HostsConfig::new(dir.path())
            .hosts("registry.k8s.io")
            .unwrap();
        assert_eq!(hosts.len(), 4);
        assert_eq!(hosts[0].base(), "http://127.0.0.1:5000/v2");
        assert_eq!(
            hosts[0].capabilities,
            Capabilities {
                pull: true,
                resolve: true,
                push: false
            }
        );
        assert!(hosts[0].headers.contains(&("X-Multi".into(), "c".into())));
        assert_eq!(hosts[1].base(), "https://mirror.example/base/v2");
        assert_eq!(hosts[1].ca, vec![d.join("ca.pem")]);
        assert_eq!(
            hosts[1].client,
            vec![(d.join("c.pem"), PathBuf::from("/abs/k.pem"))]
        );
        assert_eq!(hosts[1].skip_verify, Some(true));
        assert_eq!(hosts[2].base(), "https://raw.example/custom");
        assert_eq!(hosts[3].base(), "https://registry.k8s.io/v2");
        assert_eq!(hosts[3].capabilities, Capabilities::ALL);
    }

    #[test]
    fn defaults_and_fallbacks() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = HostsConfig::new(dir.path());
        assert_eq!(
            cfg.hosts("docker.io").unwrap()[0].base(),
            "https://registry-1.docker.io/v2"
        );
        assert_eq!(
            cfg.hosts("127.0.0.1:5000").unwrap()[0].base(),
            "http://127.0.0.1:5000/v2"
        );
        assert_eq!(
            cfg.hosts("quay.io").unwrap()[0].base(),
            "https://quay.io/v2"
        );

        // host_port_ directory, and _default for everything else
        let d = dir.path().join("myreg.local_5000_");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ca.crt"), "x").unwrap();
        let hosts = cfg.hosts("myreg.local:5000").unwrap();
        assert_eq!(hosts[0].ca, vec![d.join("ca.crt")]);
        assert_eq!(hosts[0].base(), "https://myreg.local:5000/v2");
        let def = dir.path().join("_default");
        std::fs::create_dir_all(&def).unwrap();
        std::fs::write(def.join("hosts.toml"), "[host.\"http://10.0.0.1:1\"]\n").unwrap();
        let hosts = cfg.hosts("gcr.io").unwrap();
        assert_eq!(hosts[0].base(), "http://10.0.0.1:1/v2");
        assert_eq!(hosts[1].base(), "https://gcr.io/v2");
    }

    #[test]
    fn bad_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "[host.\"http://x\"]\ncapabilities = [\"fly\"]\n",
            "server = \"ftp://x\"\n",
            "skip_verify = \"yes\"\n",
        ] {
            assert!(parse_hosts(dir.path(), bad).is_err(), "{bad}");
        }
    }
}
