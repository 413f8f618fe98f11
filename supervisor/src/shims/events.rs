//! The events service shims publish to (`containerd.services.events.ttrpc.v1.Events`,
//! method Forward, at the `TTRPC_ADDRESS` they were started with). Each envelope is decoded
//! into a [`TaskEvent`] and handed to the handler; Forward is answered only once the
//! handler returned Ok, and a shim retries an event until it is answered. So an event the
//! shim saw acknowledged has been handled, even across a crash of limpetd. Delivery is at
//! least once: a handler must accept the same event twice.

use std::fmt::Display;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use limpet_protos::api::ForwardRequest;
use limpet_protos::events::task as ev;
use limpet_protos::protobuf::well_known_types::empty::Empty;
use limpet_protos::protobuf::Message;
use limpet_protos::ttrpc::{self, Code, TtrpcContext};
use limpet_protos::{topics, Envelope, Events};

use super::error::{Result, ShimError};
use super::types::time_of;

/// A task event, as limpetd cares about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    Create {
        container_id: String,
        pid: u32,
    },
    Start {
        container_id: String,
        pid: u32,
    },
    /// `exec_id` is the container id for the init, as the shim sends it.
    Exit {
        container_id: String,
        exec_id: String,
        pid: u32,
        exit_status: u32,
        exited_at: SystemTime,
    },
    Oom {
        container_id: String,
    },
    ExecAdded {
        container_id: String,
        exec_id: String,
    },
    ExecStarted {
        container_id: String,
        exec_id: String,
        pid: u32,
    },
    Delete {
        container_id: String,
        pid: u32,
        exit_status: u32,
        exited_at: SystemTime,
    },
    Paused {
        container_id: String,
    },
    Resumed {
        container_id: String,
    },
    /// Any other topic (or a payload that could not be read).
    Other(String),
}

impl TaskEvent {
    /// True for the exit of a container's init rather than of an exec.
    pub fn is_init_exit(&self) -> bool {
        matches!(self, TaskEvent::Exit { container_id, exec_id, .. }
            if exec_id.is_empty() || exec_id == container_id)
    }
}

/// An event with its envelope: which namespace's shim sent it, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimEvent {
    pub namespace: String,
    pub timestamp: SystemTime,
    pub topic: String,
    pub event: TaskEvent,
}

/// Receives events. An error refuses the event: the shim sends it again later.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(&self, event: ShimEvent) -> std::result::Result<(), String>;
}

impl<F, E> EventHandler for F
where
    F: Fn(ShimEvent) -> std::result::Result<(), E> + Send + Sync + 'static,
    E: Display,
{
    fn handle(&self, event: ShimEvent) -> std::result::Result<(), String> {
        self(event).map_err(|e| e.to_string())
    }
}

/// Events go into a channel: acknowledged once queued, so not durable across a crash.
impl EventHandler for Sender<ShimEvent> {
    fn handle(&self, event: ShimEvent) -> std::result::Result<(), String> {
        self.send(event)
            .map_err(|_| "event receiver is gone".to_string())
    }
}

/// Reads an envelope. A payload of an unknown or unreadable type becomes `Other(topic)`.
pub fn decode(envelope: &Envelope) -> ShimEvent {
    let event = envelope
        .event
        .as_ref()
        .and_then(|any| decode_payload(&envelope.topic, &any.value))
        .unwrap_or_else(|| TaskEvent::Other(envelope.topic.clone()));
    ShimEvent {
        namespace: envelope.namespace.clone(),
        timestamp: time_of(&envelope.timestamp).unwrap_or(UNIX_EPOCH),
        topic: envelope.topic.clone(),
        event,
    }
}

