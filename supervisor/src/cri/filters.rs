//! The filters of the List calls: id (or unique prefix), state, pod and labels (all given
//! labels must match).

use std::collections::HashMap;

use limpet_protos::cri::v1;

use crate::runtime::records::{Container, Sandbox};
use crate::runtime::status;

fn labels_match(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn id_matches(want: &str, id: &str) -> bool {
    want.is_empty() || id.starts_with(want)
}

pub fn sandbox(f: Option<&v1::PodSandboxFilter>, sb: &Sandbox) -> bool {
    let Some(f) = f else { return true };
    id_matches(&f.id, &sb.record.id)
        && f.state
            .as_ref()
            .map(|s| s.state == status::sandbox_state(sb.record.state) as i32)
            .unwrap_or(true)
        && labels_match(&f.label_selector, &sb.config.labels)
}

pub fn container(f: Option<&v1::ContainerFilter>, c: &Container) -> bool {
    let Some(f) = f else { return true };
    id_matches(&f.id, &c.record.id)
        && id_matches(&f.pod_sandbox_id, &c.record.sandbox_id)
        && f.state
            .as_ref()
            .map(|s| s.state == status::container_state(c.record.state) as i32)
            .unwrap_or(true)
        && labels_match(&f.label_selector, &c.config.labels)
}

pub fn container_stats(f: Option<&v1::ContainerStatsFilter>, c: &Container) -> bool {
    let Some(f) = f else { return true };
    id_matches(&f.id, &c.record.id)
        && id_matches(&f.pod_sandbox_id, &c.record.sandbox_id)
        && labels_match(&f.label_selector, &c.config.labels)
}

pub fn sandbox_stats(f: Option<&v1::PodSandboxStatsFilter>, sb: &Sandbox) -> bool {
    let Some(f) = f else { return true };
    id_matches(&f.id, &sb.record.id) && labels_match(&f.label_selector, &sb.config.labels)
}
