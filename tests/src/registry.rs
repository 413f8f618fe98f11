//! A private `docker-registry` (distribution v2) on 127.0.0.1 with a temp storage dir, images
//! made here from the host's static busybox (see [`layout`]) pushed into it with skopeo, and
//! a fault-injecting proxy in front of it (see [`proxy`]), and a Bearer token service for it
//! (see [`token`]).

pub mod layout;
pub mod proxy;
pub mod token;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::env::which;
use crate::error::{io_err, HarnessError, Result};

/// A running registry; killed on drop.
pub struct Registry {
    /// host:port
    pub addr: String,
    dir: tempfile::TempDir,
    child: Child,
    creds: Option<(String, String)>,
}

/// Checks the tools the image suites need, as a skip reason.
pub fn require_tools() -> Result<()> {
    crate::env::require_root()?;
    for tool in ["docker-registry", "skopeo"] {
        if which(tool).is_none() {
            return Err(HarnessError::Skip(format!(
                "{tool} is not installed (scripts/setup.sh)"
            )));
        }
    }
    if !Path::new("/bin/busybox").is_file() {
        return Err(HarnessError::Skip(
            "/bin/busybox is missing (busybox-static)".into(),
        ));
    }
    Ok(())
}

/// A free loopback port (bound and released: the registry takes it right after).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind a free port"))?;
    Ok(l.local_addr().map_err(io_err("local addr"))?.port())
}

