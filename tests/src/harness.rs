//! One case's world: a private containerd, a namespace of its own holding the busybox image,
//! and the shim under test as the runtime of every container the case runs. A CRI case
//! ([`Harness::run_cri_case`], [`cri_cases!`](crate::cri_cases)) gets a containerd with its CRI
//! plugin instead, and the images in the CRI namespace.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cleanup;
use crate::containerd::{Containerd, CriSetup, CRI_NAMESPACE};
use crate::ctr::CtrOutput;
use crate::env::{require_root, shim_under_test, which, Flavor, ShimUnderTest};
use crate::error::{HarnessError, Result};
use crate::events::EventStream;
use crate::image::{
    busybox_image_tar, pause_image_tar, IMAGE_BASE_NAME, IMAGE_REF, PAUSE_IMAGE_BASE_NAME,
};

pub struct Harness {
    pub flavor: Flavor,
    pub shim: ShimUnderTest,
    namespace: String,
    // Declared last: dropped (torn down) after everything that talks to it.
    containerd: Containerd,
}

/// A row of `ctr tasks ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub id: String,
    pub pid: u32,
    pub status: String,
}

/// When set, skip reasons are also appended to this file, so that a runner which hides
/// the output of passing tests (nextest) can still list them at the end.
pub const SKIP_LOG_ENV: &str = "LIMPET_SKIP_LOG";

/// Runs one case against `flavor`, or prints `SKIP: reason` when a prerequisite is missing.
pub fn run_case(flavor: Flavor, name: &str, case: fn(&Harness)) {
    match Harness::new(flavor, name) {
        Ok(harness) => case(&harness),
        Err(HarnessError::Skip(reason)) => skip(&format!("{name} ({flavor}): {reason}")),
        Err(e) => panic!("{name} ({flavor}): harness setup failed: {e}"),
    }
}

/// Declares the given CRI case functions (`fn(&Harness)`) as tests against containerd 1.x
/// and 2.x, like [`shim_cases!`](crate::shim_cases).
#[macro_export]
macro_rules! cri_cases {
    ($($case:ident),+ $(,)?) => {
        mod containerd_1 {
            $(
                #[test]
                fn $case() {
                    $crate::Harness::run_cri_case(
                        $crate::Flavor::Containerd1, stringify!($case), super::$case);
                }
            )+
        }
        mod containerd_2 {
            $(
                #[test]
                fn $case() {
                    $crate::Harness::run_cri_case(
                        $crate::Flavor::Containerd2, stringify!($case), super::$case);
                }
            )+
        }
    };
}

/// Reports a skipped case (or part of one) on stderr and in the skip log.
pub fn skip(message: &str) {
    eprintln!("SKIP: {message}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        let line = format!("SKIP: {message}\n");
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    }
}

impl Harness {
    pub fn new(flavor: Flavor, case: &str) -> Result<Harness> {
        require_root()?;
        let bins = flavor.resolve()?;
        let shim = shim_under_test()?;
        let image = busybox_image_tar()?;
        let containerd = Containerd::start(bins, &shim)?;
        let namespace = namespace_for(flavor, case);
        let harness = Harness {
            flavor,
            shim,
            namespace,
            containerd,
        };
        harness.import(IMAGE_BASE_NAME, &image)?;
        Ok(harness)
    }

    /// Runs one CRI case against `flavor`, or prints `SKIP: reason`.
    pub fn run_cri_case(flavor: Flavor, name: &str, case: fn(&Harness)) {
        Harness::run_cri_case_with(flavor, name, &[], case)
    }

    /// [`Harness::run_cri_case`] with more runc options (key, TOML value) in the CRI runtime's
    /// options table, e.g. `("IoUid", "1000")`.
    pub fn run_cri_case_with(
        flavor: Flavor,
        name: &str,
        runc_options: &[(String, String)],
        case: fn(&Harness),
    ) {
        match Harness::new_cri(flavor, runc_options) {
            Ok(harness) => case(&harness),
            Err(HarnessError::Skip(reason)) => skip(&format!("{name} ({flavor}): {reason}")),
            Err(e) => panic!("{name} ({flavor}): harness setup failed: {e}"),
        }
    }

