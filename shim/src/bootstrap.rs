//! The `start` action: find or start the shim daemon that serves this container (or its
//! group), and answer the caller in the format its generation reads:
//! - containerd 2.3+ writes a protobuf `BootstrapParams` on stdin and reads a protobuf
//!   `BootstrapResult`;
//! - containerd 2.0–2.2 reads JSON `{"version":3,"address":…,"protocol":"ttrpc"}`;
//! - containerd 1.6/1.7 (and limpetd) read the bare address.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use limpet_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
use limpet_protos::protobuf::well_known_types::any::Any;
use limpet_protos::protobuf::Message;
use limpet_protos::{type_urls, TASK_API_VERSION};
use sha2::{Digest, Sha256};

use crate::args::Args;
use crate::error::{Context, Error, Result};
use crate::options::{is_type, RuncOptions};

const DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";
/// Annotations that put containers into one shim, in the order the Go shim checks them.
const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// Which reply the caller reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Address,
    Json,
    Protobuf,
}

/// What the caller told us about itself.
#[derive(Debug)]
pub struct Caller {
    pub reply: Reply,
    pub options: RuncOptions,
    pub ttrpc_address: String,
    pub grpc_address: String,
    pub socket_dir: PathBuf,
}

/// Reads the caller from stdin and the environment.
pub fn identify(args: &Args, stdin: &[u8]) -> Result<Caller> {
    let env_ttrpc = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
    if let Some(p) = bootstrap_params(args, stdin) {
        let options = p
            .extensions
            .iter()
            .filter_map(|e| e.value.as_ref())
            .find(|any| is_type(any, type_urls::RUNC_OPTIONS))
            .map(|any| RuncOptions::decode(&any.value))
            .transpose()?
            .unwrap_or_default();
        let or = |a: &str, b: &str| {
            if a.is_empty() {
                b.to_string()
            } else {
                a.to_string()
            }
        };
        return Ok(Caller {
            reply: Reply::Protobuf,
            options,
            ttrpc_address: or(&p.containerd_ttrpc_address, &env_ttrpc),
            grpc_address: or(&p.containerd_grpc_address, &args.address),
            socket_dir: PathBuf::from(
                p.socket_dir
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .unwrap_or(DEFAULT_SOCKET_DIR),
            ),
        });
    }
    // Older callers pass the runtime options as a protobuf Any (or nothing).
    let options = if stdin.is_empty() {
        RuncOptions::default()
    } else {
        let any = Any::parse_from_bytes(stdin).context("decode runtime options on stdin")?;
        RuncOptions::from_any(Some(&any))?
    };
    let reply = if std::env::var_os("MAX_SHIM_VERSION").is_none() {
        // containerd 1.6 sets no MAX_SHIM_VERSION.
        Reply::Address
    } else if containerd_major(&args.publish_binary) >= Some(2) {
        Reply::Json
    } else {
        Reply::Address
    };
    Ok(Caller {
        reply,
        options,
        ttrpc_address: env_ttrpc,
        grpc_address: args.address.clone(),
        socket_dir: PathBuf::from(DEFAULT_SOCKET_DIR),
    })
}

/// Bootstrap parameters, if stdin holds them for this very shim: the runtime options that
/// older callers send can also parse as parameters, so the identity must match.
fn bootstrap_params(args: &Args, stdin: &[u8]) -> Option<BootstrapParams> {
    let p = BootstrapParams::parse_from_bytes(stdin).ok()?;
    (!p.instance_id.is_empty() && p.instance_id == args.id && p.namespace == args.namespace)
        .then_some(p)
}

/// containerd 1.7 and 2.0–2.2 start shims alike; only the daemon's version tells them apart.
fn containerd_major(binary: &str) -> Option<u32> {
    if binary.is_empty() {
        return None;
    }
    let out = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    parse_major(&String::from_utf8_lossy(&out.stdout))
}

/// `containerd github.com/containerd/containerd/v2 v2.1.4 abc` → 2.
fn parse_major(version: &str) -> Option<u32> {
    version
        .split_whitespace()
        .filter_map(|w| w.strip_prefix('v'))
        .find_map(|v| v.split('.').next()?.parse().ok())
}

