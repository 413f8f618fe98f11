//! What limpetd remembers of each pod sandbox and container, as stored (JSON beside the CRI
//! config) and as held in memory.

use std::path::PathBuf;

use limpet_protos::cri::v1::{ContainerConfig, PodSandboxConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    /// Being made: a crash leaves it to be undone at start-up.
    Creating,
    Ready,
    NotReady,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub state: SandboxState,
    /// Unix nanoseconds.
    pub created: i64,
    pub runtime_handler: String,
    /// Bind-mounted network namespace; `None` for host network.
    pub netns: Option<PathBuf>,
    /// The CNI ADD result, needed for the DEL.
    pub cni_result: Option<serde_json::Value>,
    /// Pod IPs, primary first.
    pub ips: Vec<String>,
    /// Address of the pod's shim, once started.
    pub shim_address: String,
    /// The sandbox process.
    pub pid: u32,
    /// True once CNI DEL ran and the netns is gone (after a stop).
    pub network_down: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Creating,
    Created,
    Running,
    Exited,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub state: ContainerState,
    /// Unix nanoseconds; 0 until it happens.
    pub created: i64,
    pub started: i64,
    pub finished: i64,
    pub exit_code: i32,
    pub pid: u32,
    pub oom_killed: bool,
    /// Reason and message set by limpetd (e.g. the shim vanished).
    pub reason: String,
    pub message: String,
    /// Image as the request named it, and what it resolved to.
    pub image_ref: String,
    pub image_id: String,
    pub image_name: String,
    /// Full path of the CRI log, or empty.
    pub log_path: String,
    pub stop_signal: String,
    /// User the spec runs as (uid, gid, extra gids).
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub username: String,
    /// The resources in the spec, as the CRI gives them back.
    pub resources: Option<serde_json::Value>,
}

/// A sandbox as held in memory.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub config: PodSandboxConfig,
    pub record: SandboxRecord,
}

#[derive(Debug, Clone)]
pub struct Container {
    pub config: ContainerConfig,
    pub record: ContainerRecord,
}

impl Sandbox {
    pub fn name_key(config: &PodSandboxConfig) -> String {
        let m = config.metadata.clone().unwrap_or_default();
        format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
    }

    pub fn host_network(&self) -> bool {
        self.record.netns.is_none()
    }
}

impl Container {
    pub fn name_key(sandbox_id: &str, config: &ContainerConfig) -> String {
        let m = config.metadata.clone().unwrap_or_default();
        format!("{sandbox_id}_{}_{}", m.name, m.attempt)
    }
}

impl ContainerRecord {
    /// The CRI reason of an exited container.
    pub fn exit_reason(&self) -> &str {
        if !self.reason.is_empty() {
            &self.reason
        } else if self.oom_killed {
            "OOMKilled"
        } else if self.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }
}