/// The payload's type follows from the topic (containerd's shims name it in the type URL
/// too, but the topic is what both generations agree on).
fn decode_payload(topic: &str, value: &[u8]) -> Option<TaskEvent> {
    let at = |t| time_of(t).unwrap_or(UNIX_EPOCH);
    Some(match topic {
        topics::TASK_CREATE_EVENT_TOPIC => {
            let e = ev::TaskCreate::parse_from_bytes(value).ok()?;
            TaskEvent::Create {
                container_id: e.container_id,
                pid: e.pid,
            }
        }
        topics::TASK_START_EVENT_TOPIC => {
            let e = ev::TaskStart::parse_from_bytes(value).ok()?;
            TaskEvent::Start {
                container_id: e.container_id,
                pid: e.pid,
            }
        }
        topics::TASK_EXIT_EVENT_TOPIC => {
            let e = ev::TaskExit::parse_from_bytes(value).ok()?;
            TaskEvent::Exit {
                exited_at: at(&e.exited_at),
                container_id: e.container_id,
                exec_id: e.id,
                pid: e.pid,
                exit_status: e.exit_status,
            }
        }
        topics::TASK_OOM_EVENT_TOPIC => TaskEvent::Oom {
            container_id: ev::TaskOOM::parse_from_bytes(value).ok()?.container_id,
        },
        topics::TASK_EXEC_ADDED_EVENT_TOPIC => {
            let e = ev::TaskExecAdded::parse_from_bytes(value).ok()?;
            TaskEvent::ExecAdded {
                container_id: e.container_id,
                exec_id: e.exec_id,
            }
        }
        topics::TASK_EXEC_STARTED_EVENT_TOPIC => {
            let e = ev::TaskExecStarted::parse_from_bytes(value).ok()?;
            TaskEvent::ExecStarted {
                container_id: e.container_id,
                exec_id: e.exec_id,
                pid: e.pid,
            }
        }
        topics::TASK_DELETE_EVENT_TOPIC => {
            let e = ev::TaskDelete::parse_from_bytes(value).ok()?;
            TaskEvent::Delete {
                exited_at: at(&e.exited_at),
                container_id: e.container_id,
                pid: e.pid,
                exit_status: e.exit_status,
            }
        }
        topics::TASK_PAUSED_EVENT_TOPIC => TaskEvent::Paused {
            container_id: ev::TaskPaused::parse_from_bytes(value).ok()?.container_id,
        },
        topics::TASK_RESUMED_EVENT_TOPIC => TaskEvent::Resumed {
            container_id: ev::TaskResumed::parse_from_bytes(value).ok()?.container_id,
        },
        _ => return None,
    })
}

struct Service {
    handler: Arc<dyn EventHandler>,
}

impl Events for Service {
    fn forward(&self, _: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let Some(envelope) = req.envelope.as_ref() else {
            // Refusing it would stall every later event of that shim.
            tracing::warn!("shim event without an envelope, dropped");
            return Ok(Empty::new());
        };
        let event = decode(envelope);
        if let TaskEvent::Other(topic) = &event.event {
            tracing::debug!(topic, "shim event of no interest");
        }
        self.handler.handle(event).map_err(|e| {
            tracing::warn!(topic = envelope.topic, "shim event refused: {e}");
            ttrpc::Error::RpcStatus(ttrpc::get_status(Code::UNAVAILABLE, e))
        })?;
        Ok(Empty::new())
    }
}

/// limpetd's events server on a unix socket; stops (and removes its socket) when dropped.
pub struct EventsServer {
    path: PathBuf,
    server: Option<ttrpc::Server>,
    // Owned here: the ttrpc server never closes a listener it was given.
    listener: Option<UnixListener>,
}

impl std::fmt::Debug for EventsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsServer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EventsServer {
    /// Listens on `path` (replacing a stale socket left by a previous run) and serves
    /// Forward, handing each event to `handler` before answering.
    pub fn start(path: &Path, handler: impl EventHandler) -> Result<EventsServer> {
        let io_err = |context: String| move |source| ShimError::Io { context, source };
        remove_stale(path).map_err(io_err(format!("events socket {}", path.display())))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        }
        let listener =
            UnixListener::bind(path).map_err(io_err(format!("listen on {}", path.display())))?;
        let service = Arc::new(Service {
            handler: Arc::new(handler),
        });
        let ttrpc_err = |e: ttrpc::Error| ShimError::Ttrpc {
            context: format!("events server on {}", path.display()),
            detail: e.to_string(),
        };
        let mut server = ttrpc::Server::new()
            .add_listener(listener.as_raw_fd())
            .map_err(ttrpc_err)?
            .register_service(containerd_shim_protos::create_events(service));
        let mut this = EventsServer {
            path: path.to_path_buf(),
            server: None,
            listener: Some(listener),
        };
        server.start().map_err(ttrpc_err)?;
        this.server = Some(server);
        Ok(this)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving; shims keep their events until a server listens again.
    pub fn stop(self) {}
}

impl Drop for EventsServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        // Unlinked first, so that no shim connects to a listener nobody serves.
        let _ = std::fs::remove_file(&self.path);
        self.listener.take();
    }
}

