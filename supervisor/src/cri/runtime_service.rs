//! The CRI RuntimeService: request fields in, calls to [`crate::runtime::Runtime`], answers
//! and `Status` codes out. Exec, Attach and PortForward answer with a URL of the streaming
//! server, which does the streaming.

use std::collections::HashMap;
use std::sync::Arc;

use limpet_protos::cri::v1::{self, runtime_service_server::RuntimeService};
use tonic::{Request, Response, Status};

use super::filters;
use super::observe;
use super::status::runtime_status;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::runtime::{status as cri, Runtime, RuntimeError};
use crate::streaming::tokens::Request as Pending;
use crate::streaming::StreamingServer;

pub struct RuntimeServiceImpl {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    runtime: Arc<Runtime>,
    streaming: Arc<StreamingServer>,
}

impl RuntimeServiceImpl {
    pub fn new(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        runtime: Arc<Runtime>,
        streaming: Arc<StreamingServer>,
    ) -> Self {
        RuntimeServiceImpl {
            config,
            metrics,
            runtime,
            streaming,
        }
    }

    /// The streaming URL for a request already checked.
    fn url(&self, request: Pending) -> crate::runtime::Result<String> {
        self.streaming
            .url(request)
            .map_err(|e| RuntimeError::Internal(e.to_string()))
    }

    async fn call<T>(
        &self,
        method: &'static str,
        f: impl std::future::Future<Output = crate::runtime::Result<T>>,
    ) -> Result<Response<T>, Status> {
        let path = format!("RuntimeService/{method}");
        let r = observe(&self.metrics, &path, async {
            f.await.map_err(|e| runtime_status(&e))
        })
        .await;
        crate::memory::trim();
        r
    }

    async fn unimplemented<T>(&self, method: &'static str) -> Result<Response<T>, Status> {
        let path = format!("RuntimeService/{method}");
        observe(&self.metrics, &path, async {
            Err(Status::unimplemented(format!(
                "{method} is not implemented by limpetd"
            )))
        })
        .await
    }
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> v1::RuntimeCondition {
    v1::RuntimeCondition {
        r#type: kind.into(),
        status,
        reason: reason.into(),
        message: message.into(),
    }
}

#[tonic::async_trait]
impl RuntimeService for RuntimeServiceImpl {
    async fn version(
        &self,
        _: Request<v1::VersionRequest>,
    ) -> Result<Response<v1::VersionResponse>, Status> {
        observe(&self.metrics, "RuntimeService/Version", async {
            Ok(v1::VersionResponse {
                version: "0.1.0".into(),
                runtime_name: "limpetd".into(),
                runtime_version: env!("CARGO_PKG_VERSION").into(),
                runtime_api_version: "v1".into(),
            })
        })
        .await
    }

    async fn status(
        &self,
        req: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        observe(&self.metrics, "RuntimeService/Status", async {
            let conditions = vec![
                condition("RuntimeReady", true, "", ""),
                match crate::network::load_network(&self.config.cni.conf_dir) {
                    Ok(_) => condition("NetworkReady", true, "", ""),
                    Err(e) => condition("NetworkReady", false, "NetworkPluginNotReady", &format!("cni config not loaded: {e}")),
                },
            ];
            let mut info = HashMap::new();
            if req.into_inner().verbose {
                let config = serde_json::to_string(&*self.config).unwrap_or_default();
                info.insert("config".to_string(), config);
                info.insert("limpetd".to_string(), serde_json::json!({"version": env!("CARGO_PKG_VERSION"), "pid": std::process::id()}).to_string());
            }
            let runtime_handlers = self
                .config
                .runtime
                .runtimes
                .keys()
                .chain(std::iter::once(&String::new()))
                .map(|name| v1::RuntimeHandler {
                    name: name.clone(),
                    features: Some(v1::RuntimeHandlerFeatures::default()),
                })
                .collect();
            Ok(v1::StatusResponse {
                status: Some(v1::RuntimeStatus { conditions }),
                info,
                runtime_handlers,
                ..Default::default()
            })
        })
        .await
    }

    type GetContainerEventsStream =
        futures::stream::BoxStream<'static, Result<v1::ContainerEventResponse, Status>>;

