//! Child reaping. The shim is a child subreaper: container processes are re-parented to it
//! when runc exits. One thread waits for SIGCHLD and reaps every child; the exit of a command
//! the shim runs (runc) goes to whoever runs it, every other exit to the task service.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Context, Error, Result};

/// A reaped child: its pid, its exit status as the shell reports it (128+signal when
/// killed) and when it was reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    pub status: u32,
    pub at: SystemTime,
}

/// Exit statuses of commands being run, keyed by pid; `None` while running.
pub struct Reaper {
    commands: Mutex<HashMap<i32, Option<u32>>>,
    done: Condvar,
}

pub fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER.get_or_init(|| Reaper {
        commands: Mutex::new(HashMap::new()),
        done: Condvar::new(),
    })
}

/// The signals the shim handles synchronously; blocked in every thread (call this before
/// spawning any), and waited for by [`Reaper::reap_loop`].
pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        set.add(s);
    }
    set
}

pub fn block_signals() -> Result<()> {
    // A peer that goes away must give EPIPE, not kill the shim.
    unsafe_ignore_sigpipe()?;
    handled_signals().thread_block().context("block signals")
}

#[allow(unsafe_code)]
fn unsafe_ignore_sigpipe() -> Result<()> {
    // SAFETY: installing SIG_IGN runs no handler code.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) }
        .map(|_| ())
        .context("ignore SIGPIPE")
}

/// Makes `fd` the child's descriptor `target`, kept across exec. For use between fork and
/// exec: it only makes async-signal-safe calls. Note that the source fds of several
/// targets must not collide with earlier targets (ours are fresh, above 2, in order).
#[allow(unsafe_code)]
pub fn inherit_fd(fd: i32, target: i32) -> std::io::Result<()> {
    // SAFETY: dup2 and fcntl on descriptor numbers touch no memory.
    let rc = unsafe {
        if fd == target {
            // dup2 onto itself would keep close-on-exec set.
            libc::fcntl(fd, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, target)
        }
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn set_subreaper() -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true).context("set child subreaper")
}

pub fn exit_status(status: WaitStatus) -> Option<(i32, u32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code as u32)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as u32)),
        _ => None,
    }
}

/// What a finished command printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub status: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Reaper {
    /// Waits for signals forever: reaps children on SIGCHLD and hands each exit that is not
    /// a running command's to `on_exit`. SIGTERM and SIGINT are ignored, as the Go shim does:
    /// the shim ends through the task API, never by a signal to it.
    pub fn reap_loop(&self, mut on_exit: impl FnMut(Exit)) -> ! {
        let set = handled_signals();
        loop {
            if let Ok(Signal::SIGCHLD) = set.wait() {
                self.reap_all(&mut on_exit);
            }
        }
    }

    fn reap_all(&self, on_exit: &mut impl FnMut(Exit)) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waitpid: {e}");
                    return;
                }
                Ok(s) => s,
            };
            let Some((pid, code)) = exit_status(status) else {
                continue;
            };
            let at = SystemTime::now();
            {
                let mut commands = self.lock();
                if let Some(slot) = commands.get_mut(&pid) {
                    *slot = Some(code);
                    self.done.notify_all();
                    continue;
                }
            }
            on_exit(Exit {
                pid,
                status: code,
                at,
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Option<u32>>> {
        self.commands.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `cmd` and returns its pid; its exit is kept for [`Reaper::wait`]. The table is
    /// locked while the child is spawned, so the reaper cannot take its exit first.
    pub fn spawn(&self, cmd: &mut Command) -> Result<(std::process::Child, i32)> {
        let mut commands = self.lock();
        let child = cmd
            .spawn()
            .context(format!("start {:?}", cmd.get_program()))?;
        let pid = child.id() as i32;
        commands.insert(pid, None);
        Ok((child, pid))
    }

    /// Starts a process whose exit nobody waits for (a logging binary): the reaper collects
    /// it like any other orphan.
    pub fn spawn_detached(&self, cmd: &mut Command) -> std::io::Result<i32> {
        cmd.spawn().map(|child| child.id() as i32)
    }

    /// Waits for the exit of a command started by [`Reaper::spawn`].
    pub fn wait(&self, pid: i32) -> u32 {
        let mut commands = self.lock();
        loop {
            if let Some(Some(code)) = commands.get(&pid) {
                let code = *code;
                commands.remove(&pid);
                return code;
            }
            commands = self.done.wait(commands).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Runs `cmd` to completion with `input` on its stdin, collecting stdout and stderr.
    pub fn output(&self, cmd: &mut Command, input: Option<&[u8]>) -> Result<Output> {
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let (mut child, pid) = self.spawn(cmd)?;
        if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
            // Small payloads (resource JSON): they fit in the pipe.
            if let Err(e) = stdin.write_all(input) {
                log::warn!("write command stdin: {e}");
            }
        }
        let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
            (Some(o), Some(e)) => read_both(o, e)?,
            _ => (Vec::new(), Vec::new()),
        };
        let status = self.wait(pid);
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Runs `cmd` to completion with the stdio it was given.
    pub fn status(&self, cmd: &mut Command) -> Result<u32> {
        let (_child, pid) = self.spawn(cmd)?;
        Ok(self.wait(pid))
    }
}

/// Reads two pipes to their ends without letting either fill up.
fn read_both(
    mut out: std::process::ChildStdout,
    mut err: std::process::ChildStderr,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let (mut o, mut e) = (Vec::new(), Vec::new());
    let (mut out_open, mut err_open) = (true, true);
    let mut buf = [0u8; 4096];
    while out_open || err_open {
        let (ready_out, ready_err) = {
            let mut fds = Vec::with_capacity(2);
            if out_open {
                fds.push(PollFd::new(out.as_fd(), PollFlags::POLLIN));
            }
            if err_open {
                fds.push(PollFd::new(err.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Err(Errno::EINTR) => continue,
                r => r.context("poll command output")?,
            };
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            match (out_open, err_open) {
                (true, true) => (ready(&fds[0]), ready(&fds[1])),
                (true, false) => (ready(&fds[0]), false),
                _ => (false, ready(&fds[0])),
            }
        };
        if ready_out {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => o.extend_from_slice(&buf[..n]),
            }
        }
        if ready_err {
            match err.read(&mut buf) {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => e.extend_from_slice(&buf[..n]),
            }
        }
    }
    Ok((o, e))
}

/// Converts an exit that is not 0 into an error carrying what the command said.
pub fn check(command: &str, out: &Output) -> Result<()> {
    if out.status == 0 {
        return Ok(());
    }
    let said = String::from_utf8_lossy(if out.stderr.is_empty() {
        &out.stdout
    } else {
        &out.stderr
    });
    Err(Error::Runc {
        command: command.to_string(),
        message: format!("exit status {}: {}", out.status, said.trim()),
    })
}