/// The socket address of a group, as the Go shim computes it, so that either shim finds
/// the other's sockets: sha256 of `<containerd address>/<namespace>/<group>`.
pub fn socket_address(
    dir: &Path,
    containerd_address: &str,
    namespace: &str,
    group: &str,
) -> String {
    let joined = Path::new(containerd_address).join(namespace).join(group);
    let digest = Sha256::digest(joined.to_string_lossy().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("unix://{}", dir.join(hex).display())
}

/// The group a bundle's container belongs to: its annotation, or its own id.
pub fn group(bundle: &Path, id: &str) -> String {
    let spec = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    spec.as_ref()
        .and_then(|s| s.get("annotations"))
        .and_then(|a| GROUP_ANNOTATIONS.iter().find_map(|k| a.get(*k)?.as_str()))
        .filter(|g| !g.is_empty())
        .unwrap_or(id)
        .to_string()
}

pub fn bundle_dir(args: &Args) -> Result<PathBuf> {
    if !args.bundle.is_empty() {
        return Ok(PathBuf::from(&args.bundle));
    }
    std::env::current_dir().context("current directory")
}

/// Runs the `start` action and writes the reply to stdout.
pub fn start(args: &Args) -> Result<Vec<u8>> {
    let mut stdin = Vec::new();
    std::io::stdin()
        .read_to_end(&mut stdin)
        .context("read stdin")?;
    let caller = identify(args, &stdin)?;
    let bundle = bundle_dir(args)?;
    let group = group(&bundle, &args.id);
    let address = socket_address(
        &caller.socket_dir,
        &caller.grpc_address,
        &args.namespace,
        &group,
    );
    let path = PathBuf::from(address.trim_start_matches("unix://"));

    if UnixStream::connect(&path).is_err() {
        let _ = std::fs::remove_file(&path);
        let listener = listen(&path)?;
        let pid = spawn_daemon(args, &caller, &bundle, &listener)?;
        if !caller.options.shim_cgroup.is_empty() {
            crate::cgroups::add_process(&caller.options.shim_cgroup, pid as i32)?;
        }
        adjust_oom_score(pid);
    }
    let address_file = bundle.join("address");
    std::fs::write(&address_file, &address).context(format!("write {}", address_file.display()))?;
    Ok(reply(caller.reply, &address))
}

fn reply(kind: Reply, address: &str) -> Vec<u8> {
    match kind {
        Reply::Address => address.as_bytes().to_vec(),
        Reply::Json => serde_json::json!({"version": TASK_API_VERSION, "address": address, "protocol": "ttrpc"})
            .to_string()
            .into_bytes(),
        Reply::Protobuf => BootstrapResult {
            version: TASK_API_VERSION,
            address: address.to_string(),
            protocol: "ttrpc".into(),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap_or_default(),
    }
}

fn listen(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).context(format!("create {}", dir.display()))?;
    }
    UnixListener::bind(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => Error::AlreadyExists(format!("socket {}", path.display())),
        _ => Error::Io {
            context: format!("listen on {}", path.display()),
            source: e,
        },
    })
}

/// Starts the serving shim in the bundle, with the listener as its fd 3 (as the Go shim
/// does), in a process group of its own, detached from the caller's stdio.
fn spawn_daemon(
    args: &Args,
    caller: &Caller,
    bundle: &Path,
    listener: &UnixListener,
) -> Result<u32> {
    let exe = std::env::current_exe().context("find own executable")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "-namespace",
        &args.namespace,
        "-id",
        &args.id,
        "-address",
        &caller.grpc_address,
    ]);
    if !args.publish_binary.is_empty() {
        cmd.args(["-publish-binary", &args.publish_binary]);
    }
    if args.debug {
        cmd.arg("-debug");
    }
    cmd.current_dir(bundle)
        .env("TTRPC_ADDRESS", &caller.ttrpc_address)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let fd = listener.as_raw_fd();
    // SAFETY: only async-signal-safe calls run between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || crate::reaper::inherit_fd(fd, 3));
    }
    let child = cmd.spawn().context("start shim daemon")?;
    Ok(child.id())
}

