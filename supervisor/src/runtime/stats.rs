//! ContainerStats and PodSandboxStats from the cgroup metrics a shim reports (v1 or v2, as
//! the host has them), the writable layer's usage, and the pod's network counters.

use std::collections::HashMap;
use std::sync::Mutex;

use limpet_protos::cgroups::metrics::Metrics as V1;
use limpet_protos::cgroups_v2::metrics::Metrics as V2;
use limpet_protos::cri::v1;
use limpet_protos::protobuf::Message;
use limpet_protos::type_urls;

use super::error::{Result, RuntimeError};
use super::records::{Container, ContainerState, Sandbox, SandboxState};
use super::Runtime;

/// One reading of a cgroup, whatever its version.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub cpu_ns: u64,
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub inactive_file: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub pids: u64,
}

/// Decodes a Stats response's `Any`.
pub fn decode(type_url: &str, value: &[u8]) -> Result<Sample> {
    let bad = |e: limpet_protos::protobuf::Error| {
        RuntimeError::Internal(format!("decoding {type_url} metrics: {e}"))
    };
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    if name == type_urls::CGROUPS_V2_METRICS {
        let m = V2::parse_from_bytes(value).map_err(bad)?;
        let (cpu, mem) = (
            m.cpu.clone().unwrap_or_default(),
            m.memory.clone().unwrap_or_default(),
        );
        return Ok(Sample {
            cpu_ns: cpu.usage_usec * 1000,
            memory_usage: mem.usage,
            memory_limit: mem.usage_limit,
            inactive_file: mem.inactive_file,
            rss: mem.anon,
            page_faults: mem.pgfault,
            major_page_faults: mem.pgmajfault,
            pids: m.pids.current,
        });
    }
    if name == type_urls::CGROUPS_V1_METRICS {
        let m = V1::parse_from_bytes(value).map_err(bad)?;
        let mem = m.memory.clone().unwrap_or_default();
        let usage = mem.usage.clone().unwrap_or_default();
        return Ok(Sample {
            cpu_ns: m.cpu.usage.total,
            memory_usage: usage.usage,
            memory_limit: usage.limit,
            inactive_file: mem.total_inactive_file,
            rss: mem.total_rss,
            page_faults: mem.total_pg_fault,
            major_page_faults: mem.total_pg_maj_fault,
            pids: m.pids.current,
        });
    }
    Err(RuntimeError::Internal(format!(
        "unknown metrics type {type_url:?}"
    )))
}

/// The previous CPU reading of each container, for `usage_nano_cores`.
#[derive(Default)]
pub struct CpuHistory(Mutex<HashMap<String, (i64, u64)>>);

impl CpuHistory {
    fn rate(&self, id: &str, now: i64, cpu_ns: u64) -> Option<u64> {
        let mut h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let prev = h.insert(id.to_string(), (now, cpu_ns));
        let (t0, c0) = prev?;
        let dt = now.checked_sub(t0).filter(|d| *d > 0)? as u128;
        let dc = cpu_ns.checked_sub(c0)? as u128;
        Some((dc * 1_000_000_000 / dt) as u64)
    }
}

fn u64v(v: u64) -> Option<v1::UInt64Value> {
    Some(v1::UInt64Value { value: v })
}

pub fn cpu_usage(s: &Sample, now: i64, nano_cores: Option<u64>) -> v1::CpuUsage {
    v1::CpuUsage {
        timestamp: now,
        usage_core_nano_seconds: u64v(s.cpu_ns),
        usage_nano_cores: nano_cores.and_then(u64v),
    }
}

pub fn memory_usage(s: &Sample, now: i64) -> v1::MemoryUsage {
    let working_set = s.memory_usage.saturating_sub(s.inactive_file);
    // A limit near u64::MAX (v1) or 0 (v2 "max") means none: nothing is "available".
    let limited = s.memory_limit > 0 && s.memory_limit < (1 << 62);
    v1::MemoryUsage {
        timestamp: now,
        working_set_bytes: u64v(working_set),
        available_bytes: if limited {
            u64v(s.memory_limit.saturating_sub(working_set))
        } else {
            None
        },
        usage_bytes: u64v(s.memory_usage),
        rss_bytes: u64v(s.rss),
        page_faults: u64v(s.page_faults),
        major_page_faults: u64v(s.major_page_faults),
    }
}

/// rx/tx counters of the interfaces in a network namespace, read through a process in it.
fn network_usage(pid: u32, now: i64) -> Option<v1::NetworkUsage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let mut interfaces = Vec::new();
    for line in text.lines().skip(2) {
        let (name, rest) = line.split_once(':')?;
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() < 16 || name.trim() == "lo" {
            continue;
        }
        interfaces.push(v1::NetworkInterfaceUsage {
            name: name.trim().to_string(),
            rx_bytes: u64v(f[0]),
            rx_errors: u64v(f[2]),
            tx_bytes: u64v(f[8]),
            tx_errors: u64v(f[10]),
        });
    }
    let default_interface = interfaces
        .iter()
        .find(|i| i.name == crate::network::cni::DEFAULT_IFNAME)
        .cloned();
    Some(v1::NetworkUsage {
        timestamp: now,
        default_interface,
        interfaces,
    })
}

