//! cgroup v1: one hierarchy per controller (or per group of controllers, such as
//! `cpu,cpuacct`), each mounted under /sys/fs/cgroup.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use limpet_protos::cgroups::metrics::{
    BlkIOEntry, BlkIOStat, CPUStat, CPUUsage, HugetlbStat, MemoryEntry, MemoryOomControl,
    MemoryStat, Metrics, PidsStat, RdmaEntry, RdmaStat, Throttle,
};

use limpet_protos::protobuf::MessageField;

use super::parse::{self, read_kv, read_optional, read_uint};
use super::{CgroupError, Host};

/// v1 prints no `max`, but where a file holds it anyway it reads as 0, as in containerd.
const MAX: u64 = 0;

/// cpuacct.stat counts in USER_HZ ticks, a fixed 100 per second in the Linux ABI.
const NANOS_PER_TICK: u64 = 1_000_000_000 / 100;

/// Hierarchies containerd's v1 cgroups know, in its order; `systemd` is the named hierarchy
/// `name=systemd`.
const HIERARCHIES: [&str; 14] = [
    "systemd",
    "freezer",
    "pids",
    "net_cls",
    "net_prio",
    "perf_event",
    "cpuset",
    "cpu",
    "cpuacct",
    "memory",
    "blkio",
    "rdma",
    "devices",
    "hugetlb",
];

/// The v1 cgroup directories of one process, for the controllers that have metrics.
#[derive(Clone, Debug)]
pub struct Cgroup {
    host: Host,
    pids: Option<PathBuf>,
    cpu: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    memory: Option<PathBuf>,
    blkio: Option<PathBuf>,
    hugetlb: Option<PathBuf>,
    rdma: Option<PathBuf>,
}

impl Cgroup {
    /// The directories named by the content of /proc/PID/cgroup (`ID:controllers:path`
    /// lines) that exist; `None` if none does.
    pub(crate) fn from_proc_cgroup(host: Host, proc_cgroup: &str) -> Option<Cgroup> {
        let mut cg = Cgroup {
            host,
            pids: None,
            cpu: None,
            cpuacct: None,
            memory: None,
            blkio: None,
            hugetlb: None,
            rdma: None,
        };
        let mount = cg.host.cgroup_mount();
        for line in proc_cgroup.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            // Outside our cgroup namespace the kernel prints `/..` paths: not ours to read.
            let Ok(relative) = parse::relative_cgroup_path(path) else {
                continue;
            };
            for controller in controllers.split(',') {
                let slot = match controller {
                    "pids" => &mut cg.pids,
                    "cpu" => &mut cg.cpu,
                    "cpuacct" => &mut cg.cpuacct,
                    "memory" => &mut cg.memory,
                    "blkio" => &mut cg.blkio,
                    "hugetlb" => &mut cg.hugetlb,
                    "rdma" => &mut cg.rdma,
                    _ => continue,
                };
                // Joined hierarchies are mounted as `cpu,cpuacct`, usually with a symlink
                // per controller next to them.
                *slot = [controller, controllers]
                    .iter()
                    .map(|dir| mount.join(dir).join(relative))
                    .find(|dir| dir.is_dir());
            }
        }
        let found = cg.dirs().next().is_some();
        found.then_some(cg)
    }

    /// The memory controller's directory, if the process has one.
    pub fn memory_dir(&self) -> Option<&Path> {
        self.memory.as_deref()
    }

    fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        [
            &self.pids,
            &self.cpu,
            &self.cpuacct,
            &self.memory,
            &self.blkio,
            &self.hugetlb,
            &self.rdma,
        ]
        .into_iter()
        .flatten()
    }

    /// Metrics of every controller the process has; files that do not exist are skipped.
    pub fn metrics(&self) -> Result<Metrics, CgroupError> {
        if let Some(first) = self.dirs().next() {
            if self.dirs().all(|d| !d.is_dir()) {
                return Err(CgroupError::Deleted {
                    path: first.clone(),
                });
            }
        }
        let mut m = Metrics::new();
        if let Some(dir) = &self.pids {
            m.pids = pids(dir)?.into();
        }
        // containerd always reports CPU, zero where the controllers are missing.
        let mut cpu = CPUStat::new();
        cpu.usage = MessageField::some(cpuacct(self.cpuacct.as_deref())?);
        cpu.throttling = MessageField::some(throttling(self.cpu.as_deref())?);
        m.cpu = MessageField::some(cpu);
        if let Some(dir) = &self.memory {
            m.memory = memory(dir)?.into();
            m.memory_oom_control = oom_control(dir)?.into();
        }
        if let Some(dir) = &self.blkio {
            m.blkio = MessageField::some(blkio(dir, &self.host.partitions())?);
        }
        if let Some(dir) = &self.hugetlb {
            m.hugetlb = hugetlb(dir, &self.host.hugepages())?;
        }
        if let Some(dir) = &self.rdma {
            m.rdma = rdma(dir)?.into();
        }
        Ok(m)
    }
}

