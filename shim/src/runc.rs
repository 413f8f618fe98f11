//! A typed wrapper of the runc command line (any runc-compatible binary: runc, crun, ...).
//! Errors come from runc's JSON log, as runc writes its reason there rather than to stdio
//! that belongs to the container.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Context, Error, Result};
use crate::options::RuncOptions;
use crate::reaper::{check, reaper};

pub const DEFAULT_ROOT: &str = "/run/containerd/runc";

#[derive(Debug, Clone)]
pub struct Runc {
    pub binary: PathBuf,
    pub root: PathBuf,
    pub log: PathBuf,
    pub systemd_cgroup: bool,
    pub criu: Option<String>,
}

/// The stdio runc hands to the process it creates.
pub struct ProcessStdio {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

#[derive(Debug, Default, Clone)]
pub struct CreateOpts<'a> {
    pub pid_file: PathBuf,
    pub console_socket: Option<&'a Path>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
}

#[derive(Debug, Default, Clone)]
pub struct CheckpointOpts {
    pub image_path: String,
    pub work_path: String,
    pub leave_running: bool,
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    pub empty_ns: Vec<String>,
    pub cgroups_mode: String,
}

impl Runc {
    /// runc as the options of a task configure it; the root defaults to containerd's
    /// `/run/containerd/runc/<namespace>`.
    pub fn new(opts: &RuncOptions, namespace: &str, bundle: &Path) -> Runc {
        let binary = if opts.binary_name.is_empty() {
            "runc"
        } else {
            &opts.binary_name
        };
        let root = if opts.root.is_empty() {
            Path::new(DEFAULT_ROOT).join(namespace)
        } else {
            Path::new(&opts.root).join(namespace)
        };
        Runc {
            binary: PathBuf::from(binary),
            root,
            log: bundle.join("log.json"),
            systemd_cgroup: opts.systemd_cgroup,
            criu: (!opts.criu_path.is_empty()).then(|| opts.criu_path.clone()),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .args(["--log-format", "json"]);
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        if let Some(criu) = &self.criu {
            cmd.arg("--criu").arg(criu);
        }
        cmd.args(args);
        cmd
    }

    /// Runs a command whose output the shim reads.
    fn run(&self, args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>> {
        let mut cmd = self.command(args);
        let out = reaper()
            .output(&mut cmd, input)
            .map_err(|e| self.not_found(e))?;
        check(args[0], &out).map_err(|e| self.with_log_error(args[0], e))?;
        Ok(out.stdout)
    }

    /// Runs a command that passes stdio on to a container process.
    fn run_with_stdio(&self, args: &[&str], stdio: ProcessStdio, cwd: Option<&Path>) -> Result<()> {
        let mut cmd = self.command(args);
        cmd.stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let status = reaper().status(&mut cmd).map_err(|e| self.not_found(e))?;
        drop(cmd);
        if status != 0 {
            let e = Error::Runc {
                command: args[0].to_string(),
                message: format!("exit status {status}"),
            };
            return Err(self.with_log_error(args[0], e));
        }
        Ok(())
    }

    fn not_found(&self, e: Error) -> Error {
        match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::FailedPrecondition(format!(
                    "runtime binary {} not found",
                    self.binary.display()
                ))
            }
            e => e,
        }
    }

