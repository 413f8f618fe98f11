//! Prometheus metrics (OpenMetrics text on `GET /metrics`): pulls, bytes pulled, pull
//! duration, and gRPC requests and latencies by method and code.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pulls: Family<ResultLabels, Counter>,
    pull_bytes: Counter,
    pull_duration: Histogram,
    grpc_requests: Family<GrpcLabels, Counter>,
    grpc_duration: HistogramFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("limpetd");
        let pulls = Family::<ResultLabels, Counter>::default();
        let pull_bytes = Counter::default();
        // 50 ms .. ~27 min
        let pull_duration = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        let grpc_duration: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "image_pulls",
            "Image pulls by result (success, failure)",
            pulls.clone(),
        );
        registry.register(
            "image_pull_bytes",
            "Bytes transferred from registries",
            pull_bytes.clone(),
        );
        registry.register(
            "image_pull_duration_seconds",
            "Wall time of image pulls",
            pull_duration.clone(),
        );
        registry.register(
            "grpc_requests",
            "CRI gRPC requests by method and status code",
            grpc_requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "CRI gRPC request latency by method",
            grpc_duration.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            pulls,
            pull_bytes,
            pull_duration,
            grpc_requests,
            grpc_duration,
        }
    }

    pub fn pull_finished(&self, ok: bool, took: Duration) {
        let result = if ok { "success" } else { "failure" };
        self.pulls
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
        self.pull_duration.observe(took.as_secs_f64());
    }

    pub fn pull_bytes(&self, n: u64) {
        self.pull_bytes.inc_by(n);
    }

    pub fn grpc(&self, method: &str, code: tonic::Code, took: Duration) {
        let code = format!("{code:?}");
        self.grpc_requests
            .get_or_create(&GrpcLabels {
                method: method.into(),
                code,
            })
            .inc();
        self.grpc_duration
            .get_or_create(&MethodLabels {
                method: method.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_what_was_counted() {
        let m = Metrics::new();
        m.pull_finished(true, Duration::from_millis(300));
        m.pull_bytes(1234);
        m.grpc(
            "/runtime.v1.ImageService/PullImage",
            tonic::Code::Ok,
            Duration::from_millis(2),
        );
        let text = m.encode();
        assert!(
            text.contains("limpetd_image_pulls_total{result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("limpetd_image_pull_bytes_total 1234"),
            "{text}"
        );
        assert!(
            text.contains("limpetd_image_pull_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("method=\"/runtime.v1.ImageService/PullImage\",code=\"Ok\""),
            "{text}"
        );
        assert!(
            text.contains("limpetd_grpc_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
