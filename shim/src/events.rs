//! Task events to the master's event service (`containerd.services.events.ttrpc.v1.Events`
//! at the TTRPC address containerd or limpetd gives). One thread sends them in order; while
//! the master is away they wait in the queue and are retried, never dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use limpet_protos::api::ForwardRequest;
use limpet_protos::Envelope;
use limpet_protos::protobuf::well_known_types::any::Any;
use limpet_protos::protobuf::well_known_types::timestamp::Timestamp;
use limpet_protos::protobuf::MessageFull;
use limpet_protos::ttrpc::context;
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
    Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32, ..Default::default() }
}

/// Wraps a message in an `Any` named the way containerd's typeurl names protobuf messages.
pub fn to_any<M: MessageFull>(msg: &M) -> Any {
    Any {
        type_url: M::descriptor().full_name().to_string(),
        value: msg.write_to_bytes().unwrap_or_default(),
        ..Default::default()
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

    pub fn publish(&self, topic: &str, event: &impl MessageFull) {
        let envelope = Envelope {
            timestamp: Some(timestamp(SystemTime::now())).into(),
            namespace: self.namespace.clone(),
            topic: topic.to_string(),
            event: Some(to_any(event)).into(),
            ..Default::default()
        };
        let req = ForwardRequest { envelope: Some(envelope).into(), ..Default::default() };
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
            q = self.changed.wait_timeout(q, left).unwrap_or_else(|p| p.into_inner()).0;
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
                    self.lock().pop_front();
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