/// Moves `pid` into `<mount>/<hierarchy>/<relative>` of every hierarchy that has that cgroup.
pub(crate) fn add_process(
    mount: &Path,
    path: &str,
    relative: &str,
    pid: i32,
) -> Result<(), CgroupError> {
    let mut done: Vec<PathBuf> = Vec::new();
    for hierarchy in HIERARCHIES {
        let dir = mount.join(hierarchy).join(relative);
        // `cpu` and `cpuacct` are usually links to one `cpu,cpuacct` hierarchy.
        let Ok(real) = dir.canonicalize() else {
            continue;
        };
        if !real.is_dir() || done.contains(&real) {
            continue;
        }
        parse::write_pid(&dir.join("cgroup.procs"), pid)?;
        done.push(real);
    }
    if done.is_empty() {
        return Err(CgroupError::NoSuchPath {
            path: path.to_string(),
        });
    }
    Ok(())
}

fn pids(dir: &Path) -> Result<Option<PidsStat>, CgroupError> {
    let current = read_uint(&dir.join("pids.current"), MAX)?;
    let limit = read_uint(&dir.join("pids.max"), MAX)?;
    Ok(current.zip(limit).map(|(current, limit)| PidsStat {
        current,
        limit,
        ..Default::default()
    }))
}

fn cpuacct(dir: Option<&Path>) -> Result<CPUUsage, CgroupError> {
    let mut usage = CPUUsage::new();
    let Some(dir) = dir else {
        return Ok(usage);
    };
    usage.total = read_uint(&dir.join("cpuacct.usage"), MAX)?.unwrap_or(0);
    read_kv(&dir.join("cpuacct.stat"), |key, ticks| match key {
        "user" => usage.user = ticks.saturating_mul(NANOS_PER_TICK),
        "system" => usage.kernel = ticks.saturating_mul(NANOS_PER_TICK),
        _ => {}
    })?;
    let path = dir.join("cpuacct.usage_percpu");
    if let Some(text) = read_optional(&path)? {
        for v in text.split_whitespace() {
            let v = parse::parse_uint(v)
                .ok_or_else(|| parse::parse_error(&path, format!("not a number: {v:?}")))?;
            usage.per_cpu.push(v);
        }
    }
    Ok(usage)
}

fn throttling(dir: Option<&Path>) -> Result<Throttle, CgroupError> {
    let mut t = Throttle::new();
    if let Some(dir) = dir {
        read_kv(&dir.join("cpu.stat"), |key, v| match key {
            "nr_periods" => t.periods = v,
            "nr_throttled" => t.throttled_periods = v,
            "throttled_time" => t.throttled_time = v,
            _ => {}
        })?;
    }
    Ok(t)
}

