//! `stats` and `statsp`: container and pod resource usage. The CPU column needs two samples:
//! the usage grown between them over the time between them.

use std::collections::HashMap;
use std::time::Duration;

use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::{
    ContainerStats, ContainerStatsFilter, CpuUsage, ListContainerStatsRequest,
    ListPodSandboxStatsRequest, PodSandboxStats, PodSandboxStatsFilter,
};

use crate::client::call;
use crate::filters::{self, short_id};
use crate::output::{self, human_size, table, Format};

type Client = RuntimeServiceClient<Channel>;

pub struct Options {
    pub all: bool,
    pub id: Option<String>,
    pub pod: Option<String>,
    pub labels: Vec<String>,
    pub output: Option<Format>,
    pub sample: Duration,
}

async fn container_stats(
    client: &Client,
    t: Duration,
    filter: &ContainerStatsFilter,
) -> anyhow::Result<Vec<ContainerStats>> {
    let mut c = client.clone();
    let mut stats = call(
        "list container stats",
        t,
        c.list_container_stats(ListContainerStatsRequest {
            filter: Some(filter.clone()),
        }),
    )
    .await?
    .stats;
    stats.sort_by(|a, b| id_of(a).cmp(id_of(b)));
    Ok(stats)
}

fn id_of(s: &ContainerStats) -> &str {
    s.attributes.as_ref().map(|a| a.id.as_str()).unwrap_or("")
}

fn cpu_of(c: Option<&CpuUsage>) -> (u64, i64) {
    c.map(|c| {
        (
            c.usage_core_nano_seconds.as_ref().map_or(0, |v| v.value),
            c.timestamp,
        )
    })
    .unwrap_or((0, 0))
}

/// CPU % between two samples of (usage ns, timestamp ns).
pub fn cpu_percent(old: (u64, i64), new: (u64, i64)) -> Option<f64> {
    let elapsed = new.1.checked_sub(old.1)?;
    if elapsed <= 0 {
        return None;
    }
    Some(new.0.saturating_sub(old.0) as f64 / elapsed as f64 * 100.0)
}

pub async fn containers(client: &Client, t: Duration, o: Options) -> anyhow::Result<()> {
    let filter = ContainerStatsFilter {
        id: o.id.clone().unwrap_or_default(),
        pod_sandbox_id: o.pod.clone().unwrap_or_default(),
        label_selector: filters::labels(&o.labels)?,
    };
    let first = container_stats(client, t, &filter).await?;
    if let Some(format) = o.output.filter(|f| *f != Format::Table) {
        return output::print(
            &serde_json::json!({ "stats": first.iter().map(output::to_value).collect::<Vec<_>>() }),
            format,
        );
    }
    let old: HashMap<String, (u64, i64)> = first
        .iter()
        .map(|s| (id_of(s).to_string(), cpu_of(s.cpu.as_ref())))
        .collect();
    tokio::time::sleep(o.sample).await;
    let second = container_stats(client, t, &filter).await?;
    let mut rows = vec![[
        "CONTAINER",
        "NAME",
        "CPU %",
        "MEM",
        "DISK",
        "INODES",
        "SWAP",
    ]
    .map(String::from)
    .to_vec()];
    for s in &second {
        let cpu = cpu_of(s.cpu.as_ref());
        let mem = s
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes.as_ref())
            .map_or(0, |v| v.value);
        if !o.all && cpu.0 == 0 && mem == 0 {
            continue; // not running
        }
        let Some(before) = old.get(id_of(s)) else {
            continue; // appeared between the samples
        };
        let percent = if cpu.0 == 0 {
            0.0
        } else {
            cpu_percent(*before, cpu).ok_or_else(|| {
                anyhow::anyhow!("the runtime's cpu stats did not change over the sample")
            })?
        };
        let disk = s.writable_layer.as_ref();
        rows.push(vec![
            short_id(id_of(s), false),
            s.attributes
                .as_ref()
                .and_then(|a| a.metadata.as_ref())
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            format!("{percent:.2}"),
            human_size(mem),
            human_size(
                disk.and_then(|d| d.used_bytes.as_ref())
                    .map_or(0, |v| v.value),
            ),
            disk.and_then(|d| d.inodes_used.as_ref())
                .map_or(0, |v| v.value)
                .to_string(),
            human_size(
                s.swap
                    .as_ref()
                    .and_then(|w| w.swap_usage_bytes.as_ref())
                    .map_or(0, |v| v.value),
            ),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

async fn pod_stats(
    client: &Client,
    t: Duration,
    filter: &PodSandboxStatsFilter,
) -> anyhow::Result<Vec<PodSandboxStats>> {
    let mut c = client.clone();
    let mut stats = call(
        "list pod sandbox stats",
        t,
        c.list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(filter.clone()),
        }),
    )
    .await?
    .stats;
    stats.sort_by(|a, b| pod_id(a).cmp(pod_id(b)));
    Ok(stats)
}

fn pod_id(s: &PodSandboxStats) -> &str {
    s.attributes.as_ref().map(|a| a.id.as_str()).unwrap_or("")
}

fn pod_usage(s: &PodSandboxStats) -> ((u64, i64), u64) {
    let linux = s.linux.as_ref();
    let cpu = cpu_of(linux.and_then(|l| l.cpu.as_ref()));
    let mem = linux
        .and_then(|l| l.memory.as_ref())
        .and_then(|m| m.working_set_bytes.as_ref())
        .map_or(0, |v| v.value);
    (cpu, mem)
}

pub struct PodOptions {
    pub id: Option<String>,
    pub labels: Vec<String>,
    pub output: Option<Format>,
    pub sample: Duration,
}

pub async fn pods(client: &Client, t: Duration, o: PodOptions) -> anyhow::Result<()> {
    let filter = PodSandboxStatsFilter {
        id: o.id.clone().unwrap_or_default(),
        label_selector: filters::labels(&o.labels)?,
    };
    let first = pod_stats(client, t, &filter).await?;
    if let Some(format) = o.output.filter(|f| *f != Format::Table) {
        return output::print(
            &serde_json::json!({ "stats": first.iter().map(output::to_value).collect::<Vec<_>>() }),
            format,
        );
    }
    let old: HashMap<String, (u64, i64)> = first
        .iter()
        .map(|s| (pod_id(s).to_string(), pod_usage(s).0))
        .collect();
    tokio::time::sleep(o.sample).await;
    let second = pod_stats(client, t, &filter).await?;
    let mut rows = vec![["POD", "POD ID", "CPU %", "MEM"].map(String::from).to_vec()];
    for s in &second {
        let (cpu, mem) = pod_usage(s);
        if cpu.0 == 0 && mem == 0 {
            continue;
        }
        let Some(before) = old.get(pod_id(s)) else {
            continue;
        };
        let percent = if cpu.0 == 0 {
            0.0
        } else {
            cpu_percent(*before, cpu).ok_or_else(|| {
                anyhow::anyhow!("the runtime's cpu stats did not change over the sample")
            })?
        };
        rows.push(vec![
            s.attributes
                .as_ref()
                .and_then(|a| a.metadata.as_ref())
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            short_id(pod_id(s), false),
            format!("{percent:.2}"),
            human_size(mem),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_over_the_sample() {
        // half a core for a second
        assert_eq!(
            cpu_percent((1_000, 0), (500_001_000, 1_000_000_000)),
            Some(50.0)
        );
        assert_eq!(cpu_percent((1, 5), (2, 5)), None);
    }
}
