//! limpetd's side of the shim v2 protocol, as containerd 1.6 speaks it: run the shim's
//! `start` action to get a shim's address ([`ShimLauncher`]), drive its task API over ttrpc
//! ([`ShimClient`]), receive its task events ([`EventsServer`]), and clean up after a shim
//! that died (the `delete` action).
//!
//! Everything here blocks (std threads and sockets, no tokio): the daemon calls it from
//! `spawn_blocking`.

mod client;
mod error;
mod events;
mod launcher;
mod stats;
mod types;

pub use client::{remove_stale_socket, shim_listening, socket_path, ShimClient};
pub use error::{Code, Result, ShimError};
pub use events::{decode as decode_event, EventHandler, EventsServer, ShimEvent, TaskEvent};
pub use launcher::{ShimLauncher, ACTION_TIMEOUT};
/// `containerd.runc.v1.Options`, the runtime options of Create (see [`runc_options`]).
pub use limpet_protos::runc_options::Options as RuncOptions;
/// The OCI types Exec and Update take.
pub use oci_spec::runtime::{LinuxResources, Process};
pub use stats::Metrics;
pub use types::{
    runc_options, CreateTask, DeleteOutcome, Exited, ProcessPid, RootfsMount, ShimInfo, Stdio,
    TaskState, TaskStatus,
};