/// Removes a socket nobody listens on; a live one means another server owns the path.
fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a socket",
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another events server listens on it",
        ));
    }
    std::fs::remove_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use limpet_protos::api::ForwardRequest;
    use limpet_protos::protobuf::well_known_types::any::Any;
    use limpet_protos::EventsClient;
    use std::sync::{mpsc, Mutex};
    use std::time::Duration;

    use crate::shims::types::timestamp_of;

    fn envelope(topic: &str, type_url: &str, msg: &impl Message) -> Envelope {
        Envelope {
            timestamp: Some(timestamp_of(UNIX_EPOCH + Duration::from_secs(10))).into(),
            namespace: "k8s.io".into(),
            topic: topic.into(),
            event: Some(Any {
                type_url: type_url.into(),
                value: msg.write_to_bytes().unwrap(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        }
    }

    fn exit_envelope() -> Envelope {
        envelope(
            topics::TASK_EXIT_EVENT_TOPIC,
            "containerd.events.TaskExit",
            &ev::TaskExit {
                container_id: "c1".into(),
                id: "c1".into(),
                pid: 42,
                exit_status: 3,
                exited_at: Some(timestamp_of(UNIX_EPOCH + Duration::from_secs(9))).into(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn envelopes_decode() {
        let e = decode(&exit_envelope());
        assert_eq!(e.namespace, "k8s.io");
        assert_eq!(e.timestamp, UNIX_EPOCH + Duration::from_secs(10));
        assert_eq!(
            e.event,
            TaskEvent::Exit {
                container_id: "c1".into(),
                exec_id: "c1".into(),
                pid: 42,
                exit_status: 3,
                exited_at: UNIX_EPOCH + Duration::from_secs(9),
            }
        );
        assert!(e.event.is_init_exit());
        let oom = envelope(
            topics::TASK_OOM_EVENT_TOPIC,
            "containerd.events.TaskOOM",
            &ev::TaskOOM {
                container_id: "c2".into(),
                ..Default::default()
            },
        );
        assert_eq!(
            decode(&oom).event,
            TaskEvent::Oom {
                container_id: "c2".into()
            }
        );
        let other = envelope("/containers/create", "x", &Empty::new());
        assert_eq!(
            decode(&other).event,
            TaskEvent::Other("/containers/create".into())
        );
        let mut broken = exit_envelope();
        broken.event.as_mut().unwrap().value = vec![0xff, 0xff];
        assert_eq!(
            decode(&broken).event,
            TaskEvent::Other("/tasks/exit".into())
        );
    }

    fn forward(path: &Path, env: Envelope) -> ttrpc::Result<Empty> {
        let client =
            ttrpc::Client::connect(&format!("unix://{}", path.display())).expect("connect");
        let req = ForwardRequest {
            envelope: Some(env).into(),
            ..Default::default()
        };
        EventsClient::new(client).forward(ttrpc::context::with_timeout(5_000_000_000), &req)
    }

    #[test]
    fn forward_is_answered_after_the_handler_and_refusals_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.sock");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let refuse = Arc::new(Mutex::new(true));
        let server = {
            let (seen, refuse) = (seen.clone(), refuse.clone());
            EventsServer::start(&path, move |e: ShimEvent| {
                if *refuse.lock().unwrap() {
                    return Err("store is down");
                }
                seen.lock().unwrap().push(e.event);
                Ok(())
            })
            .unwrap()
        };
        let e = forward(&path, exit_envelope()).unwrap_err();
        assert!(e.to_string().contains("store is down"), "{e}");
        *refuse.lock().unwrap() = false;
        forward(&path, exit_envelope()).unwrap();
        assert_eq!(seen.lock().unwrap().len(), 1);
        drop(server);
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.sock");
        drop(UnixListener::bind(&path).unwrap());
        let (tx, rx) = mpsc::channel();
        let server = EventsServer::start(&path, tx).unwrap();
        let (tx2, _rx2) = mpsc::channel();
        let e = EventsServer::start(&path, tx2).unwrap_err();
        assert!(e.to_string().contains("another events server"), "{e}");
        forward(&path, exit_envelope()).unwrap();
        assert!(rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .event
            .is_init_exit());
        server.stop();
        // And it can come back on the same path.
        let (tx, _rx) = mpsc::channel();
        let _again = EventsServer::start(&path, tx).unwrap();
    }
}
