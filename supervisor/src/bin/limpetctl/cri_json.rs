//! CRI messages as crictl prints them (protobuf JSON): camelCase keys, enums by name,
//! status times in RFC 3339, list times as strings of nanoseconds, and a status's verbose
//! `info` map unfolded beside it.

use std::collections::HashMap;

use limpet_protos::cri::v1 as cri;
use serde_json::Value;

use crate::output::{self, Format};
use crate::times::rfc3339;

fn set_name(v: &mut Value, key: &str, name: impl Fn(i32) -> Option<&'static str>) {
    if let Some(slot) = v.get_mut(key) {
        if let Some(n) = slot.as_i64().and_then(|n| i32::try_from(n).ok()) {
            if let Some(s) = name(n) {
                *slot = Value::String(s.to_string());
            }
        }
    }
}

fn container_state(n: i32) -> Option<&'static str> {
    cri::ContainerState::try_from(n)
        .ok()
        .map(|s| s.as_str_name())
}

fn pod_state(n: i32) -> Option<&'static str> {
    cri::PodSandboxState::try_from(n)
        .ok()
        .map(|s| s.as_str_name())
}

fn namespace_mode(n: i32) -> Option<&'static str> {
    cri::NamespaceMode::try_from(n)
        .ok()
        .map(|s| s.as_str_name())
}

fn propagation(n: i32) -> Option<&'static str> {
    cri::MountPropagation::try_from(n)
        .ok()
        .map(|s| s.as_str_name())
}

fn stringify(v: &mut Value, key: &str) {
    if let Some(slot) = v.get_mut(key) {
        if let Some(n) = slot.as_i64() {
            *slot = Value::String(n.to_string());
        }
    }
}

/// A container of ListContainers.
pub fn container(c: &cri::Container) -> Value {
    let mut v = output::to_value(c);
    set_name(&mut v, "state", container_state);
    stringify(&mut v, "createdAt");
    v
}

/// A pod of ListPodSandbox.
pub fn pod(p: &cri::PodSandbox) -> Value {
    let mut v = output::to_value(p);
    set_name(&mut v, "state", pod_state);
    stringify(&mut v, "createdAt");
    v
}

/// A ContainerStatus, with its times as crictl shows them: started only once started,
/// finished only once exited.
pub fn container_status(s: &cri::ContainerStatus) -> Value {
    let mut v = output::to_value(s);
    set_name(&mut v, "state", container_state);
    if let Some(mounts) = v.get_mut("mounts").and_then(Value::as_array_mut) {
        for m in mounts {
            set_name(m, "propagation", propagation);
        }
    }
    let state = cri::ContainerState::try_from(s.state).ok();
    let started = if state == Some(cri::ContainerState::ContainerCreated) {
        0
    } else {
        s.started_at
    };
    let finished = match state {
        Some(cri::ContainerState::ContainerExited) => s.finished_at,
        Some(cri::ContainerState::ContainerUnknown) if s.finished_at > 0 => s.finished_at,
        _ => 0,
    };
    v["createdAt"] = Value::String(rfc3339(s.created_at));
    v["startedAt"] = Value::String(rfc3339(started));
    v["finishedAt"] = Value::String(rfc3339(finished));
    v
}

/// A PodSandboxStatus.
pub fn pod_status(s: &cri::PodSandboxStatus) -> Value {
    let mut v = output::to_value(s);
    set_name(&mut v, "state", pod_state);
    v["createdAt"] = Value::String(rfc3339(s.created_at));
    if let Some(opts) = v.pointer_mut("/linux/namespaces/options") {
        for key in ["network", "pid", "ipc"] {
            set_name(opts, key, namespace_mode);
        }
    }
    v
}

/// `{"status": ..., <info key>: <info value>...}` in that order: values that are JSON objects
/// are shown as such, others as strings. (A YAML mapping keeps the order; serde_json's map
/// would sort `info` before `status`.)
pub fn with_info(status: Value, info: &HashMap<String, String>) -> serde_yaml::Value {
    let mut doc = serde_yaml::Mapping::new();
    doc.insert("status".into(), yaml(status));
    let mut keys: Vec<&String> = info.keys().collect();
    keys.sort();
    for k in keys {
        let raw = &info[k];
        let parsed = if raw.trim_start().starts_with('{') {
            serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()))
        } else {
            Value::String(raw.trim_matches('"').to_string())
        };
        doc.insert(k.as_str().into(), yaml(parsed));
    }
    serde_yaml::Value::Mapping(doc)
}

fn yaml(v: Value) -> serde_yaml::Value {
    serde_yaml::to_value(v).unwrap_or(serde_yaml::Value::Null)
}

/// Prints statuses as crictl does: one document alone, several as an array.
pub fn print_statuses(mut docs: Vec<serde_yaml::Value>, format: Format) -> anyhow::Result<()> {
    let doc = if docs.len() == 1 {
        docs.remove(0)
    } else {
        serde_yaml::Value::Sequence(docs)
    };
    match format {
        Format::Yaml => print!("{}", serde_yaml::to_string(&doc)?),
        _ => println!("{}", serde_json::to_string_pretty(&doc)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_by_name_and_times_as_crictl() {
        let c = cri::ContainerStatus {
            id: "abc".into(),
            state: cri::ContainerState::ContainerExited as i32,
            created_at: 1_700_000_000_000_000_000,
            started_at: 1_700_000_001_000_000_000,
            finished_at: 1_700_000_002_000_000_000,
            mounts: vec![cri::Mount {
                propagation: cri::MountPropagation::PropagationBidirectional as i32,
                ..Default::default()
            }],
            log_path: "/l".into(),
            ..Default::default()
        };
        let v = container_status(&c);
        assert_eq!(v["state"], "CONTAINER_EXITED");
        assert_eq!(v["finishedAt"], "2023-11-14T22:13:22Z");
        assert_eq!(v["logPath"], "/l");
        assert_eq!(v["mounts"][0]["propagation"], "PROPAGATION_BIDIRECTIONAL");

        let created = cri::ContainerStatus {
            state: cri::ContainerState::ContainerCreated as i32,
            started_at: 5,
            ..Default::default()
        };
        assert_eq!(
            container_status(&created)["startedAt"],
            "1970-01-01T00:00:00Z"
        );

        let p = pod(&cri::PodSandbox {
            state: cri::PodSandboxState::SandboxNotready as i32,
            created_at: 42,
            ..Default::default()
        });
        assert_eq!(p["state"], "SANDBOX_NOTREADY");
        assert_eq!(p["createdAt"], "42");

        let info = HashMap::from([
            ("info".to_string(), r#"{"pid": 7}"#.to_string()),
            ("note".to_string(), "\"plain\"".to_string()),
        ]);
        let doc = with_info(Value::Bool(true), &info);
        assert_eq!(doc["info"]["pid"], 7);
        assert_eq!(doc["note"], "plain");
        let text = serde_json::to_string(&doc).unwrap();
        assert!(text.starts_with(r#"{"status":true,"info""#), "{text}");
    }
}
