//! Runs one CNI plugin binary: config on stdin, `CNI_*` in the environment, a result or an
//! error object on stdout. Each run is bounded by a timeout; a plugin that overruns is killed.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    NotFound { plugin: String, dirs: String },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("CNI plugin {plugin} timed out after {timeout:?}")]
    Timeout { plugin: String, timeout: Duration },
    #[error("CNI plugin {plugin} failed (code {code}): {msg}{details}")]
    Plugin {
        plugin: String,
        code: u64,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin} exited with {status}: {output}")]
    Failed {
        plugin: String,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("CNI plugin {plugin} returned invalid JSON: {reason}")]
    BadOutput { plugin: String, reason: String },
}

/// Finds plugin `name` in the bin dirs, first match wins.
pub fn find_plugin(name: &str, bin_dirs: &[PathBuf]) -> Result<PathBuf, ExecError> {
    if !name.contains('/') {
        for dir in bin_dirs {
            let path = dir.join(name);
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    Err(ExecError::NotFound {
        plugin: name.to_string(),
        dirs: join_paths(bin_dirs),
    })
}

pub fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs `plugin` with `env` added to ours and `stdin` as its config. Returns its parsed
/// stdout (`Value::Null` when empty, as DEL's is).
pub fn run(
    plugin: &Path,
    env: &[(&str, String)],
    stdin: &[u8],
    timeout: Duration,
) -> Result<Value, ExecError> {
    let name = plugin.display().to_string();
    let mut child = Command::new(plugin)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ExecError::Io {
            context: format!("start {name}"),
            source,
        })?;
    // Readers on threads of their own, so a plugin that writes a lot never blocks on a full
    // pipe while we wait for it.
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let err = reader(child.stderr.take().map(|p| Box::new(p) as _));
    if let Some(mut input) = child.stdin.take() {
        // A plugin may exit without reading its config; that shows in its status instead.
        let _ = input.write_all(stdin);
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ExecError::Timeout {
                    plugin: name,
                    timeout,
                });
            }
            // Plugins run for milliseconds; a coarse poll would add up over a chain.
            Ok(None) => std::thread::sleep(Duration::from_micros(500)),
            Err(source) => {
                return Err(ExecError::Io {
                    context: format!("wait for {name}"),
                    source,
                })
            }
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        return Err(plugin_error(name, status, &stdout, &stderr));
    }
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&stdout).map_err(|e| ExecError::BadOutput {
        plugin: name,
        reason: e.to_string(),
    })
}

/// A failing plugin prints `{"code", "msg", "details"}` on stdout; anything else is shown
/// as it came.
fn plugin_error(
    plugin: String,
    status: std::process::ExitStatus,
    stdout: &[u8],
    stderr: &[u8],
) -> ExecError {
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(stdout) {
        if let Some(msg) = obj.get("msg").and_then(Value::as_str) {
            let details = match obj.get("details").and_then(Value::as_str) {
                Some(d) if !d.is_empty() => format!("; {d}"),
                _ => String::new(),
            };
            return ExecError::Plugin {
                plugin,
                code: obj.get("code").and_then(Value::as_u64).unwrap_or(0),
                msg: msg.to_string(),
                details,
            };
        }
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    let output = match (text(stdout), text(stderr)) {
        (o, e) if o.is_empty() => e,
        (o, e) if e.is_empty() => o,
        (o, e) => format!("{o}; {e}"),
    };
    ExecError::Failed {
        plugin,
        status,
        output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn plugins_are_searched_in_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        script(b.path(), "p", "true");
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_plugin("p", &dirs).unwrap(), b.path().join("p"));
        script(a.path(), "p", "true");
        assert_eq!(find_plugin("p", &dirs).unwrap(), a.path().join("p"));
        let err = find_plugin("q", &dirs).unwrap_err().to_string();
        assert!(err.contains("\"q\"") && err.contains(':'), "{err}");
        assert!(find_plugin("../p", &dirs).is_err());
    }

    #[test]
    fn env_and_stdin_reach_the_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(
            dir.path(),
            "echo",
            r#"read -r conf; printf '{"cmd":"%s","conf":%s}' "$CNI_COMMAND" "$conf""#,
        );
        let out = run(
            &p,
            &[("CNI_COMMAND", "ADD".into())],
            b"{\"a\":1}\n",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(out["cmd"], "ADD");
        assert_eq!(out["conf"]["a"], 1);
    }

    #[test]
    fn plugin_errors_are_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(
            dir.path(),
            "bad",
            r#"echo '{"cniVersion":"1.0.0","code":7,"msg":"invalid network config","details":"no bridge"}'; exit 1"#,
        );
        let err = run(&p, &[], b"{}", Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, ExecError::Plugin { code: 7, .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("invalid network config") && text.contains("no bridge"));

        let p = script(dir.path(), "raw", "echo boom >&2; exit 3");
        let err = run(&p, &[], b"{}", Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("boom"), "{err}");
    }

    #[test]
    fn slow_plugins_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), "slow", "exec sleep 30");
        let start = Instant::now();
        let err = run(&p, &[], b"{}", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
