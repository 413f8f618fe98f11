//! OCI image layouts written here, byte by byte: layers built with the tar crate from the
//! host's static busybox (so tests know every entry, whiteouts and opaque dirs included),
//! compressed with gzip, zstd or not at all, configs, manifests (OCI or Docker schema 2) and
//! indexes. `skopeo copy --preserve-digests` pushes them to a registry unchanged.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{io_err, Result};

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// One layer: its tar (what an unpacked snapshot must hold) and its blob.
#[derive(Debug, Clone)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub compression: Compression,
    pub digest: String,
    pub diff_id: String,
}

impl Layer {
    pub fn new(tar: Vec<u8>, compression: Compression) -> Layer {
        let blob = match compression {
            Compression::None => tar.clone(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&tar).expect("gzip to memory");
                e.finish().expect("gzip to memory")
            }
            Compression::Zstd => zstd::encode_all(&tar[..], 3).expect("zstd to memory"),
        };
        Layer {
            digest: sha256(&blob),
            diff_id: sha256(&tar),
            tar,
            blob,
            compression,
        }
    }

    pub fn media_type(&self, docker: bool) -> &'static str {
        match (docker, self.compression) {
            (true, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            (true, _) => "application/vnd.docker.image.rootfs.diff.tar",
            (false, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
            (false, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (false, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Builds a layer tar entry by entry. Names are written raw (tests need `..` too).
pub struct TarBuilder {
    out: Vec<u8>,
}

pub enum Entry<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Fifo(&'a str),
    CharDevice(&'a str),
}

impl Default for TarBuilder {
    fn default() -> Self {
        TarBuilder::new()
    }
}

impl TarBuilder {
    pub fn new() -> TarBuilder {
        TarBuilder { out: Vec::new() }
    }

    pub fn add(&mut self, e: Entry<'_>) -> &mut TarBuilder {
        let (name, kind, data, link, mode): (&str, tar::EntryType, &[u8], Option<&str>, u32) =
            match e {
                Entry::Dir(n, m) => (n, tar::EntryType::Directory, b"", None, m),
                Entry::File(n, d, m) => (n, tar::EntryType::Regular, d, None, m),
                Entry::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", Some(t), 0o777),
                Entry::Hardlink(n, t) => (n, tar::EntryType::Link, b"", Some(t), 0o644),
                Entry::Fifo(n) => (n, tar::EntryType::Fifo, b"", None, 0o600),
                Entry::CharDevice(n) => (n, tar::EntryType::Char, b"", None, 0o600),
            };
        let mut h = tar::Header::new_ustar();
        let bytes = h.as_mut_bytes();
        bytes[..100].fill(0);
        bytes[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        if let Some(l) = link {
            h.as_mut_bytes()[157..157 + l.len().min(100)]
                .copy_from_slice(&l.as_bytes()[..l.len().min(100)]);
        }
        if kind == tar::EntryType::Char {
            let _ = h.set_device_major(1);
            let _ = h.set_device_minor(1);
        }
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        self.out.resize(self.out.len().div_ceil(512) * 512, 0);
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

/// The base layer: busybox and a few applet symlinks, passwd, group, tmp.
pub fn busybox_layer_tar() -> Result<Vec<u8>> {
    let busybox = std::fs::read("/bin/busybox").map_err(io_err("read /bin/busybox"))?;
    let mut t = TarBuilder::new();
    t.add(Entry::Dir("bin/", 0o755))
        .add(Entry::File("bin/busybox", &busybox, 0o755))
        .add(Entry::Dir("etc/", 0o755))
        .add(Entry::File(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
            0o644,
        ))
        .add(Entry::File(
            "etc/group",
            b"root:x:0:\nnobody:x:65534:\n",
            0o644,
        ))
        .add(Entry::Dir("tmp/", 0o1777))
        .add(Entry::Dir("root/", 0o700));
    for applet in ["sh", "ls", "cat", "echo", "sleep", "true"] {
        t.add(Entry::Symlink(&format!("bin/{applet}"), "/bin/busybox"));
    }
    Ok(t.finish())
}

/// Layer 2 of the multi-layer image: files, a hardlink, a fifo, a directory to make opaque.
pub fn layer2_tar() -> Vec<u8> {
    TarBuilder::new()
        .add(Entry::Dir("data/", 0o755))
        .add(Entry::File("data/a", b"first file\n", 0o644))
        .add(Entry::File("data/b", b"second file\n", 0o600))
        .add(Entry::Hardlink("data/b-link", "data/b"))
        .add(Entry::Fifo("data/pipe"))
        .add(Entry::File("etc/motd", b"hello from layer 2\n", 0o644))
        .add(Entry::Dir("opaque/", 0o755))
        .add(Entry::File("opaque/old1", b"old 1\n", 0o644))
        .add(Entry::File("opaque/old2", b"old 2\n", 0o644))
        .finish()
}

/// Layer 3: whiteouts of a file in each lower layer and an opaque directory.
pub fn layer3_tar() -> Vec<u8> {
    TarBuilder::new()
        .add(Entry::File("etc/.wh.motd", b"", 0o644))
        .add(Entry::File("data/.wh.a", b"", 0o644))
        .add(Entry::File("bin/.wh.true", b"", 0o644))
        .add(Entry::Dir("opaque/", 0o755))
        .add(Entry::File("opaque/.wh..wh..opq", b"", 0o644))
        .add(Entry::File("opaque/new", b"only this\n", 0o644))
        .finish()
}

/// An OCI layout directory being written.
pub struct Layout {
    pub dir: PathBuf,
    refs: Vec<Value>,
}

impl Layout {
    pub fn create(dir: &Path) -> Result<Layout> {
        std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(io_err("create layout"))?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(io_err("write oci-layout"))?;
        Ok(Layout {
            dir: dir.to_path_buf(),
            refs: Vec::new(),
        })
    }

    /// Stores a blob; returns its digest.
    pub fn blob(&self, data: &[u8]) -> Result<String> {
        let d = sha256(data);
        let path = self.dir.join("blobs/sha256").join(&d[7..]);
        std::fs::write(path, data).map_err(io_err("write blob"))?;
        Ok(d)
    }

    /// An image config for `layers`; `extra` is merged into its `config` section.
    pub fn config(&self, layers: &[&Layer], arch: &str, extra: Value) -> Result<(String, usize)> {
        let mut cfg = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
            "history": layers.iter().map(|_| json!({"created_by": "limpet tests"})).collect::<Vec<_>>(),
        });
        if let (Some(c), Value::Object(extra)) = (cfg["config"].as_object_mut(), extra) {
            c.extend(extra);
        }
        let bytes = serde_json::to_vec(&cfg)
            .map_err(|e| io_err("config json")(std::io::Error::other(e)))?;
        Ok((self.blob(&bytes)?, bytes.len()))
    }

    /// Writes a manifest for `layers` and returns its descriptor (with `platform` set).
    pub fn image(
        &self,
        layers: &[&Layer],
        arch: &str,
        extra: Value,
        docker: bool,
    ) -> Result<Value> {
        let (config, config_size) = self.config(layers, arch, extra)?;
        for l in layers {
            self.blob(&l.blob)?;
        }
        let (mt, config_mt) = if docker {
            (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
            )
        } else {
            (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
            )
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "config": {"mediaType": config_mt, "digest": config, "size": config_size},
            "layers": layers.iter().map(|l| json!({"mediaType": l.media_type(docker), "digest": l.digest, "size": l.blob.len()})).collect::<Vec<_>>(),
        });
        self.descriptor(&manifest, mt, Some(arch))
    }

    /// Stores a JSON document and returns its descriptor.
    pub fn descriptor(&self, doc: &Value, media_type: &str, arch: Option<&str>) -> Result<Value> {
        let bytes =
            serde_json::to_vec(doc).map_err(|e| io_err("json")(std::io::Error::other(e)))?;
        let digest = self.blob(&bytes)?;
        let mut d = json!({"mediaType": media_type, "digest": digest, "size": bytes.len()});
        if let Some(a) = arch {
            d["platform"] = json!({"architecture": a, "os": "linux"});
        }
        Ok(d)
    }

    /// An index over `manifests`.
    pub fn index(&self, manifests: Vec<Value>) -> Result<Value> {
        let mt = "application/vnd.oci.image.index.v1+json";
        self.descriptor(
            &json!({"schemaVersion": 2, "mediaType": mt, "manifests": manifests}),
            mt,
            None,
        )
    }

    /// Names `desc` as `tag` in index.json (written by [`Layout::save`]).
    pub fn tag(&mut self, tag: &str, desc: &Value) {
        let mut d = desc.clone();
        if let Some(o) = d.as_object_mut() {
            o.remove("platform");
        }
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.refs.push(d);
    }

    pub fn save(&self) -> Result<()> {
        let index = json!({"schemaVersion": 2, "manifests": self.refs});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap_or_default(),
        )
        .map_err(io_err("write index.json"))
    }

    /// The raw bytes of a stored blob.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        std::fs::read(self.dir.join("blobs/sha256").join(&digest[7..])).map_err(io_err("read blob"))
    }
}

/// This machine's architecture, in OCI terms.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The other architecture of the two-platform index.
pub fn other_arch() -> &'static str {
    if host_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    }
}

/// Checks, byte by byte, that `dir` holds exactly what layer `tar` says, in overlayfs form:
/// file contents, modes, owners, symlink targets, hardlinks (same inode), fifos, whiteouts
/// as 0/0 character devices and opaque directories marked `trusted.overlay.opaque=y`.
pub fn assert_layer_unpacked(tar: &[u8], dir: &Path) {
    use std::collections::HashSet;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    fn clean(p: &Path) -> PathBuf {
        p.components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect()
    }
    fn with_parents(set: &mut HashSet<PathBuf>, p: &Path) {
        let mut cur = Some(p);
        while let Some(c) = cur.filter(|c| !c.as_os_str().is_empty()) {
            set.insert(c.to_path_buf());
            cur = c.parent();
        }
    }
    let mut expected = HashSet::new();
    let mut ar = tar::Archive::new(tar);
    for e in ar.entries().expect("layer tar") {
        let mut e = e.expect("layer entry");
        let rel = clean(&e.path().expect("entry path"));
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if name == ".wh..wh..opq" {
            let mut buf = [0u8; 8];
            let n = nix_getxattr(&dir.join(&parent), "trusted.overlay.opaque", &mut buf);
            assert_eq!(
                n.map(|n| buf[..n].to_vec()),
                Some(b"y".to_vec()),
                "{} is not opaque",
                parent.display()
            );
            with_parents(&mut expected, &parent);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let target = parent.join(hidden);
            let m = std::fs::symlink_metadata(dir.join(&target))
                .unwrap_or_else(|e| panic!("whiteout {}: {e}", target.display()));
            assert!(
                m.file_type().is_char_device() && m.rdev() == 0,
                "{} is not a 0/0 whiteout",
                target.display()
            );
            with_parents(&mut expected, &target);
            continue;
        }
        let path = dir.join(&rel);
        let m =
            std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
        let h = e.header().clone();
        let mode = h.mode().expect("mode") & 0o7777;
        match h.entry_type() {
            tar::EntryType::Directory => {
                assert!(m.is_dir(), "{} is not a directory", rel.display());
                assert_eq!(m.mode() & 0o7777, mode, "mode of {}", rel.display());
            }
            tar::EntryType::Regular => {
                let mut want = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut want).expect("entry data");
                assert_eq!(
                    std::fs::read(&path).expect("read file"),
                    want,
                    "content of {}",
                    rel.display()
                );
                assert_eq!(m.mode() & 0o7777, mode, "mode of {}", rel.display());
                assert_eq!(
                    (m.uid() as u64, m.gid() as u64),
                    (h.uid().expect("uid"), h.gid().expect("gid")),
                    "owner of {}",
                    rel.display()
                );
            }
            tar::EntryType::Symlink => {
                let want = e
                    .link_name()
                    .expect("link")
                    .expect("link target")
                    .into_owned();
                assert_eq!(
                    std::fs::read_link(&path).expect("readlink"),
                    want,
                    "target of {}",
                    rel.display()
                );
            }
            tar::EntryType::Link => {
                let target = clean(&e.link_name().expect("link").expect("link target"));
                let t = std::fs::symlink_metadata(dir.join(&target)).expect("hardlink target");
                assert_eq!(
                    m.ino(),
                    t.ino(),
                    "{} is not a hardlink of {}",
                    rel.display(),
                    target.display()
                );
            }
            tar::EntryType::Fifo => {
                assert!(m.file_type().is_fifo(), "{} is not a fifo", rel.display())
            }
            other => panic!("unexpected entry type {other:?} in test layer"),
        }
        with_parents(&mut expected, &rel);
    }
    // and nothing else
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read unpacked dir").flatten() {
            let rel = e.path().strip_prefix(dir).expect("under dir").to_path_buf();
            assert!(
                expected.contains(&rel),
                "{} is in the snapshot but not in the layer",
                rel.display()
            );
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
    }
}

fn nix_getxattr(path: &Path, name: &str, buf: &mut [u8]) -> Option<usize> {
    rustix::fs::lgetxattr(path, name, buf).ok()
}