    /// runc's last error message from its log replaces the bare exit status.
    fn with_log_error(&self, command: &str, e: Error) -> Error {
        match last_log_error(&self.log) {
            Some(message) => Error::Runc {
                command: command.to_string(),
                message,
            },
            None => e,
        }
    }

    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        opts: &CreateOpts,
        stdio: ProcessStdio,
    ) -> Result<()> {
        let args = container_args(vec!["create".into()], id, bundle, opts);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run_with_stdio(&args, stdio, Some(bundle))
    }

    pub fn start(&self, id: &str) -> Result<()> {
        self.run(&["start", id], None).map(|_| ())
    }

    pub fn exec(
        &self,
        id: &str,
        process: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ProcessStdio,
    ) -> Result<()> {
        let process = process.to_string_lossy();
        let pid_file = pid_file.to_string_lossy();
        let mut args = vec![
            "exec",
            "--detach",
            "--process",
            &process,
            "--pid-file",
            &pid_file,
        ];
        let console;
        if let Some(sock) = console_socket {
            console = sock.to_string_lossy();
            args.extend(["--console-socket", &console]);
        }
        args.push(id);
        self.run_with_stdio(&args, stdio, None)
    }

    pub fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let sig = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, &sig]);
        self.run(&args, None).map(|_| ())
    }

    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let args: &[&str] = if force {
            &["delete", "--force", id]
        } else {
            &["delete", id]
        };
        self.run(args, None).map(|_| ())
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        self.run(&["pause", id], None).map(|_| ())
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        self.run(&["resume", id], None).map(|_| ())
    }

    pub fn ps(&self, id: &str) -> Result<Vec<u32>> {
        let out = self.run(&["ps", "--format", "json", id], None)?;
        serde_json::from_slice(&out).context("parse runc ps output")
    }

    /// Applies OCI `LinuxResources` given as JSON.
    pub fn update(&self, id: &str, resources_json: &[u8]) -> Result<()> {
        self.run(&["update", "--resources", "-", id], Some(resources_json))
            .map(|_| ())
    }

    pub fn checkpoint(&self, id: &str, opts: &CheckpointOpts) -> Result<()> {
        let mut args: Vec<&str> = vec!["checkpoint", "--image-path", &opts.image_path];
        if !opts.work_path.is_empty() {
            args.extend(["--work-path", &opts.work_path]);
        }
        for (on, flag) in [
            (opts.leave_running, "--leave-running"),
            (opts.tcp_established, "--tcp-established"),
            (opts.ext_unix_sk, "--ext-unix-sk"),
            (opts.shell_job, "--shell-job"),
            (opts.file_locks, "--file-locks"),
        ] {
            if on {
                args.push(flag);
            }
        }
        for ns in &opts.empty_ns {
            args.extend(["--empty-ns", ns]);
        }
        if !opts.cgroups_mode.is_empty() {
            args.extend(["--manage-cgroups-mode", &opts.cgroups_mode]);
        }
        args.push(id);
        self.run(&args, None).map(|_| ())
    }

    pub fn restore(
        &self,
        id: &str,
        bundle: &Path,
        image_path: &str,
        work_path: &str,
        opts: &CreateOpts,
        stdio: ProcessStdio,
    ) -> Result<()> {
        let mut head: Vec<String> = ["restore", "--detach", "--image-path", image_path]
            .map(String::from)
            .into();
        if !work_path.is_empty() {
            head.extend(["--work-path".into(), work_path.into()]);
        }
        // runc restore has no --no-new-keyring.
        let opts = CreateOpts {
            no_new_keyring: false,
            ..opts.clone()
        };
        let args = container_args(head, id, bundle, &opts);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run_with_stdio(&args, stdio, Some(bundle))
    }

    /// `runc features` (JSON), for `-info`.
    pub fn features(&self) -> Result<Vec<u8>> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("features");
        let out = reaper()
            .output(&mut cmd, None)
            .map_err(|e| self.not_found(e))?;
        check("features", &out)?;
        Ok(out.stdout)
    }
}

/// The arguments `create` and `restore` share: bundle, pid file, console and the runc
/// options, after the command's own, then the container id.
fn container_args(
    mut args: Vec<String>,
    id: &str,
    bundle: &Path,
    opts: &CreateOpts,
) -> Vec<String> {
    args.extend(["--bundle".into(), bundle.display().to_string()]);
    args.extend(["--pid-file".into(), opts.pid_file.display().to_string()]);
    if let Some(sock) = opts.console_socket {
        args.extend(["--console-socket".into(), sock.display().to_string()]);
    }
    if opts.no_pivot {
        args.push("--no-pivot".into());
    }
    if opts.no_new_keyring {
        args.push("--no-new-keyring".into());
    }
    args.push(id.into());
    args
}

/// The last `"level":"error"` message of a runc JSON log.
pub fn last_log_error(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v.get("level")?.as_str()? == "error").then(|| v.get("msg")?.as_str().map(String::from))?
    })
}

/// Reads a pid file runc wrote.
pub fn read_pid_file(path: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(path).context(format!("read {}", path.display()))?;
    text.trim().parse().map_err(|_| {
        Error::FailedPrecondition(format!("{}: bad pid {:?}", path.display(), text.trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_of_the_runc_log_is_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.json");
        std::fs::write(
            &log,
            concat!(
                "{\"level\":\"error\",\"msg\":\"old\",\"time\":\"t\"}\n",
                "{\"level\":\"warning\",\"msg\":\"w\",\"time\":\"t\"}\n",
                "{\"level\":\"error\",\"msg\":\"exec: \\\"nosuch\\\": executable file not found in $PATH\",\"time\":\"t\"}\n",
                "{\"level\":\"info\",\"msg\":\"i\",\"time\":\"t\"}\n"
            ),
        )
        .unwrap();
        assert_eq!(
            last_log_error(&log).as_deref(),
            Some("exec: \"nosuch\": executable file not found in $PATH")
        );
        assert_eq!(last_log_error(&dir.path().join("none")), None);
    }

    #[test]
    fn root_and_binary_follow_the_runc_options() {
        let bundle = Path::new("/b");
        let r = Runc::new(&RuncOptions::default(), "k8s.io", bundle);
        assert_eq!(r.binary, PathBuf::from("runc"));
        assert_eq!(r.root, PathBuf::from("/run/containerd/runc/k8s.io"));
        let o = RuncOptions {
            binary_name: "crun".into(),
            root: "/r".into(),
            ..Default::default()
        };
        let r = Runc::new(&o, "default", bundle);
        assert_eq!(
            (r.binary, r.root),
            (PathBuf::from("crun"), PathBuf::from("/r/default"))
        );
    }
}
