//! Seccomp for CRI processes: which profile a security context asks for, the runtime's
//! built-in default profile, and loading a node-local profile file.
//!
//! The default allows what a container normally needs and refuses, with EPERM, what breaks
//! out of or reconfigures the host (mount, namespaces, modules, clocks, keyrings...). Calls
//! that a capability already guards are allowed when the process holds that capability, as
//! with containerd's and Docker's default profiles.

use std::collections::HashSet;
use std::path::Path;

use limpet_protos::cri::v1::{security_profile::ProfileType, SecurityProfile};
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

use super::host::HostFeatures;
use super::SpecError;

const LOCALHOST_PREFIX: &str = "localhost/";

/// The profile a CRI security context selects: the `seccomp` field, else the deprecated
/// `seccomp_profile_path` string. `None` means no profile was asked for (unconfined).
pub fn requested_profile(
    profile: Option<&SecurityProfile>,
    deprecated_path: &str,
) -> Result<Option<SecurityProfile>, SpecError> {
    if let Some(p) = profile {
        return Ok(Some(p.clone()));
    }
    profile_from_path(deprecated_path)
}

/// `runtime/default`, `docker/default`, `unconfined`, `localhost/<path>`; empty is none.
pub fn profile_from_path(path: &str) -> Result<Option<SecurityProfile>, SpecError> {
    let typed = |t: ProfileType, r: &str| SecurityProfile {
        profile_type: t as i32,
        localhost_ref: r.to_string(),
    };
    Ok(match path {
        "" => None,
        "runtime/default" | "docker/default" => Some(typed(ProfileType::RuntimeDefault, "")),
        "unconfined" => Some(typed(ProfileType::Unconfined, "")),
        _ => match path.strip_prefix(LOCALHOST_PREFIX) {
            Some(r) => Some(typed(ProfileType::Localhost, r)),
            None => {
                return Err(SpecError::SecurityProfile(format!(
                    "invalid seccomp profile {path:?}"
                )))
            }
        },
    })
}

/// The `linux.seccomp` of a spec. Privileged processes get none; so do unconfined ones and
/// those that ask for nothing. `bounding` is the process's bounding capability set.
pub fn seccomp_for(
    profile: Option<&SecurityProfile>,
    deprecated_path: &str,
    privileged: bool,
    bounding: &HashSet<Capability>,
    host: &HostFeatures,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if privileged {
        return Ok(None);
    }
    let Some(p) = requested_profile(profile, deprecated_path)? else {
        return Ok(None);
    };
    let typ = ProfileType::try_from(p.profile_type).map_err(|_| {
        SpecError::SecurityProfile(format!("unknown seccomp profile type {}", p.profile_type))
    })?;
    if typ != ProfileType::Localhost && !p.localhost_ref.is_empty() {
        return Err(SpecError::SecurityProfile(
            "seccomp localhost_ref may only be set with profile type Localhost".into(),
        ));
    }
    if typ == ProfileType::Unconfined {
        return Ok(None);
    }
    if !host.seccomp {
        return Err(SpecError::SecurityProfile(
            "seccomp is not supported by this kernel".into(),
        ));
    }
    match typ {
        ProfileType::RuntimeDefault => default_profile(bounding, host.kernel).map(Some),
        ProfileType::Localhost => {
            // the prefix is tolerated here too, as clients still send it
            let path = p
                .localhost_ref
                .strip_prefix(LOCALHOST_PREFIX)
                .unwrap_or(&p.localhost_ref);
            load_profile(Path::new(path)).map(Some)
        }
        ProfileType::Unconfined => Ok(None),
    }
}

