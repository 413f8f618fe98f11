//! Running `ctr` (or any helper command) with a deadline and readable failures.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// Long enough for any single ctr call on a loaded 2-core CI machine.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);

/// What one command did. Assertion helpers panic with the full command line and output.
#[derive(Debug)]
pub struct CtrOutput {
    pub command: String,
    /// None when the command was killed (by us at the deadline, or by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl CtrOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        if !self.success() {
            panic!("expected success:\n{}", self.describe());
        }
        self
    }

    /// Panics unless the command exited non-zero (not killed at the deadline).
    #[track_caller]
    pub fn fails(self) -> Self {
        if self.success() || self.code.is_none() {
            panic!("expected a clean failure:\n{}", self.describe());
        }
        self
    }

    /// Panics unless the command exited with exactly `code`.
    #[track_caller]
    pub fn exits_with(self, code: i32) -> Self {
        if self.code != Some(code) {
            panic!("expected exit code {code}:\n{}", self.describe());
        }
        self
    }

    /// Panics unless stderr contains every one of `needles`.
    #[track_caller]
    pub fn stderr_has(self, needles: &[&str]) -> Self {
        for needle in needles {
            if !self.stderr.contains(needle) {
                panic!("expected {needle:?} in stderr:\n{}", self.describe());
            }
        }
        self
    }

    /// Non-empty stdout lines, trimmed of `\r` and trailing blanks.
    pub fn lines(&self) -> Vec<String> {
        self.stdout
            .lines()
            .map(|l| l.trim_end().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    pub fn describe(&self) -> String {
        format!(
            "  $ {}\n  exit: {}\n  stdout: {:?}\n  stderr: {:?}",
            self.command,
            match (self.code, self.timed_out) {
                (_, true) => "killed at the deadline".to_string(),
                (Some(code), _) => code.to_string(),
                (None, _) => "killed by a signal".to_string(),
            },
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `program args` with no stdin, capturing output, killing it after `timeout`.
/// Spawn failures become a failed output (code 127) rather than a panic, so that callers
/// report them with the command line.
pub fn run_command(program: &Path, args: &[OsString], timeout: Duration) -> CtrOutput {
    let command = std::iter::once(program.display().to_string())
        .chain(args.iter().map(|a| shell_quote(&a.to_string_lossy())))
        .collect::<Vec<_>>()
        .join(" ");
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            return CtrOutput {
                command,
                code: Some(127),
                stdout: String::new(),
                stderr: format!("spawn failed: {e}"),
                timed_out: false,
            }
        }
    };
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let (status, timed_out) = wait_deadline(&mut child, timeout);
    CtrOutput {
        command,
        code: status.and_then(|s| s.code()),
        stdout: collect(stdout),
        stderr: collect(stderr),
        timed_out,
    }
}

/// Reads a pipe to its end on a thread; the result arrives on the channel.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// The drained output, unless something still holds the pipe open (a process that
/// inherited it and would not die): then we do not wait for it.
fn collect(rx: Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| "<output pipe still open after exit>".to_string())
}

/// Waits for `child`; kills it at the deadline. Returns (status, timed_out). Never blocks
/// for long after the kill either: a process stuck in the kernel stays a zombie, and the
/// caller gets `None` instead of hanging with it.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> (Option<ExitStatus>, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (Some(status), false),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => return (kill_and_reap(child, Duration::from_secs(5)), true),
            Err(_) => return (None, false),
        }
    }
}

/// SIGKILLs `child` and waits up to `grace` for it to be reaped.
pub fn kill_and_reap(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let _ = child.kill();
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_code() {
        let out = run_command(
            Path::new("/bin/sh"),
            &["-c".into(), "echo hi; echo err >&2; exit 3".into()],
            Duration::from_secs(10),
        );
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, "hi\n");
        assert_eq!(out.stderr, "err\n");
        assert!(out.command.contains("'echo hi; echo err >&2; exit 3'"));
    }

    #[test]
    fn kills_at_deadline() {
        let out = run_command(
            Path::new("/bin/sleep"),
            &["5".into()],
            Duration::from_millis(100),
        );
        assert!(out.timed_out);
        assert_eq!(out.code, None);
    }

    #[test]
    fn missing_program_is_a_failure_not_a_panic() {
        let out = run_command(Path::new("/nonexistent/ctr"), &[], Duration::from_secs(1));
        assert_eq!(out.code, Some(127));
    }
}
