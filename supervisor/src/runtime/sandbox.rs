//! Pod sandboxes: RunPodSandbox, StopPodSandbox and RemovePodSandbox. A sandbox is a network
//! namespace attached by CNI, the pod's shared files, and a pause process (the shim's built-in
//! one, or a configured image) that holds the IPC, UTS and PID namespaces, run by the pod's shim.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use limpet_protos::cri::v1::{self, NamespaceMode, PodSandboxConfig};
use prost::Message;

use super::error::{io_err, Result, RuntimeError};
use super::ids::{check_name, new_id};
use super::records::{Sandbox, SandboxRecord, SandboxState};
use super::shim_pool::TaskStdio;
use super::{crash_point, remove_dir, sandbox_files, Runtime};
use crate::network::{self, netns, PodNetwork};
use crate::oci;

/// The namespace options of a pod (all POD when unset).
pub fn namespace_options(config: &PodSandboxConfig) -> v1::NamespaceOption {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

pub fn host_network(config: &PodSandboxConfig) -> bool {
    namespace_options(config).network == NamespaceMode::Node as i32
}

fn host_ipc(config: &PodSandboxConfig) -> bool {
    namespace_options(config).ipc == NamespaceMode::Node as i32
}

impl Runtime {
    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.dirs.sandboxes.join(id)
    }

    fn shm_dir(&self, id: &str) -> PathBuf {
        self.dirs.shm.join(id)
    }

    /// The files a pod's containers bind from its sandbox.
    pub(super) fn sandbox_files(&self, sb: &Sandbox) -> oci::SandboxFiles {
        let dir = self.sandbox_dir(&sb.record.id);
        oci::SandboxFiles {
            hostname: Some(dir.join("hostname")),
            hosts: Some(dir.join("hosts")),
            resolv: Some(dir.join("resolv.conf")),
            shm: Some(if host_ipc(&sb.config) {
                PathBuf::from("/dev/shm")
            } else {
                self.shm_dir(&sb.record.id)
            }),
        }
    }

    pub async fn run_pod_sandbox(
        self: &Arc<Self>,
        config: PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        let meta = config.metadata.clone().ok_or_else(|| {
            RuntimeError::InvalidArgument("pod sandbox config has no metadata".into())
        })?;
        check_name("pod sandbox", &meta.name).map_err(RuntimeError::InvalidArgument)?;
        check_name("pod sandbox namespace", &meta.namespace)
            .map_err(RuntimeError::InvalidArgument)?;
        if !config.log_directory.is_empty() && !Path::new(&config.log_directory).is_absolute() {
            return Err(RuntimeError::InvalidArgument(format!(
                "log_directory {:?} is not an absolute path",
                config.log_directory
            )));
        }
        let (handler, _) = self.handler(runtime_handler)?;
        let handler = handler.to_string();
        let host_net = host_network(&config);
        let network = if host_net {
            None
        } else {
            Some(
                network::load_network(&self.config.cni.conf_dir).map_err(|e| {
                    RuntimeError::FailedPrecondition(format!("pod network not ready: {e}"))
                })?,
            )
        };

        let id = new_id();
        let sb = Sandbox {
            record: SandboxRecord {
                id: id.clone(),
                state: SandboxState::Creating,
                created: crate::store::now(),
                runtime_handler: handler,
                netns: (!host_net).then(|| self.dirs.netns.join(&id)),
                cni_result: None,
                ips: Vec::new(),
                shim_address: String::new(),
                pid: 0,
                network_down: false,
            },
            config,
        };
        self.store
            .add_sandbox(
                &id,
                &Sandbox::name_key(&sb.config),
                &sb.config.encode_to_vec(),
                &sb.record,
            )
            .map_err(super::error::name_taken)?;
        self.tables().sandboxes.insert(id.clone(), sb.clone());
        crash_point!("sandbox-recorded");

        let _guard = self.lock(&id).await;
        let mut sb = sb;
        if let Err(e) = self.make_sandbox(&mut sb, network.as_ref()).await {
            tracing::warn!(sandbox = %id, error = %e, "RunPodSandbox failed; undoing it");
            if let Err(undo) = self.destroy_sandbox(&sb).await {
                tracing::warn!(sandbox = %id, error = %undo, "undoing a failed RunPodSandbox");
            }
            return Err(e);
        }
        self.events.sandbox_changed(self, &sb);
        Ok(id)
    }

    async fn make_sandbox(
        &self,
        sb: &mut Sandbox,
        network: Option<&network::NetworkConfigList>,
    ) -> Result<()> {
        let id = sb.record.id.clone();
        // The network is attached while the sandbox process starts: neither waits for the
        // other, and both are done before the pod is Ready.
        let attaching = match (sb.record.netns.clone(), network) {
            (Some(path), Some(net)) => {
                let dir = self.dirs.netns.clone();
                let nsid = id.clone();
                super::blocking(move || netns::create(&dir, &nsid)).await??;
                crash_point!("sandbox-netns-created");
                let pod = self.pod_network(sb, &path);
                let (cni, net) = (self.cni.clone(), net.clone());
                // `lo` and the pod network's interface are independent: bring both up at once.
                Some(tokio::task::spawn_blocking(move || {
                    std::thread::scope(|s| {
                        let lo = s.spawn(|| cni.loopback("ADD", &pod));
                        let added = cni.add(&net, &pod);
                        if let Ok(lo) = lo.join() {
                            lo?;
                        }
                        added
                    })
                }))
            }
            _ => None,
        };
        let started = self.start_sandbox_process(sb).await;
        // Even when the process failed, the plugins must be done before anything is undone.
        if let Some(attaching) = attaching {
            let added = attaching
                .await
                .map_err(|e| RuntimeError::Internal(format!("CNI ADD task: {e}")))?;
            started?;
            let added = added?;
            sb.record.ips = added.ips.iter().map(|ip| ip.ip().to_string()).collect();
            sb.record.cni_result = Some(added.raw);
            self.put_sandbox(sb)?;
            crash_point!("sandbox-network-added");
        } else {
            started?;
        }
        sb.record.state = SandboxState::Ready;
        self.put_sandbox(sb)?;
        crash_point!("sandbox-started");
        Ok(())
    }

    /// The pod's files, the sandbox spec and bundle, the pod's shim, and the sandbox process.
    async fn start_sandbox_process(&self, sb: &mut Sandbox) -> Result<()> {
        let id = sb.record.id.clone();
        let host_net = sb.record.netns.is_none();
        let files = sandbox_files::make(
            &self.sandbox_dir(&id),
            &self.shm_dir(&id),
            &sb.config,
            host_net,
            host_ipc(&sb.config),
        )
        .map_err(io_err(
            "making the pod's hostname, hosts, resolv.conf and shm",
        ))?;

        let bundle = self.dirs.bundle(&id);
        let spec = self.sandbox_spec(sb, &bundle, &files).await?;
        write_bundle(&bundle, &spec)?;

        let handler = sb.record.runtime_handler.clone();
        let address = self.shims.start_shim(&handler, &id, &bundle).await?;
        sb.record.shim_address = address.clone();
        self.put_sandbox(sb)?;
        crash_point!("sandbox-shim-started");

        self.shims
            .create_task(
                &handler,
                &address,
                &id,
                &bundle,
                TaskStdio::default(),
                self.config.runtime.systemd_cgroup(),
            )
            .await?;
        crash_point!("sandbox-task-created");
        sb.record.pid = self.shims.start_task(&address, &id, "").await?;
        Ok(())
    }

    pub(super) fn pod_network(&self, sb: &Sandbox, netns: &Path) -> PodNetwork {
        let meta = sb.config.metadata.clone().unwrap_or_default();
        let port_mappings = sb
            .config
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| network::PortMapping {
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: match v1::Protocol::try_from(p.protocol) {
                    Ok(v1::Protocol::Udp) => "udp",
                    Ok(v1::Protocol::Sctp) => "sctp",
                    _ => "tcp",
                }
                .into(),
                host_ip: p.host_ip.clone(),
            })
            .collect();
        PodNetwork {
            id: sb.record.id.clone(),
            netns: netns.to_path_buf(),
            ifname: String::new(),
            namespace: meta.namespace,
            name: meta.name,
            uid: meta.uid,
            port_mappings,
            bandwidth: super::bandwidth::from_annotations(&sb.config.annotations),
        }
    }

    async fn sandbox_spec(
        &self,
        sb: &Sandbox,
        bundle: &Path,
        files: &oci::SandboxFiles,
    ) -> Result<oci_spec::runtime::Spec> {
        let image_name = self.config.runtime.sandbox_image.clone();
        let (args, image, mounts) = if image_name.is_empty() {
            let pause = self.shims.pause_binary().to_path_buf();
            (
                vec!["/pause".to_string(), "pause".to_string()],
                None,
                pause_mounts(&pause),
            )
        } else {
            let info = self.image_info(&image_name)?;
            (Vec::new(), Some(info), Vec::new())
        };
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(io_err(format!("create {}", rootfs.display())))?;
        if let Some(info) = image.as_ref() {
            self.mount_rootfs(&sb.record.id, info, &rootfs, true)?;
        }
        let cgroup_parent = sb
            .config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        let cgroups_path = oci::cgroups_path(self.cgroup_driver(), &cgroup_parent, &sb.record.id);
        let annotations = oci::annotations::sandbox_annotations(&sb.record.id, &sb.config);
        let image_config = image.as_ref().and_then(|i| i.config.config.clone());
        let input = oci::SandboxSpecInput {
            config: &sb.config,
            image: image_config.as_ref(),
            args: &args,
            rootfs: image.as_ref().map(|_| rootfs.as_path()),
            netns: sb.record.netns.as_deref(),
            cgroups_path: Some(&cgroups_path),
            files,
            extra_mounts: &mounts,
            annotations: &annotations,
            min_oom_score_adj: self.min_oom_score_adj,
            host: oci::HostFeatures::current(),
        };
        Ok(oci::build_sandbox_spec(&input)?)
    }

    pub(super) fn cgroup_driver(&self) -> oci::CgroupDriver {
        if self.config.runtime.systemd_cgroup() {
            oci::CgroupDriver::Systemd
        } else {
            oci::CgroupDriver::Cgroupfs
        }
    }

    /// StopPodSandbox: stops every container and the sandbox process, detaches the network
    /// and unmounts the shm. Stopping a stopped or missing pod succeeds.
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let Ok(sb) = self.sandbox(id) else {
            return Ok(());
        };
        let id = sb.record.id.clone();
        for c in self.containers_of(&id) {
            self.stop_container(&c.record.id, 0).await?;
        }
        let _guard = self.lock(&id).await;
        let mut sb = self.sandbox(&id)?;
        if !sb.record.shim_address.is_empty() && sb.record.state == SandboxState::Ready {
            self.shims
                .kill_and_wait(&sb.record.shim_address, &id, "", libc::SIGKILL as u32)
                .await?;
        }
        crash_point!("sandbox-stop-killed");
        self.network_down(&mut sb).await?;
        sandbox_files::unmount_shm(&self.shm_dir(&id)).map_err(io_err("unmount pod shm"))?;
        if sb.record.state != SandboxState::NotReady {
            sb.record.state = SandboxState::NotReady;
            self.put_sandbox(&sb)?;
            self.events.sandbox_changed(self, &sb);
        }
        Ok(())
    }

    /// CNI DEL and removal of the network namespace, once.
    async fn network_down(&self, sb: &mut Sandbox) -> Result<()> {
        let Some(path) = sb.record.netns.clone() else {
            return Ok(());
        };
        if sb.record.network_down {
            return Ok(());
        }
        match network::load_network(&self.config.cni.conf_dir) {
            Ok(net) => {
                let pod = self.pod_network(sb, &path);
                let cni = self.cni.clone();
                let prev = sb.record.cni_result.clone();
                super::blocking(move || cni.del(&net, &pod, prev.as_ref())).await??;
            }
            Err(e) => {
                tracing::warn!(sandbox = %sb.record.id, error = %e, "no CNI config for DEL")
            }
        }
        crash_point!("sandbox-network-deleted");
        super::blocking(move || netns::remove(&path)).await??;
        sb.record.network_down = true;
        self.put_sandbox(sb)?;
        Ok(())
    }

    /// RemovePodSandbox: stops the pod if needed and removes it with its containers.
    /// Removing a missing pod succeeds.
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let Ok(sb) = self.sandbox(id) else {
            return Ok(());
        };
        let id = sb.record.id.clone();
        self.stop_pod_sandbox(&id).await?;
        for c in self.containers_of(&id) {
            self.remove_container(&c.record.id).await?;
        }
        let _guard = self.lock(&id).await;
        let sb = self.sandbox(&id)?;
        self.destroy_sandbox(&sb).await?;
        self.events.sandbox_removed(self, &sb);
        Ok(())
    }

    /// Removes everything of a sandbox whatever state it got to, then its record. Used by
    /// RemovePodSandbox, by a failed RunPodSandbox and by reconciliation.
    pub(super) async fn destroy_sandbox(&self, sb: &Sandbox) -> Result<()> {
        let id = &sb.record.id;
        let bundle = self.dirs.bundle(id);
        self.shims
            .destroy_task(
                &sb.record.runtime_handler,
                &sb.record.shim_address,
                id,
                &bundle,
            )
            .await?;
        if !sb.record.shim_address.is_empty() {
            self.shims.shutdown(&sb.record.shim_address, id).await;
        }
        let mut sb = sb.clone();
        self.network_down(&mut sb).await?;
        super::unmount_rootfs(&bundle)?;
        if self.store.rootfs(id)?.is_some() {
            self.images.snapshots.remove_rootfs(id)?;
        }
        sandbox_files::remove(&self.sandbox_dir(id), &self.shm_dir(id))
            .map_err(io_err("remove pod files"))?;
        remove_dir(&bundle)?;
        self.store.delete_sandbox(id)?;
        self.tables().sandboxes.remove(id);
        self.forget_lock(id);
        Ok(())
    }
}

