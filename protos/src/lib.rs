//! Wire types of limpet: containerd's shim task API (v2 and v3), events, runc options,
//! cgroup metrics and the shim bootstrap protocol, re-exported from `containerd-shim-protos`;
//! and limpet's own shim log service (`log`).

#[cfg(feature = "cri")]
pub mod cri;
pub mod log;

use std::collections::HashMap;
use std::sync::Arc;

/// The envelope an event travels in to the master's event service.
pub use containerd_shim_protos::shim::event::Envelope;
pub use containerd_shim_protos::{
    api, bootstrap_api, cgroups, cgroups_v2, events, protobuf, shim::oci as runc_options, topics,
    ttrpc, types, Events, EventsClient, Task, TaskClient, TASK_API_VERSION,
};

/// ttrpc method table, as `ttrpc::Server::register_service` takes it.
pub type Methods = HashMap<String, Box<dyn ttrpc::MethodHandler + Send + Sync>>;

const TASK_V3: &str = "/containerd.task.v3.Task/";
const TASK_V2: &str = "/containerd.task.v2.Task/";

/// The task service registered under both `containerd.task.v3.Task` (containerd 2.x) and
/// `containerd.task.v2.Task` (containerd 1.x): the generated code knows only v3, and the two
/// services are the same messages under two names.
pub fn task_service(service: Arc<dyn Task + Send + Sync>) -> Methods {
    let mut methods = containerd_shim_protos::create_task(service.clone());
    let v2 = containerd_shim_protos::create_task(service)
        .into_iter()
        .filter_map(|(path, handler)| {
            path.strip_prefix(TASK_V3)
                .map(|method| (format!("{TASK_V2}{method}"), handler))
        });
    methods.extend(v2.collect::<Vec<_>>());
    methods
}

/// Type URLs of the `Any` payloads the task API carries.
pub mod type_urls {
    /// Runtime options of `io.containerd.runc.v2` (protobuf).
    pub const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
    /// Cgroup v1 metrics in a Stats response.
    pub const CGROUPS_V1_METRICS: &str = "io.containerd.cgroups.v1.Metrics";
    /// Cgroup v2 metrics in a Stats response.
    pub const CGROUPS_V2_METRICS: &str = "io.containerd.cgroups.v2.Metrics";
    /// JSON-encoded OCI `Process` of an Exec request.
    pub const OCI_PROCESS: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
    /// JSON-encoded OCI `LinuxResources` of an Update request.
    pub const OCI_LINUX_RESOURCES: &str =
        "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl Task for Nothing {}

    #[test]
    fn every_task_method_is_served_under_v2_and_v3() {
        let methods = task_service(Arc::new(Nothing));
        for name in [
            "State",
            "Create",
            "Start",
            "Delete",
            "Pids",
            "Pause",
            "Resume",
            "Checkpoint",
            "Kill",
            "Exec",
            "ResizePty",
            "CloseIO",
            "Update",
            "Wait",
            "Stats",
            "Connect",
            "Shutdown",
        ] {
            assert!(
                methods.contains_key(&format!("{TASK_V3}{name}")),
                "v3 {name}"
            );
            assert!(
                methods.contains_key(&format!("{TASK_V2}{name}")),
                "v2 {name}"
            );
        }
        assert_eq!(methods.len() % 2, 0);
    }
}
