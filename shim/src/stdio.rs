//! A process's stdio: what runc is given, and the shim's side of it, which outlives any
//! client. Destinations are containerd's: a FIFO path, `file:///path` (stdout and stderr
//! appended to one file), `binary:///path?arg=value` (a logging program reading fds 3 and
//! 4), or nothing; with a terminal, runc's pty through the console socket. Ours:
//! `cri-log:///path` (the shim writes the CRI log format itself, see `crilog.rs`); a
//! container's init whose output is a CRI log also gets an attach socket (`attach.rs`).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::unistd::{fchown, Gid, Uid};

use crate::attach::{Attach, Feed};
use crate::console::ConsoleSocket;
use crate::copy::{self, Drained};
use crate::crilog::{self, CriLog, Stream};
use crate::error::{Context, Error, Result};

/// The stdio a client asked for, as given in Create and Exec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    Null,
    Fifo(PathBuf),
    File(PathBuf),
    Binary { path: PathBuf, args: Vec<String> },
    CriLog(PathBuf),
}

fn parse_dest(s: &str) -> Result<Dest> {
    if s.is_empty() {
        return Ok(Dest::Null);
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Ok(Dest::Fifo(PathBuf::from(s)));
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    // `scheme:///path`: an empty host, then an absolute path.
    let path = path.find('/').map(|i| &path[i..]).unwrap_or("");
    if path.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "stdio uri {s:?} has no path"
        )));
    }
    let path = PathBuf::from(percent_decode(path)?);
    match scheme {
        "fifo" => Ok(Dest::Fifo(path)),
        "file" => Ok(Dest::File(path)),
        "cri-log" => Ok(Dest::CriLog(path)),
        "binary" => {
            let mut args = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                args.push(percent_decode(k)?);
                if !v.is_empty() {
                    args.push(percent_decode(v)?);
                }
            }
            Ok(Dest::Binary { path, args })
        }
        other => Err(Error::InvalidArgument(format!(
            "stdio uri scheme {other:?} not supported"
        ))),
    }
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| Error::InvalidArgument(format!("bad escape in {s:?}")))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| Error::InvalidArgument(format!("{s:?} is not utf-8")))
}

/// The stdio runc gets for the process, and what the shim keeps until runc has run.
pub struct Prepared {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    pub console: Option<ConsoleSocket>,
    pending: Pending,
}

/// The shim's side of a process's stdio, set up before runc runs and started after.
struct Pending {
    stdin: Option<(File, File)>,
    stdin_pipe: Option<File>,
    stdout: Option<(File, Out)>,
    stderr: Option<(File, Out)>,
    tty_out: Option<Out>,
    cri_logs: Vec<Arc<CriLog>>,
    attach: Option<Attach>,
}

/// Where an output pump writes: bytes as they come (a FIFO comes with a read end the shim
/// holds, so that writing never fails while the client is away), or CRI log records.
enum Out {
    Raw { file: File, _keep: Option<File> },
    Cri(Arc<CriLog>, Stream),
}

/// The CRI logs a process writes, opened once per path: stdout and stderr given the same
/// URI share one file.
#[derive(Default)]
struct CriLogs(Vec<Arc<CriLog>>);

impl CriLogs {
    fn sink(&mut self, path: &std::path::Path, stream: Stream) -> Result<Out> {
        if let Some(log) = self.0.iter().find(|l| l.path() == path) {
            return Ok(Out::Cri(log.clone(), stream));
        }
        let log = CriLog::open(path)?;
        self.0.push(log.clone());
        Ok(Out::Cri(log, stream))
    }
}

/// The shim's side of a running process's stdio.
pub struct ProcessIo {
    stdin: Arc<Mutex<Option<File>>>,
    console: Option<File>,
    drained: Drained,
    stop_stdin: Option<OwnedFd>,
    /// The shim's own writer of the stdin FIFO, which keeps clients coming and going from
    /// ending stdin; CloseIO drops it.
    stdin_keep: Mutex<Option<File>>,
    cri_logs: Vec<Arc<CriLog>>,
    /// Kept until the process is deleted: dropping it removes the socket.
    _attach: Option<Attach>,
}

