//! Container lifecycle commands: create, start, run, stop, rm, inspect, update.

use std::path::Path;
use std::time::Duration;

use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::v1::image_service_client::ImageServiceClient;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::{
    AuthConfig, ContainerConfig, ContainerFilter, ContainerState, ContainerStateValue,
    ContainerStatus, ContainerStatusRequest, ContainerStatusResponse, CreateContainerRequest,
    ImageSpec, ImageStatusRequest, LinuxContainerResources, ListContainersRequest,
    PodSandboxConfig, PullImageRequest, RemoveContainerRequest, StartContainerRequest,
    StopContainerRequest, UpdateContainerResourcesRequest,
};

use crate::client::{call, call_unbounded};
use crate::cri_json;
use crate::output::Format;
use crate::times::ago;

type Client = RuntimeServiceClient<Channel>;
type Images = ImageServiceClient<Channel>;

/// When `create` and `run` pull the container's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pull {
    /// Only when the runtime does not have it (the default).
    IfMissing,
    /// Always (`--with-pull`): picks up a moved tag.
    Always,
    /// Never (`--no-pull`): the runtime's CreateContainer reports a missing image.
    Never,
}

pub struct PullOptions {
    pub policy: Pull,
    pub auth: Option<AuthConfig>,
}

async fn has_image(images: &Images, t: Duration, image: &str) -> anyhow::Result<bool> {
    let mut c = images.clone();
    let resp = call(
        &format!("image status {image}"),
        t,
        c.image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        }),
    )
    .await?;
    Ok(resp.image.is_some())
}

async fn ensure_image(
    images: &Images,
    t: Duration,
    config: &ContainerConfig,
    pod: &PodSandboxConfig,
    pull: &PullOptions,
) -> anyhow::Result<()> {
    let Some(spec) = config.image.clone() else {
        return Ok(());
    };
    let wanted = match pull.policy {
        Pull::Never => false,
        Pull::Always => true,
        Pull::IfMissing => !has_image(images, t, &spec.image).await?,
    };
    if !wanted {
        return Ok(());
    }
    eprintln!("Pulling container image: {}", spec.image);
    let mut c = images.clone();
    let image = spec.image.clone();
    call_unbounded(
        &format!("pull {image}"),
        c.pull_image(PullImageRequest {
            image: Some(spec),
            auth: pull.auth.clone(),
            sandbox_config: Some(pod.clone()),
        }),
    )
    .await?;
    Ok(())
}

/// CreateContainer in `pod_id`, pulling the image first as `pull` says; returns the id.
pub async fn create(
    client: &Client,
    images: &Images,
    t: Duration,
    pod_id: &str,
    config: ContainerConfig,
    pod: PodSandboxConfig,
    pull: &PullOptions,
) -> anyhow::Result<String> {
    ensure_image(images, t, &config, &pod, pull).await?;
    let mut c = client.clone();
    let resp = call_unbounded(
        "create container",
        c.create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(config),
            sandbox_config: Some(pod),
        }),
    )
    .await?;
    Ok(resp.container_id)
}

pub async fn start(client: &Client, id: &str) -> anyhow::Result<()> {
    let mut c = client.clone();
    call_unbounded(
        &format!("start container {id}"),
        c.start_container(StartContainerRequest {
            container_id: id.to_string(),
        }),
    )
    .await?;
    Ok(())
}

pub async fn status(
    client: &Client,
    t: Duration,
    id: &str,
    verbose: bool,
) -> anyhow::Result<ContainerStatusResponse> {
    let mut c = client.clone();
    call(
        &format!("status of container {id}"),
        t,
        c.container_status(ContainerStatusRequest {
            container_id: id.to_string(),
            verbose,
        }),
    )
    .await
}

/// The status itself, which a runtime must return.
pub async fn status_of(client: &Client, t: Duration, id: &str) -> anyhow::Result<ContainerStatus> {
    status(client, t, id, false)
        .await?
        .status
        .ok_or_else(|| anyhow::anyhow!("container {id}: the runtime returned no status"))
}

