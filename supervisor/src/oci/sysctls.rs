//! Pod sysctls: only those scoped to a namespace the pod owns. A `net.*` sysctl in the host
//! network namespace would retune the node; runc refuses it too, but later and less clearly.

use std::collections::HashMap;

use super::SpecError;

/// IPC-namespaced sysctls besides `fs.mqueue.*`.
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Which of the pod's namespaces are the host's.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostNamespaces {
    pub network: bool,
    pub ipc: bool,
    /// The UTS namespace (the host's with the host network).
    pub uts: bool,
}

/// Checks that every sysctl belongs to a namespace of the pod's own.
pub fn validate(sysctls: &HashMap<String, String>, host: HostNamespaces) -> Result<(), SpecError> {
    let mut names: Vec<&String> = sysctls.keys().collect();
    names.sort();
    for name in names {
        let err = |reason| {
            Err(SpecError::Sysctl {
                name: name.clone(),
                reason,
            })
        };
        // the kubelet accepts `/` as the separator too
        let n = name.replace('/', ".");
        if n.starts_with("net.") {
            if host.network {
                return err("not allowed with the host network namespace");
            }
        } else if n.starts_with("fs.mqueue.") || IPC_SYSCTLS.contains(&n.as_str()) {
            if host.ipc {
                return err("not allowed with the host IPC namespace");
            }
        } else if n == "kernel.hostname" || n == "kernel.domainname" {
            if host.uts {
                return err("not allowed with the host UTS namespace");
            }
        } else {
            return err("not namespaced: it would change the host");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(names: &[&str], host: HostNamespaces) -> Result<(), SpecError> {
        let map = names
            .iter()
            .map(|n| (n.to_string(), "1".to_string()))
            .collect();
        validate(&map, host)
    }

    #[test]
    fn namespaced_sysctls_pass_in_own_namespaces() {
        let own = HostNamespaces::default();
        check(
            &[
                "net.ipv4.ip_forward",
                "net/ipv4/ping_group_range",
                "kernel.shm_rmid_forced",
                "fs.mqueue.msg_max",
                "kernel.domainname",
            ],
            own,
        )
        .unwrap();
        assert!(matches!(
            check(&["kernel.panic"], own),
            Err(SpecError::Sysctl { .. })
        ));
        assert!(check(&["vm.swappiness"], own).is_err());
    }

    #[test]
    fn host_namespaces_refuse_their_sysctls() {
        let net = HostNamespaces {
            network: true,
            uts: true,
            ..Default::default()
        };
        assert!(check(&["net.ipv4.ip_forward"], net).is_err());
        assert!(check(&["kernel.hostname"], net).is_err());
        check(&["kernel.sem"], net).unwrap();
        let ipc = HostNamespaces {
            ipc: true,
            ..Default::default()
        };
        assert!(check(&["kernel.shmmax"], ipc).is_err());
        assert!(check(&["fs.mqueue.queues_max"], ipc).is_err());
        check(&["net.core.somaxconn"], ipc).unwrap();
    }
}