/// Reads an OCI `LinuxSeccomp` JSON profile from the node.
pub fn load_profile(path: &Path) -> Result<LinuxSeccomp, SpecError> {
    let bad = |reason: String| SpecError::SeccompProfile {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_absolute() {
        return Err(bad("a localhost profile must be an absolute path".into()));
    }
    let text = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    serde_json::from_slice(&text).map_err(|e| bad(format!("not a seccomp profile: {e}")))
}

/// The runtime's default profile for a process with bounding set `bounding`.
pub fn default_profile(
    bounding: &HashSet<Capability>,
    kernel: (u32, u32),
) -> Result<LinuxSeccomp, SpecError> {
    let mut rules = vec![allow(ALWAYS_ALLOWED)];
    // personality(2) only with the domains ordinary programs use, and the query value
    for persona in [0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff] {
        rules.push(allow_if(
            &["personality"],
            0,
            (persona, None),
            LinuxSeccompOperator::ScmpCmpEq,
        )?);
    }
    // before 4.8 ptrace could be used to get around seccomp
    if kernel >= (4, 8) {
        rules.push(allow(&["ptrace"]));
    }
    if !ARCH_ALLOWED.is_empty() {
        rules.push(allow(ARCH_ALLOWED));
    }
    for (cap, names) in CAPABILITY_ALLOWED {
        if bounding.contains(cap) {
            rules.push(allow(names));
        }
    }
    if !bounding.contains(&Capability::SysAdmin) {
        // clone without namespace flags; clone3 hides its flags in memory, so it gets ENOSYS
        // and libc falls back to clone
        let ns_flags = (libc::CLONE_NEWNS
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUSER
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWCGROUP) as u64;
        // s390 swaps clone's first two arguments
        let flags_arg = if cfg!(target_arch = "s390x") { 1 } else { 0 };
        rules.push(allow_if(
            &["clone"],
            flags_arg,
            (ns_flags, Some(0)),
            LinuxSeccompOperator::ScmpCmpMaskedEq,
        )?);
        let mut clone3 = allow(&["clone3"]);
        clone3.set_action(LinuxSeccompAction::ScmpActErrno);
        clone3.set_errno_ret(Some(libc::ENOSYS as u32));
        rules.push(clone3);
    }
    let mut s = LinuxSeccomp::default();
    s.set_default_action(LinuxSeccompAction::ScmpActErrno);
    s.set_architectures(Some(native_arches()));
    s.set_syscalls(Some(rules));
    Ok(s)
}

fn allow(names: &[&str]) -> LinuxSyscall {
    let mut r = LinuxSyscall::default();
    r.set_names(names.iter().map(|n| n.to_string()).collect());
    r.set_action(LinuxSeccompAction::ScmpActAllow);
    r
}

/// Allowed when argument `index` compares true: `(value, value_two)` as seccomp takes them.
fn allow_if(
    names: &[&str],
    index: usize,
    (value, value_two): (u64, Option<u64>),
    op: LinuxSeccompOperator,
) -> Result<LinuxSyscall, SpecError> {
    let mut arg = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    if let Some(v) = value_two {
        arg = arg.value_two(v);
    }
    let mut r = allow(names);
    r.set_args(Some(vec![arg.build()?]));
    Ok(r)
}

/// The ABIs a native process may use; the others are refused outright.
fn native_arches() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchArm, Arch::ScmpArchAarch64]
    } else if cfg!(target_arch = "s390x") {
        vec![Arch::ScmpArchS390, Arch::ScmpArchS390x]
    } else if cfg!(target_arch = "riscv64") {
        vec![Arch::ScmpArchRiscv64]
    } else {
        Vec::new()
    }
}

/// Syscalls only one architecture has that are as harmless as the common list.
const ARCH_ALLOWED: &[&str] = if cfg!(target_arch = "x86_64") {
    &["arch_prctl", "modify_ldt"]
} else if cfg!(target_arch = "x86") {
    &["modify_ldt"]
} else if cfg!(any(target_arch = "aarch64", target_arch = "arm")) {
    &[
        "arm_fadvise64_64",
        "arm_sync_file_range",
        "sync_file_range2",
        "breakpoint",
        "cacheflush",
        "set_tls",
    ]
} else if cfg!(target_arch = "powerpc64") {
    &["sync_file_range2", "swapcontext"]
} else if cfg!(target_arch = "s390x") {
    &[
        "s390_pci_mmio_read",
        "s390_pci_mmio_write",
        "s390_runtime_instr",
    ]
} else if cfg!(target_arch = "riscv64") {
    &["riscv_flush_icache"]
} else {
    &[]
};