pub async fn stop(client: &Client, t: Duration, id: &str, grace: i64) -> anyhow::Result<()> {
    let mut c = client.clone();
    // The runtime may take the whole grace period, and then some to kill.
    let deadline = t + Duration::from_secs(u64::try_from(grace).unwrap_or(0));
    call(
        &format!("stop container {id}"),
        deadline,
        c.stop_container(StopContainerRequest {
            container_id: id.to_string(),
            timeout: grace,
        }),
    )
    .await?;
    Ok(())
}

/// Ids of the containers in `state`, or of all of them.
pub async fn ids(
    client: &Client,
    t: Duration,
    state: Option<ContainerState>,
) -> anyhow::Result<Vec<String>> {
    let mut c = client.clone();
    let resp = call(
        "list containers",
        t,
        c.list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                state: state.map(|s| ContainerStateValue { state: s as i32 }),
                ..Default::default()
            }),
        }),
    )
    .await?;
    Ok(resp.containers.into_iter().map(|c| c.id).collect())
}

/// `stop`: ids, or every running container with `all`.
pub async fn stop_many(
    client: &Client,
    t: Duration,
    given: &[String],
    all: bool,
    grace: i64,
) -> anyhow::Result<()> {
    let targets = if all {
        if !given.is_empty() {
            anyhow::bail!("give container ids or --all, not both");
        }
        let running = ids(client, t, Some(ContainerState::ContainerRunning)).await?;
        if running.is_empty() {
            println!("No running containers found.");
        }
        running
    } else if given.is_empty() {
        anyhow::bail!("name at least one container id, or use --all");
    } else {
        given.to_vec()
    };
    for id in targets {
        stop(client, t, &id, grace).await?;
        println!("{id}");
    }
    Ok(())
}

pub struct RemoveOptions {
    pub all: bool,
    pub force: bool,
    pub keep_logs: bool,
}

/// `rm`: ids, or every container with `all`; a running one is refused unless `force`.
pub async fn remove(
    client: &Client,
    t: Duration,
    given: &[String],
    o: RemoveOptions,
) -> anyhow::Result<()> {
    let targets = if o.all {
        let all = ids(client, t, None).await?;
        if all.is_empty() {
            eprintln!("No containers to remove");
        }
        all
    } else if given.is_empty() {
        anyhow::bail!("name at least one container id, or use --all");
    } else {
        given.to_vec()
    };
    let mut failed = Vec::new();
    for id in &targets {
        if let Err(e) = remove_one(client, t, id, &o).await {
            eprintln!("limpetctl: {e:#}");
            failed.push(id.clone());
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("could not remove container(s): {}", failed.join(", "));
    }
    Ok(())
}

async fn remove_one(
    client: &Client,
    t: Duration,
    id: &str,
    o: &RemoveOptions,
) -> anyhow::Result<()> {
    let s = status_of(client, t, id).await?;
    if s.state == ContainerState::ContainerRunning as i32 {
        if !o.force {
            anyhow::bail!("container {id} is running: stop it first, or use --force");
        }
        stop(client, t, id, 0).await?;
    }
    let mut c = client.clone();
    call(
        &format!("remove container {id}"),
        t,
        c.remove_container(RemoveContainerRequest {
            container_id: id.to_string(),
        }),
    )
    .await?;
    if !o.keep_logs && !s.log_path.is_empty() {
        remove_logs(Path::new(&s.log_path));
    }
    println!("{id}");
    Ok(())
}

/// The log file and its rotations (`<log>.*`), as crictl removes them.
fn remove_logs(log: &Path) {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let prefix = format!("{name}.");
    let mut files = vec![log.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(dir) {
        files.extend(
            rd.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(&prefix))
                })
                .map(|e| e.path()),
        );
    }
    for f in files {
        match std::fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("limpetctl: remove log {}: {e}", f.display()),
        }
    }
}

pub async fn inspect(
    client: &Client,
    t: Duration,
    ids: &[String],
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let mut docs = Vec::new();
    for id in ids {
        let resp = status(client, t, id, verbose).await?;
        let Some(s) = resp.status else {
            anyhow::bail!("container {id}: the runtime returned no status");
        };
        if format == Format::Table {
            print!("{}", status_table(&s));
            continue;
        }
        docs.push(cri_json::with_info(
            cri_json::container_status(&s),
            &resp.info,
        ));
    }
    if docs.is_empty() {
        return Ok(());
    }
    cri_json::print_statuses(docs, format)
}

