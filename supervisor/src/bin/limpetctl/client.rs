//! Connecting to a CRI endpoint.

use std::time::Duration;

use anyhow::Context;
use limpet_protos::cri::v1::image_service_client::ImageServiceClient;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::{connect, tonic::transport::Channel};

const MAX_MESSAGE: usize = 16 << 20;

async fn channel(endpoint: &str, timeout: Duration) -> anyhow::Result<Channel> {
    tokio::time::timeout(timeout, connect(endpoint))
        .await
        .map_err(|_| anyhow::anyhow!("connect to {endpoint}: no answer within {timeout:?}"))?
        .with_context(|| format!("connect to {endpoint} (is the runtime running? set --runtime-endpoint or CONTAINER_RUNTIME_ENDPOINT)"))
}

pub async fn runtime(
    endpoint: &str,
    timeout: Duration,
) -> anyhow::Result<RuntimeServiceClient<Channel>> {
    Ok(RuntimeServiceClient::new(channel(endpoint, timeout).await?)
        .max_decoding_message_size(MAX_MESSAGE))
}

pub async fn images(
    endpoint: &str,
    timeout: Duration,
) -> anyhow::Result<ImageServiceClient<Channel>> {
    Ok(ImageServiceClient::new(channel(endpoint, timeout).await?)
        .max_decoding_message_size(MAX_MESSAGE))
}

/// Runs a request with a deadline, naming the call in errors.
pub async fn call<T>(
    what: &str,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => anyhow::bail!("{what}: no answer within {timeout:?}"),
        Ok(Err(s)) => anyhow::bail!("{what}: {} ({:?})", s.message(), s.code()),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

/// Runs a request that may rightly take long (starting a pod, stopping with a grace period,
/// a command in a container): no deadline of ours; the runtime bounds it, Ctrl-C ends it.
pub async fn call_unbounded<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    match fut.await {
        Err(s) => anyhow::bail!("{what}: {} ({:?})", s.message(), s.code()),
        Ok(r) => Ok(r.into_inner()),
    }
}
