//! Containers: CreateContainer, StartContainer, StopContainer, RemoveContainer and
//! UpdateContainerResources. The rootfs is a snapshot mounted in the bundle; the pod's shim
//! runs the task and writes its output to the CRI log itself.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use limpet_protos::cri::v1::{ContainerConfig, LinuxContainerResources, NamespaceMode};
use prost::Message;

use super::error::{io_err, Result, RuntimeError};
use super::ids::{check_name, new_id};
use super::records::{Container, ContainerRecord, ContainerState, Sandbox, SandboxState};
use super::shim_pool::TaskStdio;
use super::{crash_point, remove_dir, Runtime};
use crate::images::ImageInfo;
use crate::oci;

/// A log path relative to the pod's log directory, without `..`.
fn check_log_path(p: &str) -> Result<()> {
    let path = Path::new(p);
    if path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(RuntimeError::InvalidArgument(format!(
            "log_path {p:?} must be relative to the pod's log directory, without '..'"
        )));
    }
    Ok(())
}

impl Runtime {
    pub(super) fn image_info(&self, image: &str) -> Result<ImageInfo> {
        self.images
            .status(image)
            .map_err(|e| RuntimeError::Internal(format!("looking up image {image:?}: {e}")))?
            .ok_or_else(|| {
                RuntimeError::NotFound(format!("image {image:?} not found: pull it first"))
            })
    }