    async fn get_container_events(
        &self,
        _: Request<v1::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        use futures::StreamExt;
        let rx = self.runtime.events().subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(|e| async move { e.ok().map(Ok) })
            .boxed();
        observe(&self.metrics, "RuntimeService/GetContainerEvents", async {
            Ok(stream)
        })
        .await
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<v1::RunPodSandboxRequest>,
    ) -> Result<Response<v1::RunPodSandboxResponse>, Status> {
        let req = req.into_inner();
        let config = req.config.unwrap_or_default();
        self.call("RunPodSandbox", async {
            let id = self
                .runtime
                .run_pod_sandbox(config, &req.runtime_handler)
                .await?;
            Ok(v1::RunPodSandboxResponse { pod_sandbox_id: id })
        })
        .await
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<v1::StopPodSandboxRequest>,
    ) -> Result<Response<v1::StopPodSandboxResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        self.call("StopPodSandbox", async {
            self.runtime.stop_pod_sandbox(&id).await?;
            Ok(v1::StopPodSandboxResponse {})
        })
        .await
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<v1::RemovePodSandboxRequest>,
    ) -> Result<Response<v1::RemovePodSandboxResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        self.call("RemovePodSandbox", async {
            self.runtime.remove_pod_sandbox(&id).await?;
            Ok(v1::RemovePodSandboxResponse {})
        })
        .await
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<v1::PodSandboxStatusRequest>,
    ) -> Result<Response<v1::PodSandboxStatusResponse>, Status> {
        let req = req.into_inner();
        self.call("PodSandboxStatus", async {
            let sb = self.runtime.sandbox(&req.pod_sandbox_id)?;
            let containers_statuses = if req.verbose {
                let mut cs: Vec<_> = self
                    .runtime
                    .list_containers()
                    .into_iter()
                    .filter(|c| c.record.sandbox_id == sb.record.id)
                    .collect();
                cs.sort_by_key(|c| c.record.created);
                cs.iter().map(cri::container_status).collect()
            } else {
                Vec::new()
            };
            Ok(v1::PodSandboxStatusResponse {
                status: Some(cri::pod_sandbox_status(
                    &sb,
                    &self.config.runtime.default_runtime,
                )),
                info: if req.verbose {
                    cri::pod_sandbox_info(&sb)
                } else {
                    HashMap::new()
                },
                containers_statuses,
                timestamp: crate::store::now(),
            })
        })
        .await
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<v1::ListPodSandboxRequest>,
    ) -> Result<Response<v1::ListPodSandboxResponse>, Status> {
        let filter = req.into_inner().filter;
        self.call("ListPodSandbox", async {
            let mut items: Vec<_> = self
                .runtime
                .list_sandboxes()
                .iter()
                .filter(|s| filters::sandbox(filter.as_ref(), s))
                .map(|s| cri::pod_sandbox(s, &self.config.runtime.default_runtime))
                .collect();
            items.sort_by_key(|s| std::cmp::Reverse(s.created_at));
            Ok(v1::ListPodSandboxResponse { items })
        })
        .await
    }

    async fn create_container(
        &self,
        req: Request<v1::CreateContainerRequest>,
    ) -> Result<Response<v1::CreateContainerResponse>, Status> {
        let req = req.into_inner();
        self.call("CreateContainer", async {
            let config = req.config.unwrap_or_default();
            let id = self
                .runtime
                .create_container(&req.pod_sandbox_id, config)
                .await?;
            Ok(v1::CreateContainerResponse { container_id: id })
        })
        .await
    }

    async fn start_container(
        &self,
        req: Request<v1::StartContainerRequest>,
    ) -> Result<Response<v1::StartContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        self.call("StartContainer", async {
            self.runtime.start_container(&id).await?;
            Ok(v1::StartContainerResponse {})
        })
        .await
    }

    async fn stop_container(
        &self,
        req: Request<v1::StopContainerRequest>,
    ) -> Result<Response<v1::StopContainerResponse>, Status> {
        let req = req.into_inner();
        self.call("StopContainer", async {
            self.runtime
                .stop_container(&req.container_id, req.timeout)
                .await?;
            Ok(v1::StopContainerResponse {})
        })
        .await
    }

    async fn remove_container(
        &self,
        req: Request<v1::RemoveContainerRequest>,
    ) -> Result<Response<v1::RemoveContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        self.call("RemoveContainer", async {
            self.runtime.remove_container(&id).await?;
            Ok(v1::RemoveContainerResponse {})
        })
        .await
    }

    async fn list_containers(
        &self,
        req: Request<v1::ListContainersRequest>,
    ) -> Result<Response<v1::ListContainersResponse>, Status> {
        let filter = req.into_inner().filter;
        self.call("ListContainers", async {
            let mut containers: Vec<_> = self
                .runtime
                .list_containers()
                .iter()
                .filter(|c| filters::container(filter.as_ref(), c))
                .map(cri::container)
                .collect();
            containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
            Ok(v1::ListContainersResponse { containers })
        })
        .await
    }

    async fn container_status(
        &self,
        req: Request<v1::ContainerStatusRequest>,
    ) -> Result<Response<v1::ContainerStatusResponse>, Status> {
        let req = req.into_inner();
        self.call("ContainerStatus", async {
            let c = self.runtime.container(&req.container_id)?;
            Ok(v1::ContainerStatusResponse {
                status: Some(cri::container_status(&c)),
                info: if req.verbose {
                    cri::container_info(&c)
                } else {
                    HashMap::new()
                },
            })
        })
        .await
    }

    async fn update_container_resources(
        &self,
        req: Request<v1::UpdateContainerResourcesRequest>,
    ) -> Result<Response<v1::UpdateContainerResourcesResponse>, Status> {
        let req = req.into_inner();
        self.call("UpdateContainerResources", async {
            self.runtime
                .update_container_resources(&req.container_id, req.linux)
                .await?;
            Ok(v1::UpdateContainerResourcesResponse {})
        })
        .await
    }

    async fn reopen_container_log(
        &self,
        req: Request<v1::ReopenContainerLogRequest>,
    ) -> Result<Response<v1::ReopenContainerLogResponse>, Status> {
        let id = req.into_inner().container_id;
        self.call("ReopenContainerLog", async {
            self.runtime.reopen_container_log(&id).await?;
            Ok(v1::ReopenContainerLogResponse {})
        })
        .await
    }

    async fn exec_sync(
        &self,
        req: Request<v1::ExecSyncRequest>,
    ) -> Result<Response<v1::ExecSyncResponse>, Status> {
        let req = req.into_inner();
        self.call("ExecSync", async {
            let out = self
                .runtime
                .exec_sync(&req.container_id, req.cmd, req.timeout)
                .await?;
            Ok(v1::ExecSyncResponse {
                stdout: out.stdout,
                stderr: out.stderr,
                exit_code: out.exit_code,
            })
        })
        .await
    }

    async fn exec(
        &self,
        req: Request<v1::ExecRequest>,
    ) -> Result<Response<v1::ExecResponse>, Status> {
        let req = req.into_inner();
        self.call("Exec", async {
            if req.cmd.is_empty() {
                return Err(RuntimeError::InvalidArgument("cmd is empty".into()));
            }
            check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
            self.runtime.running_container(&req.container_id)?;
            let url = self.url(Pending::Exec(req))?;
            Ok(v1::ExecResponse { url })
        })
        .await
    }

    async fn attach(
        &self,
        req: Request<v1::AttachRequest>,
    ) -> Result<Response<v1::AttachResponse>, Status> {
        let req = req.into_inner();
        self.call("Attach", async {
            check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
            self.runtime.running_container(&req.container_id)?;
            let url = self.url(Pending::Attach(req))?;
            Ok(v1::AttachResponse { url })
        })
        .await
    }

    async fn port_forward(
        &self,
        req: Request<v1::PortForwardRequest>,
    ) -> Result<Response<v1::PortForwardResponse>, Status> {
        let req = req.into_inner();
        self.call("PortForward", async {
            if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
                return Err(RuntimeError::InvalidArgument(format!(
                    "port {p} is not a TCP port"
                )));
            }
            self.runtime.pod_dialer(&req.pod_sandbox_id)?;
            let url = self.url(Pending::PortForward(req))?;
            Ok(v1::PortForwardResponse { url })
        })
        .await
    }

    async fn container_stats(
        &self,
        req: Request<v1::ContainerStatsRequest>,
    ) -> Result<Response<v1::ContainerStatsResponse>, Status> {
        let id = req.into_inner().container_id;
        self.call("ContainerStats", async {
            let c = self.runtime.container(&id)?;
            Ok(v1::ContainerStatsResponse {
                stats: Some(self.runtime.container_stats(&c).await?),
            })
        })
        .await
    }

    async fn list_container_stats(
        &self,
        req: Request<v1::ListContainerStatsRequest>,
    ) -> Result<Response<v1::ListContainerStatsResponse>, Status> {
        let filter = req.into_inner().filter;
        self.call("ListContainerStats", async {
            let mut stats = Vec::new();
            for c in self.runtime.list_containers() {
                if !filters::container_stats(filter.as_ref(), &c) {
                    continue;
                }
                if let Ok(s) = self.runtime.container_stats(&c).await {
                    stats.push(s);
                }
            }
            Ok(v1::ListContainerStatsResponse { stats })
        })
        .await
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<v1::PodSandboxStatsRequest>,
    ) -> Result<Response<v1::PodSandboxStatsResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        self.call("PodSandboxStats", async {
            let sb = self.runtime.sandbox(&id)?;
            Ok(v1::PodSandboxStatsResponse {
                stats: Some(self.runtime.pod_sandbox_stats(&sb).await?),
            })
        })
        .await
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<v1::ListPodSandboxStatsRequest>,
    ) -> Result<Response<v1::ListPodSandboxStatsResponse>, Status> {
        let filter = req.into_inner().filter;
        self.call("ListPodSandboxStats", async {
            let mut stats = Vec::new();
            for sb in self.runtime.list_sandboxes() {
                if !filters::sandbox_stats(filter.as_ref(), &sb) {
                    continue;
                }
                if let Ok(s) = self.runtime.pod_sandbox_stats(&sb).await {
                    stats.push(s);
                }
            }
            Ok(v1::ListPodSandboxStatsResponse { stats })
        })
        .await
    }

    async fn update_runtime_config(
        &self,
        req: Request<v1::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<v1::UpdateRuntimeConfigResponse>, Status> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        self.call("UpdateRuntimeConfig", async {
            // The pod CIDR belongs to the CNI config, which limpetd does not write.
            tracing::debug!(pod_cidr = cidr, "UpdateRuntimeConfig");
            Ok(v1::UpdateRuntimeConfigResponse {})
        })
        .await
    }

    async fn checkpoint_container(
        &self,
        _: Request<v1::CheckpointContainerRequest>,
    ) -> Result<Response<v1::CheckpointContainerResponse>, Status> {
        self.unimplemented("CheckpointContainer").await
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<v1::ListMetricDescriptorsRequest>,
    ) -> Result<Response<v1::ListMetricDescriptorsResponse>, Status> {
        self.call("ListMetricDescriptors", async {
            Ok(v1::ListMetricDescriptorsResponse::default())
        })
        .await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<v1::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<v1::ListPodSandboxMetricsResponse>, Status> {
        self.call("ListPodSandboxMetrics", async {
            Ok(v1::ListPodSandboxMetricsResponse::default())
        })
        .await
    }

    async fn runtime_config(
        &self,
        _: Request<v1::RuntimeConfigRequest>,
    ) -> Result<Response<v1::RuntimeConfigResponse>, Status> {
        self.call("RuntimeConfig", async {
            let driver = if self.config.runtime.systemd_cgroup() {
                v1::CgroupDriver::Systemd
            } else {
                v1::CgroupDriver::Cgroupfs
            };
            Ok(v1::RuntimeConfigResponse {
                linux: Some(v1::LinuxRuntimeConfiguration {
                    cgroup_driver: driver as i32,
                }),
            })
        })
        .await
    }
}

/// kubelet's rules for the streams of an exec or attach.
fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> crate::runtime::Result<()> {
    if tty && stderr {
        return Err(RuntimeError::InvalidArgument(
            "tty and stderr cannot both be true".into(),
        ));
    }
    if !(stdin || stdout || stderr) {
        return Err(RuntimeError::InvalidArgument(
            "one of stdin, stdout, or stderr must be set".into(),
        ));
    }
    Ok(())
}