impl StdioPaths {
    pub fn prepare(
        &self,
        id: &str,
        namespace: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<Prepared> {
        let stdin = if self.stdin.is_empty() {
            None
        } else {
            Some(open_stdin_fifo(&self.stdin)?)
        };
        let out = parse_dest(&self.stdout)?;
        let err = parse_dest(&self.stderr)?;
        let mut cri_logs = CriLogs::default();
        if self.terminal {
            let console = ConsoleSocket::new()?;
            let tty_out = match out {
                Dest::Null => None,
                Dest::Fifo(p) => Some(open_fifo_out(&p)?),
                Dest::File(p) => Some(open_file_out(&p)?),
                // A terminal has one output: containerd's CRI logs it as stdout.
                Dest::CriLog(p) => Some(cri_logs.sink(&p, Stream::Stdout)?),
                Dest::Binary { .. } => {
                    return Err(Error::InvalidArgument(
                        "a terminal cannot log to a binary".into(),
                    ))
                }
            };
            let pending = Pending {
                stdin,
                stdin_pipe: None,
                stdout: None,
                stderr: None,
                tty_out,
                cri_logs: cri_logs.0,
                attach: None,
            };
            return Ok(Prepared {
                stdin: Stdio::null(),
                stdout: Stdio::null(),
                stderr: Stdio::null(),
                console: Some(console),
                pending,
            });
        }

        let mut pending = Pending {
            stdin: None,
            stdin_pipe: None,
            stdout: None,
            stderr: None,
            tty_out: None,
            cri_logs: Vec::new(),
            attach: None,
        };
        let runc_stdin = match stdin {
            Some(fifo) => {
                let (r, w) = pipe(owner)?;
                pending.stdin = Some(fifo);
                pending.stdin_pipe = Some(File::from(w));
                Stdio::from(r)
            }
            None => Stdio::null(),
        };
        if let Dest::Binary { path, args } = &out {
            let (stdout, stderr) = start_binary(path, args, id, namespace, owner)?;
            return Ok(Prepared {
                stdin: runc_stdin,
                stdout,
                stderr,
                console: None,
                pending,
            });
        }
        let mut output = |dest: Dest, stream: Stream| -> Result<(Stdio, Option<(File, Out)>)> {
            let out = match dest {
                Dest::Null => return Ok((Stdio::null(), None)),
                Dest::Fifo(p) => open_fifo_out(&p)?,
                Dest::File(p) => open_file_out(&p)?,
                Dest::CriLog(p) => cri_logs.sink(&p, stream)?,
                Dest::Binary { .. } => {
                    return Err(Error::InvalidArgument(
                        "stderr cannot be a binary alone".into(),
                    ))
                }
            };
            let (r, w) = pipe(owner)?;
            Ok((Stdio::from(w), Some((File::from(r), out))))
        };
        let (runc_stdout, stdout) = output(out, Stream::Stdout)?;
        let (runc_stderr, stderr) = output(err, Stream::Stderr)?;
        pending.stdout = stdout;
        pending.stderr = stderr;
        pending.cri_logs = cri_logs.0;
        Ok(Prepared {
            stdin: runc_stdin,
            stdout: runc_stdout,
            stderr: runc_stderr,
            console: None,
            pending,
        })
    }
}

impl Prepared {
    /// Gives a process whose output is a CRI log the attach socket `<bundle>/attach`;
    /// other processes get none.
    pub fn bind_attach(&mut self, bundle: &Path) -> Result<()> {
        if !self.pending.cri_logs.is_empty() {
            self.pending.attach = Some(Attach::bind(bundle)?);
        }
        Ok(())
    }

