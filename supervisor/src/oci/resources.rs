//! cgroup resources of a container: the device cgroup, CPU, memory and swap, hugepages,
//! cgroup v2 `unified` keys; and the OOM score.

use std::collections::HashMap;

use limpet_protos::cri::v1::LinuxContainerResources;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxHugepageLimitBuilder,
    LinuxMemoryBuilder, LinuxResources, LinuxResourcesBuilder,
};

use super::host::HostFeatures;
use super::SpecError;

/// Deny every device (runc still allows its default set), then `device_rules`; a
/// privileged container may use them all.
pub fn device_cgroup(
    privileged: bool,
    device_rules: Vec<LinuxDeviceCgroup>,
) -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    let base = LinuxDeviceCgroupBuilder::default()
        .allow(privileged)
        .access("rwm")
        .build()?;
    if privileged {
        return Ok(vec![base]);
    }
    Ok(std::iter::once(base).chain(device_rules).collect())
}

/// The CRI limits as OCI resources, on top of `devices`.
pub fn container_resources(
    r: Option<&LinuxContainerResources>,
    devices: Vec<LinuxDeviceCgroup>,
    host: &HostFeatures,
) -> Result<LinuxResources, SpecError> {
    let mut b = LinuxResourcesBuilder::default().devices(devices);
    let Some(r) = r else {
        return Ok(b.build()?);
    };
    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if r.cpu_shares > 0 {
        cpu = cpu.shares(r.cpu_shares as u64);
        any_cpu = true;
    }
    if r.cpu_quota != 0 {
        cpu = cpu.quota(r.cpu_quota);
        any_cpu = true;
    }
    if r.cpu_period > 0 {
        cpu = cpu.period(r.cpu_period as u64);
        any_cpu = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
        any_cpu = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
        any_cpu = true;
    }
    if any_cpu {
        b = b.cpu(cpu.build()?);
    }
    if let Some(memory) = memory(r, host)? {
        b = b.memory(memory);
    }
    if !r.hugepage_limits.is_empty() {
        if host.hugetlb {
            let limits = r
                .hugepage_limits
                .iter()
                .map(|h| {
                    LinuxHugepageLimitBuilder::default()
                        .page_size(h.page_size.clone())
                        .limit(i64::try_from(h.limit).unwrap_or(i64::MAX))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            b = b.hugepage_limits(limits);
        } else {
            tracing::warn!("the hugetlb cgroup controller is missing: ignoring hugepage limits");
        }
    }
    if !r.unified.is_empty() {
        b = b.unified(r.unified.clone().into_iter().collect::<HashMap<_, _>>());
    }
    Ok(b.build()?)
}

/// Memory limit; swap equal to it (no swapping) unless the CRI sets a swap limit. Without
/// swap accounting a swap value would fail the container, so none is set.
fn memory(
    r: &LinuxContainerResources,
    host: &HostFeatures,
) -> Result<Option<oci_spec::runtime::LinuxMemory>, SpecError> {
    let limit = r.memory_limit_in_bytes;
    let swap = r.memory_swap_limit_in_bytes;
    if limit == 0 && swap == 0 {
        return Ok(None);
    }
    let mut m = LinuxMemoryBuilder::default();
    if limit != 0 {
        m = m.limit(limit);
    }
    if host.swap_accounting {
        if swap != 0 {
            m = m.swap(swap);
        } else if limit != 0 {
            m = m.swap(limit);
        }
    }
    Ok(Some(m.build()?))
}

/// The CRI score, raised to `min` when the daemon restricts it.
pub fn oom_score_adj(r: Option<&LinuxContainerResources>, min: Option<i64>) -> Option<i32> {
    let requested = r.map(|r| r.oom_score_adj).unwrap_or(0);
    let adj = restrict_oom_score_adj(requested, min);
    (adj != 0 || r.is_some()).then_some(adj)
}

/// `adj` raised to `min`, within the kernel's range.
pub fn restrict_oom_score_adj(adj: i64, min: Option<i64>) -> i32 {
    let adj = match min {
        Some(min) => adj.max(min),
        None => adj,
    };
    adj.clamp(-1000, 1000) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use limpet_protos::cri::v1::HugepageLimit;
    use serde_json::json;

    fn host(swap: bool, hugetlb: bool) -> HostFeatures {
        HostFeatures {
            swap_accounting: swap,
            hugetlb,
            ..Default::default()
        }
    }

    fn json_of(r: &LinuxContainerResources, h: &HostFeatures) -> serde_json::Value {
        serde_json::to_value(container_resources(Some(r), Vec::new(), h).unwrap()).unwrap()
    }

    #[test]
    fn cpu_memory_and_swap() {
        let r = LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        let v = json_of(&r, &host(true, false));
        assert_eq!(
            v["cpu"],
            json!({"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"})
        );
        // swap defaults to the limit: no swapping
        assert_eq!(v["memory"], json!({"limit": 67108864, "swap": 67108864}));
        let with_swap = LinuxContainerResources {
            memory_swap_limit_in_bytes: 128 << 20,
            ..r.clone()
        };
        assert_eq!(
            json_of(&with_swap, &host(true, false))["memory"],
            json!({"limit": 67108864, "swap": 134217728})
        );
        // no swap accounting: no swap value at all
        assert_eq!(
            json_of(&with_swap, &host(false, false))["memory"],
            json!({"limit": 67108864})
        );
        assert!(
            json_of(&LinuxContainerResources::default(), &host(true, true))
                .get("memory")
                .is_none()
        );
    }

    #[test]
    fn hugepages_and_unified() {
        let r = LinuxContainerResources {
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_string(), "1000000".to_string())].into(),
            ..Default::default()
        };
        let v = json_of(&r, &host(false, true));
        assert_eq!(
            v["hugepageLimits"],
            json!([{"pageSize": "2MB", "limit": 4194304}])
        );
        assert_eq!(v["unified"], json!({"memory.high": "1000000"}));
        // no hugetlb controller: the limits are dropped, as containerd tolerates by default
        assert!(json_of(&r, &host(false, false))
            .get("hugepageLimits")
            .is_none());
    }

    #[test]
    fn device_rules_follow_the_deny_all() {
        let rule = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(oci_spec::runtime::LinuxDeviceType::C)
            .major(1)
            .minor(3)
            .access("rw")
            .build()
            .unwrap();
        let v = serde_json::to_value(device_cgroup(false, vec![rule.clone()]).unwrap()).unwrap();
        assert_eq!(
            v,
            json!([
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"},
            ])
        );
        let v = serde_json::to_value(device_cgroup(true, vec![rule]).unwrap()).unwrap();
        assert_eq!(v, json!([{"allow": true, "access": "rwm"}]));
    }

    #[test]
    fn oom_score_floor() {
        let r = LinuxContainerResources {
            oom_score_adj: -500,
            ..Default::default()
        };
        assert_eq!(oom_score_adj(Some(&r), None), Some(-500));
        assert_eq!(oom_score_adj(Some(&r), Some(-100)), Some(-100));
        assert_eq!(oom_score_adj(Some(&r), Some(-900)), Some(-500));
        assert_eq!(oom_score_adj(None, None), None);
        assert_eq!(restrict_oom_score_adj(-998, Some(-500)), -500);
        assert_eq!(restrict_oom_score_adj(-5000, None), -1000);
    }
}
