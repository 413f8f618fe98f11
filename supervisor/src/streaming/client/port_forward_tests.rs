//! Port forwarding over WebSocket against a small in-test server speaking kubelet's framing.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use super::*;
use crate::streaming::client::test_util::{read_all, spdy_server, ws_server};

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("test timed out")
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut f = vec![channel];
    f.extend_from_slice(data);
    Message::binary(f)
}

#[test]
fn the_port_prefix_may_arrive_in_pieces() {
    let mut left = PORT_PREFIX;
    assert_eq!(strip_prefix(&mut left, Bytes::from_static(b"P")), "");
    assert_eq!(strip_prefix(&mut left, Bytes::from_static(b"\0abc")), "abc");
    assert_eq!(strip_prefix(&mut left, Bytes::from_static(b"def")), "def");
    assert_eq!(channel_of(0), 0);
    assert_eq!(channel_of(3), 6);
}

#[tokio::test]
async fn websocket_ports_get_their_channels_without_the_port_prefix() {
    let (url, server) = ws_server(
        &["v4.channel.k8s.io"],
        "/portforward/tok",
        |mut c| async move {
            assert_eq!(c.protocol, "v4.channel.k8s.io");
            assert_eq!(c.uri, "/portforward/tok?port=80&port=8081");
            let p80 = 80u16.to_le_bytes();
            let p8081 = 8081u16.to_le_bytes();
            c.ws.send(frame(0, &p80)).await.unwrap();
            c.ws.send(frame(1, &p80)).await.unwrap();
            // the prefix of the second port's data channel comes in two pieces
            c.ws.send(frame(2, &p8081[..1])).await.unwrap();
            c.ws.send(frame(2, &p8081[1..])).await.unwrap();
            c.ws.send(frame(3, &p8081)).await.unwrap();
            let data = c.ws.next().await.unwrap().unwrap().into_data();
            assert_eq!(&data[..], b"\0ping");
            c.ws.send(frame(0, b"PONG")).await.unwrap();
            c.ws.send(frame(3, b"connection refused")).await.unwrap();
            c.ws.close(None).await.unwrap();
            while c.ws.next().await.is_some() {}
        },
    )
    .await;
    let mut conns = within(websocket_port_forward(&url, &[80, 8081]))
        .await
        .unwrap();
    assert_eq!(conns.len(), 2);
    conns[0].write_all(b"ping").await.unwrap();
    let mut pong = Vec::new();
    within(conns[0].read_to_end(&mut pong)).await.unwrap();
    assert_eq!(pong, b"PONG");
    assert_eq!(conns[0].error(), None);
    let mut nothing = Vec::new();
    within(conns[1].read_to_end(&mut nothing)).await.unwrap();
    assert!(nothing.is_empty());
    assert_eq!(conns[1].error().as_deref(), Some("connection refused"));
    server.await.unwrap();
}

#[tokio::test]
async fn websocket_v5_half_close_reaches_the_server() {
    let (url, server) = ws_server(
        &["v4.channel.k8s.io", "v5.channel.k8s.io"],
        "/pf/t",
        |mut c| async move {
            assert_eq!(c.protocol, "v5.channel.k8s.io");
            c.ws.send(frame(0, &7u16.to_le_bytes())).await.unwrap();
            c.ws.send(frame(1, &7u16.to_le_bytes())).await.unwrap();
            let mut got = Vec::new();
            loop {
                let data = c.ws.next().await.unwrap().unwrap().into_data();
                if data[..] == [255, 0] {
                    break;
                }
                got.extend_from_slice(&data[1..]);
            }
            got.reverse();
            c.ws.send(frame(0, &got)).await.unwrap();
            c.ws.close(None).await.unwrap();
            while c.ws.next().await.is_some() {}
        },
    )
    .await;
    let mut conns = within(websocket_port_forward(&url, &[7])).await.unwrap();
    let mut conn = conns.pop().unwrap();
    conn.write_all(b"abc").await.unwrap();
    conn.shutdown().await.unwrap();
    let mut back = Vec::new();
    within(conn.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"cba");
    assert_eq!(conn.error(), None);
    server.await.unwrap();
}

