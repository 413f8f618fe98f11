//! Files a pod's containers share: /etc/hostname, /etc/hosts, /etc/resolv.conf and a /dev/shm
//! tmpfs, made once per sandbox (as containerd's CRI plugin does).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use limpet_protos::cri::v1::{DnsConfig, PodSandboxConfig};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::oci::SandboxFiles;

const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
ff00::0\tip6-mcastprefix\n\
ff02::1\tip6-allnodes\n\
ff02::2\tip6-allrouters\n";

/// Size of a pod's /dev/shm, as containerd's default.
const SHM_SIZE: &str = "size=65536k";

pub fn resolv_conf(dns: &DnsConfig) -> String {
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for s in &dns.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

/// The hostname a pod's containers see.
pub fn hostname(config: &PodSandboxConfig, host_network: bool) -> String {
    if host_network {
        return nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
    }
    config.hostname.clone()
}

fn write(path: &Path, text: &str) -> io::Result<()> {
    fs::write(path, text)?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
}

/// Writes the pod's files into `dir` and mounts its shm under `shm_dir` (unless the pod uses
/// the host IPC namespace, whose /dev/shm the containers then bind).
pub fn make(
    dir: &Path,
    shm_dir: &Path,
    config: &PodSandboxConfig,
    host_network: bool,
    host_ipc: bool,
) -> io::Result<SandboxFiles> {
    fs::create_dir_all(dir)?;
    let hostname_path = dir.join("hostname");
    let name = hostname(config, host_network);
    write(&hostname_path, &format!("{name}\n"))?;

    let hosts = dir.join("hosts");
    if host_network {
        fs::copy("/etc/hosts", &hosts).or_else(|_| write(&hosts, DEFAULT_HOSTS).map(|_| 0))?;
    } else {
        write(&hosts, DEFAULT_HOSTS)?;
    }

    let resolv = dir.join("resolv.conf");
    match config.dns_config.as_ref() {
        Some(dns) if !host_network => write(&resolv, &resolv_conf(dns))?,
        _ => {
            fs::copy("/etc/resolv.conf", &resolv).or_else(|_| write(&resolv, "").map(|_| 0))?;
        }
    }

    let shm = if host_ipc {
        PathBuf::from("/dev/shm")
    } else {
        fs::create_dir_all(shm_dir)?;
        if !super::is_mount_point(shm_dir) {
            mount(
                Some("shm"),
                shm_dir,
                Some("tmpfs"),
                MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(format!("mode=1777,{SHM_SIZE}").as_str()),
            )
            .map_err(io::Error::from)?;
        }
        shm_dir.to_path_buf()
    };
    Ok(SandboxFiles {
        hostname: Some(hostname_path),
        hosts: Some(hosts),
        resolv: Some(resolv),
        shm: Some(shm),
    })
}

/// Unmounts the pod's shm and removes its directories. Missing is fine.
pub fn remove(dir: &Path, shm_dir: &Path) -> io::Result<()> {
    unmount_shm(shm_dir)?;
    for d in [shm_dir, dir] {
        match fs::remove_dir_all(d) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

pub fn unmount_shm(shm_dir: &Path) -> io::Result<()> {
    while super::is_mount_point(shm_dir) {
        umount2(shm_dir, MntFlags::MNT_DETACH).map_err(io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_has_searches_servers_and_options() {
        let dns = DnsConfig {
            servers: vec!["10.0.0.10".into(), "8.8.8.8".into()],
            searches: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.0.0.10\nnameserver 8.8.8.8\noptions ndots:5\n"
        );
    }

    #[test]
    fn pod_hostname_or_host_name_with_host_network() {
        let c = PodSandboxConfig {
            hostname: "web-0".into(),
            ..Default::default()
        };
        assert_eq!(hostname(&c, false), "web-0");
        assert_ne!(hostname(&c, true), "");
    }
}
