//! A limpetd with a pod network and the busybox image pulled from a local registry: what the
//! pod and container suites start from, with the CRI configs they build on.

use std::collections::HashMap;
use std::process::Command;

use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::{
    ContainerConfig, ContainerMetadata, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
};

use crate::error::{io_err, HarnessError, Result};
use crate::limpetd::{Limpetd, Options};
use crate::registry::Registry;

/// A running limpetd (own pod network) and registry, the busybox image pulled.
pub struct PodEnv {
    pub d: Limpetd,
    pub reg: Registry,
    /// The pulled image's reference.
    pub image: String,
    pub log_dir: std::path::PathBuf,
}

/// Pushes the full busybox image (every applet) to `reg` as `busybox:latest`.
pub fn push_busybox(reg: &Registry) -> Result<String> {
    let archive = crate::image::busybox_image_tar()?;
    let name = format!("{}/limpet/busybox:latest", reg.addr);
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{name}"))
        .output()
        .map_err(io_err("run skopeo"))?;
    if !out.status.success() {
        return Err(HarnessError::Setup(format!(
            "skopeo copy busybox: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(name)
}

impl PodEnv {
    pub fn start(opts: Options) -> Result<PodEnv> {
        crate::env::require_root()?;
        for p in ["bridge", "host-local", "loopback", "portmap", "bandwidth"] {
            if !std::path::Path::new("/usr/lib/cni").join(p).exists()
                && !std::path::Path::new("/opt/cni/bin").join(p).exists()
            {
                return Err(HarnessError::Skip(format!(
                    "CNI plugin {p} is not installed (containernetworking-plugins)"
                )));
            }
        }
        crate::registry::require_tools()?;
        let reg = Registry::start(None)?;
        let image = push_busybox(&reg)?;
        let d = Limpetd::start(Options {
            pod_network: true,
            ..opts
        })?;
        let out = d.ctl(&["pull", &image]);
        if !out.status.success() {
            return Err(HarnessError::Setup(format!(
                "pull {image}: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let log_dir = d.dir().join("logs");
        Ok(PodEnv {
            d,
            reg,
            image,
            log_dir,
        })
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        self.d.runtime().await
    }

    /// A pod on the pod network, named `name`, logging under the env's log directory.
    pub fn pod(&self, name: &str) -> PodSandboxConfig {
        pod_config(name, &self.log_dir.join(name).display().to_string(), false)
    }

    /// A container of the busybox image running `args` (`sh -c`).
    pub fn container(&self, name: &str, script: &str) -> ContainerConfig {
        container_config(name, &self.image, script)
    }
}

pub fn pod_config(name: &str, log_dir: &str, host_network: bool) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "limpet-test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.into(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/limpet-test".into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: if host_network {
                        NamespaceMode::Node.into()
                    } else {
                        NamespaceMode::Pod.into()
                    },
                    pid: NamespaceMode::Container.into(),
                    ipc: NamespaceMode::Pod.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn container_config(name: &str, image: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.log"),
        labels: HashMap::from([("container".to_string(), name.to_string())]),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext::default()),
            ..Default::default()
        }),
        ..Default::default()
    }
}
