//! The cgroup metrics a Stats call returns, decoded by their type URL.

use limpet_protos::cgroups::metrics::Metrics as V1Metrics;
use limpet_protos::cgroups_v2::metrics::Metrics as V2Metrics;
use limpet_protos::protobuf::well_known_types::any::Any;
use limpet_protos::protobuf::Message;
use limpet_protos::type_urls;

use super::error::{Result, ShimError};
use super::types::is_type;

/// A container's cgroup metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Metrics {
    V1(Box<V1Metrics>),
    V2(Box<V2Metrics>),
}

impl Metrics {
    /// Decodes a Stats payload; an unknown type is an error naming it.
    pub fn decode(id: &str, any: &Any) -> Result<Metrics> {
        let bad = |detail: String| ShimError::BadReply {
            action: "Stats",
            id: id.to_string(),
            detail,
        };
        if is_type(any, type_urls::CGROUPS_V1_METRICS) {
            let m = V1Metrics::parse_from_bytes(&any.value)
                .map_err(|e| bad(format!("cgroup v1 metrics: {e}")))?;
            Ok(Metrics::V1(Box::new(m)))
        } else if is_type(any, type_urls::CGROUPS_V2_METRICS) {
            let m = V2Metrics::parse_from_bytes(&any.value)
                .map_err(|e| bad(format!("cgroup v2 metrics: {e}")))?;
            Ok(Metrics::V2(Box::new(m)))
        } else {
            Err(bad(format!("unknown metrics type {:?}", any.type_url)))
        }
    }

    /// Memory in use, page cache included (the working set is left to the caller).
    pub fn memory_usage_bytes(&self) -> Option<u64> {
        match self {
            Metrics::V1(m) => m.memory.as_ref()?.usage.as_ref().map(|u| u.usage),
            Metrics::V2(m) => m.memory.as_ref().map(|mem| mem.usage),
        }
    }

    /// Total CPU time used, in nanoseconds.
    pub fn cpu_usage_nanos(&self) -> Option<u64> {
        match self {
            Metrics::V1(m) => m.cpu.as_ref()?.usage.as_ref().map(|u| u.total),
            // cgroup v2 counts microseconds.
            Metrics::V2(m) => m.cpu.as_ref().map(|c| c.usage_usec.saturating_mul(1000)),
        }
    }

    /// Number of processes in the cgroup.
    pub fn pids_current(&self) -> Option<u64> {
        match self {
            Metrics::V1(m) => m.pids.as_ref().map(|p| p.current),
            Metrics::V2(m) => m.pids.as_ref().map(|p| p.current),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use limpet_protos::cgroups::metrics::{CPUStat, CPUUsage, PidsStat};
    use limpet_protos::cgroups_v2::metrics::{CPUStat as V2Cpu, MemoryStat as V2Memory};

    fn any(type_url: &str, msg: &impl Message) -> Any {
        Any {
            type_url: type_url.into(),
            value: msg.write_to_bytes().unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn v1_and_v2_decode() {
        let v1 = V1Metrics {
            cpu: Some(CPUStat {
                usage: Some(CPUUsage {
                    total: 42,
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            })
            .into(),
            pids: Some(PidsStat {
                current: 3,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let m = Metrics::decode("c", &any(type_urls::CGROUPS_V1_METRICS, &v1)).unwrap();
        assert_eq!((m.cpu_usage_nanos(), m.pids_current()), (Some(42), Some(3)));

        let v2 = V2Metrics {
            cpu: Some(V2Cpu {
                usage_usec: 5,
                ..Default::default()
            })
            .into(),
            memory: Some(V2Memory {
                usage: 4096,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let m = Metrics::decode("c", &any(type_urls::CGROUPS_V2_METRICS, &v2)).unwrap();
        assert_eq!(m.cpu_usage_nanos(), Some(5000));
        assert_eq!(m.memory_usage_bytes(), Some(4096));
    }

    #[test]
    fn unknown_types_are_errors() {
        let e = Metrics::decode("c", &any("x.Y", &V1Metrics::default())).unwrap_err();
        assert!(e.to_string().contains("x.Y"), "{e}");
    }
}
