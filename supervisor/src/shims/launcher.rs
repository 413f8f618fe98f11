//! Runs the shim binary's one-shot actions the way containerd 1.6 does:
//! `<shim> -namespace NS -address ADDR -publish-binary SELF -id ID [-debug] start` in the
//! bundle, with `TTRPC_ADDRESS` in the environment and the runtime options on stdin; the
//! shim daemonizes itself and prints its address. `delete` (with `-bundle`) cleans up after
//! a shim that died and prints a protobuf `DeleteResponse`.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use limpet_protos::api::DeleteResponse;
use limpet_protos::protobuf::well_known_types::any::Any;
use limpet_protos::protobuf::Message;

use super::client::remove_stale_socket;
use super::error::{Result, ShimError};
use super::types::DeleteOutcome;

/// How long a `start` or `delete` action may take by default.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of the shim's stderr kept for an error message.
const STDERR_LIMIT: usize = 16 * 1024;

/// Starts shims for one namespace of limpetd.
#[derive(Debug, Clone)]
pub struct ShimLauncher {
    /// The shim binary (`containerd-shim-limpet-v2`).
    pub binary: PathBuf,
    pub namespace: String,
    /// limpetd's gRPC socket, passed as `-address`: shims hash it into their socket name.
    pub address: PathBuf,
    /// Where limpetd's events server listens (`TTRPC_ADDRESS`).
    pub ttrpc_address: PathBuf,
    pub debug: bool,
    /// Limit on each action's run time.
    pub timeout: Duration,
}

impl ShimLauncher {
    pub fn new(
        binary: impl Into<PathBuf>,
        namespace: impl Into<String>,
        address: impl Into<PathBuf>,
        ttrpc_address: impl Into<PathBuf>,
    ) -> ShimLauncher {
        ShimLauncher {
            binary: binary.into(),
            namespace: namespace.into(),
            address: address.into(),
            ttrpc_address: ttrpc_address.into(),
            debug: false,
            timeout: ACTION_TIMEOUT,
        }
    }

    /// Starts (or finds) the shim serving container `id` of `bundle` and returns its address
    /// as printed (`unix:///…`). Containers grouped by their spec's annotations
    /// (`io.kubernetes.cri.sandbox-id`) get the same shim.
    pub fn start(&self, id: &str, bundle: &Path) -> Result<String> {
        self.start_with_options(id, bundle, None)
    }

    /// [`start`](Self::start) with runtime options on stdin (for example the shim's cgroup,
    /// `containerd.runc.v1.Options.shim_cgroup`), as containerd sends them.
    pub fn start_with_options(
        &self,
        id: &str,
        bundle: &Path,
        options: Option<&Any>,
    ) -> Result<String> {
        let stdin = match options {
            Some(any) => any
                .write_to_bytes()
                .map_err(|e| ShimError::InvalidRequest {
                    method: "start",
                    id: id.to_string(),
                    detail: format!("encode runtime options: {e}"),
                })?,
            None => Vec::new(),
        };
        let out = self.run("start", id, bundle, &[], &stdin)?;
        parse_address(&out).ok_or_else(|| ShimError::BadReply {
            action: "start",
            id: id.to_string(),
            detail: format!("no address in {:?}", String::from_utf8_lossy(&out)),
        })
    }

    /// Runs the `delete` action for a container whose shim is gone: the shim kills and
    /// deletes the runc container and unmounts the rootfs. A socket the dead shim left
    /// behind is removed too.
    pub fn delete(&self, id: &str, bundle: &Path) -> Result<DeleteOutcome> {
        let bundle_arg = bundle.as_os_str().to_owned();
        let out = self.run("delete", id, bundle, &["-bundle".into(), bundle_arg], &[])?;
        let resp = DeleteResponse::parse_from_bytes(&out).map_err(|e| ShimError::BadReply {
            action: "delete",
            id: id.to_string(),
            detail: format!("decode DeleteResponse: {e}"),
        })?;
        if let Ok(address) = std::fs::read_to_string(bundle.join("address")) {
            remove_stale_socket(address.trim());
        }
        Ok(DeleteOutcome::from(&resp))
    }