/// memory.stat and the usage files; `None` without memory.stat.
fn memory(dir: &Path) -> Result<Option<MemoryStat>, CgroupError> {
    let mut s = MemoryStat::new();
    let found = read_kv(&dir.join("memory.stat"), |key, v| {
        let field = match key {
            "cache" => &mut s.cache,
            "rss" => &mut s.rss,
            "rss_huge" => &mut s.rss_huge,
            "mapped_file" => &mut s.mapped_file,
            "dirty" => &mut s.dirty,
            "writeback" => &mut s.writeback,
            "pgpgin" => &mut s.pg_pg_in,
            "pgpgout" => &mut s.pg_pg_out,
            "pgfault" => &mut s.pg_fault,
            "pgmajfault" => &mut s.pg_maj_fault,
            "inactive_anon" => &mut s.inactive_anon,
            "active_anon" => &mut s.active_anon,
            "inactive_file" => &mut s.inactive_file,
            "active_file" => &mut s.active_file,
            "unevictable" => &mut s.unevictable,
            "hierarchical_memory_limit" => &mut s.hierarchical_memory_limit,
            "hierarchical_memsw_limit" => &mut s.hierarchical_swap_limit,
            "total_cache" => &mut s.total_cache,
            "total_rss" => &mut s.total_rss,
            "total_rss_huge" => &mut s.total_rss_huge,
            "total_mapped_file" => &mut s.total_mapped_file,
            "total_dirty" => &mut s.total_dirty,
            "total_writeback" => &mut s.total_writeback,
            "total_pgpgin" => &mut s.total_pg_pg_in,
            "total_pgpgout" => &mut s.total_pg_pg_out,
            "total_pgfault" => &mut s.total_pg_fault,
            "total_pgmajfault" => &mut s.total_pg_maj_fault,
            "total_inactive_anon" => &mut s.total_inactive_anon,
            "total_active_anon" => &mut s.total_active_anon,
            "total_inactive_file" => &mut s.total_inactive_file,
            "total_active_file" => &mut s.total_active_file,
            "total_unevictable" => &mut s.total_unevictable,
            _ => return,
        };
        *field = v;
    })?;
    if !found {
        return Ok(None);
    }
    s.usage = MessageField::some(memory_entry(dir, "memory.")?);
    s.swap = MessageField::some(memory_entry(dir, "memory.memsw.")?);
    s.kernel = MessageField::some(memory_entry(dir, "memory.kmem.")?);
    s.kernel_tcp = MessageField::some(memory_entry(dir, "memory.kmem.tcp.")?);
    Ok(Some(s))
}

/// `<prefix>usage_in_bytes` and its siblings, 0 where missing (no swap accounting, no kmem).
fn memory_entry(dir: &Path, prefix: &str) -> Result<MemoryEntry, CgroupError> {
    let read = |name: &str| -> Result<u64, CgroupError> {
        Ok(read_uint(&dir.join(format!("{prefix}{name}")), MAX)?.unwrap_or(0))
    };
    Ok(MemoryEntry {
        usage: read("usage_in_bytes")?,
        max: read("max_usage_in_bytes")?,
        failcnt: read("failcnt")?,
        limit: read("limit_in_bytes")?,
        ..Default::default()
    })
}

fn oom_control(dir: &Path) -> Result<Option<MemoryOomControl>, CgroupError> {
    let mut c = MemoryOomControl::new();
    let found = read_kv(&dir.join("memory.oom_control"), |key, v| match key {
        "oom_kill_disable" => c.oom_kill_disable = v,
        "under_oom" => c.under_oom = v,
        "oom_kill" => c.oom_kill = v,
        _ => {}
    })?;
    Ok(found.then_some(c))
}

