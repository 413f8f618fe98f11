//! `logs`: reads the container's CRI log file (its path from ContainerStatus), prints stdout
//! records to stdout and stderr records to stderr; `-f` follows the file across rotation
//! and stops once the container is no longer running.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::ContainerState;

use crate::containers::status_of;
use crate::cri_log::{split_lines, Joiner, Record, Stream};
use crate::times::rfc3339;

type Client = RuntimeServiceClient<Channel>;

const POLL: Duration = Duration::from_millis(100);
/// How often `-f` asks whether the container still runs.
const STATUS_EVERY: Duration = Duration::from_millis(500);

pub struct Options {
    pub follow: bool,
    /// Only the last N records (of the log as it is when the command starts).
    pub tail: Option<usize>,
    pub timestamps: bool,
    /// Only records at or after this time (unix nanoseconds).
    pub since: Option<i64>,
    /// Only this stream.
    pub stream: Option<Stream>,
}

struct Printer<'a> {
    o: &'a Options,
}

impl Printer<'_> {
    fn wanted(&self, r: &Record) -> bool {
        self.o.stream.is_none_or(|s| s == r.stream)
            && self.o.since.is_none_or(|s| r.nanos.is_some_and(|n| n >= s))
    }

    fn print(&self, records: &[Record]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        for r in records.iter().filter(|r| self.wanted(r)) {
            let w: &mut dyn Write = match r.stream {
                Stream::Stdout => &mut out,
                Stream::Stderr => &mut err,
            };
            if self.o.timestamps {
                let time = r.nanos.map(rfc3339).unwrap_or_else(|| r.time.clone());
                write!(w, "{time} ")?;
            }
            w.write_all(&r.text)?;
        }
        out.flush()?;
        err.flush()
    }
}

/// An open log file and the bytes of its last, unfinished line.
struct Tail {
    path: PathBuf,
    file: File,
    rest: Vec<u8>,
    joiner: Joiner,
}

impl Tail {
    fn open(path: &Path) -> anyhow::Result<Tail> {
        let file = File::open(path).with_context(|| format!("open log {}", path.display()))?;
        Ok(Tail {
            path: path.to_path_buf(),
            file,
            rest: Vec::new(),
            joiner: Joiner::default(),
        })
    }

    /// Whole records from what was appended since the last read.
    fn read(&mut self) -> anyhow::Result<Vec<Record>> {
        let mut buf = Vec::new();
        self.file
            .read_to_end(&mut buf)
            .with_context(|| format!("read log {}", self.path.display()))?;
        self.rest.extend_from_slice(&buf);
        Ok(split_lines(&mut self.rest)
            .iter()
            .filter_map(|l| self.joiner.push(l))
            .collect())
    }

    /// The path now names another file (rotated, or reopened by the runtime), or this one
    /// was truncated.
    fn replaced(&self) -> bool {
        let Ok(now) = std::fs::metadata(&self.path) else {
            return false; // between rename and create: wait for the new file
        };
        let Ok(ours) = self.file.metadata() else {
            return true;
        };
        let pos = self.file_position();
        now.ino() != ours.ino() || now.dev() != ours.dev() || now.len() < pos
    }

    fn file_position(&self) -> u64 {
        use std::io::Seek;
        (&self.file).stream_position().unwrap_or(0)
    }

    /// Finishes the current file and switches to what the path names now.
    fn reopen(&mut self) -> anyhow::Result<Vec<Record>> {
        let mut records = self.read()?;
        // A line the old file left unfinished will not be finished elsewhere.
        if !self.rest.is_empty() {
            let mut line = std::mem::take(&mut self.rest);
            line.push(b'\n');
            records.extend(
                split_lines(&mut line)
                    .iter()
                    .filter_map(|l| self.joiner.push(l)),
            );
        }
        self.file = File::open(&self.path)
            .with_context(|| format!("reopen log {}", self.path.display()))?;
        records.extend(self.read()?);
        Ok(records)
    }

    /// Everything left at the end: an unfinished last line and partial records.
    fn finish(&mut self) -> Vec<Record> {
        let mut records = Vec::new();
        if !self.rest.is_empty() {
            let line = std::mem::take(&mut self.rest);
            if let Some(r) = self.joiner.push(&line) {
                records.push(r);
            }
        }
        records.extend(self.joiner.flush());
        records
    }
}

async fn running(client: &Client, t: Duration, id: &str) -> bool {
    match status_of(client, t, id).await {
        Ok(s) => s.state == ContainerState::ContainerRunning as i32,
        // gone, or the runtime is gone: nothing more will be written
        Err(_) => false,
    }
}

pub async fn logs(client: &Client, t: Duration, id: &str, o: &Options) -> anyhow::Result<()> {
    let status = status_of(client, t, id).await?;
    if status.log_path.is_empty() {
        anyhow::bail!("container {id} has no log path");
    }
    let printer = Printer { o };
    let mut tail = Tail::open(Path::new(&status.log_path))?;
    let mut first = tail.read()?;
    if !o.follow {
        first.extend(tail.finish());
    }
    if let Some(n) = o.tail {
        first = first.split_off(first.len().saturating_sub(n));
    }
    printer.print(&first).context("write logs")?;
    if !o.follow {
        return Ok(());
    }
    let mut checked = Instant::now();
    let mut alive = status.state == ContainerState::ContainerRunning as i32;
    loop {
        let mut records = tail.read()?;
        if records.is_empty() && tail.replaced() {
            records = tail.reopen()?;
        }
        if !records.is_empty() {
            printer.print(&records).context("write logs")?;
            continue;
        }
        if !alive {
            // The last lines may land just after the exit is reported: one more look.
            tokio::time::sleep(POLL * 2).await;
            let mut last = tail.read()?;
            if tail.replaced() {
                last.extend(tail.reopen()?);
            }
            last.extend(tail.finish());
            return printer.print(&last).context("write logs");
        }
        tokio::time::sleep(POLL).await;
        if checked.elapsed() >= STATUS_EVERY {
            alive = running(client, t, id).await;
            checked = Instant::now();
        }
    }
}

/// `--since` as unix nanoseconds.
pub fn since(value: &str) -> anyhow::Result<i64> {
    crate::times::parse_since(value, crate::times::now_nanos()).map_err(anyhow::Error::msg)
}
