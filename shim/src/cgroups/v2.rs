//! cgroup v2: one directory per cgroup in the unified hierarchy.

use std::fs;
use std::path::{Path, PathBuf};

use limpet_protos::cgroups_v2::metrics::{
    CPUStat, HugeTlbStat, IOEntry, IOStat, MemoryEvents, MemoryStat, Metrics, PSIData, PSIStats,
    PidsStat, RdmaEntry, RdmaStat,
};

use limpet_protos::protobuf::MessageField;

use super::parse::{self, read_kv, read_optional, read_uint};
use super::{CgroupError, Host};

/// v2 prints `max` for "no limit"; containerd reports it as u64::MAX.
const MAX: u64 = u64::MAX;

/// The v2 cgroup directory of one process.
#[derive(Clone, Debug)]
pub struct Cgroup {
    host: Host,
    dir: PathBuf,
}

impl Cgroup {
    /// The directory named by the `0::path` line of /proc/PID/cgroup, if it exists.
    pub(crate) fn from_proc_cgroup(host: Host, proc_cgroup: &str) -> Option<Cgroup> {
        let path = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
        // Outside our cgroup namespace the kernel prints `/..` paths: not ours to read.
        let relative = parse::relative_cgroup_path(path).ok()?;
        let dir = host.cgroup_mount().join(relative);
        dir.is_dir().then_some(Cgroup { host, dir })
    }

