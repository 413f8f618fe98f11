//! The CRI RuntimeService: `Version` and `Status` now; pods and containers answer
//! `Unimplemented` until the runtime lands.

use std::collections::HashMap;
use std::sync::Arc;

use limpet_protos::cri::v1::{self, runtime_service_server::RuntimeService};
use tonic::{Request, Response, Status};

use super::observe;
use crate::config::Config;
use crate::metrics::Metrics;

pub struct RuntimeServiceImpl {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
}

impl RuntimeServiceImpl {
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> Self {
        RuntimeServiceImpl { config, metrics }
    }

    async fn unimplemented<T>(&self, method: &'static str) -> Result<Response<T>, Status> {
        let path = format!("RuntimeService/{method}");
        observe(&self.metrics, &path, async {
            Err(Status::unimplemented(format!(
                "{method}: limpetd serves images only so far; pods and containers are not implemented yet"
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
                condition("NetworkReady", false, "NetworkPluginNotReady", "limpetd has no pod network yet"),
            ];
            let mut info = HashMap::new();
            if req.into_inner().verbose {
                let config = serde_json::to_string(&*self.config).unwrap_or_default();
                info.insert("config".to_string(), config);
                info.insert("limpetd".to_string(), serde_json::json!({"version": env!("CARGO_PKG_VERSION"), "pid": std::process::id()}).to_string());
            }
            Ok(v1::StatusResponse {
                status: Some(v1::RuntimeStatus { conditions }),
                info,
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
        self.unimplemented("GetContainerEvents").await
    }

    async fn run_pod_sandbox(
        &self,
        _: Request<v1::RunPodSandboxRequest>,
    ) -> Result<Response<v1::RunPodSandboxResponse>, Status> {
        self.unimplemented("RunPodSandbox").await
    }

    async fn stop_pod_sandbox(
        &self,
        _: Request<v1::StopPodSandboxRequest>,
    ) -> Result<Response<v1::StopPodSandboxResponse>, Status> {
        self.unimplemented("StopPodSandbox").await
    }

    async fn remove_pod_sandbox(
        &self,
        _: Request<v1::RemovePodSandboxRequest>,
    ) -> Result<Response<v1::RemovePodSandboxResponse>, Status> {
        self.unimplemented("RemovePodSandbox").await
    }

    async fn pod_sandbox_status(
        &self,
        _: Request<v1::PodSandboxStatusRequest>,
    ) -> Result<Response<v1::PodSandboxStatusResponse>, Status> {
        self.unimplemented("PodSandboxStatus").await
    }

    async fn list_pod_sandbox(
        &self,
        _: Request<v1::ListPodSandboxRequest>,
    ) -> Result<Response<v1::ListPodSandboxResponse>, Status> {
        self.unimplemented("ListPodSandbox").await
    }

    async fn create_container(
        &self,
        _: Request<v1::CreateContainerRequest>,
    ) -> Result<Response<v1::CreateContainerResponse>, Status> {
        self.unimplemented("CreateContainer").await
    }

    async fn start_container(
        &self,
        _: Request<v1::StartContainerRequest>,
    ) -> Result<Response<v1::StartContainerResponse>, Status> {
        self.unimplemented("StartContainer").await
    }

    async fn stop_container(
        &self,
        _: Request<v1::StopContainerRequest>,
    ) -> Result<Response<v1::StopContainerResponse>, Status> {
        self.unimplemented("StopContainer").await
    }

    async fn remove_container(
        &self,
        _: Request<v1::RemoveContainerRequest>,
    ) -> Result<Response<v1::RemoveContainerResponse>, Status> {
        self.unimplemented("RemoveContainer").await
    }

    async fn list_containers(
        &self,
        _: Request<v1::ListContainersRequest>,
    ) -> Result<Response<v1::ListContainersResponse>, Status> {
        self.unimplemented("ListContainers").await
    }

    async fn container_status(
        &self,
        _: Request<v1::ContainerStatusRequest>,
    ) -> Result<Response<v1::ContainerStatusResponse>, Status> {
        self.unimplemented("ContainerStatus").await
    }

    async fn update_container_resources(
        &self,
        _: Request<v1::UpdateContainerResourcesRequest>,
    ) -> Result<Response<v1::UpdateContainerResourcesResponse>, Status> {
        self.unimplemented("UpdateContainerResources").await
    }

    async fn reopen_container_log(
        &self,
        _: Request<v1::ReopenContainerLogRequest>,
    ) -> Result<Response<v1::ReopenContainerLogResponse>, Status> {
        self.unimplemented("ReopenContainerLog").await
    }

    async fn exec_sync(
        &self,
        _: Request<v1::ExecSyncRequest>,
    ) -> Result<Response<v1::ExecSyncResponse>, Status> {
        self.unimplemented("ExecSync").await
    }

    async fn exec(
        &self,
        _: Request<v1::ExecRequest>,
    ) -> Result<Response<v1::ExecResponse>, Status> {
        self.unimplemented("Exec").await
    }

    async fn attach(
        &self,
        _: Request<v1::AttachRequest>,
    ) -> Result<Response<v1::AttachResponse>, Status> {
        self.unimplemented("Attach").await
    }

    async fn port_forward(
        &self,
        _: Request<v1::PortForwardRequest>,
    ) -> Result<Response<v1::PortForwardResponse>, Status> {
        self.unimplemented("PortForward").await
    }

    async fn container_stats(
        &self,
        _: Request<v1::ContainerStatsRequest>,
    ) -> Result<Response<v1::ContainerStatsResponse>, Status> {
        self.unimplemented("ContainerStats").await
    }

    async fn list_container_stats(
        &self,
        _: Request<v1::ListContainerStatsRequest>,
    ) -> Result<Response<v1::ListContainerStatsResponse>, Status> {
        self.unimplemented("ListContainerStats").await
    }

    async fn pod_sandbox_stats(
        &self,
        _: Request<v1::PodSandboxStatsRequest>,
    ) -> Result<Response<v1::PodSandboxStatsResponse>, Status> {
        self.unimplemented("PodSandboxStats").await
    }

    async fn list_pod_sandbox_stats(
        &self,
        _: Request<v1::ListPodSandboxStatsRequest>,
    ) -> Result<Response<v1::ListPodSandboxStatsResponse>, Status> {
        self.unimplemented("ListPodSandboxStats").await
    }

    async fn update_runtime_config(
        &self,
        _: Request<v1::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<v1::UpdateRuntimeConfigResponse>, Status> {
        self.unimplemented("UpdateRuntimeConfig").await
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
        self.unimplemented("ListMetricDescriptors").await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<v1::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<v1::ListPodSandboxMetricsResponse>, Status> {
        self.unimplemented("ListPodSandboxMetrics").await
    }

    async fn runtime_config(
        &self,
        _: Request<v1::RuntimeConfigRequest>,
    ) -> Result<Response<v1::RuntimeConfigResponse>, Status> {
        self.unimplemented("RuntimeConfig").await
    }
}