#[tokio::test]
async fn dropping_every_connection_ends_the_websocket() {
    let (url, server) = ws_server(&["v4.channel.k8s.io"], "/pf/d", |mut c| async move {
        c.ws.send(frame(0, &9u16.to_le_bytes())).await.unwrap();
        c.ws.send(frame(1, &9u16.to_le_bytes())).await.unwrap();
        // the client goes away: the next read ends, one way or another
        loop {
            match within(c.ws.next()).await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    let conns = within(websocket_port_forward(&url, &[9])).await.unwrap();
    drop(conns);
    within(server).await.unwrap();
}

#[tokio::test]
async fn websocket_port_forward_needs_ports() {
    let err = websocket_port_forward("http://127.0.0.1:1/pf", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Url { .. }), "{err}");
}

#[tokio::test]
async fn spdy_connections_are_error_and_data_stream_pairs() {
    let (url, server) = spdy_server(
        "/portforward/s",
        "portforward.k8s.io",
        |session, mut incoming, head| async move {
            assert!(
                head.contains("x-stream-protocol-version: portforward.k8s.io\r\n"),
                "{head}"
            );
            for (request, port) in [("0", "80"), ("1", "81")] {
                let error = incoming.accept().await.unwrap();
                let data = incoming.accept().await.unwrap();
                for (s, t) in [(&error, "error"), (&data, "data")] {
                    assert_eq!(s.header("streamType"), Some(t));
                    assert_eq!(s.header("port"), Some(port));
                    assert_eq!(s.header("requestID"), Some(request));
                }
                let (mut error_in, error_out) = error.split();
                // the client half-closes the error stream at once
                assert!(read_all(&mut error_in).await.is_empty());
                let (mut data_in, data_out) = data.split();
                if port == "80" {
                    // echo until the client's half-close, then end kubelet's way: error first
                    let got = read_all(&mut data_in).await;
                    data_out
                        .write(got.to_ascii_uppercase().into())
                        .await
                        .unwrap();
                    error_out.close().await.unwrap();
                    data_out.close().await.unwrap();
                } else {
                    error_out.write("connection refused".into()).await.unwrap();
                    data_out.reset().await.unwrap();
                    error_out.reset().await.unwrap();
                }
            }
            session.close().await;
        },
    )
    .await;
    let pf = within(SpdyPortForward::connect(&url)).await.unwrap();
    let mut conn = within(pf.open(80)).await.unwrap();
    conn.write_all(b"ping").await.unwrap();
    conn.shutdown().await.unwrap();
    let mut back = Vec::new();
    within(conn.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"PING");
    assert_eq!(conn.error(), None);

    let mut refused = within(pf.open(81)).await.unwrap();
    let mut nothing = Vec::new();
    within(refused.read_to_end(&mut nothing)).await.unwrap();
    assert!(nothing.is_empty());
    assert_eq!(refused.error().as_deref(), Some("connection refused"));
    // the server ends the session: so does the forwarder
    within(pf.closed()).await;
    within(server).await.unwrap();
}

#[tokio::test]
async fn spdy_forwarding_needs_the_port_forward_protocol() {
    let (url, server) = spdy_server("/pf", "v4.channel.k8s.io", |session, _, _| async move {
        session.closed().await;
    })
    .await;
    let err = within(SpdyPortForward::connect(&url)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Negotiation {
                transport: Transport::Spdy,
                ..
            }
        ),
        "{err}"
    );
    within(server).await.unwrap();
}

#[tokio::test]
async fn dropping_a_spdy_connection_resets_its_data_stream() {
    let (url, server) = spdy_server(
        "/pf/r",
        "portforward.k8s.io",
        |session, mut incoming, _| async move {
            let _error = incoming.accept().await.unwrap();
            let data = incoming.accept().await.unwrap();
            let (mut data_in, _data_out) = data.split();
            // the client drops the connection without a word: the stream ends (RST)
            assert!(within(read_all(&mut data_in)).await.is_empty());
            session.close().await;
        },
    )
    .await;
    let pf = within(SpdyPortForward::connect(&url)).await.unwrap();
    let conn = within(pf.open(5)).await.unwrap();
    drop(conn);
    within(server).await.unwrap();
}
