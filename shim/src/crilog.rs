//! Container output written by the shim itself in the Kubernetes CRI log format, as
//! containerd's CRI plugin writes it, so that it keeps reaching the file while nobody is
//! connected to the shim. One record per line:
//!
//! `<RFC3339Nano UTC> <stdout|stderr> <F|P> <content>\n`
//!
//! A line ends at `\n` (a `\r` right before it is dropped too). Content longer than
//! [`MAX_LINE`] is cut into `P` (partial) records of exactly that size, the rest ending in
//! an `F` record. Output that ends without a newline is written as a last `P` record.
//! stdout and stderr share one file; every record is one write under its lock, so records
//! never interleave.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::attach::Feed;
use crate::error::{Error, Result};

/// containerd's default `max_container_log_line_size`.
pub const MAX_LINE: usize = 16 * 1024;
const READ_CHUNK: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static [u8] {
        match self {
            Stream::Stdout => b"stdout",
            Stream::Stderr => b"stderr",
        }
    }
}

/// A process's CRI log file, shared by its output streams and reopened in place when the
/// log is rotated.
pub struct CriLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl CriLog {
    /// Opens (creating if missing) the log for appending. Its directory must exist.
    pub fn open(path: &Path) -> Result<Arc<CriLog>> {
        Ok(Arc::new(CriLog {
            path: path.to_path_buf(),
            file: Mutex::new(open_file(path)?),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the file and opens the path again: after a rotation renamed it, output goes
    /// to a new file. On failure the old file stays in use.
    pub fn reopen(&self) -> Result<()> {
        let fresh = open_file(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Writes one record with a single write.
    fn write_record(&self, stream: Stream, partial: bool, content: &[u8]) -> std::io::Result<()> {
        let mut record = Vec::with_capacity(content.len() + 48);
        rfc3339_nano(SystemTime::now(), &mut record);
        record.push(b' ');
        record.extend_from_slice(stream.name());
        record.extend_from_slice(if partial { b" P " } else { b" F " });
        record.extend_from_slice(content);
        record.push(b'\n');
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        (&*file).write_all(&record)
    }
}

fn open_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::NotFound(format!("directory of cri log {}", path.display()))
            }
            _ => Error::Io {
                context: format!("open cri log {}", path.display()),
                source: e,
            },
        })
}

/// Cuts a stream into CRI records; `emit(partial, content)` receives each one.
struct Splitter<F: FnMut(bool, &[u8])> {
    max: usize,
    /// The current line's content so far.
    line: Vec<u8>,
    emit: F,
}

impl<F: FnMut(bool, &[u8])> Splitter<F> {
    fn new(max: usize, emit: F) -> Self {
        Splitter {
            max,
            line: Vec::new(),
            emit,
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            self.push(&data[..i]);
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            (self.emit)(false, &self.line);
            self.line.clear();
            data = &data[i + 1..];
        }
        self.push(data);
    }

    /// Appends to the current line, writing `P` records while it is longer than the limit.
    /// A trailing `\r` does not count yet: with the `\n` that may follow it is no content.
    fn push(&mut self, bytes: &[u8]) {
        self.line.extend_from_slice(bytes);
        while self.line.len() - usize::from(self.line.last() == Some(&b'\r')) > self.max {
            (self.emit)(true, &self.line[..self.max]);
            self.line.drain(..self.max);
        }
    }

    /// The stream ended: what is left of an unterminated line becomes `P` records.
    fn finish(mut self) {
        while self.line.len() > self.max {
            (self.emit)(true, &self.line[..self.max]);
            self.line.drain(..self.max);
        }
        if !self.line.is_empty() {
            (self.emit)(true, &self.line);
        }
    }
}

/// Copies `src` into `log` as CRI records until `src` ends (or fails, as a pty master does
/// with EIO once the process is gone), and each chunk as read to the attach socket's
/// clients, if any. Write failures are logged once and the output is still drained, so
/// that the process never blocks on a full pipe.
pub fn pump(src: &impl AsFd, log: &CriLog, stream: Stream, attach: Option<&Feed>) {
    pump_with(src, log, stream, MAX_LINE, attach)
}

fn pump_with(src: &impl AsFd, log: &CriLog, stream: Stream, max: usize, attach: Option<&Feed>) {
    let Ok(src) = src.as_fd().try_clone_to_owned() else {
        return;
    };
    let mut src = File::from(src);
    let mut failed = false;
    let mut splitter = Splitter::new(max, |partial, content| {
        if let Err(e) = log.write_record(stream, partial, content) {
            if !failed {
                log::warn!("write cri log {}: {e}", log.path.display());
                failed = true;
            }
        }
    });
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                splitter.feed(&buf[..n]);
                if let Some(feed) = attach {
                    feed.publish(stream, &buf[..n]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    splitter.finish();
}

/// Appends `t` as Go's RFC3339Nano in UTC: nanoseconds without trailing zeros, and no
/// fraction at all on a whole second.
fn rfc3339_nano(t: SystemTime, out: &mut Vec<u8>) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    let nanos = since.subsec_nanos();
    if nanos != 0 {
        let digits = format!("{nanos:09}");
        out.push(b'.');
        out.extend_from_slice(digits.trim_end_matches('0').as_bytes());
    }
    out.push(b'Z');
}

/// Proleptic Gregorian (year, month, day) of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01, so that a leap day ends each 4-year cycle, and count
    // in 400-year eras of 146097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(bool, String)> {
        let mut out = Vec::new();
        let mut s = Splitter::new(max, |p, c: &[u8]| {
            out.push((p, String::from_utf8_lossy(c).into_owned()))
        });
        for chunk in chunks {
            s.feed(chunk);
        }
        s.finish();
        out
    }

    fn f(s: &str) -> (bool, String) {
        (false, s.to_string())
    }

    fn p(s: &str) -> (bool, String) {
        (true, s.to_string())
    }

    #[test]
    fn lines_become_full_records_and_crlf_is_dropped() {
        assert_eq!(
            split(16, &[b"one\ntwo\r\n\nthr", b"ee\n"]),
            vec![f("one"), f("two"), f(""), f("three")]
        );
        // A lone \r is content; \r and \n may arrive in different reads.
        assert_eq!(
            split(16, &[b"a\rb\n", b"c\r", b"\n"]),
            vec![f("a\rb"), f("c")]
        );
    }

    #[test]
    fn output_ending_without_newline_is_a_last_partial() {
        assert_eq!(
            split(16, &[b"done\nprompt: "]),
            vec![f("done"), p("prompt: ")]
        );
        assert_eq!(split(16, &[b"x\r"]), vec![p("x\r")]);
        assert_eq!(split(16, &[b""]), vec![]);
    }

    #[test]
    fn long_lines_are_cut_at_the_limit() {
        // Exactly the limit: one full record.
        assert_eq!(split(4, &[b"abcd\n"]), vec![f("abcd")]);
        assert_eq!(split(4, &[b"abcde\n"]), vec![p("abcd"), f("e")]);
        assert_eq!(
            split(4, &[b"ab", b"cdefgh", b"ij\n"]),
            vec![p("abcd"), p("efgh"), f("ij")]
        );
        // Twice the limit: the last piece is the full record, never an empty one.
        assert_eq!(split(4, &[b"abcdefgh\n"]), vec![p("abcd"), f("efgh")]);
        // The \r of a \r\n at the limit is no content.
        assert_eq!(split(4, &[b"abcd\r", b"\n"]), vec![f("abcd")]);
        assert_eq!(split(4, &[b"abcd\rx\n"]), vec![p("abcd"), f("\rx")]);
        // At the end without a newline, everything left is partial.
        assert_eq!(split(4, &[b"abcdefgh"]), vec![p("abcd"), p("efgh")]);
        assert_eq!(split(4, &[b"abcd\r"]), vec![p("abcd"), p("\r")]);
    }

    #[test]
    fn timestamps_are_go_rfc3339_nano_in_utc() {
        let at = |secs: u64, nanos: u32| {
            let mut out = Vec::new();
            rfc3339_nano(UNIX_EPOCH + Duration::new(secs, nanos), &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            at(1_795_647_000, 123_456_789),
            "2026-11-25T22:50:00.123456789Z"
        );
        assert_eq!(at(951_782_400, 500_000_000), "2000-02-29T00:00:00.5Z");
        assert_eq!(at(4_107_542_399, 10), "2100-02-28T23:59:59.00000001Z");
        assert_eq!(at(1_709_251_199, 0), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
    }

    /// Splits a record into (timestamp, stream, tag, content).
    fn parse(line: &str) -> (String, String, String, String) {
        let mut parts = line.splitn(4, ' ');
        let mut next = || parts.next().unwrap_or_default().to_string();
        (next(), next(), next(), next())
    }

    #[test]
    fn both_streams_share_the_file_whole_records_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = CriLog::open(&path).unwrap();
        let mut threads = Vec::new();
        for (stream, ch) in [(Stream::Stdout, 'o'), (Stream::Stderr, 'e')] {
            let (r, w) = nix::unistd::pipe().unwrap();
            let log = log.clone();
            threads.push(std::thread::spawn(move || {
                pump_with(&r, &log, stream, 64, None)
            }));
            std::thread::spawn(move || {
                let mut w = File::from(w);
                for n in 0..200 {
                    let line = format!("{}{n}\n", ch.to_string().repeat(100));
                    w.write_all(line.as_bytes()).unwrap();
                }
            });
        }
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let (mut out, mut err) = (0, 0);
        for line in text.lines() {
            let (ts, stream, tag, content) = parse(line);
            assert!(ts.ends_with('Z') && ts.len() >= 20, "{line:?}");
            let ch = if stream == "stdout" { 'o' } else { 'e' };
            assert!(stream == "stdout" || stream == "stderr", "{line:?}");
            match tag.as_str() {
                "P" => assert_eq!(content, ch.to_string().repeat(64), "{line:?}"),
                "F" => {
                    let n = if ch == 'o' { &mut out } else { &mut err };
                    assert_eq!(content, format!("{}{n}", ch.to_string().repeat(36)));
                    *n += 1;
                }
                _ => panic!("bad tag in {line:?}"),
            }
        }
        assert_eq!((out, err), (200, 200));
        let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&path).unwrap());
        assert_eq!(mode & 0o777 & !0o640, 0, "mode {mode:o}");
    }

