//! Task events to the master's event service (`containerd.services.events.ttrpc.v1.Events`
//! at the TTRPC address containerd or limpetd gives). One thread sends them in order; while
//! the master is away they wait in the queue and are retried, never dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use limpet_protos::api::ForwardRequest;
use limpet_protos::protobuf::well_known_types::any::Any;
use limpet_protos::protobuf::well_known_types::timestamp::Timestamp;
use limpet_protos::protobuf::Message;
use limpet_protos::topics;
use limpet_protos::ttrpc::context;
use limpet_protos::Envelope;
use limpet_protos::EventsClient;

pub struct Publisher {
    queue: Mutex<VecDeque<ForwardRequest>>,
    changed: Condvar,
    namespace: String,
}

const RPC_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// Wraps a message in an `Any` named `name`, the message's full protobuf name, which is how
/// containerd's typeurl names protobuf messages. (The name is given rather than looked up:
/// building protobuf descriptors at run time costs each shim hundreds of kilobytes.)
pub fn to_any(name: &str, msg: &impl Message) -> Any {
    Any {
        type_url: name.to_string(),
        value: msg.write_to_bytes().unwrap_or_default(),
        ..Default::default()
    }
}

/// The message type of each task event topic.
fn event_type(topic: &str) -> &'static str {
    match topic {
        topics::TASK_CREATE_EVENT_TOPIC => "containerd.events.TaskCreate",
        topics::TASK_START_EVENT_TOPIC => "containerd.events.TaskStart",
        topics::TASK_OOM_EVENT_TOPIC => "containerd.events.TaskOOM",
        topics::TASK_EXIT_EVENT_TOPIC => "containerd.events.TaskExit",
        topics::TASK_DELETE_EVENT_TOPIC => "containerd.events.TaskDelete",
        topics::TASK_EXEC_ADDED_EVENT_TOPIC => "containerd.events.TaskExecAdded",
        topics::TASK_EXEC_STARTED_EVENT_TOPIC => "containerd.events.TaskExecStarted",
        topics::TASK_PAUSED_EVENT_TOPIC => "containerd.events.TaskPaused",
        topics::TASK_RESUMED_EVENT_TOPIC => "containerd.events.TaskResumed",
        topics::TASK_CHECKPOINTED_EVENT_TOPIC => "containerd.events.TaskCheckpointed",
        _ => "",
    }
}

impl Publisher {
    /// Starts the sender thread. An empty address (no master to tell) keeps events nowhere.
    pub fn start(address: &str, namespace: &str) -> std::io::Result<Arc<Publisher>> {
        let publisher = Arc::new(Publisher {
            queue: Mutex::new(VecDeque::new()),
            changed: Condvar::new(),
            namespace: namespace.to_string(),
        });
        if !address.is_empty() {
            let address = match address.strip_prefix("unix://") {
                Some(_) => address.to_string(),
                None => format!("unix://{address}"),
            };
            let p = publisher.clone();
            std::thread::Builder::new()
                .name("events".into())
                .stack_size(128 * 1024)
                .spawn(move || p.send_loop(&address))?;
        }
        Ok(publisher)
    }

    pub fn publish(&self, topic: &str, event: &impl Message) {
        let envelope = Envelope {
            timestamp: Some(timestamp(SystemTime::now())).into(),
            namespace: self.namespace.clone(),
            topic: topic.to_string(),
            event: Some(to_any(event_type(topic), event)).into(),
            ..Default::default()
        };
        let req = ForwardRequest {
            envelope: Some(envelope).into(),
            ..Default::default()
        };
        self.lock().push_back(req);
        self.changed.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<ForwardRequest>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (bounded) until every queued event is delivered; used before the shim exits.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut q = self.lock();
        while !q.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = self
                .changed
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    fn send_loop(&self, address: &str) {
        let mut client: Option<EventsClient> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            let req = {
                let mut q = self.lock();
                while q.is_empty() {
                    q = self.changed.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                q.front().cloned()
            };
            let Some(req) = req else { continue };
            if client.is_none() {
                match limpet_protos::ttrpc::Client::connect(address) {
                    Ok(c) => client = Some(EventsClient::new(c)),
                    Err(e) => log::debug!("connect {address}: {e}"),
                }
            }
            let sent = match &client {
                Some(c) => c.forward(context::with_timeout(RPC_TIMEOUT.as_nanos() as i64), &req),
                None => Err(limpet_protos::ttrpc::Error::Others("not connected".into())),
            };
            match sent {
                Ok(_) => {
                    backoff = Duration::from_millis(50);
                    let mut q = self.lock();
                    q.pop_front();
                    if q.is_empty() {
                        // Events come in bursts; an idle connection would keep two threads.
                        client = None;
                    }
                    self.changed.notify_all();
                }
                Err(e) => {
                    log::debug!("publish {}: {e}; retrying", req.envelope.topic);
                    client = None;
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use limpet_protos::events::task::TaskExit;
    use limpet_protos::protobuf::MessageFull;

    #[test]
    fn event_type_names_are_the_messages_full_names() {
        assert_eq!(
            event_type(topics::TASK_EXIT_EVENT_TOPIC),
            TaskExit::descriptor().full_name()
        );
        for topic in [
            topics::TASK_CREATE_EVENT_TOPIC,
            topics::TASK_START_EVENT_TOPIC,
            topics::TASK_OOM_EVENT_TOPIC,
            topics::TASK_DELETE_EVENT_TOPIC,
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            topics::TASK_PAUSED_EVENT_TOPIC,
            topics::TASK_RESUMED_EVENT_TOPIC,
            topics::TASK_CHECKPOINTED_EVENT_TOPIC,
        ] {
            assert!(
                event_type(topic).starts_with("containerd.events.Task"),
                "{topic}"
            );
        }
    }

    #[test]
    fn events_wait_in_order_while_nobody_listens() {
        let p = Publisher::start("", "ns").unwrap();
        p.publish(topics::TASK_START_EVENT_TOPIC, &TaskExit::default());
        p.publish(topics::TASK_EXIT_EVENT_TOPIC, &TaskExit::default());
        let q = p.lock();
        let topics: Vec<_> = q.iter().map(|r| r.envelope.topic.clone()).collect();
        assert_eq!(topics, ["/tasks/start", "/tasks/exit"]);
        assert_eq!(q[1].envelope.event.type_url, "containerd.events.TaskExit");
        assert_eq!(q[1].envelope.namespace, "ns");
    }
}
