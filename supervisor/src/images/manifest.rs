//! OCI and Docker schema 2 manifests, indexes and image configs, and the platform choice.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_V1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The `Accept` header of a manifest request.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("unsupported manifest media type {0:?} (Docker schema 1 images cannot be pulled)")]
    Unsupported(String),
    #[error("invalid {what}: {message}")]
    Invalid { what: &'static str, message: String },
    #[error("no image for platform {wanted} in the index (it has: {have})")]
    NoPlatform { wanted: String, have: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    pub manifests: Vec<Descriptor>,
}

/// A manifest document: an index (or docker list) or an image manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Index(Index),
    Manifest(Box<Manifest>),
}

/// Layer counts beyond this are refused: overlayfs could not mount them anyway.
pub const MAX_LAYERS: usize = 128;

/// Parses a manifest or index; `content_type` is the registry's Content-Type, used only when
/// the document has no `mediaType` of its own.
pub fn parse_document(content_type: &str, bytes: &[u8]) -> Result<Document, ManifestError> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(rename = "schemaVersion", default)]
        schema_version: Option<u32>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let invalid = |e: serde_json::Error| ManifestError::Invalid {
        what: "manifest",
        message: e.to_string(),
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(invalid)?;
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let media = probe.media_type.clone().unwrap_or_else(|| ct.to_string());
    if DOCKER_V1.contains(&media.as_str()) || probe.schema_version == Some(1) {
        return Err(ManifestError::Unsupported(media));
    }
    if probe.schema_version != Some(2) {
        return Err(ManifestError::Invalid {
            what: "manifest",
            message: "schemaVersion is not 2".into(),
        });
    }
    let is_index = match media.as_str() {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        // OCI allows an absent mediaType: tell by the fields.
        "" | "application/json" | "application/octet-stream" => {
            probe.manifests.is_some() && probe.config.is_none()
        }
        other => return Err(ManifestError::Unsupported(other.into())),
    };
    if is_index {
        let index: Index = serde_json::from_slice(bytes).map_err(invalid)?;
        Ok(Document::Index(index))
    } else {
        let m: Manifest = serde_json::from_slice(bytes).map_err(invalid)?;
        if m.layers.len() > MAX_LAYERS {
            return Err(ManifestError::Invalid {
                what: "manifest",
                message: format!(
                    "{} layers, at most {MAX_LAYERS} are supported",
                    m.layers.len()
                ),
            });
        }
        for l in &m.layers {
            if layer_compression(&l.media_type).is_none() {
                return Err(ManifestError::Unsupported(l.media_type.clone()));
            }
        }
        Ok(Document::Manifest(Box::new(m)))
    }
}

/// How a layer is compressed, from its media type (None: not a layer this runtime unpacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn layer_compression(media_type: &str) -> Option<Compression> {
    let base = media_type
        .strip_prefix("application/vnd.oci.image.layer.nondistributable.v1.")
        .or_else(|| media_type.strip_prefix("application/vnd.oci.image.layer.v1."));
    match base {
        Some("tar") => return Some(Compression::None),
        Some("tar+gzip") => return Some(Compression::Gzip),
        Some("tar+zstd") => return Some(Compression::Zstd),
        _ => {}
    }
    match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// The parts of an image config the runtime needs; the whole JSON is kept as pulled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Volumes", default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "StopSignal", default)]
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// Parses an image config and checks it against the manifest's layer count.
pub fn parse_config(bytes: &[u8], layers: usize) -> Result<ImageConfig, ManifestError> {
    let c: ImageConfig = serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid {
        what: "image config",
        message: e.to_string(),
    })?;
    if c.rootfs.kind != "layers" {
        return Err(ManifestError::Invalid {
            what: "image config",
            message: format!("rootfs type {:?} is not \"layers\"", c.rootfs.kind),
        });
    }
    if c.rootfs.diff_ids.len() != layers {
        return Err(ManifestError::Invalid {
            what: "image config",
            message: format!("{} diff_ids for {layers} layers", c.rootfs.diff_ids.len()),
        });
    }
    Ok(c)
}

