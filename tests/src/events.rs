//! `ctr events` as a stream the test can wait on: what the shim published (TaskCreate,
//! TaskStart, TaskExit, ...) as containerd relays it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::containerd::Containerd;
use crate::ctr::kill_and_reap;
use crate::error::{io_err, HarnessError, Result};

#[derive(Debug, Clone)]
pub struct Event {
    pub namespace: String,
    pub topic: String,
    pub payload: serde_json::Value,
}

impl Event {
    /// `2026-01-01 10:00:00.1 +0000 UTC NS /tasks/exit {"container_id":...}`
    fn parse(line: &str) -> Option<Event> {
        let mut fields = line.splitn(7, ' ');
        let _date = fields.next()?;
        let _time = fields.next()?;
        let _offset = fields.next()?;
        let _zone = fields.next()?;
        let namespace = fields.next()?.to_string();
        let topic = fields.next()?.to_string();
        let payload = serde_json::from_str(fields.next().unwrap_or("{}")).ok()?;
        Some(Event {
            namespace,
            topic,
            payload,
        })
    }

    /// A string field of the payload ("" when absent).
    pub fn str(&self, key: &str) -> &str {
        self.payload.get(key).and_then(|v| v.as_str()).unwrap_or("")
    }

    /// An integer field of the payload; proto3 JSON omits zero values, so absent is 0.
    pub fn int(&self, key: &str) -> i64 {
        self.payload.get(key).and_then(|v| v.as_i64()).unwrap_or(0)
    }
}

/// A running `ctr events`, killed on drop.
pub struct EventStream {
    child: Child,
    events: Arc<Mutex<Vec<Event>>>,
    namespace: String,
}

impl EventStream {
    /// Subscribes and returns once the subscription is known to be live (a probe event
    /// made by labelling the namespace has come through).
    pub fn subscribe(containerd: &Containerd, namespace: &str) -> Result<EventStream> {
        let args = containerd.ctr_args(namespace, &["events"]);
        let mut child = Command::new(containerd.ctr_binary())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err("spawn ctr events"))?;
        let events = Arc::new(Mutex::new(Vec::new()));
        if let Some(stdout) = child.stdout.take() {
            let sink = Arc::clone(&events);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                    if let Some(event) = Event::parse(&line) {
                        sink.lock().unwrap_or_else(|p| p.into_inner()).push(event);
                    }
                }
            });
        }
        let stream = EventStream {
            child,
            events,
            namespace: namespace.to_string(),
        };
        stream.wait_live(containerd)?;
        Ok(stream)
    }

    fn wait_live(&self, containerd: &Containerd) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in 0.. {
            let label = format!("limpet.test/probe={n}");
            containerd.ctr(
                &self.namespace,
                &["namespaces", "label", &self.namespace, &label],
            );
            let seen = self.wait_for(Duration::from_millis(200), |e| {
                e.topic == "/namespaces/update"
                    && e.payload.to_string().contains(&format!("\"{n}\""))
            });
            if seen.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                break;
            }
        }
        Err(HarnessError::Setup(
            "ctr events delivered no probe event".to_string(),
        ))
    }

    /// Every event of our namespace so far.
    pub fn all(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|e| e.namespace == self.namespace)
            .cloned()
            .collect()
    }

    /// The first event of our namespace matching `pred`, waiting up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.all().into_iter().find(|e| pred(e)) {
                return Some(found);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Topics of our namespace's task events, in order, for readable assertions.
    pub fn task_topics(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|e| e.topic.starts_with("/tasks/"))
            .map(|e| e.topic)
            .collect()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child, Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ctr_event_lines() {
        let line = "2026-11-25 20:21:24.107921063 +0000 UTC t5 /tasks/exit \
            {\"container_id\":\"ev\",\"id\":\"ev\",\"pid\":16801,\"exit_status\":5}";
        let event = Event::parse(line).expect("parses");
        assert_eq!(event.namespace, "t5");
        assert_eq!(event.topic, "/tasks/exit");
        assert_eq!(event.str("container_id"), "ev");
        assert_eq!(event.int("exit_status"), 5);
        assert_eq!(event.int("missing"), 0);
    }
}
