//! The Linux defaults containerd's CRI plugin starts every container spec from.

use std::collections::HashSet;

use oci_spec::runtime::{Capability, Mount, MountBuilder};

use super::SpecError;

/// PATH for a container whose image sets none.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities a non-privileged CRI container gets.
pub fn default_capabilities() -> HashSet<Capability> {
    use Capability::*;
    [
        Chown,
        DacOverride,
        Fsetid,
        Fowner,
        Mknod,
        NetRaw,
        Setgid,
        Setuid,
        Setfcap,
        Setpcap,
        NetBindService,
        SysChroot,
        Kill,
        AuditWrite,
    ]
    .into_iter()
    .collect()
}

/// Every capability the spec crate knows, indexed by its kernel number.
const CAPABILITY_BITS: [Capability; 41] = {
    use Capability::*;
    [
        Chown,
        DacOverride,
        DacReadSearch,
        Fowner,
        Fsetid,
        Kill,
        Setgid,
        Setuid,
        Setpcap,
        LinuxImmutable,
        NetBindService,
        NetBroadcast,
        NetAdmin,
        NetRaw,
        IpcLock,
        IpcOwner,
        SysModule,
        SysRawio,
        SysChroot,
        SysPtrace,
        SysPacct,
        SysAdmin,
        SysBoot,
        SysNice,
        SysResource,
        SysTime,
        SysTtyConfig,
        Mknod,
        Lease,
        AuditWrite,
        AuditControl,
        Setfcap,
        MacOverride,
        MacAdmin,
        Syslog,
        WakeAlarm,
        BlockSuspend,
        AuditRead,
        Perfmon,
        Bpf,
        CheckpointRestore,
    ]
};

/// Every capability the spec crate knows.
pub fn all_capabilities() -> HashSet<Capability> {
    CAPABILITY_BITS.into_iter().collect()
}

/// The capabilities of a capability bitmask (`CapEff` in /proc/<pid>/status, hex).
pub fn capabilities_from_mask(hex: &str) -> Option<HashSet<Capability>> {
    let mask = u64::from_str_radix(hex.trim(), 16).ok()?;
    Some(
        CAPABILITY_BITS
            .iter()
            .enumerate()
            .filter(|(bit, _)| mask & (1 << bit) != 0)
            .map(|(_, cap)| *cap)
            .collect(),
    )
}

/// Parses a CRI capability name: `CHOWN`, `CAP_CHOWN`, any case.
pub fn parse_capability(name: &str) -> Result<Capability, SpecError> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| SpecError::UnknownCapability(name.to_string()))
}

/// Paths hidden from a non-privileged process: the kubelet's and containerd's list.
pub fn default_masked_paths() -> Vec<String> {
    [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
        "/proc/scsi",
    ]
    .map(String::from)
    .to_vec()
}

/// Paths a non-privileged process may read but not write.
pub fn default_readonly_paths() -> Vec<String> {
    [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]
    .map(String::from)
    .to_vec()
}

/// The kernel filesystems every container gets; `/sys` and the cgroup fs are read-only
/// unless `writable_sys` (privileged containers).
pub fn default_mounts(writable_sys: bool) -> Result<Vec<Mount>, SpecError> {
    let sys_mode = if writable_sys { "rw" } else { "ro" };
    let table: [(&str, &str, &str, Vec<&str>); 7] = [
        ("/proc", "proc", "proc", vec!["nosuid", "noexec", "nodev"]),
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            vec!["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        (
            "/dev/pts",
            "devpts",
            "devpts",
            vec![
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        (
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            vec!["nosuid", "noexec", "nodev"],
        ),
        (
            "/sys",
            "sysfs",
            "sysfs",
            vec!["nosuid", "noexec", "nodev", sys_mode],
        ),
        (
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            vec!["nosuid", "noexec", "nodev", "relatime", sys_mode],
        ),
        (
            "/dev/shm",
            "shm",
            "tmpfs",
            vec!["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    ];
    table
        .into_iter()
        .map(|(destination, source, typ, options)| {
            Ok(MountBuilder::default()
                .destination(destination)
                .source(source)
                .typ(typ)
                .options(options.into_iter().map(String::from).collect::<Vec<_>>())
                .build()?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_parse_with_and_without_prefix() {
        assert_eq!(parse_capability("CAP_CHOWN").unwrap(), Capability::Chown);
        assert_eq!(parse_capability("sys_admin").unwrap(), Capability::SysAdmin);
        assert!(matches!(
            parse_capability("NOPE"),
            Err(SpecError::UnknownCapability(_))
        ));
    }

    #[test]
    fn default_capabilities_are_containerds_fourteen() {
        let caps = default_capabilities();
        assert_eq!(caps.len(), 14);
        assert!(caps.contains(&Capability::AuditWrite));
        assert!(!caps.contains(&Capability::SysAdmin));
        assert!(caps.is_subset(&all_capabilities()));
    }

    #[test]
    fn capability_masks_decode_by_kernel_number() {
        assert_eq!(
            capabilities_from_mask("0000000000001020").unwrap(),
            HashSet::from([Capability::Kill, Capability::NetAdmin])
        );
        // a kernel with more capabilities than we know: those are left out
        assert_eq!(
            capabilities_from_mask("ffffffffffffffff").unwrap(),
            all_capabilities()
        );
        let without_sys_resource = capabilities_from_mask("000001fffeffffff").unwrap();
        assert_eq!(without_sys_resource.len(), 40);
        assert!(!without_sys_resource.contains(&Capability::SysResource));
        assert!(capabilities_from_mask("xyz").is_none());
    }
}