    #[test]
    fn reopen_sends_new_records_to_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = CriLog::open(&path).unwrap();
        log.write_record(Stream::Stdout, false, b"before").unwrap();
        let rotated = dir.path().join("0.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.write_record(Stream::Stdout, false, b"still old")
            .unwrap();
        log.reopen().unwrap();
        log.write_record(Stream::Stderr, false, b"after").unwrap();
        let contents = |p: &Path| -> Vec<String> {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| {
                    let (_, s, t, c) = parse(l);
                    format!("{s} {t} {c}")
                })
                .collect()
        };
        assert_eq!(
            contents(&rotated),
            vec!["stdout F before", "stdout F still old"]
        );
        assert_eq!(contents(&path), vec!["stderr F after"]);
        // A reopen that fails keeps the current file.
        let gone = tempfile::tempdir().unwrap();
        let log2 = CriLog::open(&gone.path().join("x.log")).unwrap();
        drop(gone);
        assert_eq!(
            log2.reopen().unwrap_err().code(),
            limpet_protos::ttrpc::Code::NOT_FOUND
        );
        log2.write_record(Stream::Stdout, false, b"ok").unwrap();
    }

    #[test]
    fn a_missing_directory_is_not_found() {
        let err = CriLog::open(Path::new("/nonexistent-dir/x/0.log"))
            .err()
            .unwrap();
        assert_eq!(err.code(), limpet_protos::ttrpc::Code::NOT_FOUND);
        assert!(
            err.to_string().contains("/nonexistent-dir/x/0.log"),
            "{err}"
        );
    }

    #[test]
    fn unterminated_output_is_flushed_at_eof() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = CriLog::open(&path).unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        File::from(w).write_all(b"line\nno newline").unwrap();
        pump(&r, &log, Stream::Stdout, None);
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<_> = text.lines().map(parse).collect();
        assert_eq!(records.len(), 2, "{text:?}");
        assert_eq!(
            (records[0].2.as_str(), records[0].3.as_str()),
            ("F", "line")
        );
        assert_eq!(
            (records[1].2.as_str(), records[1].3.as_str()),
            ("P", "no newline")
        );
        assert!(text.ends_with('\n'));
    }
}