    /// The cgroup at `dir`, on this host.
    #[cfg(test)]
    pub(crate) fn at(dir: PathBuf) -> Cgroup {
        Cgroup {
            host: Host::new(Path::new("/")),
            dir,
        }
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Metrics as containerd's cgroup v2 manager reports them: absent files read as 0.
    pub fn metrics(&self) -> Result<Metrics, CgroupError> {
        if !self.dir.is_dir() {
            return Err(CgroupError::Deleted {
                path: self.dir.clone(),
            });
        }
        let file = |name: &str| self.dir.join(name);
        let uint = |name: &str| -> Result<u64, CgroupError> {
            Ok(read_uint(&file(name), MAX)?.unwrap_or(0))
        };
        let mut m = Metrics::new();
        m.pids = MessageField::some(PidsStat {
            current: uint("pids.current")?,
            limit: uint("pids.max")?,
            ..Default::default()
        });
        m.cpu = MessageField::some(self.cpu()?);
        m.memory = MessageField::some(self.memory()?);
        m.memory_events = self.memory_events()?.into();
        m.io = MessageField::some(IOStat {
            usage: read_optional(&file("io.stat"))?
                .map(|t| io_entries(&t))
                .unwrap_or_default(),
            psi: psi(&file("io.pressure")).into(),
            ..Default::default()
        });
        let rdma = |name: &str| -> Result<Vec<RdmaEntry>, CgroupError> {
            let text = read_optional(&file(name))?.unwrap_or_default();
            Ok(parse::rdma_lines(&text)
                .map(|(device, hca_handles, hca_objects)| RdmaEntry {
                    device: device.to_string(),
                    hca_handles,
                    hca_objects,
                    ..Default::default()
                })
                .collect())
        };
        m.rdma = MessageField::some(RdmaStat {
            current: rdma("rdma.current")?,
            limit: rdma("rdma.max")?,
            ..Default::default()
        });
        m.hugetlb = self.hugetlb()?;
        Ok(m)
    }

    fn cpu(&self) -> Result<CPUStat, CgroupError> {
        let mut s = CPUStat::new();
        read_kv(&self.dir.join("cpu.stat"), |key, v| {
            let field = match key {
                "usage_usec" => &mut s.usage_usec,
                "user_usec" => &mut s.user_usec,
                "system_usec" => &mut s.system_usec,
                "nr_periods" => &mut s.nr_periods,
                "nr_throttled" => &mut s.nr_throttled,
                "throttled_usec" => &mut s.throttled_usec,
                "nr_bursts" => &mut s.nr_bursts,
                "burst_usec" => &mut s.burst_usec,
                _ => return,
            };
            *field = v;
        })?;
        s.psi = psi(&self.dir.join("cpu.pressure")).into();
        Ok(s)
    }

    fn memory(&self) -> Result<MemoryStat, CgroupError> {
        let mut s = MemoryStat::new();
        // Kernels since 5.9 split workingset counters into _anon and _file.
        let (mut refault, mut activate) = (None, None);
        let (mut refault_split, mut activate_split) = (0u64, 0u64);
        read_kv(&self.dir.join("memory.stat"), |key, v| {
            let field = match key {
                "anon" => &mut s.anon,
                "file" => &mut s.file,
                "kernel_stack" => &mut s.kernel_stack,
                "slab" => &mut s.slab,
                "sock" => &mut s.sock,
                "shmem" => &mut s.shmem,
                "file_mapped" => &mut s.file_mapped,
                "file_dirty" => &mut s.file_dirty,
                "file_writeback" => &mut s.file_writeback,
                "anon_thp" => &mut s.anon_thp,
                "inactive_anon" => &mut s.inactive_anon,
                "active_anon" => &mut s.active_anon,
                "inactive_file" => &mut s.inactive_file,
                "active_file" => &mut s.active_file,
                "unevictable" => &mut s.unevictable,
                "slab_reclaimable" => &mut s.slab_reclaimable,
                "slab_unreclaimable" => &mut s.slab_unreclaimable,
                "pgfault" => &mut s.pgfault,
                "pgmajfault" => &mut s.pgmajfault,
                "workingset_nodereclaim" => &mut s.workingset_nodereclaim,
                "pgrefill" => &mut s.pgrefill,
                "pgscan" => &mut s.pgscan,
                "pgsteal" => &mut s.pgsteal,
                "pgactivate" => &mut s.pgactivate,
                "pgdeactivate" => &mut s.pgdeactivate,
                "pglazyfree" => &mut s.pglazyfree,
                "pglazyfreed" => &mut s.pglazyfreed,
                "thp_fault_alloc" => &mut s.thp_fault_alloc,
                "thp_collapse_alloc" => &mut s.thp_collapse_alloc,
                "workingset_refault" => {
                    refault = Some(v);
                    return;
                }
                "workingset_activate" => {
                    activate = Some(v);
                    return;
                }
                "workingset_refault_anon" | "workingset_refault_file" => {
                    refault_split = refault_split.saturating_add(v);
                    return;
                }
                "workingset_activate_anon" | "workingset_activate_file" => {
                    activate_split = activate_split.saturating_add(v);
                    return;
                }
                _ => return,
            };
            *field = v;
        })?;
        s.workingset_refault = refault.unwrap_or(refault_split);
        s.workingset_activate = activate.unwrap_or(activate_split);
        let uint = |name: &str| -> Result<u64, CgroupError> {
            Ok(read_uint(&self.dir.join(name), MAX)?.unwrap_or(0))
        };
        s.usage = uint("memory.current")?;
        s.usage_limit = uint("memory.max")?;
        s.max_usage = uint("memory.peak")?;
        s.swap_usage = uint("memory.swap.current")?;
        s.swap_limit = uint("memory.swap.max")?;
        s.swap_max_usage = uint("memory.swap.peak")?;
        s.psi = psi(&self.dir.join("memory.pressure")).into();
        Ok(s)
    }

    /// memory.events, `None` without the memory controller.
    fn memory_events(&self) -> Result<Option<MemoryEvents>, CgroupError> {
        let mut e = MemoryEvents::new();
        let mut any = false;
        read_kv(&self.dir.join("memory.events"), |key, v| {
            any = true;
            match key {
                "low" => e.low = v,
                "high" => e.high = v,
                "max" => e.max = v,
                "oom" => e.oom = v,
                "oom_kill" => e.oom_kill = v,
                "oom_group_kill" => e.oom_group_kill = v,
                _ => {}
            }
        })?;
        Ok(any.then_some(e))
    }

    /// One entry per huge page size of the host, where the hugetlb controller is enabled.
    fn hugetlb(&self) -> Result<Vec<HugeTlbStat>, CgroupError> {
        let mut stats = Vec::new();
        for size in parse::hugepage_sizes(&self.host.hugepages()) {
            let file = |name: &str| self.dir.join(format!("hugetlb.{size}.{name}"));
            let Some(current) = read_uint(&file("current"), MAX)? else {
                continue;
            };
            let mut failcnt = 0;
            read_kv(&file("events"), |key, v| {
                if key == "max" {
                    failcnt = v;
                }
            })?;
            stats.push(HugeTlbStat {
                current,
                max: read_uint(&file("max"), MAX)?.unwrap_or(0),
                failcnt,
                pagesize: size,
                ..Default::default()
            });
        }
        Ok(stats)
    }
}

/// io.stat lines: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N`.
fn io_entries(text: &str) -> Vec<IOEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some((major, minor)) = fields.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        let mut e = IOEntry {
            major,
            minor,
            ..Default::default()
        };
        for (key, value) in fields.filter_map(|kv| kv.split_once('=')) {
            let Ok(value) = value.parse() else {
                continue;
            };
            match key {
                "rbytes" => e.rbytes = value,
                "wbytes" => e.wbytes = value,
                "rios" => e.rios = value,
                "wios" => e.wios = value,
                _ => {}
            }
        }
        entries.push(e);
    }
    entries
}

