//! Pod networking against the real CNI plugins: a named netns, a private bridge network
//! (own bridge, own /24, own host-local data dir) with portmap chained, ADD into the netns,
//! reach the pod from the host, DEL, and nothing left behind.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use limpetd::network::{load_network, netns, Cni, PodNetwork};

const CNI_BIN: &str = "/usr/lib/cni";

fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root".into());
    }
    for p in ["bridge", "host-local", "loopback", "portmap"] {
        if !Path::new(CNI_BIN).join(p).is_file() {
            return Some(format!("no CNI plugin {CNI_BIN}/{p}"));
        }
    }
    for tool in ["ip", "nsenter", "busybox"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("no {tool} on PATH"));
        }
    }
    None
}

fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("run sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Everything the case may leave behind, removed even when an assertion fails.
struct Cleanup {
    bridge: String,
    netns_dir: PathBuf,
    netns: Option<PathBuf>,
    listener: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.listener.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(ns) = self.netns.take() {
            let _ = netns::remove(&ns);
        }
        let _ = nix::mount::umount2(&self.netns_dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = sh(&format!("ip link del {} 2>/dev/null", self.bridge));
    }
}

#[test]
fn bridge_network_add_reach_del_leaves_nothing() {
    if let Some(reason) = missing_prerequisite() {
        limpet_tests::skip(&format!(
            "bridge_network_add_reach_del_leaves_nothing ({reason})"
        ));
        return;
    }
    let started = Instant::now();
    let pid = std::process::id();
    let tag = format!("lmpt{}", pid % 10000);
    let (_, routes) = sh("ip -4 route; ip -4 addr");
    let third = (0..200)
        .map(|i| (pid as usize + i) % 200 + 20)
        .find(|x| !routes.contains(&format!("10.199.{x}.")))
        .expect("a free 10.199.x.0/24");
    let subnet_prefix = format!("10.199.{third}.");
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf_dir = tmp.path().join("net.d");
    let ipam_dir = tmp.path().join("ipam");
    std::fs::create_dir_all(&conf_dir).expect("mkdir conf");
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": tag,
        "plugins": [
            {
                "type": "bridge",
                "bridge": tag,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "subnet": format!("10.199.{third}.0/24"),
                    "dataDir": ipam_dir,
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    std::fs::write(conf_dir.join("10-test.conflist"), conflist.to_string()).expect("write conf");
    let net = load_network(&conf_dir).expect("load network");
    assert_eq!(net.name, tag);

    let mut cleanup = Cleanup {
        bridge: tag.clone(),
        netns_dir: tmp.path().join("netns"),
        netns: None,
        listener: None,
    };
    let ns = netns::create(&cleanup.netns_dir, &tag).expect("create netns");
    cleanup.netns = Some(ns.clone());
    assert!(netns::is_mounted(&ns));
    assert!(
        netns::create(&cleanup.netns_dir, &tag).is_err(),
        "duplicate name accepted"
    );

    let cni = Cni {
        bin_dirs: vec!["/opt/cni/bin".into(), CNI_BIN.into()],
        timeout: Duration::from_secs(10),
    };
    let pod = PodNetwork {
        id: format!("{tag}-sandbox"),
        netns: ns.clone(),
        namespace: "default".into(),
        name: "net-test".into(),
        uid: format!("uid-{tag}"),
        ..Default::default()
    };
    let added = cni.add(&net, &pod).expect("CNI ADD");
    let ip = added.ips[0].ip().to_string();
    assert!(
        ip.starts_with(&subnet_prefix),
        "{ip} not in 10.199.{third}.0/24"
    );
    assert!(
        ipam_dir.join(&tag).join(&ip).exists(),
        "no host-local lease"
    );

    let nsarg = format!("--net={}", ns.display());
    let (ok, addrs) = sh(&format!("nsenter {nsarg} ip -4 addr show eth0"));
    assert!(ok && addrs.contains(&format!("{ip}/24")), "{addrs}");
    let (_, host_links) = sh("ip -o link show");
    assert!(host_links.contains(&tag), "no bridge {tag}: {host_links}");

    // Reach the pod from the host: a TCP listener inside the netns answers on the bridge.
    let listener = Command::new("nsenter")
        .args([
            nsarg.as_str(),
            "busybox",
            "sh",
            "-c",
            "echo hello | busybox nc -l -p 8080",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start listener");
    cleanup.listener = Some(listener);
    let addr: SocketAddr = format!("{ip}:8080").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut got = String::new();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                let _ = s.read_to_string(&mut got);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    }
    assert_eq!(got.trim(), "hello");

    cni.del(&net, &pod, Some(&added.raw)).expect("CNI DEL");
    // DEL again, now with the netns gone: still fine.
    netns::remove(&ns).expect("remove netns");
    cleanup.netns = None;
    assert!(!ns.exists());
    netns::remove(&ns).expect("remove netns twice");
    cni.del(&net, &pod, Some(&added.raw))
        .expect("second CNI DEL");

    assert!(
        !ipam_dir.join(&tag).join(&ip).exists(),
        "host-local lease left"
    );
    let (_, links) = sh(&format!("ip -o link show master {tag}"));
    assert!(links.trim().is_empty(), "veth left on {tag}: {links}");
    let (ok, rules) = sh("iptables-save");
    if ok {
        assert!(!rules.contains(&tag), "iptables rules left:\n{rules}");
    }
    drop(cleanup);
    let (_, host_links) = sh("ip -o link show");
    assert!(!host_links.contains(&tag), "bridge left: {host_links}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
