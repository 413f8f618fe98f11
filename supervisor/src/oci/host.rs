//! What the host kernel offers that a spec depends on: security modules, seccomp, cgroup
//! controllers. Detected once per process; tests build their own values.

use std::collections::HashSet;
use std::path::Path;
use std::sync::OnceLock;

use oci_spec::runtime::Capability;

use super::defaults::capabilities_from_mask;

/// Host facts the spec builders consult. `Default` is a bare host with none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFeatures {
    /// AppArmor is loaded and enabled.
    pub apparmor: bool,
    /// SELinux is enabled (selinuxfs mounted).
    pub selinux: bool,
    /// The kernel filters syscalls with seccomp.
    pub seccomp: bool,
    /// The memory controller accounts swap (`memory.memsw.*` or `memory.swap.max`).
    pub swap_accounting: bool,
    /// The hugetlb cgroup controller is present.
    pub hugetlb: bool,
    /// /sys/fs/cgroup is a pure cgroup v2 hierarchy.
    pub cgroup_unified: bool,
    /// Kernel (major, minor), for syscalls whose safety depends on it.
    pub kernel: (u32, u32),
    /// The daemon's effective capabilities: what privileged and `ALL` grant, since a
    /// runtime cannot hand out more than it holds. `None`: every known capability.
    pub capabilities: Option<HashSet<Capability>>,
}

impl HostFeatures {
    /// The features of this host, detected on first use.
    pub fn current() -> &'static HostFeatures {
        static HOST: OnceLock<HostFeatures> = OnceLock::new();
        HOST.get_or_init(HostFeatures::detect)
    }

    pub fn detect() -> HostFeatures {
        let cgroup_unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let status = read("/proc/self/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        HostFeatures {
            apparmor: Path::new("/sys/kernel/security/apparmor").is_dir()
                && read("/sys/module/apparmor/parameters/enabled").starts_with('Y'),
            selinux: Path::new("/sys/fs/selinux/enforce").exists(),
            seccomp: field("Seccomp:").is_some(),
            swap_accounting: swap_accounting(cgroup_unified),
            hugetlb: if cgroup_unified {
                read("/sys/fs/cgroup/cgroup.controllers")
                    .split_whitespace()
                    .any(|c| c == "hugetlb")
            } else {
                Path::new("/sys/fs/cgroup/hugetlb").is_dir()
            },
            cgroup_unified,
            kernel: parse_kernel_release(&read("/proc/sys/kernel/osrelease")),
            capabilities: field("CapEff:").and_then(capabilities_from_mask),
        }
    }

    /// What privileged and `ALL` grant.
    pub fn all_capabilities(&self) -> HashSet<Capability> {
        self.capabilities
            .clone()
            .unwrap_or_else(super::defaults::all_capabilities)
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// On v2 the root cgroup has no `memory.swap.max`: look in our own cgroup instead.
fn swap_accounting(unified: bool) -> bool {
    if !unified {
        return Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists();
    }
    let own = read("/proc/self/cgroup");
    let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
        return false;
    };
    Path::new("/sys/fs/cgroup")
        .join(path.trim_start_matches('/'))
        .join("memory.swap.max")
        .exists()
}

/// `6.1.0-18-amd64` → (6, 1); unparsable → (0, 0).
pub fn parse_kernel_release(release: &str) -> (u32, u32) {
    let mut parts = release.trim().split(['.', '-', '+']);
    let major = parts.next().and_then(|p| p.parse().ok());
    let minor = parts.next().and_then(|p| p.parse().ok());
    match (major, minor) {
        (Some(a), Some(b)) => (a, b),
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release_parses() {
        assert_eq!(parse_kernel_release("6.1.0-18-amd64\n"), (6, 1));
        assert_eq!(parse_kernel_release("4.8"), (4, 8));
        assert_eq!(parse_kernel_release("5.15.0+"), (5, 15));
        assert_eq!(parse_kernel_release("garbage"), (0, 0));
    }

    #[test]
    fn detection_matches_this_host() {
        let h = HostFeatures::detect();
        assert_eq!(
            h.cgroup_unified,
            Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        );
        assert!(h.kernel.0 >= 3, "kernel {:?}", h.kernel);
        assert_eq!(&h, HostFeatures::current());
        let caps = h.capabilities.expect("CapEff in /proc/self/status");
        if rustix::process::geteuid().is_root() {
            assert!(caps.contains(&Capability::SysAdmin));
        }
    }
}
