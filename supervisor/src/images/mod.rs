//! Images: references, registry hosts and auth, pulling into the content store and
//! snapshots, the queries of the CRI ImageService, and garbage collection.

pub mod auth;
mod error;
mod gc;
pub mod hosts;
mod layer;
mod leases;
pub mod manifest;
mod pull;
pub mod reference;
pub mod registry;
mod service;

pub use error::PullError;
pub use service::{FsUsage, ImageInfo, ImageQueryError};

use std::sync::Arc;

use crate::config::Config;
use crate::content::ContentStore;
use crate::metrics::Metrics;
use crate::snapshots::Snapshotter;
use crate::store::Store;

/// Everything that images are made of, and the operations on them.
pub struct Images {
    pub store: Arc<Store>,
    pub content: Arc<ContentStore>,
    pub snapshots: Arc<Snapshotter>,
    registry: registry::RegistryClient,
    leases: leases::Leases,
    flights: leases::Flights,
    metrics: Arc<Metrics>,
    max_concurrent_downloads: usize,
}

impl Images {
    pub fn new(
        config: &Config,
        store: Arc<Store>,
        content: Arc<ContentStore>,
        snapshots: Arc<Snapshotter>,
        metrics: Arc<Metrics>,
    ) -> Images {
        let hosts = hosts::HostsConfig::new(&config.registry.config_path);
        Images {
            store,
            content,
            snapshots,
            registry: registry::RegistryClient::new(
                hosts,
                config.read_timeout(),
                config.registry.max_manifest_size,
            ),
            leases: leases::Leases::default(),
            flights: leases::Flights::default(),
            metrics,
            max_concurrent_downloads: config.registry.max_concurrent_downloads,
        }
    }
}
