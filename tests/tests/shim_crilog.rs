//! What limpetd asks of the shim beyond containerd's Go shim: `cri-log:///path` stdio (the
//! shim writes the Kubernetes CRI log format itself, as containerd's CRI plugin does), the
//! `limpet.log.v1.Log/Reopen` ttrpc call that rotation needs, and the `pause` mode that runs
//! as a pod's sandbox process. The Go shim has none of these: its runs skip them.
//!
//! The cri-log cases go through stock containerd and `ctr run --log-uri cri-log:///...`
//! (ctr and containerd pass the URI through untouched). The pause cases run the shim binary
//! directly.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use limpet_protos::log::reopen_log;
use limpet_protos::ttrpc::{self, Code};
use limpet_tests::{pid_alive, shim_cases, shim_under_test, skip, Harness, HarnessError};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const SECOND: Duration = Duration::from_secs(1);
/// containerd's default `max_container_log_line_size`, which the shim uses too.
const MAX_LINE: usize = 16 * 1024;

/// Skips the rest of a case run against the Go shim, loudly.
fn skip_go_shim(h: &Harness, case: &str) -> bool {
    let go = h.shim.is_go();
    if go {
        skip(&format!(
            "{case} ({}): the Go shim has no cri-log stdio or log service",
            h.flavor
        ));
    }
    go
}

/// One record of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    time: String,
    stream: String,
    tag: String,
    content: String,
}

impl Record {
    fn brief(&self) -> (&str, &str, &str) {
        (&self.stream, &self.tag, &self.content)
    }
}