    /// Starts the pumps once runc has created the process (and, with a terminal, sent its
    /// pty master).
    pub fn start(self, name: &str) -> Result<ProcessIo> {
        let Prepared {
            console, pending, ..
        } = self;
        let drained = Drained::default();
        let master = match &console {
            Some(socket) => Some(socket.receive()?),
            None => None,
        };
        let stdin_dst = match (&master, pending.stdin_pipe) {
            (Some(m), _) => Some(m.try_clone().context("clone pty master")?),
            (None, pipe) => pipe,
        };
        let stdin = Arc::new(Mutex::new(stdin_dst));
        let mut stop_stdin = None;
        let mut stdin_keep = None;
        if let Some((fifo, keep)) = pending.stdin {
            let (stop_r, stop_w) = nix::unistd::pipe().context("pipe")?;
            let dst = stdin.clone();
            copy::spawn(&format!("{name}-stdin"), move || {
                copy::pump_stdin(fifo, dst, stop_r)
            })
            .context("start stdin pump")?;
            stop_stdin = Some(stop_w);
            stdin_keep = Some(keep);
        }
        // Every feed exists before any pump runs: the attach socket's output ends when
        // the last one is dropped.
        let feed = |out: &Out| match (out, &pending.attach) {
            (Out::Cri(..), Some(attach)) => Some(attach.feed()),
            _ => None,
        };
        let mut outputs: Vec<(&str, File, Out, Option<Feed>)> = Vec::new();
        if let (Some(m), Some(out)) = (&master, pending.tty_out) {
            let f = feed(&out);
            outputs.push(("tty", m.try_clone().context("clone pty master")?, out, f));
        }
        if let Some((r, out)) = pending.stdout {
            let f = feed(&out);
            outputs.push(("stdout", r, out, f));
        }
        if let Some((r, out)) = pending.stderr {
            let f = feed(&out);
            outputs.push(("stderr", r, out, f));
        }
        for (stream, src, out, feed) in outputs {
            drained.add();
            let d = drained.clone();
            copy::spawn(&format!("{name}-{stream}"), move || {
                match &out {
                    Out::Raw { file, .. } => copy::pump(&src, file),
                    Out::Cri(log, stream) => crilog::pump(&src, log, *stream, feed.as_ref()),
                }
                drop((out, feed));
                d.done();
            })
            .context("start output pump")?;
        }
        Ok(ProcessIo {
            stdin,
            console: master,
            drained,
            stop_stdin,
            stdin_keep: Mutex::new(stdin_keep),
            cri_logs: pending.cri_logs,
            _attach: pending.attach,
        })
    }
}

impl ProcessIo {
    /// CloseIO: the process sees the end of its stdin. With a stdin FIFO, after what
    /// clients already wrote into it: the pump closes the process's stdin at the FIFO's end.
    pub fn close_stdin(&self) {
        let keep = self
            .stdin_keep
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if keep.is_none() {
            self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }

    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        match &self.console {
            Some(master) => crate::console::resize(master, width, height),
            None => Err(Error::FailedPrecondition("process has no terminal".into())),
        }
    }

    /// ReopenContainerLog: the CRI log files are closed and opened again by path.
    pub fn reopen_log(&self) -> Result<()> {
        if self.cri_logs.is_empty() {
            return Err(Error::FailedPrecondition(
                "process output is not a cri-log".into(),
            ));
        }
        self.cri_logs.iter().try_for_each(|log| log.reopen())
    }

    /// The process ended: stop reading its stdin FIFO and wait (bounded) until its output
    /// has been written out, so that a client reading the FIFOs gets every byte.
    pub fn finish(&mut self, timeout: Duration) {
        self.stop_stdin.take();
        self.close_stdin();
        self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take();
        if !self.drained.wait(timeout) {
            log::warn!("process output still open after {timeout:?}; leaving its pumps running");
        }
    }
}

fn pipe(owner: Option<(u32, u32)>) -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    if let Some((uid, gid)) = owner {
        for fd in [&r, &w] {
            fchown(
                fd.as_raw_fd(),
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
            )
            .context("chown stdio pipe to IoUid/IoGid")?;
        }
    }
    Ok((r, w))
}

