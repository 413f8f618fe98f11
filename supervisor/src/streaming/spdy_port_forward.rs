//! Port forwarding over SPDY (`portforward.k8s.io`): for each connection the client opens an
//! error stream and a data stream carrying the same `requestID` and `port` headers; the pair
//! is connected to the port inside the pod and relayed until both sides are done.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::dial::{pod_to_client, Dialer};
use super::spdy::{Incoming, Session, Stream, StreamWriter};

pub const PROTOCOL: &str = "portforward.k8s.io";

#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

pub async fn serve(
    session: Session,
    mut incoming: Incoming,
    dialer: Dialer,
    creation_timeout: Duration,
) {
    let mut pairs: HashMap<String, (tokio::time::Instant, Pair)> = HashMap::new();
    let mut sweep = tokio::time::interval(creation_timeout.min(Duration::from_secs(5)));
    loop {
        let stream = tokio::select! {
            s = incoming.accept() => match s {
                Some(s) => s,
                None => break,
            },
            _ = sweep.tick() => {
                // A pair whose other half never came: say so on its error stream.
                let now = tokio::time::Instant::now();
                let stale: Vec<String> = pairs
                    .iter()
                    .filter(|(_, (at, _))| now.duration_since(*at) > creation_timeout)
                    .map(|(k, _)| k.clone())
                    .collect();
                for id in stale {
                    if let Some((_, pair)) = pairs.remove(&id) {
                        if let Some(error) = pair.error {
                            let (_, w) = error.split();
                            let msg = format!("timed out waiting for the data stream of request {id}");
                            let _ = w.write(Bytes::from(msg)).await;
                            let _ = w.close().await;
                        }
                    }
                }
                continue;
            }
        };
        let Some(request_id) = stream.header("requestid").map(str::to_string) else {
            tracing::debug!(id = stream.id(), "port-forward stream without requestID");
            let (_, w) = stream.split();
            let _ = w.reset().await;
            continue;
        };
        let entry = pairs
            .entry(request_id.clone())
            .or_insert_with(|| (tokio::time::Instant::now(), Pair::default()));
        match stream.header("streamtype") {
            Some("error") => entry.1.error = Some(stream),
            Some("data") => entry.1.data = Some(stream),
            other => {
                tracing::debug!(stream_type = ?other, "unexpected port-forward stream");
                let (_, w) = stream.split();
                let _ = w.reset().await;
                continue;
            }
        }
        if entry.1.error.is_some() && entry.1.data.is_some() {
            if let Some((
                _,
                Pair {
                    error: Some(error),
                    data: Some(data),
                },
            )) = pairs.remove(&request_id)
            {
                tokio::spawn(forward(error, data, dialer.clone()));
            }
        }
    }
    session.close().await;
}

async fn forward(error: Stream, data: Stream, dialer: Dialer) {
    let port = data.header("port").and_then(|p| p.parse::<u16>().ok());
    let (_error_r, error_w) = error.split();
    let (mut from_client, to_client) = data.split();
    let fail = |w: StreamWriter, msg: String| async move {
        let _ = w.write(Bytes::from(msg)).await;
        let _ = w.close().await;
    };
    let Some(port) = port.filter(|p| *p > 0) else {
        let _ = to_client.close().await;
        return fail(error_w, "invalid or missing port header".into()).await;
    };
    let conn = match dialer.connect(port).await {
        Ok(c) => c,
        Err(e) => {
            let _ = to_client.close().await;
            let msg = format!("error forwarding port {port} to pod: {e}");
            return fail(error_w, msg).await;
        }
    };
    let (rd, mut wr) = conn.into_split();
    let upstream = async {
        let _ = tokio::io::copy(&mut from_client, &mut wr).await;
        let _ = wr.shutdown().await;
    };
    let downstream = async {
        pod_to_client(rd, |data| {
            let w = to_client.clone();
            async move { w.write(data).await.is_ok() }
        })
        .await;
        let _ = to_client.close().await;
    };
    tokio::join!(upstream, downstream);
    let _ = error_w.close().await;
}