/// Parses a CRI log file, asserting every line is a well-formed record.
#[track_caller]
fn records(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} does not end in a newline",
        path.display()
    );
    text.split_terminator('\n')
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let mut next = || parts.next().unwrap_or_default().to_string();
            let record = Record {
                time: next(),
                stream: next(),
                tag: next(),
                content: next(),
            };
            assert!(is_rfc3339_nano_utc(&record.time), "timestamp of {line:?}");
            assert!(
                ["stdout", "stderr"].contains(&record.stream.as_str()),
                "stream of {line:?}"
            );
            assert!(["F", "P"].contains(&record.tag.as_str()), "tag of {line:?}");
            record
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SS[.1-9 digits, no trailing zero]Z`, as Go's RFC3339Nano in UTC.
fn is_rfc3339_nano_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && s.ends_with('Z');
    let fraction = &s[19.min(s.len())..s.len().saturating_sub(1)];
    shape
        && (fraction.is_empty()
            || (fraction.starts_with('.')
                && (2..=10).contains(&fraction.len())
                && fraction[1..].bytes().all(|d| d.is_ascii_digit())
                && !fraction.ends_with('0')))
}

/// A timestamp with its fraction padded to 9 digits, so that string order is time order.
fn sortable(time: &str) -> String {
    let body = time.trim_end_matches('Z');
    let (secs, frac) = body.split_once('.').unwrap_or((body, ""));
    format!("{secs}.{frac:0<9}")
}

fn utc_date() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .unwrap_or_else(|e| panic!("date: {e}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A dir for a case's pod logs, under its containerd's temp dir.
fn log_dir(h: &Harness) -> PathBuf {
    let dir = h.containerd().dir().join("pods").join("c");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// stdout and stderr of one container in one file: short lines, a line cut into `P`
/// records at 16 KiB, a `\r\n` ending, and output that ends without a newline.
fn cri_log_records(h: &Harness) {
    if skip_go_shim(h, "cri_log_records") {
        return;
    }
    let path = log_dir(h).join("0.log");
    let uri = format!("cri-log://{}", path.display());
    // 40000 x's: two 16384-byte P records and a 7232-byte F.
    let script = "echo first; yes x | head -c 80000 | tr -d '\\n'; echo; \
                  echo to-err >&2; printf 'crlf\\r\\n'; echo err-2 >&2; printf no-newline";
    let before = utc_date();
    let out = h
        .run(&["--rm", "--log-uri", &uri], "cl", &["sh", "-c", script])
        .ok();
    let after = utc_date();
    assert_eq!(out.stdout, "", "{}", out.describe());

    let all = records(&path);
    let stdout: Vec<&Record> = all.iter().filter(|r| r.stream == "stdout").collect();
    let stderr: Vec<_> = all
        .iter()
        .filter(|r| r.stream == "stderr")
        .map(Record::brief)
        .collect();
    let long = 40_000;
    let x = |n: usize| "x".repeat(n);
    let want_stdout = [
        ("stdout", "F", "first".to_string()),
        ("stdout", "P", x(MAX_LINE)),
        ("stdout", "P", x(MAX_LINE)),
        ("stdout", "F", x(long - 2 * MAX_LINE)),
        ("stdout", "F", "crlf".to_string()),
        ("stdout", "P", "no-newline".to_string()),
    ];
    let got_stdout: Vec<_> = stdout.iter().map(|r| r.brief()).collect();
    assert_eq!(got_stdout.len(), want_stdout.len(), "{got_stdout:?}");
    for (got, want) in got_stdout.iter().zip(&want_stdout) {
        assert_eq!(*got, (want.0, want.1, want.2.as_str()));
    }
    assert_eq!(
        stderr,
        vec![("stderr", "F", "to-err"), ("stderr", "F", "err-2")]
    );

    // Each stream's records are in time order, and stamped today (UTC).
    for stream in ["stdout", "stderr"] {
        let times: Vec<String> = all
            .iter()
            .filter(|r| r.stream == stream)
            .map(|r| sortable(&r.time))
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{stream}: {times:?}"
        );
    }
    for r in &all {
        let date = &r.time[..10];
        assert!(date == before || date == after, "{r:?} not on {before}");
    }
    let mode = std::os::unix::fs::MetadataExt::mode(
        &std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    );
    assert_eq!(mode & 0o777 & !0o640, 0, "mode {:o}", mode & 0o777);
}

/// Rotation: the file is renamed, Reopen is called, and new output goes to a new file at
/// the path, with no line lost or repeated between the two.
fn cri_log_reopen_after_rename(h: &Harness) {
    if skip_go_shim(h, "cri_log_reopen_after_rename") {
        return;
    }
    let dir = log_dir(h);
    let path = dir.join("0.log");
    let uri = format!("cri-log://{}", path.display());
    let script = "i=0; while :; do echo line-$i; i=$((i+1)); usleep 20000; done";
    h.run_detached_with(&["--log-uri", &uri], "rl", &["sh", "-c", script]);
    wait_records(&path, 3);

    let rotated = dir.join("0.log.20261125-224958");
    std::fs::rename(&path, &rotated).unwrap_or_else(|e| panic!("rename {}: {e}", path.display()));
    let client = shim_client(h, "rl");
    reopen_log(&client, "rl", 5 * SECOND).unwrap_or_else(|e| panic!("Reopen: {e:?}"));
    let old_after_reopen = std::fs::read_to_string(&rotated).unwrap_or_default();
    wait_records(&path, 5);
    std::thread::sleep(SECOND / 5);
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap_or_default(),
        old_after_reopen,
        "the rotated file grew after Reopen returned"
    );

    let numbers = |p: &Path| -> Vec<u64> {
        records(p)
            .iter()
            .map(|r| {
                assert_eq!(
                    (r.stream.as_str(), r.tag.as_str()),
                    ("stdout", "F"),
                    "{r:?}"
                );
                r.content
                    .strip_prefix("line-")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected record {r:?}"))
            })
            .collect()
    };
    let old = numbers(&rotated);
    let new = numbers(&path);
    let joined: Vec<u64> = old.iter().chain(&new).copied().collect();
    let expected: Vec<u64> = (0..joined.len() as u64).collect();
    assert_eq!(joined, expected, "old {old:?} new {new:?}");

    // An unknown container, and one whose output is no cri-log.
    assert_eq!(
        status_code(reopen_log(&client, "nosuch", 5 * SECOND)),
        Code::NOT_FOUND
    );
    h.run_detached("plain", &["sleep", "1000"]);
    let plain = shim_client(h, "plain");
    assert_eq!(
        status_code(reopen_log(&plain, "plain", 5 * SECOND)),
        Code::FAILED_PRECONDITION
    );
    h.remove("plain");
    h.remove("rl");
}

/// The log's directory must exist: Create fails and says which file.
fn cri_log_missing_dir_fails_create(h: &Harness) {
    if skip_go_shim(h, "cri_log_missing_dir_fails_create") {
        return;
    }
    let path = h.containerd().dir().join("no-such-dir").join("0.log");
    let uri = format!("cri-log://{}", path.display());
    h.run(&["--log-uri", &uri], "md", &["true"])
        .fails()
        .stderr_has(&["not found", &path.display().to_string()]);
    assert!(h.task("md").is_none());
    // ctr may have removed the container already; either way the harness checks no task.
    let _ = h.ctr(&["containers", "rm", "md"]);
}

#[track_caller]
fn wait_records(path: &Path, n: usize) {
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {:?} after 10s",
            path.display(),
            text
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[track_caller]
fn shim_client(h: &Harness, id: &str) -> ttrpc::Client {
    let address = h
        .shim_address(id)
        .unwrap_or_else(|| panic!("no shim address in the bundle of {id}"));
    ttrpc::Client::connect(&address).unwrap_or_else(|e| panic!("connect {address}: {e:?}"))
}

fn status_code(r: ttrpc::Result<()>) -> Code {
    match r {
        Ok(()) => Code::OK,
        Err(ttrpc::Error::RpcStatus(s)) => s.code(),
        Err(e) => panic!("not a ttrpc status: {e:?}"),
    }
}

shim_cases!(
    cri_log_records,
    cri_log_reopen_after_rename,
    cri_log_missing_dir_fails_create,
);

/// The shim binary for a pause case, or None (skipped, with the reason) when there is
/// none or it is the Go shim.
fn pause_binary(case: &str) -> Option<PathBuf> {
    match shim_under_test() {
        Ok(shim) if shim.is_go() => {
            skip(&format!("{case}: the Go shim has no pause mode"));
            None
        }
        Ok(shim) => Some(shim.binary),
        Err(HarnessError::Skip(reason)) => {
            skip(&format!("{case}: {reason}"));
            None
        }
        Err(e) => panic!("{case}: {e}"),
    }
}

/// A child process killed (and reaped) if the case ends early, so that a failing case
/// leaves no pause process behind holding the test runner's output open.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn status_field(pid: i32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
}

/// Waits until pause sits in sigwait: a signal sent earlier would find its default action.
/// (While a process waits, the kernel shows the waited-for signals as unblocked in `SigBlk`;
/// `wchan` names the wait.)
#[track_caller]
fn wait_paused(pid: i32) {
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        if wchan.contains("sigtimedwait") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} is not in sigwait (wchan {wchan:?})"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Children of `parent` (zombies included), from every process's `stat`.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

#[track_caller]
fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("wait: {e}")) {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pause did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A shell forks two children and execs pause in its place, so they become pause's: one
/// that has already ended (a zombie before pause starts) and one that ends later. Both are
/// reaped; pause runs one thread, holds no socket, and exits 0 on SIGTERM.
#[test]
fn pause_reaps_children_and_exits_0_on_sigterm() {
    let Some(shim) = pause_binary("pause_reaps_children_and_exits_0_on_sigterm") else {
        return;
    };
    let mut child = Reaped(
        Command::new("/bin/sh")
            .args([
                "-c",
                "true & echo $!; sleep 0.5 & echo $!; sleep 0.2; exec \"$0\" pause",
            ])
            .arg(&shim)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("sh: {e}")),
    );
    let pid = child.0.id() as i32;
    let mut lines = BufReader::new(child.0.stdout.take().expect("piped stdout")).lines();
    let mut kid = || -> i32 {
        lines
            .next()
            .and_then(|l| l.ok())
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("no child pid from the shell"))
    };
    let (early, late) = (kid(), kid());
    wait_paused(pid);
    assert!(
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|exe| exe.file_name() == shim.file_name()),
        "pid {pid} is not the shim"
    );

    let deadline = Instant::now() + 5 * SECOND;
    loop {
        let left = children_of(pid);
        if !left.contains(&early) && !left.contains(&late) && !pid_alive(late) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "children {left:?} of pause not reaped (early {early}, late {late})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pid_alive(pid), "pause ended by itself");
    assert_eq!(status_field(pid, "Threads:").as_deref(), Some("1"));
    let sockets: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .collect()
        })
        .unwrap_or_default();
    assert!(sockets.is_empty(), "pause holds sockets: {sockets:?}");

    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap_or_else(|e| panic!("kill: {e}"));
    let status = wait_exit(&mut child.0, 5 * SECOND);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn pause_exits_0_on_sigint() {
    let Some(shim) = pause_binary("pause_exits_0_on_sigint") else {
        return;
    };
    let mut child = Reaped(
        Command::new(&shim)
            .arg("pause")
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", shim.display())),
    );
    wait_paused(child.0.id() as i32);
    kill(Pid::from_raw(child.0.id() as i32), Signal::SIGINT)
        .unwrap_or_else(|e| panic!("kill: {e}"));
    let status = wait_exit(&mut child.0, 5 * SECOND);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// As PID 1 of its own PID namespace (a pod's shared one), pause gets the orphans of the
/// namespace to reap, and a SIGTERM from the host still ends it with 0.
#[test]
fn pause_as_pid_1_reaps_orphans() {
    let case = "pause_as_pid_1_reaps_orphans";
    let Some(shim) = pause_binary(case) else {
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        return skip(&format!("{case}: needs root (a new PID namespace)"));
    }
    if !Path::new("/usr/bin/unshare").is_file() {
        return skip(&format!("{case}: /usr/bin/unshare is not installed"));
    }
    // The subshell forks a sleep and exits: the sleep is orphaned to the namespace's init.
    let mut unshare = Reaped(
        Command::new("/usr/bin/unshare")
            .args(["--pid", "--fork", "--kill-child", "/bin/sh", "-c"])
            .arg("(sleep 0.5 &); exec \"$0\" pause")
            .arg(&shim)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("unshare: {e}")),
    );
    let deadline = Instant::now() + 10 * SECOND;
    let pause = loop {
        let found = children_of(unshare.0.id() as i32).into_iter().find(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe.file_name() == shim.file_name())
        });
        if let Some(pid) = found {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "pause never started in the namespace"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    wait_paused(pause);
    assert_eq!(
        status_field(pause, "NSpid:")
            .and_then(|v| v.split_whitespace().last().map(String::from))
            .as_deref(),
        Some("1")
    );

    // The orphan shows up as pause's child, then goes without leaving a zombie.
    let mut seen = None;
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        let kids = children_of(pause);
        if let Some(&k) = kids.first() {
            seen.get_or_insert(k);
        }
        if seen.is_some() && kids.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphans of the namespace not reaped: seen {seen:?}, left {kids:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    kill(Pid::from_raw(pause), Signal::SIGTERM).unwrap_or_else(|e| panic!("kill: {e}"));
    let status = wait_exit(&mut unshare.0, 5 * SECOND);
    assert_eq!(status.code(), Some(0), "{status:?}");
}
