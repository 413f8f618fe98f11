//! The exec/attach client against small in-test servers speaking the channel protocol.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::*;
use crate::streaming::client::test_util::{
    http_server, read_all, spdy_server, ws_server, SharedBuf,
};
use crate::streaming::spdy::Incoming;

const ALL_WS: &[&str] = &[
    "v4.channel.k8s.io",
    "v5.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
const EXIT_3: &str = r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;

fn io_with(stdin: Option<&'static [u8]>, tty: bool) -> (CommandIo, SharedBuf, SharedBuf) {
    let (out, err) = (SharedBuf::default(), SharedBuf::default());
    let io = CommandIo {
        stdin: stdin.map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
        stdout: Some(Box::new(out.clone())),
        stderr: (!tty).then(|| Box::new(err.clone()) as Box<dyn AsyncWrite + Send + Unpin>),
        tty,
        resize: None,
    };
    (io, out, err)
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("test timed out")
}

#[tokio::test]
async fn websocket_v5_streams_stdin_until_closed_and_returns_the_exit_code() {
    let (url, server) = ws_server(ALL_WS, "/exec/tok", |mut c| async move {
        assert_eq!(c.protocol, "v5.channel.k8s.io");
        assert_eq!(c.uri, "/exec/tok");
        // kubelet's "ready" write: a channel byte alone
        c.ws.send(Message::binary(vec![1u8])).await.unwrap();
        let mut stdin = Vec::new();
        loop {
            let data = c.ws.next().await.unwrap().unwrap().into_data();
            if data[..] == [255, 0] {
                break;
            }
            assert_eq!(data[0], 0, "stdin rides channel 0");
            stdin.extend_from_slice(&data[1..]);
        }
        let mut out = vec![1u8];
        out.extend_from_slice(b"out:");
        out.extend_from_slice(&stdin);
        c.ws.send(Message::binary(out)).await.unwrap();
        c.ws.send(Message::binary(b"\x02err".to_vec()))
            .await
            .unwrap();
        let mut status = vec![3u8];
        status.extend_from_slice(EXIT_3.as_bytes());
        c.ws.send(Message::binary(status)).await.unwrap();
        c.ws.close(None).await.unwrap();
        while c.ws.next().await.is_some() {}
    })
    .await;
    let (io, out, err) = io_with(Some(b"hello"), false);
    let exit = within(remote_command(&url, Transport::WebSocket, None, io))
        .await
        .unwrap();
    assert_eq!(exit, Exit::Code(3));
    assert_eq!(out.text(), "out:hello");
    assert_eq!(err.text(), "err");
    server.await.unwrap();
}

#[tokio::test]
async fn websocket_base64_frames_and_plain_error_text() {
    let (url, server) = ws_server(ALL_WS, "/exec/b64", |mut c| async move {
        assert_eq!(c.protocol, "base64.channel.k8s.io");
        let msg = c.ws.next().await.unwrap().unwrap();
        assert_eq!(
            msg,
            Message::text("0aGk="),
            "stdin \"hi\", base64 on channel '0'"
        );
        c.ws.send(Message::text("1aGk=")).await.unwrap();
        c.ws.send(Message::text("3Ym9vbQ==")).await.unwrap();
        c.ws.close(None).await.unwrap();
        while c.ws.next().await.is_some() {}
    })
    .await;
    let (io, out, _) = io_with(Some(b"hi"), false);
    let exit = within(remote_command(
        &url,
        Transport::WebSocket,
        Some(&["base64.channel.k8s.io"]),
        io,
    ))
    .await
    .unwrap();
    assert_eq!(exit, Exit::Error("boom".into()));
    assert_eq!(out.text(), "hi");
    server.await.unwrap();
}

#[tokio::test]
async fn websocket_tty_sends_resize_events() {
    let (url, server) = ws_server(ALL_WS, "/attach/t", |mut c| async move {
        assert_eq!(c.protocol, "v4.channel.k8s.io");
        for want in [
            r#"{"Width":80,"Height":24}"#,
            r#"{"Width":120,"Height":40}"#,
        ] {
            let data = c.ws.next().await.unwrap().unwrap().into_data();
            assert_eq!(data[0], 4, "resize rides channel 4");
            assert_eq!(std::str::from_utf8(&data[1..]).unwrap(), want);
        }
        c.ws.send(Message::binary(b"\x01$ ".to_vec()))
            .await
            .unwrap();
        let mut ok = vec![3u8];
        ok.extend_from_slice(br#"{"metadata":{},"status":"Success"}"#);
        c.ws.send(Message::binary(ok)).await.unwrap();
        c.ws.close(None).await.unwrap();
        while c.ws.next().await.is_some() {}
    })
    .await;
    let (mut io, out, _) = io_with(None, true);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(TermSize {
        width: 80,
        height: 24,
    })
    .await
    .unwrap();
    tx.send(TermSize {
        width: 120,
        height: 40,
    })
    .await
    .unwrap();
    io.resize = Some(rx);
    let exit = within(remote_command(
        &url,
        Transport::WebSocket,
        Some(&["v4.channel.k8s.io"]),
        io,
    ))
    .await
    .unwrap();
    drop(tx);
    assert_eq!(exit, Exit::Code(0));
    assert_eq!(out.text(), "$ ");
    server.await.unwrap();
}

#[tokio::test]
async fn websocket_refusal_is_reported_as_such() {
    let (url, server) = ws_server(&["v9.channel.k8s.io"], "/exec/x", |_| async {}).await;
    let (io, _, _) = io_with(None, false);
    let err = within(remote_command(&url, Transport::WebSocket, None, io))
        .await
        .unwrap_err();
    assert!(err.is_upgrade_refused(), "{err}");
    match err {
        ClientError::UpgradeRefused {
            transport, status, ..
        } => assert_eq!((transport, status), (Transport::WebSocket, 403)),
        e => panic!("{e}"),
    }
    server.await.unwrap();
}

#[tokio::test]
async fn websocket_without_a_chosen_protocol_is_a_negotiation_failure() {
    let (url, server) = ws_server(&[], "/exec/x", |_| async {}).await;
    let (io, _, _) = io_with(None, false);
    let err = within(remote_command(&url, Transport::WebSocket, None, io))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Negotiation {
                transport: Transport::WebSocket,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_upgrade_refused());
    server.await.unwrap();
}

#[tokio::test]
async fn connection_failures_are_not_refusals() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/exec/x", listener.local_addr().unwrap());
    drop(listener);
    let (io, _, _) = io_with(None, false);
    let err = within(remote_command_fallback(
        same(&url),
        io,
        &ClientTls::default(),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    assert!(!err.is_upgrade_refused());
}

#[tokio::test]
async fn fallback_asks_for_spdy_after_a_websocket_refusal() {
    let (url, server) = http_server(
        "/exec/tok?x=1",
        vec![
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 15\r\nConnection: close\r\n\r\nnot a websocket",
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 19\r\nConnection: close\r\n\r\nunable to negotiate",
        ],
    )
    .await;
    let (io, _, _) = io_with(Some(b""), false);
    let err = within(remote_command_fallback(
        same(&url),
        io,
        &ClientTls::default(),
    ))
    .await
    .unwrap_err();
    match &err {
        ClientError::UpgradeRefused {
            transport: Transport::Spdy,
            status: 403,
            message,
        } => assert_eq!(message, "unable to negotiate"),
        e => panic!("{e}"),
    }
    let heads = server.await.unwrap();
    let ws = heads[0].to_ascii_lowercase();
    assert!(ws.starts_with("get /exec/tok?x=1 http/1.1\r\n"), "{ws}");
    assert!(ws.contains("\r\nupgrade: websocket\r\n"), "{ws}");
    assert!(
        ws.contains(
            "\r\nsec-websocket-protocol: v5.channel.k8s.io, v4.channel.k8s.io, base64.channel.k8s.io\r\n"
        ),
        "{ws}"
    );
    let spdy = heads[1].to_ascii_lowercase();
    assert!(
        spdy.starts_with("post /exec/tok?x=1 http/1.1\r\n"),
        "{spdy}"
    );
    assert!(spdy.contains("\r\nconnection: upgrade\r\n"), "{spdy}");
    assert!(spdy.contains("\r\nupgrade: spdy/3.1\r\n"), "{spdy}");
    assert!(spdy.contains("\r\nhost: 127.0.0.1:"), "{spdy}");
    let offered: Vec<&str> = spdy
        .lines()
        .filter_map(|l| l.strip_prefix("x-stream-protocol-version: "))
        .collect();
    assert_eq!(
        offered,
        [
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
            "v2.channel.k8s.io",
            "channel.k8s.io"
        ]
    );
}

/// Accepts `n` streams and returns them by their streamType, checking the order.
async fn accept_in_order(
    incoming: &mut Incoming,
    want: &[&str],
) -> Vec<crate::streaming::spdy::Stream> {
    let mut streams = Vec::new();
    for t in want {
        let s = incoming.accept().await.unwrap();
        assert_eq!(s.header("streamType"), Some(*t), "{:?}", s.headers());
        streams.push(s);
    }
    streams
}

#[tokio::test]
async fn spdy_v4_streams_in_client_go_order_with_the_exit_code() {
    let (url, server) = spdy_server(
        "/exec/s",
        "v4.channel.k8s.io",
        |session, mut incoming, head| async move {
            assert!(head.starts_with("POST /exec/s HTTP/1.1\r\n"), "{head}");
            let mut streams =
                accept_in_order(&mut incoming, &["error", "stdin", "stdout", "stderr"]).await;
            let (_, stderr) = streams.pop().unwrap().split();
            let (_, stdout) = streams.pop().unwrap().split();
            let (mut stdin, _) = streams.pop().unwrap().split();
            let (_, error) = streams.pop().unwrap().split();
            let got = read_all(&mut stdin).await;
            stdout
                .write([b"out:".as_slice(), &got].concat().into())
                .await
                .unwrap();
            stdout.close().await.unwrap();
            stderr.write("err".into()).await.unwrap();
            stderr.close().await.unwrap();
            error.write(EXIT_3.into()).await.unwrap();
            error.close().await.unwrap();
            session.closed().await;
        },
    )
    .await;
    let (io, out, err) = io_with(Some(b"hello"), false);
    let exit = within(remote_command(&url, Transport::Spdy, None, io))
        .await
        .unwrap();
    assert_eq!(exit, Exit::Code(3));
    assert_eq!(out.text(), "out:hello");
    assert_eq!(err.text(), "err");
    within(server).await.unwrap();
}

#[tokio::test]
async fn spdy_tty_sends_resize_json_lines() {
    let (url, server) = spdy_server(
        "/attach/s",
        "v4.channel.k8s.io",
        |session, mut incoming, _| async move {
            let mut streams = accept_in_order(&mut incoming, &["error", "stdout", "resize"]).await;
            let (mut resize, _) = streams.pop().unwrap().split();
            let (_, stdout) = streams.pop().unwrap().split();
            let (_, error) = streams.pop().unwrap().split();
            let mut got = Vec::new();
            while got.iter().filter(|b| **b == b'\n').count() < 2 {
                got.extend_from_slice(&resize.read().await.unwrap());
            }
            assert_eq!(
                String::from_utf8(got).unwrap(),
                "{\"Width\":80,\"Height\":24}\n{\"Width\":100,\"Height\":30}\n"
            );
            stdout.write("$ ".into()).await.unwrap();
            stdout.close().await.unwrap();
            error.close().await.unwrap();
            session.closed().await;
        },
    )
    .await;
    let (mut io, out, _) = io_with(None, true);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    for (width, height) in [(80, 24), (100, 30)] {
        tx.send(TermSize { width, height }).await.unwrap();
    }
    io.resize = Some(rx);
    let exit = within(remote_command(&url, Transport::Spdy, None, io))
        .await
        .unwrap();
    assert_eq!(exit, Exit::Code(0));
    assert_eq!(out.text(), "$ ");
    within(server).await.unwrap();
}

#[tokio::test]
async fn spdy_v2_has_no_resize_stream_and_a_plain_error() {
    let (url, server) = spdy_server(
        "/exec/v2",
        "v2.channel.k8s.io",
        |session, mut incoming, head| async move {
            let offered: Vec<&str> = head
                .lines()
                .filter_map(|l| l.strip_prefix("x-stream-protocol-version: "))
                .collect();
            assert_eq!(offered, ["v2.channel.k8s.io"], "{head}");
            let mut streams = accept_in_order(&mut incoming, &["error", "stdout"]).await;
            let (_, stdout) = streams.pop().unwrap().split();
            let (_, error) = streams.pop().unwrap().split();
            stdout.close().await.unwrap();
            error.write("boom".into()).await.unwrap();
            error.close().await.unwrap();
            // no resize stream comes
            let late = tokio::time::timeout(Duration::from_millis(200), incoming.accept()).await;
            assert!(matches!(late, Err(_) | Ok(None)));
            session.closed().await;
        },
    )
    .await;
    let (mut io, _, _) = io_with(None, true);
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    io.resize = Some(rx);
    let exit = within(remote_command(
        &url,
        Transport::Spdy,
        Some(&["v2.channel.k8s.io"]),
        io,
    ))
    .await
    .unwrap();
    assert_eq!(exit, Exit::Error("boom".into()));
    within(server).await.unwrap();
}

#[tokio::test]
async fn fallback_runs_over_spdy_when_websocket_is_refused() {
    // One listener: the WebSocket attempt is refused, the SPDY upgrade is served.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/exec/f", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut ws, _) = listener.accept().await.unwrap();
        let head = crate::streaming::client::test_util::read_head(&mut ws).await;
        assert!(
            head.to_ascii_lowercase().contains("upgrade: websocket"),
            "{head}"
        );
        use tokio::io::AsyncWriteExt;
        ws.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        drop(ws);
        let (mut tcp, _) = listener.accept().await.unwrap();
        let head = crate::streaming::client::test_util::read_head(&mut tcp).await;
        assert!(head.contains("SPDY/3.1"), "{head}");
        tcp.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n").await.unwrap();
        let (session, mut incoming) =
            crate::streaming::spdy::Session::new(tcp, crate::streaming::spdy::Role::Server);
        let mut streams = accept_in_order(&mut incoming, &["error", "stdout", "stderr"]).await;
        for s in streams.drain(1..) {
            let (_, w) = s.split();
            w.write("x".into()).await.unwrap();
            w.close().await.unwrap();
        }
        let (_, error) = streams.pop().unwrap().split();
        error.write(r#"{"status":"Success"}"#.into()).await.unwrap();
        error.close().await.unwrap();
        session.closed().await;
    });
    let (io, out, err) = io_with(None, false);
    let exit = within(remote_command_fallback(
        same(&url),
        io,
        &ClientTls::default(),
    ))
    .await
    .unwrap();
    assert_eq!(exit, Exit::Code(0));
    assert_eq!((out.text().as_str(), err.text().as_str()), ("x", "x"));
    within(server).await.unwrap();
}

/// A CA and a server certificate for 127.0.0.1 made by the openssl tool, in `dir`; `None`
/// (after saying why) when the tool is missing.
fn make_certs(dir: &std::path::Path) -> Option<()> {
    const EC: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    for args in [
        format!("req -x509 {EC} -keyout ca.key -out ca.pem -days 1 -subj /CN=limpet-test-CA"),
        format!("req {EC} -keyout srv.key -out srv.csr -subj /CN=127.0.0.1"),
        "x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 1 \
         -extfile ext"
            .to_string(),
    ] {
        let run = std::process::Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .output();
        match run {
            Err(e) => {
                eprintln!("SKIPPED: the TLS test needs the openssl tool: {e}");
                return None;
            }
            Ok(o) => assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr)),
        }
    }
    Some(())
}