/// The CFQ-era `*_recursive` files if the kernel has them and they hold anything, else the
/// throttle counters that every kernel keeps (as containerd does).
fn blkio(dir: &Path, partitions: &Path) -> Result<BlkIOStat, CgroupError> {
    let devices = read_optional(partitions)?
        .map(|t| parse_partitions(&t))
        .unwrap_or_default();
    let mut s = BlkIOStat::new();
    let mut found = 0;
    if dir.join("blkio.io_serviced_recursive").exists() {
        for (name, entries) in [
            ("sectors_recursive", &mut s.sectors_recursive),
            (
                "io_service_bytes_recursive",
                &mut s.io_service_bytes_recursive,
            ),
            ("io_serviced_recursive", &mut s.io_serviced_recursive),
            ("io_queued_recursive", &mut s.io_queued_recursive),
            (
                "io_service_time_recursive",
                &mut s.io_service_time_recursive,
            ),
            ("io_wait_time_recursive", &mut s.io_wait_time_recursive),
            ("io_merged_recursive", &mut s.io_merged_recursive),
            ("time_recursive", &mut s.io_time_recursive),
        ] {
            read_blkio_entries(&dir.join(format!("blkio.{name}")), &devices, entries)?;
            found += entries.len();
        }
    }
    if found == 0 {
        for (name, entries) in [
            ("throttle.io_serviced", &mut s.io_serviced_recursive),
            (
                "throttle.io_service_bytes",
                &mut s.io_service_bytes_recursive,
            ),
        ] {
            read_blkio_entries(&dir.join(format!("blkio.{name}")), &devices, entries)?;
        }
    }
    Ok(s)
}

/// Device paths by (major, minor) from /proc/partitions.
fn parse_partitions(text: &str) -> HashMap<(u64, u64), String> {
    let mut devices = HashMap::new();
    for line in text.lines().skip(2) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [major, minor, _, name, ..] = fields[..] {
            if let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) {
                devices
                    .entry((major, minor))
                    .or_insert_with(|| format!("/dev/{name}"));
            }
        }
    }
    devices
}

/// Lines `MAJ:MIN OP VALUE` or `MAJ:MIN VALUE`; the `Total VALUE` line is skipped.
fn read_blkio_entries(
    path: &Path,
    devices: &HashMap<(u64, u64), String>,
    entries: &mut Vec<BlkIOEntry>,
) -> Result<(), CgroupError> {
    let Some(text) = read_optional(path)? else {
        return Ok(());
    };
    for line in text.lines() {
        let fields: Vec<&str> = line.split([' ', ':']).filter(|f| !f.is_empty()).collect();
        let (major, minor, op, value) = match fields[..] {
            [] | ["Total", _] => continue,
            [major, minor, value] => (major, minor, "", value),
            [major, minor, op, value] => (major, minor, op, value),
            _ => return Err(parse::parse_error(path, format!("bad line {line:?}"))),
        };
        let number = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| parse::parse_error(path, format!("bad number in line {line:?}")))
        };
        let (major, minor) = (number(major)?, number(minor)?);
        entries.push(BlkIOEntry {
            device: devices.get(&(major, minor)).cloned().unwrap_or_default(),
            major,
            minor,
            op: op.to_string(),
            value: number(value)?,
            ..Default::default()
        });
    }
    Ok(())
}

fn hugetlb(dir: &Path, hugepages: &Path) -> Result<Vec<HugetlbStat>, CgroupError> {
    let mut stats = Vec::new();
    for size in parse::hugepage_sizes(hugepages) {
        let file = |name: &str| dir.join(format!("hugetlb.{size}.{name}"));
        let Some(usage) = read_uint(&file("usage_in_bytes"), MAX)? else {
            continue;
        };
        stats.push(HugetlbStat {
            usage,
            max: read_uint(&file("max_usage_in_bytes"), MAX)?.unwrap_or(0),
            failcnt: read_uint(&file("failcnt"), MAX)?.unwrap_or(0),
            pagesize: size,
            ..Default::default()
        });
    }
    Ok(stats)
}

fn rdma(dir: &Path) -> Result<Option<RdmaStat>, CgroupError> {
    let current = read_optional(&dir.join("rdma.current"))?;
    let limit = read_optional(&dir.join("rdma.max"))?;
    let (Some(current), Some(limit)) = (current, limit) else {
        return Ok(None);
    };
    // A device removed between the two reads: skip, as containerd does.
    if current.lines().count() != limit.lines().count() {
        return Ok(None);
    }
    Ok(Some(RdmaStat {
        current: rdma_entries(&current),
        limit: rdma_entries(&limit),
        ..Default::default()
    }))
}