pub fn state_word(state: i32) -> &'static str {
    match ContainerState::try_from(state) {
        Ok(ContainerState::ContainerCreated) => "Created",
        Ok(ContainerState::ContainerRunning) => "Running",
        Ok(ContainerState::ContainerExited) => "Exited",
        _ => "Unknown",
    }
}

fn status_table(s: &ContainerStatus) -> String {
    let mut out = format!("ID: {}\n", s.id);
    if let Some(m) = &s.metadata {
        out.push_str(&format!("Name: {}\n", m.name));
        if m.attempt != 0 {
            out.push_str(&format!("Attempt: {}\n", m.attempt));
        }
    }
    out.push_str(&format!("State: {}\n", state_word(s.state)));
    out.push_str(&format!("Created: {}\n", ago(s.created_at)));
    if s.state != ContainerState::ContainerCreated as i32 {
        out.push_str(&format!("Started: {}\n", ago(s.started_at)));
    }
    if s.state == ContainerState::ContainerExited as i32 {
        if s.finished_at > 0 {
            out.push_str(&format!("Finished: {}\n", ago(s.finished_at)));
        }
        out.push_str(&format!("Exit Code: {}\n", s.exit_code));
    }
    for (title, map) in [("Labels", &s.labels), ("Annotations", &s.annotations)] {
        if !map.is_empty() {
            let mut kv: Vec<_> = map.iter().collect();
            kv.sort();
            out.push_str(&format!("{title}:\n"));
            for (k, v) in kv {
                out.push_str(&format!("\t{k} -> {v}\n"));
            }
        }
    }
    out
}

/// What `update` changes; unset fields keep the container's current value.
#[derive(Debug, Default, Clone)]
pub struct Update {
    pub memory: Option<i64>,
    pub cpu_shares: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
}

impl Update {
    fn is_empty(&self) -> bool {
        self.memory.is_none()
            && self.cpu_shares.is_none()
            && self.cpu_quota.is_none()
            && self.cpu_period.is_none()
            && self.cpuset_cpus.is_none()
            && self.cpuset_mems.is_none()
    }

    /// The current resources with this update applied: a runtime that replaces the whole
    /// set must not lose what the user did not mention.
    pub fn apply(&self, current: Option<LinuxContainerResources>) -> LinuxContainerResources {
        let mut r = current.unwrap_or_default();
        if let Some(v) = self.memory {
            r.memory_limit_in_bytes = v;
        }
        if let Some(v) = self.cpu_shares {
            r.cpu_shares = v;
        }
        if let Some(v) = self.cpu_quota {
            r.cpu_quota = v;
        }
        if let Some(v) = self.cpu_period {
            r.cpu_period = v;
        }
        if let Some(v) = &self.cpuset_cpus {
            r.cpuset_cpus = v.clone();
        }
        if let Some(v) = &self.cpuset_mems {
            r.cpuset_mems = v.clone();
        }
        r
    }
}

pub async fn update(
    client: &Client,
    t: Duration,
    ids: &[String],
    u: &Update,
) -> anyhow::Result<()> {
    if u.is_empty() {
        anyhow::bail!(
            "nothing to update: give --memory, --cpu-shares, --cpu-quota, --cpu-period, --cpuset-cpus or --cpuset-mems"
        );
    }
    for id in ids {
        let current = status_of(client, t, id)
            .await?
            .resources
            .and_then(|r| r.linux);
        let mut c = client.clone();
        call(
            &format!("update container {id}"),
            t,
            c.update_container_resources(UpdateContainerResourcesRequest {
                container_id: id.clone(),
                linux: Some(u.apply(current)),
                ..Default::default()
            }),
        )
        .await?;
        println!("{id}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_keeps_what_is_not_mentioned() {
        let current = LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 100,
            ..Default::default()
        };
        let u = Update {
            memory: Some(200),
            ..Default::default()
        };
        let r = u.apply(Some(current));
        assert_eq!((r.cpu_shares, r.memory_limit_in_bytes), (512, 200));
        assert!(Update::default().is_empty());
    }
}