/// The built-in pause: the shim binary at /pause, with the host's library directories
/// read-only so that its dynamic loader finds libc.
fn pause_mounts(binary: &Path) -> Vec<oci_spec::runtime::Mount> {
    let bind = |src: &Path, dst: &str| {
        oci_spec::runtime::MountBuilder::default()
            .destination(dst)
            .typ("bind")
            .source(src)
            .options(vec![
                "rbind".to_string(),
                "ro".into(),
                "nosuid".into(),
                "nodev".into(),
            ])
            .build()
            .ok()
    };
    let mut mounts: Vec<_> = bind(binary, "/pause").into_iter().collect();
    for dir in ["/usr", "/lib", "/lib64", "/lib32"] {
        let Ok(real) = std::fs::canonicalize(dir) else {
            continue;
        };
        if real.is_dir() {
            mounts.extend(bind(&real, dir));
        }
    }
    mounts
}

/// Writes `config.json` into a fresh bundle directory.
pub(super) fn write_bundle(bundle: &Path, spec: &oci_spec::runtime::Spec) -> Result<()> {
    std::fs::create_dir_all(bundle).map_err(io_err(format!("create {}", bundle.display())))?;
    let json = serde_json::to_vec_pretty(spec)
        .map_err(|e| RuntimeError::Internal(format!("encoding the OCI spec: {e}")))?;
    std::fs::write(bundle.join("config.json"), json)
        .map_err(io_err(format!("write {}/config.json", bundle.display())))
}