/// Pressure stall information (`some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and a `full`
/// line); `None` when the kernel has none or the file is malformed.
fn psi(path: &Path) -> Option<PSIStats> {
    let text = fs::read_to_string(path).ok()?;
    let mut stats = PSIStats::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut stats.some,
            Some("full") => &mut stats.full,
            _ => continue,
        };
        let mut data = PSIData::new();
        for kv in fields {
            let (key, value) = kv.split_once('=')?;
            match key {
                "avg10" => data.avg10 = value.parse().ok()?,
                "avg60" => data.avg60 = value.parse().ok()?,
                "avg300" => data.avg300 = value.parse().ok()?,
                "total" => data.total = value.parse().ok()?,
                _ => {}
            }
        }
        *slot = MessageField::some(data);
    }
    Some(stats)
}

#[cfg(test)]
mod tests {
    use super::super::{tests::write, Cgroup as AnyCgroup, Mode};
    use super::*;
    use limpet_protos::protobuf::Message;

    fn load(root: &Path, pid: i32) -> Cgroup {
        match AnyCgroup::with_root(root, Mode::Unified, pid).unwrap() {
            AnyCgroup::V2(cg) => cg,
            AnyCgroup::V1(_) => panic!("unified hosts are served as v2"),
        }
    }

    const MEMORY_STAT: &str = "anon 1\nfile 2\nkernel 999\nkernel_stack 3\npagetables 998\n\
slab 4\nsock 5\nshmem 6\nfile_mapped 7\nfile_dirty 8\nfile_writeback 9\nanon_thp 10\n\
inactive_anon 11\nactive_anon 12\ninactive_file 13\nactive_file 14\nunevictable 15\n\
slab_reclaimable 16\nslab_unreclaimable 17\npgfault 18\npgmajfault 19\n\
workingset_refault_anon 20\nworkingset_refault_file 21\nworkingset_activate_anon 22\n\
workingset_activate_file 23\nworkingset_nodereclaim 24\npgrefill 25\npgscan 26\n\
pgsteal 27\npgactivate 28\npgdeactivate 29\npglazyfree 30\npglazyfreed 31\n\
thp_fault_alloc 32\nthp_collapse_alloc 33\n";

