//! Records as the CRI shows them: PodSandbox/PodSandboxStatus, Container/ContainerStatus.

use limpet_protos::cri::v1;

use super::container::resources_from_json;
use super::records::{Container, ContainerState, Sandbox, SandboxState};

pub fn sandbox_state(s: SandboxState) -> v1::PodSandboxState {
    match s {
        SandboxState::Ready => v1::PodSandboxState::SandboxReady,
        _ => v1::PodSandboxState::SandboxNotready,
    }
}

pub fn container_state(s: ContainerState) -> v1::ContainerState {
    match s {
        ContainerState::Creating | ContainerState::Created => v1::ContainerState::ContainerCreated,
        ContainerState::Running => v1::ContainerState::ContainerRunning,
        ContainerState::Exited => v1::ContainerState::ContainerExited,
        ContainerState::Unknown => v1::ContainerState::ContainerUnknown,
    }
}

/// The handler a client asked for: empty for the default one, as containerd reports it (and
/// crictl shows "(default)"). `default` is the configured default runtime.
fn requested_handler(sb: &Sandbox, default: &str) -> String {
    if sb.record.runtime_handler == default {
        String::new()
    } else {
        sb.record.runtime_handler.clone()
    }
}

pub fn pod_sandbox(sb: &Sandbox, default_handler: &str) -> v1::PodSandbox {
    v1::PodSandbox {
        id: sb.record.id.clone(),
        metadata: sb.config.metadata.clone(),
        state: sandbox_state(sb.record.state) as i32,
        created_at: sb.record.created,
        labels: sb.config.labels.clone(),
        annotations: sb.config.annotations.clone(),
        runtime_handler: requested_handler(sb, default_handler),
    }
}

pub fn pod_sandbox_status(sb: &Sandbox, default_handler: &str) -> v1::PodSandboxStatus {
    let mut ips = sb.record.ips.iter();
    let network = (!sb.host_network()).then(|| v1::PodSandboxNetworkStatus {
        ip: ips.next().cloned().unwrap_or_default(),
        additional_ips: ips.map(|ip| v1::PodIp { ip: ip.clone() }).collect(),
    });
    let ns = super::sandbox::namespace_options(&sb.config);
    v1::PodSandboxStatus {
        id: sb.record.id.clone(),
        metadata: sb.config.metadata.clone(),
        state: sandbox_state(sb.record.state) as i32,
        created_at: sb.record.created,
        network: network.or(Some(v1::PodSandboxNetworkStatus::default())),
        linux: Some(v1::LinuxPodSandboxStatus {
            namespaces: Some(v1::Namespace { options: Some(ns) }),
        }),
        labels: sb.config.labels.clone(),
        annotations: sb.config.annotations.clone(),
        runtime_handler: requested_handler(sb, default_handler),
    }
}

/// The `info` of a verbose PodSandboxStatus, shaped like containerd's.
pub fn pod_sandbox_info(sb: &Sandbox) -> std::collections::HashMap<String, String> {
    let info = serde_json::json!({
        "pid": sb.record.pid,
        "processStatus": if sb.record.state == SandboxState::Ready { "running" } else { "stopped" },
        "netNamespaceClosed": sb.record.network_down,
        "runtimeHandler": sb.record.runtime_handler,
        "netns": sb.record.netns,
        "shimAddress": sb.record.shim_address,
        "cniResult": sb.record.cni_result,
    });
    std::collections::HashMap::from([("info".to_string(), info.to_string())])
}

pub fn container(c: &Container) -> v1::Container {
    v1::Container {
        id: c.record.id.clone(),
        pod_sandbox_id: c.record.sandbox_id.clone(),
        metadata: c.config.metadata.clone(),
        image: c.config.image.clone(),
        image_ref: c.record.image_id.clone(),
        state: container_state(c.record.state) as i32,
        created_at: c.record.created,
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        image_id: c.record.image_id.clone(),
    }
}

pub fn container_status(c: &Container) -> v1::ContainerStatus {
    let r = &c.record;
    let (reason, message) = match r.state {
        ContainerState::Exited => (r.exit_reason().to_string(), r.message.clone()),
        _ => (String::new(), String::new()),
    };
    v1::ContainerStatus {
        id: r.id.clone(),
        metadata: c.config.metadata.clone(),
        state: container_state(r.state) as i32,
        created_at: r.created,
        started_at: r.started,
        finished_at: r.finished,
        exit_code: r.exit_code,
        image: Some(v1::ImageSpec {
            image: r.image_name.clone(),
            ..c.config.image.clone().unwrap_or_default()
        }),
        image_ref: r.image_id.clone(),
        reason,
        message,
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: c.config.mounts.clone(),
        log_path: r.log_path.clone(),
        resources: r.resources.as_ref().map(|v| v1::ContainerResources {
            linux: Some(resources_from_json(v)),
            windows: None,
        }),
        image_id: r.image_id.clone(),
        user: Some(v1::ContainerUser {
            linux: Some(v1::LinuxContainerUser {
                uid: r.uid as i64,
                gid: r.gid as i64,
                supplemental_groups: r.groups.iter().map(|g| *g as i64).collect(),
            }),
        }),
    }
}

/// The `info` of a verbose ContainerStatus.
pub fn container_info(c: &Container) -> std::collections::HashMap<String, String> {
    let info = serde_json::json!({
        "sandboxID": c.record.sandbox_id,
        "pid": c.record.pid,
        "imageRef": c.record.image_ref,
        "logPath": c.record.log_path,
        "oomKilled": c.record.oom_killed,
        // What crictl-style clients read to attach with or without a terminal.
        "config": {
            "tty": c.config.tty,
            "stdin": c.config.stdin,
            "stdin_once": c.config.stdin_once,
        },
    });
    std::collections::HashMap::from([("info".to_string(), info.to_string())])
}