    fn command(
        &self,
        action: &str,
        id: &str,
        bundle: &Path,
        extra: &[std::ffi::OsString],
    ) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-namespace")
            .arg(&self.namespace)
            .arg("-address")
            .arg(&self.address);
        // containerd names itself; shims only run it to ask its version.
        if let Ok(me) = std::env::current_exe() {
            cmd.arg("-publish-binary").arg(me);
        }
        cmd.arg("-id").arg(id).args(extra);
        if self.debug {
            cmd.arg("-debug");
        }
        cmd.arg(action)
            .current_dir(bundle)
            .env("TTRPC_ADDRESS", &self.ttrpc_address)
            .env("GOMAXPROCS", "2")
            // Without it a shim answers `start` with the bare address of containerd 1.6.
            .env_remove("MAX_SHIM_VERSION")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Signals to limpetd's process group do not reach the shim.
            .process_group(0);
        cmd
    }

    /// Runs one action to completion (or the timeout) and returns its stdout.
    fn run(
        &self,
        action: &'static str,
        id: &str,
        bundle: &Path,
        extra: &[std::ffi::OsString],
        stdin: &[u8],
    ) -> Result<Vec<u8>> {
        if id.is_empty() {
            return Err(ShimError::InvalidRequest {
                method: action,
                id: String::new(),
                detail: "empty container id".into(),
            });
        }
        let mut child = self
            .command(action, id, bundle, extra)
            .spawn()
            .map_err(|source| ShimError::Spawn {
                action,
                id: id.to_string(),
                binary: self.binary.display().to_string(),
                source,
            })?;
        if let Some(mut input) = child.stdin.take() {
            // A shim that fails early never reads it; its error is in stderr.
            let _ = input.write_all(stdin);
        }
        let stdout = collect(child.stdout.take());
        let stderr = collect(child.stderr.take());
        let deadline = Instant::now() + self.timeout;
        let timeout = || ShimError::Timeout {
            what: format!("shim {action}"),
            id: id.to_string(),
            after: self.timeout,
        };
        let status = wait_until(&mut child, deadline).ok_or_else(timeout)?;
        // The daemon it started must not hold our pipes; if it does, do not wait forever.
        let out = recv_until(&stdout, deadline).ok_or_else(timeout)?;
        let err = recv_until(&stderr, deadline).unwrap_or_default();
        if !status.success() {
            return Err(ShimError::Action {
                action,
                id: id.to_string(),
                status: describe(status),
                stderr: stderr_text(&err),
            });
        }
        Ok(out)
    }
}

/// Reads a pipe to its end on a thread of its own.
fn collect(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    let Some(mut pipe) = pipe else {
        let _ = tx.send(Vec::new());
        return rx;
    };
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

fn recv_until(rx: &mpsc::Receiver<Vec<u8>>, deadline: Instant) -> Option<Vec<u8>> {
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .ok()
}

/// Waits for the child until `deadline`; past it the child is killed and `None` returned.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut pause = Duration::from_micros(500);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                // A start action takes ~10 ms: poll finely for the first 20 ms.
                std::thread::sleep(pause);
                pause = (pause + Duration::from_micros(500)).min(Duration::from_millis(20));
            }
            // Past the deadline, or the child cannot be waited for.
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

fn stderr_text(bytes: &[u8]) -> String {
    let tail = &bytes[bytes.len().saturating_sub(STDERR_LIMIT)..];
    String::from_utf8_lossy(tail).trim().to_string()
}