impl Registry {
    /// Starts a registry; with `basic_auth`, every request needs that user and password.
    pub fn start(basic_auth: Option<(&str, &str)>) -> Result<Registry> {
        require_tools()?;
        let dir = tempfile::Builder::new()
            .prefix("limpet-registry-")
            .tempdir()
            .map_err(io_err("temp dir"))?;
        let mut auth = String::new();
        if let Some((user, pass)) = basic_auth {
            let hash =
                bcrypt::hash(pass, 4).map_err(|e| HarnessError::Setup(format!("bcrypt: {e}")))?;
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n")).map_err(io_err("write htpasswd"))?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: limpet-test\n    path: {}\n",
                file.display()
            );
        }
        let creds = basic_auth.map(|(u, p)| (u.to_string(), p.to_string()));
        Registry::launch(dir, &auth, creds)
    }

    /// Starts a registry that takes only Bearer tokens of `tokens`; pushes go through it as
    /// its user.
    pub fn start_token(tokens: &token::TokenServer) -> Result<Registry> {
        require_tools()?;
        let dir = tempfile::Builder::new()
            .prefix("limpet-registry-")
            .tempdir()
            .map_err(io_err("temp dir"))?;
        let (user, pass) = tokens.user();
        let creds = Some((user.to_string(), pass.to_string()));
        Registry::launch(dir, &tokens.registry_auth_config(), creds)
    }

    /// Runs docker-registry in `dir` with this `auth:` config section, and waits for it.
    fn launch(
        dir: tempfile::TempDir,
        auth: &str,
        creds: Option<(String, String)>,
    ) -> Result<Registry> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
            dir.path().join("data").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).map_err(io_err("write registry config"))?;
        let log = std::fs::File::create(dir.path().join("registry.log"))
            .map_err(io_err("registry log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(log.try_clone().map_err(io_err("registry log"))?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .map_err(io_err("start docker-registry"))?;
        let reg = Registry {
            addr,
            dir,
            child,
            creds,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_status(&reg.addr, "/v2/").is_none() {
            if Instant::now() > deadline {
                return Err(HarnessError::Setup(format!(
                    "docker-registry did not start: {}",
                    reg.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(reg)
    }

    /// Pushes `tag` of the OCI layout at `layout` as `name` (repo:tag), byte for byte.
    pub fn push(&self, layout: &Path, tag: &str, name: &str) -> Result<()> {
        self.skopeo(layout, tag, name, &["--all", "--preserve-digests"])
    }

    /// Pushes `tag` converted to a Docker schema 2 manifest (same layer blobs).
    pub fn push_docker(&self, layout: &Path, tag: &str, name: &str) -> Result<()> {
        self.skopeo(layout, tag, name, &["--format", "v2s2"])
    }

    fn skopeo(&self, layout: &Path, tag: &str, name: &str, flags: &[&str]) -> Result<()> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(flags);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{name}", self.addr));
        let out = cmd.output().map_err(io_err("run skopeo"))?;
        if !out.status.success() {
            return Err(HarnessError::Setup(format!(
                "skopeo copy {tag} -> {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// Puts raw manifest bytes under `repo:reference` (for manifests skopeo would refuse).
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<()> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let status = http(
            &self.addr,
            "PUT",
            &path,
            &[("Content-Type", media_type)],
            body,
        )
        .ok_or_else(|| HarnessError::Setup("PUT manifest: no answer".into()))?;
        if status.0 != 201 {
            return Err(HarnessError::Setup(format!(
                "PUT {path}: {} {}",
                status.0, status.1
            )));
        }
        Ok(())
    }

    /// How many times a blob was fetched (GET) so far, from the access log.
    pub fn blob_gets(&self, digest: &str) -> usize {
        let needle = format!("/blobs/{digest}");
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(&needle) && !l.contains("\"HEAD "))
            .count()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status code of a plain GET, if the server answers.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    http(addr, "GET", path, &[], b"").map(|(s, _)| s)
}

/// A minimal HTTP/1.1 request: (status, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The standard test images, pushed to a registry under `busybox:<tag>`.
pub struct Seeded {
    pub layout: layout::Layout,
    /// Layers of each tag, bottom first (for the two-platform index: this platform's).
    pub layers: std::collections::HashMap<&'static str, Vec<layout::Layer>>,
    /// The marker layer of the index's other platform.
    pub other_platform_layer: layout::Layer,
}

/// Builds and pushes: `single` (one gzip layer), `multi` (three gzip layers with whiteouts
/// and an opaque directory), `zstd` (the same content: plain, zstd, zstd), `docker` (Docker
/// schema 2) and `multiarch` (an index with this platform and another).
pub fn seed(reg: &Registry, dir: &Path) -> Result<Seeded> {
    use layout::{Compression::*, Layer};
    use serde_json::json;
    let mut l = layout::Layout::create(dir)?;
    let base = layout::busybox_layer_tar()?;
    let (l2, l3) = (layout::layer2_tar(), layout::layer3_tar());
    let single = vec![Layer::new(base.clone(), Gzip)];
    let multi = vec![
        Layer::new(base.clone(), Gzip),
        Layer::new(l2.clone(), Gzip),
        Layer::new(l3.clone(), Gzip),
    ];
    let zstd = vec![
        Layer::new(base.clone(), None),
        Layer::new(l2, Zstd),
        Layer::new(l3, Zstd),
    ];
    let marker = |arch: &str| {
        let tar = layout::TarBuilder::new()
            .add(layout::Entry::File("platform", arch.as_bytes(), 0o644))
            .finish();
        Layer::new(tar, Gzip)
    };
    let here = vec![Layer::new(base.clone(), Gzip), marker(layout::host_arch())];
    let other = vec![Layer::new(base, Gzip), marker(layout::other_arch())];
    let arch = layout::host_arch();
    let d = l.image(&refs(&single), arch, json!({}), false)?;
    l.tag("single", &d);
    let d = l.image(
        &refs(&multi),
        arch,
        json!({"Labels": {"variant": "multi"}}),
        false,
    )?;
    l.tag("multi", &d);
    let d = l.image(
        &refs(&zstd),
        arch,
        json!({"Labels": {"variant": "zstd"}}),
        false,
    )?;
    l.tag("zstd", &d);
    let d = l.image(
        &refs(&single),
        arch,
        json!({"Labels": {"variant": "docker"}, "User": "nobody"}),
        false,
    )?;
    l.tag("docker", &d);
    let a = l.image(&refs(&here), arch, json!({"User": "1000:1000"}), false)?;
    let b = l.image(
        &refs(&other),
        layout::other_arch(),
        json!({"User": "1000:1000"}),
        false,
    )?;
    // the other platform first: picking the first entry would be wrong
    let idx = l.index(vec![b, a])?;
    l.tag("multiarch", &idx);
    l.save()?;
    for tag in ["single", "multi", "zstd", "multiarch"] {
        reg.push(&l.dir, tag, &format!("busybox:{tag}"))?;
    }
    reg.push_docker(&l.dir, "docker", "busybox:docker")?;
    let other_platform_layer = other[1].clone();
    let layers = [
        ("single", single.clone()),
        ("multi", multi),
        ("zstd", zstd),
        ("docker", single),
        ("multiarch", here),
    ]
    .into_iter()
    .collect();
    Ok(Seeded {
        layout: l,
        layers,
        other_platform_layer,
    })
}

fn refs(v: &[layout::Layer]) -> Vec<&layout::Layer> {
    v.iter().collect()
}
