//! Events in both directions: task events from the shims (exits and OOMs recorded before the
//! shim is answered, so none is lost across a crash), and the CRI container event stream
//! (`GetContainerEvents`) fed by every state change.

use limpet_protos::cri::v1;
use tokio::sync::broadcast;

use super::records::{Container, ContainerState, Sandbox, SandboxState};
use super::{status, Runtime};
use crate::shims::TaskEvent;

/// Subscribers that fall this far behind miss events rather than slow the runtime down.
const BACKLOG: usize = 1024;

pub struct ContainerEvents {
    tx: broadcast::Sender<v1::ContainerEventResponse>,
}

impl Default for ContainerEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl ContainerEvents {
    pub fn new() -> Self {
        ContainerEvents {
            tx: broadcast::channel(BACKLOG).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<v1::ContainerEventResponse> {
        self.tx.subscribe()
    }

    /// Statuses are only built for someone: most runtimes have no event subscriber.
    fn unheard(&self) -> bool {
        self.tx.receiver_count() == 0
    }

    fn send(
        &self,
        id: &str,
        kind: v1::ContainerEventType,
        pod: Option<v1::PodSandboxStatus>,
        containers: Vec<v1::ContainerStatus>,
    ) {
        let _ = self.tx.send(v1::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: crate::store::now(),
            pod_sandbox_status: pod,
            containers_statuses: containers,
        });
    }

    fn pod_statuses(
        &self,
        rt: &Runtime,
        sandbox_id: &str,
    ) -> (Option<v1::PodSandboxStatus>, Vec<v1::ContainerStatus>) {
        let default = &rt.config().runtime.default_runtime;
        let pod = rt
            .sandbox(sandbox_id)
            .ok()
            .map(|s| status::pod_sandbox_status(&s, default));
        let containers = rt
            .containers_of(sandbox_id)
            .iter()
            .map(status::container_status)
            .collect();
        (pod, containers)
    }

    pub fn container_changed(&self, rt: &Runtime, c: &Container) {
        if self.unheard() {
            return;
        }
        let kind = match c.record.state {
            ContainerState::Created => v1::ContainerEventType::ContainerCreatedEvent,
            ContainerState::Running => v1::ContainerEventType::ContainerStartedEvent,
            ContainerState::Exited | ContainerState::Unknown => {
                v1::ContainerEventType::ContainerStoppedEvent
            }
            ContainerState::Creating => return,
        };
        let (pod, containers) = self.pod_statuses(rt, &c.record.sandbox_id);
        self.send(&c.record.id, kind, pod, containers);
    }

    pub fn container_removed(&self, rt: &Runtime, c: &Container) {
        if self.unheard() {
            return;
        }
        let (pod, containers) = self.pod_statuses(rt, &c.record.sandbox_id);
        self.send(
            &c.record.id,
            v1::ContainerEventType::ContainerDeletedEvent,
            pod,
            containers,
        );
    }

    pub fn sandbox_changed(&self, rt: &Runtime, sb: &Sandbox) {
        if self.unheard() {
            return;
        }
        let kind = match sb.record.state {
            SandboxState::Ready => v1::ContainerEventType::ContainerStartedEvent,
            SandboxState::NotReady => v1::ContainerEventType::ContainerStoppedEvent,
            SandboxState::Creating => return,
        };
        let (pod, containers) = self.pod_statuses(rt, &sb.record.id);
        self.send(&sb.record.id, kind, pod, containers);
    }

    pub fn sandbox_removed(&self, rt: &Runtime, sb: &Sandbox) {
        if self.unheard() {
            return;
        }
        let default = &rt.config().runtime.default_runtime;
        self.send(
            &sb.record.id,
            v1::ContainerEventType::ContainerDeletedEvent,
            Some(status::pod_sandbox_status(sb, default)),
            Vec::new(),
        );
    }
}

impl Runtime {
    /// Handles one task event from a shim; returns once it is stored. An error refuses the
    /// event, and the shim sends it again.
    pub fn handle_task_event(&self, event: &TaskEvent) -> super::Result<()> {
        let result = match event {
            TaskEvent::Exit {
                container_id,
                exec_id,
                exit_status,
                exited_at,
                ..
            } if exec_id.is_empty() || exec_id == container_id => {
                self.init_exited(container_id, *exit_status, nanos(*exited_at))
            }
            TaskEvent::Oom { container_id } => self
                .update_container(container_id, |r| r.oom_killed = true)
                .map(|_| ()),
            _ => Ok(()),
        };
        if let Err(e) = &result {
            tracing::error!(?event, error = %e, "recording a task event");
        }
        result
    }

    fn init_exited(&self, id: &str, code: u32, at: i64) -> super::Result<()> {
        let sandbox = self.tables().sandboxes.get(id).cloned();
        if let Some(mut sb) = sandbox {
            if sb.record.state == SandboxState::Ready {
                sb.record.state = SandboxState::NotReady;
                self.put_sandbox(&sb)?;
                self.events.sandbox_changed(self, &sb);
            }
            return Ok(());
        }
        self.record_exit(id, code, at)
    }
}

pub fn nanos(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Runtime {
    /// Serves the shims' event service; each event is recorded before the shim is answered.
    pub fn serve_events(self: &std::sync::Arc<Self>) -> super::Result<crate::shims::EventsServer> {
        let rt = self.clone();
        crate::shims::EventsServer::start(
            &self.dirs.events_socket,
            move |ev: crate::shims::ShimEvent| rt.handle_task_event(&ev.event),
        )
        .map_err(super::error::shim_err("serving the shims' events"))
    }

    /// ReopenContainerLog: the shim reopens the log file (after a rotation renamed it).
    pub async fn reopen_container_log(&self, id: &str) -> super::Result<()> {
        let c = self.container(id)?;
        if c.record.state != ContainerState::Running {
            return Err(super::RuntimeError::FailedPrecondition(format!(
                "container {} is not running",
                c.record.id
            )));
        }
        let address = self.sandbox(&c.record.sandbox_id)?.record.shim_address;
        self.shims.reopen_log(&address, &c.record.id).await
    }
}