    /// Makes the writable layer `key` over the image and mounts it at `target`.
    pub(super) fn mount_rootfs(
        &self,
        key: &str,
        image: &ImageInfo,
        target: &Path,
        readonly: bool,
    ) -> Result<()> {
        let chain = image.chain_id.clone().ok_or_else(|| {
            RuntimeError::FailedPrecondition(format!("image {} has no layers", image.id))
        })?;
        let mounts = self
            .images
            .snapshots
            .prepare_rootfs(key, &chain, readonly)?;
        std::fs::create_dir_all(target).map_err(io_err(format!("create {}", target.display())))?;
        for m in &mounts {
            m.mount(target)
                .map_err(io_err(format!("mount rootfs at {}", target.display())))?;
        }
        Ok(())
    }

    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
    ) -> Result<String> {
        let sb = self.sandbox(sandbox_id)?;
        if sb.record.state != SandboxState::Ready {
            return Err(RuntimeError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                sb.record.id
            )));
        }
        let meta = config.metadata.clone().ok_or_else(|| {
            RuntimeError::InvalidArgument("container config has no metadata".into())
        })?;
        check_name("container", &meta.name).map_err(RuntimeError::InvalidArgument)?;
        let image_ref = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_ref.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "container config names no image".into(),
            ));
        }
        let log_path = if config.log_path.is_empty() || sb.config.log_directory.is_empty() {
            String::new()
        } else {
            check_log_path(&config.log_path)?;
            Path::new(&sb.config.log_directory)
                .join(&config.log_path)
                .to_string_lossy()
                .into_owned()
        };
        let image = self.image_info(&image_ref)?;

        let id = new_id();
        let c = Container {
            record: ContainerRecord {
                id: id.clone(),
                sandbox_id: sb.record.id.clone(),
                state: ContainerState::Creating,
                created: crate::store::now(),
                started: 0,
                finished: 0,
                exit_code: 0,
                pid: 0,
                oom_killed: false,
                reason: String::new(),
                message: String::new(),
                image_ref: image_ref.clone(),
                image_id: image.id.to_string(),
                image_name: image.repo_tags.first().cloned().unwrap_or(image_ref),
                log_path,
                stop_signal: image
                    .config
                    .config
                    .as_ref()
                    .and_then(|c| c.stop_signal.clone())
                    .unwrap_or_default(),
                uid: 0,
                gid: 0,
                groups: Vec::new(),
                username: String::new(),
                resources: None,
            },
            config,
        };
        self.store
            .add_container(
                &id,
                &sb.record.id,
                &Container::name_key(&sb.record.id, &c.config),
                &c.config.encode_to_vec(),
                &c.record,
            )
            .map_err(super::error::name_taken)?;
        self.tables().containers.insert(id.clone(), c.clone());
        crash_point!("container-recorded");

        let _guard = self.lock(&id).await;
        let mut c = c;
        if let Err(e) = self.make_container(&sb, &mut c, &image).await {
            tracing::warn!(container = %id, error = %e, "CreateContainer failed; undoing it");
            if let Err(undo) = self.destroy_container(&c).await {
                tracing::warn!(container = %id, error = %undo, "undoing a failed CreateContainer");
            }
            return Err(e);
        }
        self.events.container_changed(self, &c);
        Ok(id)
    }

    async fn make_container(
        &self,
        sb: &Sandbox,
        c: &mut Container,
        image: &ImageInfo,
    ) -> Result<()> {
        let id = c.record.id.clone();
        let bundle = self.dirs.bundle(&id);
        let rootfs = bundle.join("rootfs");
        self.mount_rootfs(&id, image, &rootfs, false)?;
        crash_point!("container-rootfs-mounted");

        let spec = self.container_spec(sb, c, image, &rootfs)?;
        if let Some(p) = spec.process() {
            c.record.uid = p.user().uid();
            c.record.gid = p.user().gid();
            c.record.groups = p.user().additional_gids().clone().unwrap_or_default();
            c.record.username = p.user().username().clone().unwrap_or_default();
        }
        c.record.resources = c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
            .map(resources_json);
        super::sandbox::write_bundle(&bundle, &spec)?;

        if !c.record.log_path.is_empty() {
            if let Some(dir) = Path::new(&c.record.log_path).parent() {
                std::fs::create_dir_all(dir)
                    .map_err(io_err(format!("create log directory {}", dir.display())))?;
            }
        }
        let stdio = self.container_stdio(c)?;

        let handler = sb.record.runtime_handler.clone();
        // The pod's shim serves its containers; `start` (which would answer the same address
        // through the grouping annotation) runs only for a pod that has none.
        let address = if sb.record.shim_address.is_empty() {
            self.shims.start_shim(&handler, &id, &bundle).await?
        } else {
            sb.record.shim_address.clone()
        };
        crash_point!("container-shim-started");
        let pid = self
            .shims
            .create_task(
                &handler,
                &address,
                &id,
                &bundle,
                stdio,
                self.config.runtime.systemd_cgroup(),
            )
            .await?;
        c.record.pid = pid;
        c.record.state = ContainerState::Created;
        self.put_container(c)?;
        crash_point!("container-created");
        Ok(())
    }

    fn container_stdio(&self, c: &Container) -> Result<TaskStdio> {
        // Without a log file the output still goes through the shim (to /dev/null), so
        // that attach has it.
        let log = if c.record.log_path.is_empty() {
            "cri-log:///dev/null".to_string()
        } else {
            format!("cri-log://{}", c.record.log_path)
        };
        let stdin = if c.config.stdin {
            let path = self.dirs.bundle(&c.record.id).join("stdin");
            if !path.exists() {
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| io_err("create stdin fifo")(e.into()))?;
            }
            path.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        Ok(TaskStdio {
            stdin,
            stdout: log.clone(),
            stderr: if c.config.tty { String::new() } else { log },
            terminal: c.config.tty,
        })
    }

    fn container_spec(
        &self,
        sb: &Sandbox,
        c: &Container,
        image: &ImageInfo,
        rootfs: &Path,
    ) -> Result<oci_spec::runtime::Spec> {
        let ns_opts = c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        let proc_ns = |pid: u32, kind: &str| PathBuf::from(format!("/proc/{pid}/ns/{kind}"));
        // PID mode TARGET joins the namespace of another running container of the pod.
        let pid = if ns_opts.pid == NamespaceMode::Target as i32 {
            let target = self.container(&ns_opts.target_id).map_err(|_| {
                RuntimeError::NotFound(format!(
                    "target container {:?} of the pid namespace not found",
                    ns_opts.target_id
                ))
            })?;
            if target.record.sandbox_id != sb.record.id
                || target.record.state != ContainerState::Running
            {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "target container {} is not a running container of this pod",
                    target.record.id
                )));
            }
            Some(proc_ns(target.record.pid, "pid"))
        } else {
            (ns_opts.pid == NamespaceMode::Pod as i32).then(|| proc_ns(sb.record.pid, "pid"))
        };
        let pod_ns = super::sandbox::namespace_options(&sb.config);
        let namespaces = oci::SandboxNamespaces {
            network: sb.record.netns.clone().or_else(|| {
                (pod_ns.network != NamespaceMode::Node as i32)
                    .then(|| proc_ns(sb.record.pid, "net"))
            }),
            ipc: (pod_ns.ipc != NamespaceMode::Node as i32).then(|| proc_ns(sb.record.pid, "ipc")),
            uts: (pod_ns.network != NamespaceMode::Node as i32)
                .then(|| proc_ns(sb.record.pid, "uts")),
            pid,
        };
        let hostname = super::sandbox_files::hostname(&sb.config, sb.record.netns.is_none());
        let cgroup_parent = sb
            .config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        let cgroups_path = oci::cgroups_path(self.cgroup_driver(), &cgroup_parent, &c.record.id);
        let files = self.sandbox_files(sb);
        let image_config = image.config.config.clone().unwrap_or_default();
        let meta = c.config.metadata.clone().unwrap_or_default();
        let annotations = oci::annotations::container_annotations(
            &sb.record.id,
            &sb.config,
            &meta.name,
            &c.record.image_name,
        );
        let sandbox_privileged = sb
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged);
        Ok(oci::build_spec(&oci::SpecInput {
            container: &c.config,
            image: &image_config,
            rootfs,
            hostname: &hostname,
            cgroups_path: Some(&cgroups_path),
            namespaces: &namespaces,
            pod_namespaces: Some(&pod_ns),
            sandbox_files: &files,
            sandbox_privileged,
            annotations: &annotations,
            min_oom_score_adj: self.min_oom_score_adj,
            host: oci::HostFeatures::current(),
        })?)
    }

    /// StartContainer: only a created container can start.
    pub async fn start_container(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        let id = c.record.id.clone();
        let _guard = self.lock(&id).await;
        let c = self.container(&id)?;
        if c.record.state != ContainerState::Created {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} is {:?}, not created",
                c.record.state
            )));
        }
        let sb = self.sandbox(&c.record.sandbox_id)?;
        let pid = match self
            .shims
            .start_task(&sb.record.shim_address, &id, "")
            .await
        {
            Ok(pid) => pid,
            Err(e) => {
                // runc's error (bad command, missing binary) is what the client must see;
                // the container is marked exited with it, as containerd does.
                let msg = e.to_string();
                self.update_container(&id, |r| {
                    r.state = ContainerState::Exited;
                    r.exit_code = 128;
                    r.finished = crate::store::now();
                    r.reason = "StartError".into();
                    r.message = msg;
                })?;
                return Err(e);
            }
        };
        let started = crate::store::now();
        // The exit event may already have been handled: keep its state, and announce only a
        // start (the exit had its own event).
        let mut now_running = false;
        let c = self.update_container(&id, |r| {
            r.started = started;
            r.pid = pid;
            if r.state == ContainerState::Created {
                r.state = ContainerState::Running;
                now_running = true;
            }
        })?;
        crash_point!("container-started");
        if let (Some(c), true) = (c, now_running) {
            self.events.container_changed(self, &c);
        }
        Ok(())
    }

    /// StopContainer: the image's stop signal, then SIGKILL once `timeout` seconds passed.
    /// Stopping a stopped or missing container succeeds.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let Ok(c) = self.container(id) else {
            return Ok(());
        };
        let id = c.record.id.clone();
        let _guard = self.lock(&id).await;
        let Ok(c) = self.container(&id) else {
            return Ok(());
        };
        if c.record.state != ContainerState::Running {
            return Ok(());
        }
        let address = self.sandbox(&c.record.sandbox_id)?.record.shim_address;
        if timeout > 0 {
            let signal = super::signals::parse(&c.record.stop_signal).unwrap_or(libc::SIGTERM);
            self.shims
                .kill(&address, &id, "", signal as u32, false)
                .await?;
            let waited = tokio::time::timeout(
                Duration::from_secs(timeout as u64),
                self.shims.wait(&address, &id, ""),
            )
            .await;
            if let Ok(exit) = waited {
                let (code, at) = exit?;
                self.record_exit(&id, code, at)?;
                return Ok(());
            }
        }
        let (code, at) = self
            .shims
            .kill_and_wait(&address, &id, "", libc::SIGKILL as u32)
            .await?;
        self.record_exit(&id, code, at)?;
        Ok(())
    }

    /// Records an exit once; later reports of the same exit (the shim's event and the wait of
    /// StopContainer both report it) change nothing and send no second event.
    pub(super) fn record_exit(&self, id: &str, code: u32, at: i64) -> Result<()> {
        let mut exited_now = false;
        let c = self.update_container(id, |r| {
            if r.state != ContainerState::Exited {
                r.state = ContainerState::Exited;
                r.exit_code = code as i32;
                r.finished = at;
                exited_now = true;
            }
        })?;
        if let (Some(c), true) = (c, exited_now) {
            self.events.container_changed(self, &c);
        }
        Ok(())
    }

    /// RemoveContainer: stops it if running, then removes task, rootfs, bundle and record.
    /// Removing a missing container succeeds.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let Ok(c) = self.container(id) else {
            return Ok(());
        };
        let id = c.record.id.clone();
        self.stop_container(&id, 0).await?;
        let _guard = self.lock(&id).await;
        let Ok(c) = self.container(&id) else {
            return Ok(());
        };
        self.destroy_container(&c).await?;
        self.events.container_removed(self, &c);
        Ok(())
    }

    /// Removes everything of a container whatever state it got to, then its record.
    pub(super) async fn destroy_container(&self, c: &Container) -> Result<()> {
        let id = &c.record.id;
        let bundle = self.dirs.bundle(id);
        let sb = self.tables().sandboxes.get(&c.record.sandbox_id).cloned();
        let (handler, address) = sb
            .map(|s| (s.record.runtime_handler, s.record.shim_address))
            .unwrap_or_default();
        self.shims
            .destroy_task(&handler, &address, id, &bundle)
            .await?;
        crash_point!("container-task-deleted");
        super::unmount_rootfs(&bundle)?;
        self.images.snapshots.remove_rootfs(id)?;
        remove_dir(&bundle)?;
        self.store.delete_container(id)?;
        self.tables().containers.remove(id);
        self.forget_lock(id);
        Ok(())
    }

    /// UpdateContainerResources: the shim updates the running container's cgroup.
    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: Option<LinuxContainerResources>,
    ) -> Result<()> {
        let c = self.container(id)?;
        let id = c.record.id.clone();
        let _guard = self.lock(&id).await;
        let Some(res) = resources else {
            return Ok(());
        };
        let mut linux = oci::resources::container_resources(
            Some(&res),
            Vec::new(),
            oci::HostFeatures::current(),
        )?;
        // Update leaves the device rules as they are.
        linux.set_devices(None);
        if matches!(
            c.record.state,
            ContainerState::Running | ContainerState::Created
        ) {
            let address = self.sandbox(&c.record.sandbox_id)?.record.shim_address;
            self.shims.update(&address, &id, &linux).await?;
        }
        self.update_container(&id, |r| r.resources = Some(resources_json(&res)))?;
        Ok(())
    }
}