fn rdma_entries(text: &str) -> Vec<RdmaEntry> {
    parse::rdma_lines(text)
        .map(|(device, hca_handles, hca_objects)| RdmaEntry {
            device: device.to_string(),
            hca_handles,
            hca_objects,
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{tests::write, Cgroup as AnyCgroup, Mode};
    use super::*;
    use limpet_protos::protobuf::Message;
    use std::fs;

    fn load(root: &Path, pid: i32) -> Cgroup {
        match AnyCgroup::with_root(root, Mode::Hybrid, pid).unwrap() {
            AnyCgroup::V1(cg) => cg,
            AnyCgroup::V2(_) => panic!("hybrid hosts are served as v1"),
        }
    }

    const MEMORY_STAT: &str = "cache 1\nrss 2\nrss_huge 3\nshmem 99\nmapped_file 4\ndirty 5\n\
writeback 6\npgpgin 7\npgpgout 8\npgfault 9\npgmajfault 10\ninactive_anon 11\nactive_anon 12\n\
inactive_file 13\nactive_file 14\nunevictable 15\nhierarchical_memory_limit 16\n\
hierarchical_memsw_limit 17\ntotal_cache 18\ntotal_rss 19\ntotal_rss_huge 20\n\
total_mapped_file 21\ntotal_dirty 22\ntotal_writeback 23\ntotal_pgpgin 24\ntotal_pgpgout 25\n\
total_pgfault 26\ntotal_pgmajfault 27\ntotal_inactive_anon 28\ntotal_active_anon 29\n\
total_inactive_file 30\ntotal_active_file 31\ntotal_unevictable 32\n";

    /// A full fake host: joined `cpu,cpuacct` without per-controller links, a named
    /// hierarchy, every controller with metrics.
    fn full_tree(root: &Path) {
        write(
            root,
            "proc/100/cgroup",
            "13:name=systemd:/c1\n12:hugetlb:/c1\n11:rdma:/c1\n10:memory:/c1\n9:pids:/c1\n\
             8:cpu,cpuacct:/c1\n7:blkio:/c1\n6:freezer:/c1\n0::/c1\n",
        );
        write(
            root,
            "proc/partitions",
            "major minor  #blocks  name\n\n 254        0  268435456 vda\n   8   16  1000 sdb\n",
        );
        fs::create_dir_all(root.join("sys/kernel/mm/hugepages/hugepages-2048kB")).unwrap();
        fs::create_dir_all(root.join("sys/kernel/mm/hugepages/hugepages-1048576kB")).unwrap();
        let cg = |rel: &str, content: &str| write(root, &format!("sys/fs/cgroup/{rel}"), content);
        cg("pids/c1/pids.current", "7\n");
        cg("pids/c1/pids.max", "max\n");
        cg(
            "cpu,cpuacct/c1/cpu.stat",
            "nr_periods 40\nnr_throttled 4\nthrottled_time 123456\nnr_bursts 0\nburst_time 0\n",
        );
        cg("cpu,cpuacct/c1/cpuacct.usage", "5000000000\n");
        cg("cpu,cpuacct/c1/cpuacct.stat", "user 300\nsystem 150\n");
        cg(
            "cpu,cpuacct/c1/cpuacct.usage_percpu",
            "3000000000 2000000000 \n",
        );
        cg("memory/c1/memory.stat", MEMORY_STAT);
        cg(
            "memory/c1/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 1\noom_kill 2\n",
        );
        for (prefix, base) in [
            ("", 100),
            ("memsw.", 200),
            ("kmem.", 300),
            ("kmem.tcp.", 400),
        ] {
            cg(
                &format!("memory/c1/memory.{prefix}usage_in_bytes"),
                &format!("{}\n", base + 1),
            );
            cg(
                &format!("memory/c1/memory.{prefix}max_usage_in_bytes"),
                &format!("{}\n", base + 2),
            );
            cg(
                &format!("memory/c1/memory.{prefix}failcnt"),
                &format!("{}\n", base + 3),
            );
            cg(
                &format!("memory/c1/memory.{prefix}limit_in_bytes"),
                &format!("{}\n", base + 4),
            );
        }
        cg("blkio/c1/blkio.io_serviced_recursive", "254:0 Read 10\n254:0 Write 20\n254:0 Sync 25\n254:0 Async 5\n254:0 Discard 0\n254:0 Total 30\nTotal 30\n");
        cg(
            "blkio/c1/blkio.io_service_bytes_recursive",
            "254:0 Read 4096\n8:16 Write 512\n9:9 Read 1\nTotal 4609\n",
        );
        cg("blkio/c1/blkio.sectors_recursive", "254:0 8\n");
        cg("blkio/c1/blkio.time_recursive", "254:0 77\n");
        cg("blkio/c1/blkio.throttle.io_serviced", "254:0 Read 999\n");
        cg("hugetlb/c1/hugetlb.2MB.usage_in_bytes", "2097152\n");
        cg("hugetlb/c1/hugetlb.2MB.max_usage_in_bytes", "4194304\n");
        cg("hugetlb/c1/hugetlb.2MB.failcnt", "1\n");
        cg("hugetlb/c1/hugetlb.1GB.usage_in_bytes", "0\n");
        cg("hugetlb/c1/hugetlb.1GB.max_usage_in_bytes", "0\n");
        cg("hugetlb/c1/hugetlb.1GB.failcnt", "0\n");
        cg(
            "rdma/c1/rdma.current",
            "mlx4_0 hca_handle=2 hca_object=2000\n",
        );
        cg(
            "rdma/c1/rdma.max",
            "mlx4_0 hca_handle=max hca_object=10000\n",
        );
        fs::create_dir_all(root.join("sys/fs/cgroup/freezer/c1")).unwrap();
        fs::create_dir_all(root.join("sys/fs/cgroup/systemd/c1")).unwrap();
    }

    fn blk(device: &str, major: u64, minor: u64, op: &str, value: u64) -> BlkIOEntry {
        BlkIOEntry {
            device: device.into(),
            major,
            minor,
            op: op.into(),
            value,
            ..Default::default()
        }
    }

    fn entry(base: u64) -> MemoryEntry {
        MemoryEntry {
            usage: base + 1,
            max: base + 2,
            failcnt: base + 3,
            limit: base + 4,
            ..Default::default()
        }
    }

    #[test]
    fn full_tree_gives_every_metric() {
        let dir = tempfile::tempdir().unwrap();
        full_tree(dir.path());
        let cg = load(dir.path(), 100);
        assert_eq!(
            cg.memory_dir(),
            Some(dir.path().join("sys/fs/cgroup/memory/c1").as_path())
        );
        let m = cg.metrics().unwrap();

        assert_eq!(
            *m.pids,
            PidsStat {
                current: 7,
                limit: 0,
                ..Default::default()
            }
        );
        let usage = m.cpu.usage.as_ref().unwrap();
        assert_eq!(usage.total, 5_000_000_000);
        assert_eq!(usage.user, 3_000_000_000);
        assert_eq!(usage.kernel, 1_500_000_000);
        assert_eq!(usage.per_cpu, [3_000_000_000, 2_000_000_000]);
        let t = m.cpu.throttling.as_ref().unwrap();
        assert_eq!(
            (t.periods, t.throttled_periods, t.throttled_time),
            (40, 4, 123456)
        );

        let mem = m.memory.as_ref().unwrap();
        let fields = [
            mem.cache,
            mem.rss,
            mem.rss_huge,
            mem.mapped_file,
            mem.dirty,
            mem.writeback,
            mem.pg_pg_in,
            mem.pg_pg_out,
            mem.pg_fault,
            mem.pg_maj_fault,
            mem.inactive_anon,
            mem.active_anon,
            mem.inactive_file,
            mem.active_file,
            mem.unevictable,
            mem.hierarchical_memory_limit,
            mem.hierarchical_swap_limit,
            mem.total_cache,
            mem.total_rss,
            mem.total_rss_huge,
            mem.total_mapped_file,
            mem.total_dirty,
            mem.total_writeback,
            mem.total_pg_pg_in,
            mem.total_pg_pg_out,
            mem.total_pg_fault,
            mem.total_pg_maj_fault,
            mem.total_inactive_anon,
            mem.total_active_anon,
            mem.total_inactive_file,
            mem.total_active_file,
            mem.total_unevictable,
        ];
        assert_eq!(fields.to_vec(), (1..=32).collect::<Vec<u64>>());
        assert_eq!(*mem.usage, entry(100));
        assert_eq!(*mem.swap, entry(200));
        assert_eq!(*mem.kernel, entry(300));
        assert_eq!(*mem.kernel_tcp, entry(400));
        let oom = m.memory_oom_control.as_ref().unwrap();
        assert_eq!(
            (oom.oom_kill_disable, oom.under_oom, oom.oom_kill),
            (0, 1, 2)
        );

        let b = m.blkio.as_ref().unwrap();
        assert_eq!(
            b.io_serviced_recursive,
            [
                blk("/dev/vda", 254, 0, "Read", 10),
                blk("/dev/vda", 254, 0, "Write", 20),
                blk("/dev/vda", 254, 0, "Sync", 25),
                blk("/dev/vda", 254, 0, "Async", 5),
                blk("/dev/vda", 254, 0, "Discard", 0),
                blk("/dev/vda", 254, 0, "Total", 30),
            ]
        );
        assert_eq!(
            b.io_service_bytes_recursive,
            [
                blk("/dev/vda", 254, 0, "Read", 4096),
                blk("/dev/sdb", 8, 16, "Write", 512),
                blk("", 9, 9, "Read", 1),
            ]
        );
        assert_eq!(b.sectors_recursive, [blk("/dev/vda", 254, 0, "", 8)]);
        assert_eq!(b.io_time_recursive, [blk("/dev/vda", 254, 0, "", 77)]);
        assert!(b.io_queued_recursive.is_empty());

        assert_eq!(
            m.hugetlb,
            [
                HugetlbStat {
                    pagesize: "1GB".into(),
                    ..Default::default()
                },
                HugetlbStat {
                    usage: 2097152,
                    max: 4194304,
                    failcnt: 1,
                    pagesize: "2MB".into(),
                    ..Default::default()
                },
            ]
        );

        let r = m.rdma.as_ref().unwrap();
        let rdma = |hca_handles, hca_objects| RdmaEntry {
            device: "mlx4_0".into(),
            hca_handles,
            hca_objects,
            ..Default::default()
        };
        assert_eq!(r.current, [rdma(2, 2000)]);
        assert_eq!(r.limit, [rdma(u32::MAX, 10000)]);

        let any = AnyCgroup::V1(cg).metrics().unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        assert_eq!(Metrics::parse_from_bytes(&any.value).unwrap(), m);
    }

    #[test]
    fn missing_controllers_and_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Separate cpu and cpuacct hierarchies, memory without swap or kmem accounting, and
        // blkio with only the throttle counters (no CFQ).
        write(
            root,
            "proc/5/cgroup",
            "6:pids:/\n5:memory:/k/c2\n4:cpu:/\n3:cpuacct:/k/c2\n2:blkio:/k/c2\n1:hugetlb:/gone\n0::/\n",
        );
        let cg = |rel: &str, content: &str| write(root, &format!("sys/fs/cgroup/{rel}"), content);
        cg("memory/k/c2/memory.stat", "cache 10\ntotal_rss 20\n");
        cg("memory/k/c2/memory.usage_in_bytes", "4096\n");
        cg("memory/k/c2/memory.limit_in_bytes", "9223372036854771712\n");
        cg("cpuacct/k/c2/cpuacct.usage", "77\n");
        cg(
            "blkio/k/c2/blkio.throttle.io_serviced",
            "254:0 Read 3\n254:0 Total 3\nTotal 3\n",
        );
        cg(
            "blkio/k/c2/blkio.throttle.io_service_bytes",
            "254:0 Write 8192\nTotal 8192\n",
        );
        fs::create_dir_all(root.join("sys/fs/cgroup/pids")).unwrap();
        fs::create_dir_all(root.join("sys/fs/cgroup/cpu")).unwrap();

        let m = load(root, 5).metrics().unwrap();
        // The root pids cgroup has no pids files.
        assert!(m.pids.is_none());
        assert_eq!(m.cpu.usage.total, 77);
        assert!(m.cpu.usage.per_cpu.is_empty());
        assert_eq!(*m.cpu.throttling, Throttle::new());
        let mem = m.memory.as_ref().unwrap();
        assert_eq!((mem.cache, mem.total_rss, mem.rss), (10, 20, 0));
        assert_eq!(mem.usage.usage, 4096);
        assert_eq!(mem.usage.limit, 9223372036854771712);
        assert_eq!(*mem.swap, MemoryEntry::new());
        assert_eq!(*mem.kernel_tcp, MemoryEntry::new());
        assert!(m.memory_oom_control.is_none());
        let b = m.blkio.as_ref().unwrap();
        // No /proc/partitions in this tree: entries without device names.
        assert_eq!(
            b.io_serviced_recursive,
            [blk("", 254, 0, "Read", 3), blk("", 254, 0, "Total", 3)]
        );
        assert_eq!(
            b.io_service_bytes_recursive,
            [blk("", 254, 0, "Write", 8192)]
        );
        assert!(m.hugetlb.is_empty());
        assert!(m.rdma.is_none());
    }

    #[test]
    fn malformed_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "proc/5/cgroup", "1:memory:/c\n");
        write(
            dir.path(),
            "sys/fs/cgroup/memory/c/memory.stat",
            "cache x\n",
        );
        let err = load(dir.path(), 5).metrics().unwrap_err();
        assert!(matches!(err, CgroupError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("memory/c/memory.stat"), "{err}");
    }

    #[test]
    fn process_without_cgroup_directories() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "proc/5/cgroup",
            "1:memory:/c\n2:pids:/../..\n0::/\n",
        );
        fs::create_dir_all(dir.path().join("sys/fs/cgroup/pids")).unwrap();
        let err = AnyCgroup::with_root(dir.path(), Mode::Legacy, 5).unwrap_err();
        assert!(matches!(err, CgroupError::NoCgroup { pid: 5, .. }), "{err}");
    }

    #[test]
    fn deleted_cgroup_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "proc/5/cgroup", "1:memory:/c\n");
        write(
            dir.path(),
            "sys/fs/cgroup/memory/c/memory.stat",
            "cache 1\n",
        );
        let cg = load(dir.path(), 5);
        fs::remove_dir_all(dir.path().join("sys/fs/cgroup/memory/c")).unwrap();
        assert!(matches!(cg.metrics(), Err(CgroupError::Deleted { .. })));
    }

    #[test]
    fn add_process_writes_every_v1_hierarchy() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let cg = |rel: &str| write(root, &format!("sys/fs/cgroup/{rel}/shim/cgroup.procs"), "");
        cg("cpu,cpuacct");
        cg("memory");
        cg("systemd");
        fs::create_dir_all(root.join("sys/fs/cgroup/pids")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", root.join("sys/fs/cgroup/cpu")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", root.join("sys/fs/cgroup/cpuacct")).unwrap();
        // The v2 hierarchy of a hybrid host is not a v1 hierarchy.
        write(root, "sys/fs/cgroup/unified/shim/cgroup.procs", "");

        super::super::add_process_with_root(root, Mode::Hybrid, "/shim", 4242).unwrap();
        let procs = |rel: &str| {
            fs::read_to_string(root.join(format!("sys/fs/cgroup/{rel}/shim/cgroup.procs"))).unwrap()
        };
        assert_eq!(procs("cpu,cpuacct"), "4242");
        assert_eq!(procs("memory"), "4242");
        assert_eq!(procs("systemd"), "4242");
        assert_eq!(procs("unified"), "");

        let err = super::super::add_process_with_root(root, Mode::Legacy, "/nope", 1).unwrap_err();
        assert!(matches!(err, CgroupError::NoSuchPath { .. }), "{err}");
        let err = super::super::add_process_with_root(root, Mode::Legacy, "../x", 1).unwrap_err();
        assert!(matches!(err, CgroupError::InvalidPath { .. }), "{err}");
    }
}
