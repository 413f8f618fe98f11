//! Port forwarding over WebSocket, as kubelet serves it: the URL's `port` query names the
//! ports; port i gets data channel 2i and error channel 2i+1, each opened with the port
//! number (two bytes, little-endian). One connection per port per URL.

use std::collections::HashMap;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::dial::{pod_to_client, Dialer};
use super::ws_channel::ChannelProtocol;
use super::ws_finish::{close_normally, finish};

/// Subprotocols kubelet's port-forward WebSocket accepts ("" is binary framing).
pub const PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v4.base64.channel.k8s.io"];

/// The ports of `?port=80&port=8080,9090`; kubelet's rules: at least one, each 1..=65535.
pub fn ports(query: Option<&str>) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.unwrap_or("").split('&') {
        let Some(value) = pair.strip_prefix("port=") else {
            continue;
        };
        if value.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in value.split(',') {
            match p.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("unable to parse {p:?} as a port")),
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

pub async fn serve<S>(ws: WebSocketStream<S>, protocol: &str, ports: Vec<u16>, dialer: Dialer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(framing) = ChannelProtocol::parse(protocol) else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        close_normally(&mut sink).await;
        sink
    });

    let mut to_pod = HashMap::new();
    let mut forwards = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (data_ch, error_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        for ch in [data_ch, error_ch] {
            let _ = out_tx.send(framing.encode(ch, &port.to_le_bytes())).await;
        }
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        to_pod.insert(data_ch, tx);
        let (out, dialer) = (out_tx.clone(), dialer.clone());
        forwards.push(tokio::spawn(async move {
            forward(port, data_ch, error_ch, framing, rx, out, dialer).await
        }));
    }
    drop(out_tx);

    let reader = async {
        while let Some(Ok(message)) = source.next().await {
            if message.is_close() {
                break;
            }
            if let Ok(Some((ch, data))) = framing.decode(message) {
                if let Some(tx) = to_pod.get(&ch) {
                    if tx.send(data).await.is_err() {
                        to_pod.remove(&ch);
                    }
                }
            }
        }
    };
    let all_done = futures::future::join_all(forwards.iter_mut());
    tokio::select! {
        _ = reader => {}
        _ = all_done => {}
    }
    for f in &forwards {
        f.abort();
    }
    drop(to_pod);
    if let Ok(sink) = writer.await {
        let source = tokio::spawn(async move {
            // The client's answer to our Close ends its side.
            while let Some(Ok(m)) = source.next().await {
                if m.is_close() {
                    break;
                }
            }
            source
        });
        finish(sink, source).await;
    }
}

async fn forward(
    port: u16,
    data_ch: u8,
    error_ch: u8,
    framing: ChannelProtocol,
    mut from_client: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Message>,
    dialer: Dialer,
) {
    let conn = match dialer.connect(port).await {
        Ok(c) => c,
        Err(e) => {
            let text = format!("error forwarding port {port} to pod: {e}");
            let _ = out.send(framing.encode(error_ch, text.as_bytes())).await;
            return;
        }
    };
    let (rd, mut wr) = conn.into_split();
    let upstream = async {
        while let Some(data) = from_client.recv().await {
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let downstream = pod_to_client(rd, |data| {
        let out = out.clone();
        async move { out.send(framing.encode(data_ch, &data)).await.is_ok() }
    });
    // The pod closing its side ends the forward; the client's side alone does not (it
    // cannot half-close a channel).
    tokio::select! {
        _ = downstream => {}
        _ = async { upstream.await; std::future::pending::<()>().await } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(
            ports(Some("port=80&port=8080,9090")).unwrap(),
            vec![80, 8080, 9090]
        );
        assert!(ports(Some("port=")).is_err());
        assert!(ports(Some("port=0")).is_err());
        assert!(ports(Some("port=70000")).is_err());
        assert!(ports(None).is_err());
    }
}
