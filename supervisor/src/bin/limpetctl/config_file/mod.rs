//! crictl's pod and container config files: JSON or YAML with the snake_case keys of the Go
//! json tags of the CRI types (`log_directory`, `port_mappings`, ...), enums as numbers or
//! names. Unlike Go's decoder, a key that is not a CRI field is an error that names it, so a
//! typo never silently becomes a default.

mod common;
mod container;
mod pod;
#[cfg(test)]
mod tests;

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use limpet_protos::cri::v1 as cri;
use serde::de::DeserializeOwned;

/// A decoded pod config and what the decoder had to say about it.
pub struct Loaded<T> {
    pub config: T,
    pub warnings: Vec<String>,
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read config {}", path.display()))
}

/// JSON when the file says so (extension or a leading `{`), else YAML. JSON is YAML too, but
/// Go's decoder accepts tab-indented JSON that a YAML parser refuses.
fn decode<T: DeserializeOwned>(text: &str, json_hint: bool) -> anyhow::Result<T> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        anyhow::bail!("the file is empty");
    }
    if json_hint || trimmed.starts_with('{') {
        return serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{e}"));
    }
    serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Decodes a pod config and checks what crictl checks: metadata with a name and a namespace
/// (a missing uid gets a random one).
pub fn parse_pod(text: &str, json_hint: bool) -> anyhow::Result<Loaded<cri::PodSandboxConfig>> {
    let file: pod::PodSandboxConfig = decode(text, json_hint)?;
    let (mut config, mut warnings) = file.into_cri();
    let Some(meta) = config.metadata.as_mut() else {
        anyhow::bail!("metadata is not set");
    };
    if meta.name.is_empty() || meta.namespace.is_empty() {
        anyhow::bail!("metadata needs a name and a namespace");
    }
    if meta.uid.is_empty() {
        meta.uid = random_uid()?;
    }
    if config
        .linux
        .as_ref()
        .is_some_and(|l| l.cgroup_parent.is_empty())
    {
        warnings.push("linux.cgroup_parent is not set: the runtime picks one".into());
    }
    Ok(Loaded { config, warnings })
}

/// Decodes a container config and checks what crictl checks: a metadata name and an image.
pub fn parse_container(text: &str, json_hint: bool) -> anyhow::Result<cri::ContainerConfig> {
    let file: container::ContainerConfig = decode(text, json_hint)?;
    let mut config = cri::ContainerConfig::from(file);
    if config.metadata.as_ref().is_none_or(|m| m.name.is_empty()) {
        anyhow::bail!("metadata.name is not set");
    }
    match config.image.as_mut() {
        Some(i) if !i.image.is_empty() => {
            if i.user_specified_image.is_empty() {
                i.user_specified_image = i.image.clone();
            }
        }
        _ => anyhow::bail!("image.image is not set"),
    }
    Ok(config)
}

pub fn load_pod(path: &Path) -> anyhow::Result<Loaded<cri::PodSandboxConfig>> {
    parse_pod(&read(path)?, is_json(path)).with_context(|| format!("pod config {}", path.display()))
}

pub fn load_container(path: &Path) -> anyhow::Result<cri::ContainerConfig> {
    parse_container(&read(path)?, is_json(path))
        .with_context(|| format!("container config {}", path.display()))
}

/// A version 4 UUID, as crictl gives a pod without one.
fn random_uid() -> anyhow::Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("read /dev/urandom for a pod uid")?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}
