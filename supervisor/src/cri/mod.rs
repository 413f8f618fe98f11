//! CRI v1 gRPC glue: request fields in, plain calls to [`crate::images`], answers and
//! `Status` codes out. Every call is counted and timed in the metrics.

pub mod deadline;
mod filters;
mod image_service;
mod runtime_service;
mod status;

pub use image_service::ImageServiceImpl;
pub use runtime_service::RuntimeServiceImpl;

use std::future::Future;
use std::time::Instant;

use tonic::{Response, Status};

use crate::metrics::Metrics;

/// Runs one request, recording its method, code and latency.
async fn observe<T>(
    metrics: &Metrics,
    method: &str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let start = Instant::now();
    let result = call.await;
    let code = result
        .as_ref()
        .err()
        .map(Status::code)
        .unwrap_or(tonic::Code::Ok);
    metrics.grpc(method, code, start.elapsed());
    match &result {
        Err(s) if code != tonic::Code::Unimplemented => {
            tracing::debug!(method, code = ?code, message = s.message(), "request failed")
        }
        _ => {}
    }
    result.map(Response::new)
}