#[tokio::test]
// The handshake callback's error type is tungstenite's.
#[allow(clippy::result_large_err)]
async fn https_urls_trust_the_given_ca_only() {
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    let dir = tempfile::tempdir().unwrap();
    if make_certs(dir.path()).is_none() {
        return;
    }
    let acceptor =
        crate::streaming::tls::acceptor(&dir.path().join("srv.pem"), &dir.path().join("srv.key"))
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/exec/tls", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        // first the client that trusts our CA, then one that trusts another
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let pick = |_: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
            let v5 = HeaderValue::from_static("v5.channel.k8s.io");
            resp.headers_mut().insert("Sec-WebSocket-Protocol", v5);
            Ok(resp)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(tls, pick)
            .await
            .unwrap();
        ws.send(Message::binary(b"\x01secure".to_vec()))
            .await
            .unwrap();
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
        // hung up without TLS close_notify: the client has its status already
        drop(ws);
        let (tcp, _) = listener.accept().await.unwrap();
        assert!(acceptor.accept(tcp).await.is_err());
    });
    let (io, out, _) = io_with(None, false);
    let tls = ClientTls {
        ca: Some(dir.path().join("ca.pem")),
    };
    let exit = within(remote_command_with(
        &url,
        Transport::WebSocket,
        None,
        io,
        &tls,
    ))
    .await
    .unwrap();
    assert_eq!((exit, out.text()), (Exit::Code(0), "secure".to_string()));

    // a CA of its own (the server certificate itself, which is no CA) does not vouch for it
    let (io, _, _) = io_with(None, false);
    let other = ClientTls {
        ca: Some(dir.path().join("srv.pem")),
    };
    let err = within(remote_command_with(&url, Transport::Spdy, None, io, &other))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");
    within(server).await.unwrap();
}

/// A URL source that hands out the same URL each time (these test servers keep no tokens).
fn same(url: &str) -> impl FnMut() -> std::future::Ready<Result<String, ClientError>> + '_ {
    move || std::future::ready(Ok(url.to_string()))
}
