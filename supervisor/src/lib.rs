//! limpetd: a CRI v1 runtime. This crate holds the daemon's parts (config, metadata store,
//! content store, snapshots, image pulling, CRI glue, metrics) for the `limpetd` and
//! `limpetctl` binaries and for tests.

pub mod config;
pub mod config_runtime;
pub mod config_streaming;
pub mod content;
pub mod cri;
pub mod daemon;
pub mod digest;
pub mod fsusage;
pub mod images;
pub mod lock;
pub mod memory;
pub mod metrics;
pub mod network;
pub mod oci;
pub mod runtime;
pub mod shims;
pub mod snapshots;
pub mod store;
pub mod streaming;