/// This node's platform, in OCI terms.
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        other => (other, None),
    };
    Platform {
        architecture: architecture.into(),
        os: "linux".into(),
        variant: variant.map(Into::into),
        os_version: None,
    }
}

/// Picks the index entry for `want`: same os and architecture, and the same variant when
/// both name one (an arm64 entry without a variant is v8). Index order breaks ties, with an
/// exact variant preferred.
pub fn select_platform<'a>(
    index: &'a Index,
    want: &Platform,
) -> Result<&'a Descriptor, ManifestError> {
    let variant_of = |p: &Platform| -> Option<String> {
        match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", None) => Some("v8".into()),
            (_, v) => v.map(Into::into),
        }
    };
    let want_variant = variant_of(want);
    let mut fallback = None;
    for d in &index.manifests {
        let Some(p) = &d.platform else { continue };
        if p.os != want.os || p.architecture != want.architecture {
            continue;
        }
        let v = variant_of(p);
        if v == want_variant {
            return Ok(d);
        }
        if v.is_none() && fallback.is_none() {
            fallback = Some(d);
        }
    }
    fallback.ok_or_else(|| ManifestError::NoPlatform {
        wanted: show_platform(want),
        have: index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref().map(show_platform))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn show_platform(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>, n: u8) -> serde_json::Value {
        let mut p = serde_json::json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            p["variant"] = v.into();
        }
        serde_json::json!({"mediaType": OCI_MANIFEST, "digest": Digest::of(&[n]).to_string(), "size": 1, "platform": p})
    }

    #[test]
    fn picks_this_platform() {
        let idx = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [desc("arm", Some("v7"), 1), desc("arm64", None, 2), desc("amd64", None, 3)]});
        let Document::Index(index) = parse_document("", idx.to_string().as_bytes()).unwrap() else {
            panic!()
        };
        let amd = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
            os_version: None,
        };
        assert_eq!(
            select_platform(&index, &amd).unwrap().digest,
            Digest::of(&[3])
        );
        let arm64 = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
            os_version: None,
        };
        assert_eq!(
            select_platform(&index, &arm64).unwrap().digest,
            Digest::of(&[2])
        );
        let s390 = Platform {
            architecture: "s390x".into(),
            os: "linux".into(),
            variant: None,
            os_version: None,
        };
        let err = select_platform(&index, &s390).unwrap_err().to_string();
        assert!(err.contains("linux/arm/v7"), "{err}");
    }

    #[test]
    fn tells_documents_apart() {
        let d = Digest::of(b"c");
        let m = serde_json::json!({"schemaVersion": 2, "config": {"mediaType": "x", "digest": d.to_string(), "size": 1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": d.to_string(), "size": 1}]});
        assert!(matches!(
            parse_document("", m.to_string().as_bytes()),
            Ok(Document::Manifest(_))
        ));
        let bad_layer = serde_json::json!({"schemaVersion": 2, "config": {"mediaType": "x", "digest": d.to_string(), "size": 1},
            "layers": [{"mediaType": "application/x-unknown", "digest": d.to_string(), "size": 1}]});
        assert!(matches!(
            parse_document(OCI_MANIFEST, bad_layer.to_string().as_bytes()),
            Err(ManifestError::Unsupported(_))
        ));
        let v1 = serde_json::json!({"schemaVersion": 1, "name": "x"});
        assert!(matches!(
            parse_document("", v1.to_string().as_bytes()),
            Err(ManifestError::Unsupported(_))
        ));
        assert!(parse_document("", b"{").is_err());
        assert!(parse_document("", b"[]").is_err());
    }

    #[test]
    fn config_must_match_layers() {
        let d = Digest::of(b"x");
        let c = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [d.to_string()]}});
        assert!(parse_config(c.to_string().as_bytes(), 1).is_ok());
        assert!(parse_config(c.to_string().as_bytes(), 2).is_err());
    }
}
