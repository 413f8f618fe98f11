//! Plain values of the task API, free of protobuf types, and the conversions at the wire.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use limpet_protos::api;
use limpet_protos::protobuf::well_known_types::any::Any;
use limpet_protos::protobuf::well_known_types::timestamp::Timestamp;
use limpet_protos::protobuf::{Message, MessageField};
use limpet_protos::runc_options::Options as RuncOptions;
use limpet_protos::type_urls;

/// Where a process's stdio goes: FIFO paths or `file://`, `binary://`, `cri-log://` URIs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// A mount the shim makes at `<bundle>/rootfs` before creating the container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootfsMount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// A Create request.
#[derive(Debug, Clone, Default)]
pub struct CreateTask {
    pub id: String,
    /// Absolute path of the OCI bundle (holding `config.json`).
    pub bundle: String,
    pub stdio: Stdio,
    /// Empty when the caller mounted `<bundle>/rootfs` itself.
    pub rootfs: Vec<RootfsMount>,
    /// Runtime options, normally [`runc_options`]'s `containerd.runc.v1.Options`.
    pub options: Option<Any>,
}

/// `containerd.runc.v1.Options` (binary_name, root, systemd_cgroup, no_pivot_root, ...)
/// wrapped as the `Any` that Create and the `start` action take.
pub fn runc_options(options: &RuncOptions) -> Any {
    Any {
        type_url: type_urls::RUNC_OPTIONS.to_string(),
        value: options.write_to_bytes().unwrap_or_default(),
        ..Default::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Unknown,
    Created,
    Running,
    Stopped,
    Paused,
    Pausing,
}

/// A task's or exec's state as the shim reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    pub id: String,
    pub exec_id: String,
    pub bundle: String,
    pub pid: u32,
    pub status: TaskStatus,
    pub stdio: Stdio,
    pub exit_status: u32,
    pub exited_at: Option<SystemTime>,
}

/// What Delete (the RPC or the `delete` action) reports of the process it removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteOutcome {
    pub pid: u32,
    pub exit_status: u32,
    pub exited_at: Option<SystemTime>,
}

/// What Wait reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exited {
    pub exit_status: u32,
    pub exited_at: Option<SystemTime>,
}

/// A process of a container: its pid and, for an exec, the exec id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPid {
    pub pid: u32,
    pub exec_id: Option<String>,
}

/// What Connect reports about the shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimInfo {
    pub shim_pid: u32,
    pub task_pid: u32,
    pub version: String,
}

/// A protobuf timestamp as a time; unset (or the zero time) is `None`.
pub fn time_of(ts: &MessageField<Timestamp>) -> Option<SystemTime> {
    let ts = ts.as_ref()?;
    if ts.seconds <= 0 && ts.nanos <= 0 {
        return None;
    }
    let secs = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

#[cfg(test)]
pub fn timestamp_of(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// True when an `Any` carries message `name`, with or without a URL prefix.
pub fn is_type(any: &Any, name: &str) -> bool {
    any.type_url == name || any.type_url.rsplit('/').next() == Some(name)
}

impl From<api::Status> for TaskStatus {
    fn from(s: api::Status) -> TaskStatus {
        match s {
            api::Status::CREATED => TaskStatus::Created,
            api::Status::RUNNING => TaskStatus::Running,
            api::Status::STOPPED => TaskStatus::Stopped,
            api::Status::PAUSED => TaskStatus::Paused,
            api::Status::PAUSING => TaskStatus::Pausing,
            _ => TaskStatus::Unknown,
        }
    }
}

impl From<api::StateResponse> for TaskState {
    fn from(r: api::StateResponse) -> TaskState {
        TaskState {
            status: r
                .status
                .enum_value()
                .map(TaskStatus::from)
                .unwrap_or(TaskStatus::Unknown),
            exited_at: time_of(&r.exited_at),
            id: r.id,
            exec_id: r.exec_id,
            bundle: r.bundle,
            pid: r.pid,
            stdio: Stdio {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                terminal: r.terminal,
            },
            exit_status: r.exit_status,
        }
    }
}

impl From<&api::DeleteResponse> for DeleteOutcome {
    fn from(r: &api::DeleteResponse) -> DeleteOutcome {
        DeleteOutcome {
            pid: r.pid,
            exit_status: r.exit_status,
            exited_at: time_of(&r.exited_at),
        }
    }
}

impl From<&RootfsMount> for api::Mount {
    fn from(m: &RootfsMount) -> api::Mount {
        api::Mount {
            type_: m.kind.clone(),
            source: m.source.clone(),
            options: m.options.clone(),
            ..Default::default()
        }
    }
}

impl From<&CreateTask> for api::CreateTaskRequest {
    fn from(t: &CreateTask) -> api::CreateTaskRequest {
        api::CreateTaskRequest {
            id: t.id.clone(),
            bundle: t.bundle.clone(),
            rootfs: t.rootfs.iter().map(api::Mount::from).collect(),
            terminal: t.stdio.terminal,
            stdin: t.stdio.stdin.clone(),
            stdout: t.stdio.stdout.clone(),
            stderr: t.stdio.stderr.clone(),
            options: t.options.clone().into(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_zero_is_unset() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(time_of(&Some(timestamp_of(t)).into()), Some(t));
        assert_eq!(time_of(&MessageField::none()), None);
        assert_eq!(time_of(&Some(Timestamp::default()).into()), None);
    }

    #[test]
    fn runc_options_are_typed() {
        let any = runc_options(&RuncOptions {
            root: "/r".into(),
            ..Default::default()
        });
        assert!(is_type(&any, "containerd.runc.v1.Options"));
        assert_eq!(
            RuncOptions::parse_from_bytes(&any.value).unwrap().root,
            "/r"
        );
        let prefixed = Any {
            type_url: "types.example/containerd.runc.v1.Options".into(),
            ..Default::default()
        };
        assert!(is_type(&prefixed, "containerd.runc.v1.Options"));
    }

    #[test]
    fn state_converts() {
        let r = api::StateResponse {
            id: "c".into(),
            pid: 7,
            status: api::Status::STOPPED.into(),
            stdout: "/o".into(),
            exit_status: 3,
            exited_at: Some(timestamp_of(UNIX_EPOCH + Duration::from_secs(5))).into(),
            ..Default::default()
        };
        let s = TaskState::from(r);
        assert_eq!(s.status, TaskStatus::Stopped);
        assert_eq!(
            (s.pid, s.exit_status, s.stdio.stdout.as_str()),
            (7, 3, "/o")
        );
        assert_eq!(s.exited_at, Some(UNIX_EPOCH + Duration::from_secs(5)));
    }
}