/// The shim should die before containerd under memory pressure, never after: one above
/// containerd's own score (which the `start` process inherits). Raising needs no privilege.
fn adjust_oom_score(pid: u32) {
    let own = std::fs::read_to_string("/proc/self/oom_score_adj").ok();
    let Some(score) = own.and_then(|s| s.trim().parse::<i32>().ok()) else {
        return;
    };
    let target = (score + 1).min(1000);
    if let Err(e) = std::fs::write(format!("/proc/{pid}/oom_score_adj"), target.to_string()) {
        log::debug!("set shim oom_score_adj: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use limpet_protos::bootstrap_api::Extension;
    use limpet_protos::runc_options::Options;

    fn args() -> Args {
        Args {
            namespace: "k8s.io".into(),
            id: "c1".into(),
            address: "/run/containerd/containerd.sock".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_socket_matches_the_go_shims() {
        // sha256("/run/containerd/containerd.sock/default/abc")
        let a = socket_address(
            Path::new("/run/containerd/s"),
            "/run/containerd/containerd.sock",
            "default",
            "abc",
        );
        let expected = Sha256::digest(b"/run/containerd/containerd.sock/default/abc");
        let hex: String = expected.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(a, format!("unix:///run/containerd/s/{hex}"));
    }

    #[test]
    fn bootstrap_params_of_containerd_23_are_recognised() {
        let opts = Options {
            binary_name: "crun".into(),
            ..Default::default()
        };
        let any = Any {
            type_url: type_urls::RUNC_OPTIONS.into(),
            value: opts.write_to_bytes().unwrap(),
            ..Default::default()
        };
        let p = BootstrapParams {
            instance_id: "c1".into(),
            namespace: "k8s.io".into(),
            containerd_ttrpc_address: "/x.ttrpc".into(),
            containerd_grpc_address: "/x".into(),
            extensions: vec![Extension {
                value: Some(any).into(),
                ..Default::default()
            }],
            socket_dir: Some("/tmp/s".into()),
            ..Default::default()
        };
        let c = identify(&args(), &p.write_to_bytes().unwrap()).unwrap();
        assert_eq!(c.reply, Reply::Protobuf);
        assert_eq!(c.options.binary_name, "crun");
        assert_eq!(
            (c.ttrpc_address.as_str(), c.grpc_address.as_str()),
            ("/x.ttrpc", "/x")
        );
        assert_eq!(c.socket_dir, PathBuf::from("/tmp/s"));
        let r = BootstrapResult::parse_from_bytes(&reply(c.reply, "unix:///s")).unwrap();
        assert_eq!(
            (r.version, r.address.as_str(), r.protocol.as_str()),
            (3, "unix:///s", "ttrpc")
        );
    }

    #[test]
    fn legacy_runtime_options_are_not_mistaken_for_bootstrap_params() {
        let opts = Options {
            root: "/r".into(),
            ..Default::default()
        };
        let any = Any {
            type_url: type_urls::RUNC_OPTIONS.into(),
            value: opts.write_to_bytes().unwrap(),
            ..Default::default()
        };
        let c = identify(&args(), &any.write_to_bytes().unwrap()).unwrap();
        assert_ne!(c.reply, Reply::Protobuf);
        assert_eq!(c.options.root, "/r");
        assert_eq!(
            identify(&args(), b"").unwrap().options,
            RuncOptions::default()
        );
    }

    #[test]
    fn json_reply_of_containerd_2() {
        let v: serde_json::Value =
            serde_json::from_slice(&reply(Reply::Json, "unix:///s")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"version": 3, "address": "unix:///s", "protocol": "ttrpc"})
        );
        assert_eq!(reply(Reply::Address, "unix:///s"), b"unix:///s");
    }

    #[test]
    fn containerd_versions_are_read() {
        assert_eq!(
            parse_major("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1"),
            None
        );
        assert_eq!(
            parse_major("containerd github.com/containerd/containerd v1.7.2 abc"),
            Some(1)
        );
        assert_eq!(
            parse_major("containerd github.com/containerd/containerd/v2 v2.3.1 abc"),
            Some(2)
        );
    }

    #[test]
    fn groups_come_from_annotations() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(group(dir.path(), "c1"), "c1");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        assert_eq!(group(dir.path(), "c1"), "pod1");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1","io.containerd.runc.v2.group":"g"}}"#,
        )
        .unwrap();
        assert_eq!(group(dir.path(), "c1"), "g");
    }
}