/// The address in a `start` reply: bare (containerd 1.x) or in the JSON of containerd 2.0.
fn parse_address(out: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(out).ok()?.trim();
    let address = if text.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        v.get("address")?.as_str()?.to_string()
    } else {
        text.to_string()
    };
    (!address.is_empty() && !address.contains(char::is_whitespace)).then_some(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn addresses_are_read_bare_or_from_json() {
        assert_eq!(
            parse_address(b"unix:///run/containerd/s/abc\n").as_deref(),
            Some("unix:///run/containerd/s/abc")
        );
        assert_eq!(
            parse_address(br#"{"version":3,"address":"unix:///s","protocol":"ttrpc"}"#).as_deref(),
            Some("unix:///s")
        );
        assert_eq!(parse_address(b""), None);
        assert_eq!(parse_address(b"two words"), None);
    }

    /// A fake shim: a script that records how it was called.
    fn script(dir: &Path, body: &str) -> ShimLauncher {
        let bin = dir.join("shim.sh");
        std::fs::write(
            &bin,
            format!("#!/bin/sh\n[ \"$1\" = probe ] && exit 0\n{body}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Another test's fork may briefly hold the file open for writing (ETXTBSY).
        for _ in 0..100 {
            match Command::new(&bin).arg("probe").status() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break,
            }
        }
        let mut l = ShimLauncher::new(
            &bin,
            "k8s.io",
            "/run/limpet/limpetd.sock",
            "/run/limpet/events.sock",
        );
        l.timeout = Duration::from_secs(5);
        l
    }

    #[test]
    fn start_passes_containerd_16_arguments_cwd_env_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle");
        std::fs::create_dir(&bundle).unwrap();
        let mut l = script(
            dir.path(),
            concat!(
                r#"echo "$@" > args; pwd > cwd; echo "$TTRPC_ADDRESS" > env; "#,
                "cat > stdin; echo unix:///s/x"
            ),
        );
        l.debug = true;
        let opts = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![1, 2, 3],
            ..Default::default()
        };
        let address = l.start_with_options("c1", &bundle, Some(&opts)).unwrap();
        assert_eq!(address, "unix:///s/x");
        let args = std::fs::read_to_string(bundle.join("args")).unwrap();
        let me = std::env::current_exe().unwrap();
        assert_eq!(
            args.trim(),
            format!(
                "-namespace k8s.io -address /run/limpet/limpetd.sock -publish-binary {} {}",
                me.display(),
                "-id c1 -debug start"
            )
        );
        let cwd = std::fs::read_to_string(bundle.join("cwd")).unwrap();
        assert_eq!(Path::new(cwd.trim()), bundle.canonicalize().unwrap());
        let env = std::fs::read_to_string(bundle.join("env")).unwrap();
        assert_eq!(env.trim(), "/run/limpet/events.sock");
        let stdin = std::fs::read(bundle.join("stdin")).unwrap();
        assert_eq!(Any::parse_from_bytes(&stdin).unwrap(), opts);
    }

    #[test]
    fn failures_carry_stderr_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let l = script(dir.path(), "echo 'bundle is broken' >&2; exit 3");
        let e = l.start("c1", dir.path()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("bundle is broken") && text.contains("exit status 3"),
            "{text}"
        );
    }

    #[test]
    fn a_hanging_action_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = script(dir.path(), "exec sleep 30");
        l.timeout = Duration::from_millis(200);
        let started = Instant::now();
        let e = l.start("c1", dir.path()).unwrap_err();
        assert!(e.is_timeout(), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn delete_reads_the_protobuf_reply() {
        let dir = tempfile::tempdir().unwrap();
        let reply = DeleteResponse {
            pid: 42,
            exit_status: 137,
            ..Default::default()
        };
        std::fs::write(dir.path().join("reply"), reply.write_to_bytes().unwrap()).unwrap();
        let l = script(
            dir.path(),
            r#"[ "$5" = "-publish-binary" ] && echo "$@" > args; cat reply"#,
        );
        let out = l.delete("c1", dir.path()).unwrap();
        assert_eq!((out.pid, out.exit_status), (42, 137));
        let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
        assert!(
            args.trim()
                .ends_with(&format!("-id c1 -bundle {} delete", dir.path().display())),
            "{args}"
        );
    }

    #[test]
    fn a_missing_binary_is_a_spawn_error() {
        let l = ShimLauncher::new("/nonexistent/shim", "ns", "/a", "/b");
        let e = l.start("c1", Path::new("/")).unwrap_err();
        assert!(matches!(e, ShimError::Spawn { .. }), "{e}");
    }
}