    /// A containerd with its CRI plugin (see [`Containerd::start_cri`]) and the busybox and
    /// sandbox images in the CRI namespace, where the plugin looks for them.
    pub fn new_cri(flavor: Flavor, runc_options: &[(String, String)]) -> Result<Harness> {
        require_root()?;
        if which("runc").is_none() {
            return Err(HarnessError::Skip(
                "runc is not installed (the CRI runtime's BinaryName)".to_string(),
            ));
        }
        let bins = flavor.resolve()?;
        let shim = shim_under_test()?;
        let image = busybox_image_tar()?;
        let pause = pause_image_tar()?;
        let containerd = Containerd::start_cri(bins, &shim, runc_options)?;
        let harness = Harness {
            flavor,
            shim,
            namespace: CRI_NAMESPACE.to_string(),
            containerd,
        };
        harness.import(IMAGE_BASE_NAME, &image)?;
        harness.import(PAUSE_IMAGE_BASE_NAME, &pause)?;
        Ok(harness)
    }

    /// `ctr images import --base-name BASE ARCHIVE` into this case's namespace.
    fn import(&self, base_name: &str, archive: &Path) -> Result<()> {
        let archive = archive.to_string_lossy().into_owned();
        let import = self.ctr(&["images", "import", "--base-name", base_name, &archive]);
        if !import.success() {
            return Err(HarnessError::Setup(format!(
                "image import failed:\n{}",
                import.describe()
            )));
        }
        Ok(())
    }

    /// The CRI settings of a case started by [`Harness::run_cri_case`].
    #[track_caller]
    pub fn cri(&self) -> &CriSetup {
        self.containerd
            .cri()
            .unwrap_or_else(|| panic!("not a CRI case: use Harness::run_cri_case"))
    }

    /// The CRI endpoint: containerd's own gRPC socket.
    pub fn cri_endpoint(&self) -> String {
        format!("unix://{}", self.containerd.address().display())
    }

    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn image(&self) -> &str {
        IMAGE_REF
    }

    pub fn runtime(&self) -> &str {
        &self.shim.runtime
    }

    /// `ctr` in this case's namespace.
    pub fn ctr(&self, args: &[&str]) -> CtrOutput {
        self.containerd.ctr(&self.namespace, args)
    }

    /// `ctr run --runtime <shim> FLAGS... IMAGE ID CMD...`.
    pub fn run(&self, flags: &[&str], id: &str, cmd: &[&str]) -> CtrOutput {
        self.ctr(&self.run_args(flags, id, cmd))
    }

    /// The argument list of [`Harness::run`], for callers that spawn ctr themselves.
    pub fn run_args<'a>(&'a self, flags: &[&'a str], id: &'a str, cmd: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["run", "--runtime", self.runtime()];
        args.extend_from_slice(flags);
        args.push(self.image());
        args.push(id);
        args.extend_from_slice(cmd);
        args
    }

    /// `ctr run -d`, asserting success; returns the task's row (RUNNING).
    #[track_caller]
    pub fn run_detached(&self, id: &str, cmd: &[&str]) -> TaskRow {
        self.run_detached_with(&[], id, cmd)
    }

    #[track_caller]
    pub fn run_detached_with(&self, flags: &[&str], id: &str, cmd: &[&str]) -> TaskRow {
        let mut all = vec!["-d"];
        all.extend_from_slice(flags);
        self.run(&all, id, cmd).ok();
        self.wait_status(id, "RUNNING", Duration::from_secs(10))
    }