/// CRI resources kept as JSON so that ContainerStatus can give them back.
pub fn resources_json(r: &LinuxContainerResources) -> serde_json::Value {
    serde_json::json!({
        "cpu_period": r.cpu_period,
        "cpu_quota": r.cpu_quota,
        "cpu_shares": r.cpu_shares,
        "memory_limit_in_bytes": r.memory_limit_in_bytes,
        "oom_score_adj": r.oom_score_adj,
        "cpuset_cpus": r.cpuset_cpus,
        "cpuset_mems": r.cpuset_mems,
        "memory_swap_limit_in_bytes": r.memory_swap_limit_in_bytes,
        "unified": r.unified,
    })
}

pub fn resources_from_json(v: &serde_json::Value) -> LinuxContainerResources {
    let i = |k: &str| v.get(k).and_then(|x| x.as_i64()).unwrap_or(0);
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    LinuxContainerResources {
        cpu_period: i("cpu_period"),
        cpu_quota: i("cpu_quota"),
        cpu_shares: i("cpu_shares"),
        memory_limit_in_bytes: i("memory_limit_in_bytes"),
        oom_score_adj: i("oom_score_adj"),
        cpuset_cpus: s("cpuset_cpus"),
        cpuset_mems: s("cpuset_mems"),
        memory_swap_limit_in_bytes: i("memory_swap_limit_in_bytes"),
        unified: v
            .get("unified")
            .and_then(|u| serde_json::from_value(u.clone()).ok())
            .unwrap_or_default(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_stay_in_the_log_directory() {
        assert!(check_log_path("web/0.log").is_ok());
        for bad in ["/etc/passwd", "../x.log", "a/../../b", "./a"] {
            assert!(check_log_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resources_round_trip() {
        let r = LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 1 << 26,
            cpuset_cpus: "0".into(),
            ..Default::default()
        };
        assert_eq!(resources_from_json(&resources_json(&r)), r);
    }
}