fn is_fifo(path: &std::path::Path) -> Result<bool> {
    Ok(std::fs::metadata(path)
        .context(format!("stat {}", path.display()))?
        .file_type()
        .is_fifo())
}

/// Opens a stdin FIFO for reading without waiting for a writer, plus a write end of our own
/// so the FIFO never reports end-of-file while the client is away.
fn open_stdin_fifo(path: &str) -> Result<(File, File)> {
    let path = PathBuf::from(path);
    if !is_fifo(&path)? {
        return Err(Error::InvalidArgument(format!(
            "stdin {} is not a fifo",
            path.display()
        )));
    }
    let r = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .context(format!("open {}", path.display()))?;
    let w = OpenOptions::new()
        .write(true)
        .open(&path)
        .context(format!("open {}", path.display()))?;
    Ok((r, w))
}

fn open_fifo_out(path: &std::path::Path) -> Result<Out> {
    if !is_fifo(path)? {
        // containerd also passes plain files by path.
        return open_file_out(path);
    }
    let keep = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .context(format!("open {}", path.display()))?;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .context(format!("open {}", path.display()))?;
    Ok(Out::Raw {
        file,
        _keep: Some(keep),
    })
}

fn open_file_out(path: &std::path::Path) -> Result<Out> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).context(format!("create {}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .context(format!("open {}", path.display()))?;
    Ok(Out::Raw { file, _keep: None })
}

/// Starts a logging binary the way containerd's shim does: stdout on fd 3, stderr on fd 4,
/// and fd 5 to close (or write to) once it is ready; only CONTAINER_ID and
/// CONTAINER_NAMESPACE in its environment.
fn start_binary(
    path: &std::path::Path,
    args: &[String],
    id: &str,
    namespace: &str,
    owner: Option<(u32, u32)>,
) -> Result<(Stdio, Stdio)> {
    let (out_r, out_w) = pipe(owner)?;
    let (err_r, err_w) = pipe(owner)?;
    let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = Command::new(path);
    cmd.args(args)
        .env_clear()
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls run between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            for (target, fd) in (3..).zip(fds) {
                crate::reaper::inherit_fd(fd, target)?;
            }
            Ok(())
        });
    }
    crate::reaper::reaper()
        .spawn_detached(&mut cmd)
        .context(format!("start logging binary {}", path.display()))?;
    drop((out_r, err_r, ready_w));
    // Wait (bounded) for the binary to signal that it is ready.
    let mut fds = [nix::poll::PollFd::new(
        ready_r.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16));
    Ok((Stdio::from(out_w), Stdio::from(err_w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_parsed_as_containerd_writes_them() {
        assert_eq!(parse_dest("").unwrap(), Dest::Null);
        assert_eq!(
            parse_dest("/run/x/stdout").unwrap(),
            Dest::Fifo("/run/x/stdout".into())
        );
        assert_eq!(
            parse_dest("file:///var/log/c%201.log").unwrap(),
            Dest::File("/var/log/c 1.log".into())
        );
        assert_eq!(
            parse_dest("binary:///usr/bin/logger?id=abc&debug").unwrap(),
            Dest::Binary {
                path: "/usr/bin/logger".into(),
                args: vec!["id".into(), "abc".into(), "debug".into()]
            }
        );
        assert_eq!(
            parse_dest("cri-log:///var/log/pods/p_1/c/0.log").unwrap(),
            Dest::CriLog("/var/log/pods/p_1/c/0.log".into())
        );
        assert!(parse_dest("http://x/y").is_err());
        assert!(parse_dest("file://").is_err());
        assert!(parse_dest("file:///bad%zz").is_err());
    }

    #[test]
    fn fifo_output_reaches_the_reader_and_survives_its_absence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let Out::Raw { file, _keep } = open_fifo_out(&path).unwrap() else {
            panic!("a fifo is a raw output");
        };
        // No client reads: writes still succeed (into the pipe buffer) instead of EPIPE.
        (&file).write_all(b"kept while nobody reads\n").unwrap();
        let mut reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let mut got = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut got);
        assert_eq!(got, "kept while nobody reads\n");
    }

    #[test]
    fn cri_log_stdout_and_stderr_share_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let uri = format!("cri-log://{}", path.display());
        let paths = StdioPaths {
            stdout: uri.clone(),
            stderr: uri,
            ..Default::default()
        };
        let mut prepared = paths.prepare("c", "default", None).unwrap();
        assert_eq!(prepared.pending.cri_logs.len(), 1);
        let mut child = sh_with(&mut prepared, "echo to-out; echo to-err >&2; printf tail");
        let mut io = prepared.start("c").unwrap();
        child.wait().unwrap();
        io.finish(Duration::from_secs(5));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut records: Vec<String> = text
            .lines()
            .map(|l| l.split_once(' ').unwrap().1.to_string())
            .collect();
        records.sort();
        assert_eq!(
            records,
            vec!["stderr F to-err", "stdout F to-out", "stdout P tail"],
            "{text:?}"
        );
        io.reopen_log().unwrap();
    }

    /// `sh -c script` with the stdout and stderr runc would have been given.
    fn sh_with(prepared: &mut Prepared, script: &str) -> std::process::Child {
        Command::new("/bin/sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(std::mem::replace(&mut prepared.stdout, Stdio::null()))
            .stderr(std::mem::replace(&mut prepared.stderr, Stdio::null()))
            .spawn()
            .unwrap()
    }

    #[test]
    fn only_a_cri_log_process_gets_an_attach_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join(crate::attach::SOCKET);
        let mut plain = StdioPaths::default().prepare("c", "default", None).unwrap();
        plain.bind_attach(dir.path()).unwrap();
        assert!(!socket.exists());

        let uri = format!("cri-log://{}", dir.path().join("0.log").display());
        let paths = StdioPaths {
            stdout: uri.clone(),
            stderr: uri,
            ..Default::default()
        };
        let mut prepared = paths.prepare("c", "default", None).unwrap();
        prepared.bind_attach(dir.path()).unwrap();
        let mut client = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // A client gets output from when it is accepted: give the accept thread a moment.
        std::thread::sleep(Duration::from_millis(200));
        let mut child = sh_with(&mut prepared, "echo out; sleep 0.1; echo err >&2");
        let mut io = prepared.start("c").unwrap();
        child.wait().unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut client, &mut got).unwrap();
        assert_eq!(got, b"\x01\x00\x00\x00\x04out\n\x02\x00\x00\x00\x04err\n");
        io.finish(Duration::from_secs(5));
        assert!(socket.exists());
        drop(io);
        assert!(!socket.exists());
    }

    #[test]
    fn reopen_needs_a_cri_log() {
        let prepared = StdioPaths::default().prepare("c", "default", None).unwrap();
        let io = prepared.start("c").unwrap();
        assert_eq!(
            io.reopen_log().unwrap_err().code(),
            limpet_protos::ttrpc::Code::FAILED_PRECONDITION
        );
    }

    #[test]
    fn a_cri_log_in_a_missing_directory_fails_prepare() {
        let paths = StdioPaths {
            stdout: "cri-log:///nonexistent-dir/c/0.log".into(),
            stderr: "cri-log:///nonexistent-dir/c/0.log".into(),
            ..Default::default()
        };
        let err = paths.prepare("c", "default", None).err().unwrap();
        assert_eq!(err.code(), limpet_protos::ttrpc::Code::NOT_FOUND, "{err}");
    }

    use std::io::Write;
}