    #[test]
    fn full_tree_gives_every_metric() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "proc/300/cgroup", "0::/kubepods/pod1/c3\n");
        fs::create_dir_all(root.join("sys/kernel/mm/hugepages/hugepages-2048kB")).unwrap();
        fs::create_dir_all(root.join("sys/kernel/mm/hugepages/hugepages-1048576kB")).unwrap();
        let cg = |name: &str, content: &str| {
            write(
                root,
                &format!("sys/fs/cgroup/kubepods/pod1/c3/{name}"),
                content,
            )
        };
        cg("pids.current", "3\n");
        cg("pids.max", "max\n");
        cg(
            "cpu.stat",
            "usage_usec 1000\nuser_usec 600\nsystem_usec 400\nnr_periods 10\nnr_throttled 2\n\
             throttled_usec 50\nnr_bursts 1\nburst_usec 5\n",
        );
        cg(
            "cpu.pressure",
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
        );
        cg("memory.stat", MEMORY_STAT);
        cg("memory.current", "1048576\n");
        cg("memory.max", "8388608\n");
        cg("memory.peak", "2097152\n");
        cg("memory.swap.current", "0\n");
        cg("memory.swap.max", "max\n");
        cg(
            "memory.events",
            "low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\noom_group_kill 6\n",
        );
        cg(
            "io.stat",
            "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=1 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
        );
        cg(
            "io.pressure",
            "some avg10=x avg60=0.00 avg300=0.00 total=0\n",
        );
        cg("rdma.current", "mlx4_0 hca_handle=1 hca_object=20\n");
        cg("rdma.max", "mlx4_0 hca_handle=max hca_object=max\n");
        cg("hugetlb.2MB.current", "2097152\n");
        cg("hugetlb.2MB.max", "max\n");
        cg("hugetlb.2MB.events", "max 3\n");

        let cgroup = load(root, 300);
        assert_eq!(cgroup.dir(), root.join("sys/fs/cgroup/kubepods/pod1/c3"));
        let m = cgroup.metrics().unwrap();

        assert_eq!((m.pids.current, m.pids.limit), (3, u64::MAX));
        let cpu = m.cpu.as_ref().unwrap();
        assert_eq!(
            [
                cpu.usage_usec,
                cpu.user_usec,
                cpu.system_usec,
                cpu.nr_periods,
                cpu.nr_throttled,
                cpu.throttled_usec,
                cpu.nr_bursts,
                cpu.burst_usec
            ],
            [1000, 600, 400, 10, 2, 50, 1, 5]
        );
        let some = cpu.psi.some.as_ref().unwrap();
        assert_eq!(
            (some.avg10, some.avg60, some.avg300, some.total),
            (1.5, 0.25, 0.0, 12345)
        );
        assert_eq!(cpu.psi.full.total, 7);

        let mem = m.memory.as_ref().unwrap();
        assert_eq!(
            [
                mem.anon,
                mem.file,
                mem.kernel_stack,
                mem.slab,
                mem.sock,
                mem.shmem,
                mem.file_mapped,
                mem.file_dirty,
                mem.file_writeback,
                mem.anon_thp,
                mem.inactive_anon,
                mem.active_anon,
                mem.inactive_file,
                mem.active_file,
                mem.unevictable,
                mem.slab_reclaimable,
                mem.slab_unreclaimable,
                mem.pgfault,
                mem.pgmajfault,
                mem.workingset_refault,
                mem.workingset_activate,
                mem.workingset_nodereclaim,
                mem.pgrefill,
                mem.pgscan,
                mem.pgsteal,
                mem.pgactivate,
                mem.pgdeactivate,
                mem.pglazyfree,
                mem.pglazyfreed,
                mem.thp_fault_alloc,
                mem.thp_collapse_alloc,
            ],
            [
                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 41, 45, 24, 25,
                26, 27, 28, 29, 30, 31, 32, 33
            ]
        );
        assert_eq!(
            [
                mem.usage,
                mem.usage_limit,
                mem.max_usage,
                mem.swap_usage,
                mem.swap_limit,
                mem.swap_max_usage
            ],
            [1048576, 8388608, 2097152, 0, u64::MAX, 0]
        );
        assert!(mem.psi.is_none());

        let ev = m.memory_events.as_ref().unwrap();
        assert_eq!(
            [
                ev.low,
                ev.high,
                ev.max,
                ev.oom,
                ev.oom_kill,
                ev.oom_group_kill
            ],
            [1, 2, 3, 4, 5, 6]
        );

        let io = |major, minor, rbytes, wbytes, rios, wios| IOEntry {
            major,
            minor,
            rbytes,
            wbytes,
            rios,
            wios,
            ..Default::default()
        };
        assert_eq!(
            m.io.usage,
            [io(254, 0, 4096, 8192, 1, 2), io(8, 16, 1, 0, 1, 0)]
        );
        // A malformed pressure file is left out, not an error.
        assert!(m.io.psi.is_none());

        assert_eq!(
            (m.rdma.current[0].hca_handles, m.rdma.current[0].hca_objects),
            (1, 20)
        );
        assert_eq!(
            (m.rdma.limit[0].hca_handles, m.rdma.limit[0].hca_objects),
            (u32::MAX, u32::MAX)
        );

        assert_eq!(
            m.hugetlb,
            [HugeTlbStat {
                current: 2097152,
                max: u64::MAX,
                failcnt: 3,
                pagesize: "2MB".into(),
                ..Default::default()
            }]
        );

        let any = AnyCgroup::V2(cgroup).metrics().unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        assert_eq!(Metrics::parse_from_bytes(&any.value).unwrap(), m);
    }

    #[test]
    fn empty_cgroup_reads_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "proc/9/cgroup", "0::/\n");
        fs::create_dir_all(dir.path().join("sys/fs/cgroup")).unwrap();
        let m = load(dir.path(), 9).metrics().unwrap();
        assert_eq!(*m.pids, PidsStat::new());
        assert_eq!(*m.cpu, CPUStat::new());
        assert_eq!(*m.memory, MemoryStat::new());
        assert!(m.memory_events.is_none());
        assert!(m.io.usage.is_empty());
        assert!(m.hugetlb.is_empty());
    }

    #[test]
    fn lines_other_than_the_unified_one_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "proc/9/cgroup", "1:name=systemd:/a\n0::/b\n");
        write(dir.path(), "proc/10/cgroup", "0::/../a\n");
        fs::create_dir_all(dir.path().join("sys/fs/cgroup/a")).unwrap();
        let err = AnyCgroup::with_root(dir.path(), Mode::Unified, 9).unwrap_err();
        assert!(matches!(err, CgroupError::NoCgroup { pid: 9, .. }), "{err}");
        fs::create_dir_all(dir.path().join("sys/fs/cgroup/b")).unwrap();
        assert_eq!(
            load(dir.path(), 9).dir(),
            dir.path().join("sys/fs/cgroup/b")
        );
        assert!(AnyCgroup::with_root(dir.path(), Mode::Unified, 10).is_err());
    }

    #[test]
    fn add_process_writes_the_unified_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "sys/fs/cgroup/shim.slice/cgroup.procs", "");
        super::super::add_process_with_root(dir.path(), Mode::Unified, "/shim.slice", 77).unwrap();
        let procs = dir.path().join("sys/fs/cgroup/shim.slice/cgroup.procs");
        assert_eq!(fs::read_to_string(procs).unwrap(), "77");
        let err =
            super::super::add_process_with_root(dir.path(), Mode::Unified, "/x", 77).unwrap_err();
        assert!(matches!(err, CgroupError::NoSuchPath { .. }), "{err}");
    }
}