    /// Rows of `ctr tasks ls`.
    #[track_caller]
    pub fn tasks(&self) -> Vec<TaskRow> {
        let out = self.ctr(&["tasks", "ls"]).ok();
        out.lines()
            .iter()
            .skip(1)
            .filter_map(|line| {
                let mut cols = line.split_whitespace();
                Some(TaskRow {
                    id: cols.next()?.to_string(),
                    pid: cols.next()?.parse().ok()?,
                    status: cols.next()?.to_string(),
                })
            })
            .collect()
    }

    #[track_caller]
    pub fn task(&self, id: &str) -> Option<TaskRow> {
        self.tasks().into_iter().find(|t| t.id == id)
    }

    /// Polls `ctr tasks ls` until `id` shows `status`; panics with what it saw otherwise.
    #[track_caller]
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> TaskRow {
        let deadline = Instant::now() + timeout;
        loop {
            let row = self.task(id);
            match row {
                Some(ref r) if r.status == status => return r.clone(),
                _ if Instant::now() > deadline => {
                    panic!("task {id} not {status} after {timeout:?}; last seen: {row:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// `ctr tasks delete ID`, returning the exit status ctr reports. ctr 1.6 and 2.x log
    /// `task ID exit with non-zero exit code N` for N != 0 and nothing for 0.
    #[track_caller]
    pub fn delete_task(&self, id: &str) -> i32 {
        let out = self.ctr(&["tasks", "delete", id]).ok();
        let marker = format!("task {id} exit with non-zero exit code ");
        match out.stderr.split(&marker).nth(1) {
            Some(rest) => {
                let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                digits
                    .parse()
                    .unwrap_or_else(|_| panic!("bad exit code in:\n{}", out.describe()))
            }
            None => 0,
        }
    }

    /// Deletes the task (if any) and the container, asserting both succeed.
    #[track_caller]
    pub fn remove(&self, id: &str) {
        if self.task(id).is_some() {
            self.ctr(&["tasks", "delete", "-f", id]).ok();
        }
        self.ctr(&["containers", "rm", id]).ok();
    }

    /// The bundle dir containerd made for `id`.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.containerd.task_dir().join(&self.namespace).join(id)
    }

    /// The ttrpc address of the shim serving `id`, from its bundle.
    pub fn shim_address(&self, id: &str) -> Option<String> {
        cleanup::bundle_shim_address(&self.bundle(id))
    }

    /// Shim processes serving this namespace.
    pub fn shim_pids(&self) -> Vec<i32> {
        cleanup::shim_pids(self.containerd.address(), Some(&self.namespace))
    }

    /// Mounts under the bundle of `id`.
    pub fn bundle_mounts(&self, id: &str) -> Vec<PathBuf> {
        cleanup::mounts_under(&self.bundle(id))
    }

    /// Cgroup dirs of container `id` that still exist.
    pub fn container_cgroups(&self, id: &str) -> Vec<PathBuf> {
        cleanup::container_cgroups(&self.namespace, id)
    }

    /// Subscribes to `ctr events` for this namespace.
    #[track_caller]
    pub fn events(&self) -> EventStream {
        EventStream::subscribe(&self.containerd, &self.namespace)
            .unwrap_or_else(|e| panic!("ctr events: {e}"))
    }

    /// Waits until none of this namespace's shims is running.
    pub fn wait_shims_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.shim_pids().is_empty() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `lt<major>-<case>-<pid>`: unique across parallel tests sharing the host's runc root and
/// cgroup tree; within containerd's identifier rules (alnum groups joined by - _ .).
fn namespace_for(flavor: Flavor, case: &str) -> String {
    let prefix = match flavor {
        Flavor::Containerd1 => "lt1",
        Flavor::Containerd2 => "lt2",
    };
    let cleaned: String = case
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let parts: Vec<&str> = cleaned.split('-').filter(|p| !p.is_empty()).collect();
    format!("{prefix}-{}-{}", parts.join("-"), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_valid_identifiers() {
        let ns = namespace_for(Flavor::Containerd2, "exec__reuse_id");
        assert!(ns.starts_with("lt2-exec-reuse-id-"), "{ns}");
        assert!(!ns.contains("--"));
    }
}
