//! Pod networking: named network namespaces (`netns`) and CNI plugin chains run into them
//! (`cni`, with the network config loading in `config` and the plugin runner in `exec`).

pub mod cni;
pub mod config;
pub mod exec;
pub mod netns;

pub use cni::{AddResult, Bandwidth, Cni, CniError, IpConfig, PodNetwork, PortMapping};
pub use config::{load_network, ConfigError, NetworkConfigList};
pub use exec::ExecError;
pub use netns::NetnsError;