impl Runtime {
    pub async fn container_stats(&self, c: &Container) -> Result<v1::ContainerStats> {
        let sample = self.container_sample(c).await?;
        self.container_stats_of(c, sample.as_ref()).await
    }

    /// The cgroup reading of a container that has a task.
    async fn container_sample(&self, c: &Container) -> Result<Option<Sample>> {
        if !matches!(
            c.record.state,
            ContainerState::Running | ContainerState::Created
        ) {
            return Ok(None);
        }
        let address = self.sandbox(&c.record.sandbox_id)?.record.shim_address;
        Ok(Some(self.shims.stats(&address, &c.record.id).await?))
    }

    async fn container_stats_of(
        &self,
        c: &Container,
        sample: Option<&Sample>,
    ) -> Result<v1::ContainerStats> {
        let now = crate::store::now();
        let upper = self
            .images
            .snapshots
            .rootfs_dir()
            .join(&c.record.id)
            .join("upper");
        let (used, inodes) = super::blocking(move || crate::fsusage::tree_usage(&upper)).await?;
        let nano_cores = sample.and_then(|s| self.cpu_history.rate(&c.record.id, now, s.cpu_ns));
        Ok(v1::ContainerStats {
            attributes: Some(v1::ContainerAttributes {
                id: c.record.id.clone(),
                metadata: c.config.metadata.clone(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            }),
            cpu: sample.map(|s| cpu_usage(s, now, nano_cores)),
            memory: sample.map(|s| memory_usage(s, now)),
            writable_layer: Some(v1::FilesystemUsage {
                timestamp: now,
                fs_id: Some(v1::FilesystemIdentifier {
                    mountpoint: self.images.snapshots.dir().to_string_lossy().into_owned(),
                }),
                used_bytes: u64v(used),
                inodes_used: u64v(inodes),
            }),
            swap: None,
        })
    }

    /// The pod's totals (processes included) are its running containers' and its sandbox
    /// process's: each has a cgroup of its own.
    pub async fn pod_sandbox_stats(&self, sb: &Sandbox) -> Result<v1::PodSandboxStats> {
        let now = crate::store::now();
        let mut containers = Vec::new();
        let mut total = Sample::default();
        if sb.record.state == SandboxState::Ready {
            if let Ok(s) = self
                .shims
                .stats(&sb.record.shim_address, &sb.record.id)
                .await
            {
                add(&mut total, &s);
            }
        }
        for c in self.containers_of(&sb.record.id) {
            if c.record.state == ContainerState::Creating {
                continue;
            }
            let sample = self.container_sample(&c).await?;
            if let (Some(s), ContainerState::Running) = (&sample, c.record.state) {
                add(&mut total, s);
            }
            containers.push(self.container_stats_of(&c, sample.as_ref()).await?);
        }
        let nano_cores = self.cpu_history.rate(&sb.record.id, now, total.cpu_ns);
        let network = (sb.record.state == SandboxState::Ready && !sb.host_network())
            .then(|| network_usage(sb.record.pid, now))
            .flatten();
        Ok(v1::PodSandboxStats {
            attributes: Some(v1::PodSandboxAttributes {
                id: sb.record.id.clone(),
                metadata: sb.config.metadata.clone(),
                labels: sb.config.labels.clone(),
                annotations: sb.config.annotations.clone(),
            }),
            linux: Some(v1::LinuxPodSandboxStats {
                cpu: Some(cpu_usage(&total, now, nano_cores)),
                memory: Some(memory_usage(&total, now)),
                network,
                process: Some(v1::ProcessUsage {
                    timestamp: now,
                    process_count: u64v(total.pids),
                }),
                containers,
            }),
            windows: None,
        })
    }
}

fn add(total: &mut Sample, s: &Sample) {
    total.cpu_ns += s.cpu_ns;
    total.memory_usage += s.memory_usage;
    total.rss += s.rss;
    total.inactive_file += s.inactive_file;
    total.page_faults += s.page_faults;
    total.major_page_faults += s.major_page_faults;
    total.pids += s.pids;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_set_excludes_inactive_file_and_no_limit_means_no_available() {
        let s = Sample {
            memory_usage: 100,
            inactive_file: 30,
            memory_limit: u64::MAX,
            ..Default::default()
        };
        let m = memory_usage(&s, 1);
        assert_eq!(m.working_set_bytes.unwrap().value, 70);
        assert!(m.available_bytes.is_none());
        let s = Sample {
            memory_limit: 1000,
            ..s
        };
        assert_eq!(memory_usage(&s, 1).available_bytes.unwrap().value, 930);
    }

    #[test]
    fn cpu_rate_needs_two_samples() {
        let h = CpuHistory::default();
        assert_eq!(h.rate("c", 1_000_000_000, 0), None);
        assert_eq!(h.rate("c", 2_000_000_000, 500_000_000), Some(500_000_000));
    }
}