/// Syscalls allowed when the bounding set holds the capability that guards them anyway.
const CAPABILITY_ALLOWED: &[(Capability, &[&str])] = &[
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["delete_module", "init_module", "finit_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// Allowed for every process. Names this kernel or libseccomp does not know are skipped
/// by the runtime, so newer calls can be listed before every host has them.
const ALWAYS_ALLOWED: &[&str] = &[
    "_llseek",
    "_newselect",
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host() -> HostFeatures {
        HostFeatures {
            seccomp: true,
            kernel: (6, 1),
            ..Default::default()
        }
    }

    fn profile(t: ProfileType, r: &str) -> SecurityProfile {
        SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        }
    }

    /// Names a rule allows without argument conditions.
    fn plainly_allowed(s: &LinuxSeccomp) -> HashSet<String> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| {
                r.action() == LinuxSeccompAction::ScmpActAllow
                    && r.args().as_ref().is_none_or(|a| a.is_empty())
            })
            .flat_map(|r| r.names().clone())
            .collect()
    }

    #[test]
    fn default_profile_denies_escapes() {
        let caps = crate::oci::defaults::default_capabilities();
        let p = default_profile(&caps, (6, 1)).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), None);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                p.architectures().clone().unwrap(),
                [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
            );
        }
        let allowed = plainly_allowed(&p);
        for name in [
            "read", "write", "execve", "openat", "futex", "ptrace", "chroot",
        ] {
            assert!(allowed.contains(name), "{name}");
        }
        for name in [
            "mount",
            "unshare",
            "setns",
            "reboot",
            "init_module",
            "keyctl",
            "add_key",
            "kexec_load",
            "bpf",
            "clone",
            "clone3",
            "open_by_handle_at",
            "syslog",
        ] {
            assert!(!allowed.contains(name), "{name} is allowed");
        }
        let v = serde_json::to_value(&p).unwrap();
        let rules = v["syscalls"].as_array().unwrap();
        // clone only without namespace flags, clone3 fails as unimplemented
        let clone = rules
            .iter()
            .find(|r| r["names"] == json!(["clone"]))
            .unwrap();
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone["args"][0]["value"], 0x7e02_0000_u64);
        assert_eq!(clone["args"][0]["valueTwo"], 0);
        let clone3 = rules
            .iter()
            .find(|r| r["names"] == json!(["clone3"]))
            .unwrap();
        assert_eq!(clone3["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3["errnoRet"], libc::ENOSYS);
        let personas: Vec<u64> = rules
            .iter()
            .filter(|r| r["names"] == json!(["personality"]))
            .map(|r| r["args"][0]["value"].as_u64().unwrap())
            .collect();
        assert_eq!(personas, [0, 8, 0x20000, 0x20008, 0xffff_ffff]);
    }

    #[test]
    fn capabilities_open_their_syscalls() {
        let mut caps = crate::oci::defaults::default_capabilities();
        caps.extend([Capability::SysAdmin, Capability::SysTime, Capability::Bpf]);
        let p = default_profile(&caps, (6, 1)).unwrap();
        let allowed = plainly_allowed(&p);
        for name in [
            "mount",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "clock_settime",
            "bpf",
        ] {
            assert!(allowed.contains(name), "{name}");
        }
        let v = serde_json::to_value(&p).unwrap();
        assert!(!v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "SCMP_ACT_ERRNO"));
        // an old kernel keeps ptrace out
        let old = default_profile(&caps, (4, 4)).unwrap();
        assert!(!plainly_allowed(&old).contains("ptrace"));
    }

    #[test]
    fn profile_selection() {
        let caps = HashSet::new();
        let h = host();
        let pick = |p: Option<&SecurityProfile>, path: &str, privileged: bool| {
            seccomp_for(p, path, privileged, &caps, &h)
        };
        assert!(pick(None, "", false).unwrap().is_none());
        assert!(pick(None, "unconfined", false).unwrap().is_none());
        assert!(pick(None, "runtime/default", false).unwrap().is_some());
        assert!(pick(None, "docker/default", false).unwrap().is_some());
        assert!(pick(None, "runtime/default", true).unwrap().is_none());
        assert!(matches!(
            pick(None, "bogus", false),
            Err(SpecError::SecurityProfile(_))
        ));
        let rd = profile(ProfileType::RuntimeDefault, "");
        assert!(pick(Some(&rd), "", false).unwrap().is_some());
        // the typed field wins over the string
        let un = profile(ProfileType::Unconfined, "");
        assert!(pick(Some(&un), "runtime/default", false).unwrap().is_none());
        let bad = profile(ProfileType::RuntimeDefault, "/x.json");
        assert!(matches!(
            pick(Some(&bad), "", false),
            Err(SpecError::SecurityProfile(_))
        ));
        let no_seccomp = HostFeatures::default();
        assert!(seccomp_for(Some(&rd), "", false, &caps, &no_seccomp).is_err());
        assert!(seccomp_for(Some(&un), "", false, &caps, &no_seccomp)
            .unwrap()
            .is_none());
    }

    #[test]
    fn localhost_profiles_load_from_files() {
        let caps = HashSet::new();
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            r#"{"defaultAction":"SCMP_ACT_LOG","architectures":["SCMP_ARCH_X86_64"]}"#,
        )
        .unwrap();
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{not json").unwrap();
        let path = good.to_str().unwrap();
        let p = seccomp_for(
            Some(&profile(ProfileType::Localhost, path)),
            "",
            false,
            &caps,
            &host(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActLog);
        let via_path = seccomp_for(None, &format!("localhost/{path}"), false, &caps, &host())
            .unwrap()
            .unwrap();
        assert_eq!(via_path, p);
        for (path, what) in [
            (bad.to_str().unwrap(), "not a seccomp profile"),
            ("/no/such/profile.json", "cannot read"),
            ("relative.json", "absolute"),
        ] {
            let err = seccomp_for(
                Some(&profile(ProfileType::Localhost, path)),
                "",
                false,
                &caps,
                &host(),
            )
            .unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(what) && msg.contains(path), "{msg}");
        }
    }
}
