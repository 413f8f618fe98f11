//! The attach socket `<bundle>/attach` of a container whose output the shim writes to a CRI
//! log: every connection gets the output from when it connects, framed as
//! `[stream: 1 stdout, 2 stderr][u32 big-endian length][bytes]`, and EOF once the output
//! has ended; later connections are closed at once. limpetd relays it for CRI Attach. The
//! Go shim has no such socket: its runs skip.
//!
//! Containers run through stock containerd and `ctr run --log-uri cri-log:///...`.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use limpet_tests::{shim_cases, skip, Harness};

const SECOND: Duration = Duration::from_secs(1);
/// Lines the container writes on each stream, one pair every 100 ms.
const LINES: usize = 30;

/// What one client read: its frames, and whether the data ended on a frame boundary.
struct Received {
    frames: Vec<(u8, Vec<u8>)>,
    whole: bool,
}

impl Received {
    /// The lines of one stream, joined across frames.
    fn lines(&self, stream: u8) -> Vec<String> {
        let bytes: Vec<u8> = self
            .frames
            .iter()
            .filter(|(s, _)| *s == stream)
            .flat_map(|(_, d)| d.iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes)
            .split_terminator('\n')
            .map(String::from)
            .collect()
    }
}

/// Reads a connection to EOF (bounded by its read timeout) and splits it into frames.
#[track_caller]
fn read_all(mut conn: UnixStream) -> Received {
    let mut bytes = Vec::new();
    conn.read_to_end(&mut bytes)
        .unwrap_or_else(|e| panic!("reading the attach socket: {e} (no EOF?)"));
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if rest.len() < 5 + len {
            break;
        }
        frames.push((rest[0], rest[5..5 + len].to_vec()));
        rest = &rest[5 + len..];
    }
    Received {
        frames,
        whole: rest.is_empty(),
    }
}

#[track_caller]
fn connect(path: &Path, timeout: Duration) -> UnixStream {
    let conn =
        UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    conn.set_read_timeout(Some(timeout))
        .unwrap_or_else(|e| panic!("set timeout: {e}"));
    conn
}

/// `(stream, tag, content)` of each record of a CRI log file.
fn records(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .split_terminator('\n')
        .map(|line| {
            let mut parts = line.splitn(4, ' ').skip(1).map(String::from);
            let mut next = || parts.next().unwrap_or_default();
            (next(), next(), next())
        })
        .collect()
}

fn count(records: &[(String, String, String)], stream: &str) -> usize {
    records.iter().filter(|r| r.0 == stream).count()
}

#[track_caller]
fn wait_records(path: &Path, n: usize) {
    let deadline = Instant::now() + 10 * SECOND;
    while std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .count()
        < n
    {
        assert!(
            Instant::now() < deadline,
            "{} has fewer than {n} records after 10s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The numbers of `prefix-N` lines, asserting every line has that form.
#[track_caller]
fn numbers(lines: &[String], prefix: &str) -> Vec<usize> {
    lines
        .iter()
        .map(|l| {
            l.strip_prefix(prefix)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("line {l:?} is not {prefix}N: {lines:?}"))
        })
        .collect()
}

/// Two clients connect while the container prints on stdout and stderr: each gets every
/// later line on the right stream in whole frames, then EOF once the container has exited.
/// A client connecting after that gets EOF at once; the CRI log still has every line, and
/// the socket is gone with the task.
fn attach_fans_out_output_until_exit(h: &Harness) {
    if h.shim.is_go() {
        return skip(&format!(
            "attach_fans_out_output_until_exit ({}): the Go shim has no attach socket",
            h.flavor
        ));
    }
    let dir = h.containerd().dir().join("pods").join("a");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let log = dir.join("0.log");
    let uri = format!("cri-log://{}", log.display());
    let script = format!(
        "i=0; while [ $i -lt {LINES} ]; do echo out-$i; echo err-$i >&2; \
         i=$((i+1)); usleep 100000; done"
    );
    h.run_detached_with(&["--log-uri", &uri], "at", &["sh", "-c", &script]);
    let socket: PathBuf = h.bundle("at").join("attach");
    let meta =
        std::fs::symlink_metadata(&socket).unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
    assert!(
        meta.file_type().is_socket(),
        "{} is no socket",
        socket.display()
    );
    assert_eq!(meta.mode() & 0o777, 0o600, "mode {:o}", meta.mode() & 0o777);

    wait_records(&log, 6);
    let clients = [connect(&socket, 20 * SECOND), connect(&socket, 20 * SECOND)];
    // Once accepted, a client gets every chunk: what is not in the log after this pause
    // was written after both connections were accepted.
    std::thread::sleep(SECOND / 3);
    let seen = records(&log);
    let (seen_out, seen_err) = (count(&seen, "stdout"), count(&seen, "stderr"));
    assert!(
        seen_out < LINES - 5,
        "the container was nearly done before the clients connected"
    );
    let readers: Vec<_> = clients
        .into_iter()
        .map(|conn| std::thread::spawn(move || read_all(conn)))
        .collect();
    let received: Vec<Received> = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_else(|_| panic!("reader panicked")))
        .collect();
    h.wait_status("at", "STOPPED", 10 * SECOND);

    for (n, got) in received.iter().enumerate() {
        assert!(got.whole, "client {n}: data ends inside a frame");
        assert!(
            got.frames
                .iter()
                .all(|(s, d)| (*s == 1 || *s == 2) && !d.is_empty()),
            "client {n}: bad frame"
        );
        for (stream, prefix, seen) in [(1, "out-", seen_out), (2, "err-", seen_err)] {
            let nums = numbers(&got.lines(stream), prefix);
            let first = *nums
                .first()
                .unwrap_or_else(|| panic!("client {n}: nothing on stream {stream}"));
            assert!(
                first <= seen,
                "client {n}: stream {stream} starts at {first}, {seen} were in the log"
            );
            let want: Vec<usize> = (first..LINES).collect();
            assert_eq!(nums, want, "client {n}: stream {stream}");
        }
    }

    // After the output ended, a connection is closed at once.
    let late = read_all(connect(&socket, 5 * SECOND));
    assert!(late.frames.is_empty() && late.whole, "late client got data");

    let all = records(&log);
    for (stream, prefix) in [("stdout", "out-"), ("stderr", "err-")] {
        let lines: Vec<String> = all
            .iter()
            .filter(|r| r.0 == stream)
            .map(|r| {
                assert_eq!(r.1, "F", "{r:?}");
                r.2.clone()
            })
            .collect();
        assert_eq!(numbers(&lines, prefix), (0..LINES).collect::<Vec<_>>());
    }

    h.remove("at");
    assert!(!socket.exists(), "{} left after delete", socket.display());
}

shim_cases!(attach_fans_out_output_until_exit);
