//! Exec, Attach and PortForward through limpetd's streaming server, over both transports
//! kubelet's clients use (WebSocket and SPDY/3.1), driven by our own clients: output and exit
//! codes, a terminal and its resize, 64 MiB of output whole and in order, stdin closing,
//! two clients attached at once, a TCP echo server in a pod reached by several forwarded
//! connections at once, single-use tokens, and clients that vanish mid-stream.

mod pod_support;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use limpet_protos::cri::tonic::Code;
use limpet_protos::cri::v1::{
    AttachRequest, ExecRequest, PodSandboxConfig, PortForwardRequest, StopContainerRequest,
};
use limpet_tests::limpetd::{block_on, ready, Options};
use limpet_tests::pods::PodEnv;
use limpetd::streaming::client::{
    remote_command, remote_command_with, websocket_port_forward, ClientTls, CommandIo, Exit,
    SpdyPortForward, TermSize, Transport,
};
use pod_support::{code_of, wait_for, Cri};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

const BOTH: [Transport; 2] = [Transport::WebSocket, Transport::Spdy];

/// An AsyncWrite that keeps everything written, readable while the command runs.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

struct Run {
    exit: Exit,
    stdout: Capture,
    stderr: Capture,
}

/// Client-side stdio of one command: optional stdin bytes (then EOF), captured output.
fn command_io(stdin: Option<&[u8]>, stderr: bool, tty: bool) -> (CommandIo, Capture, Capture) {
    let (out, err) = (Capture::default(), Capture::default());
    let io = CommandIo {
        stdin: stdin.map(|b| {
            Box::new(std::io::Cursor::new(b.to_vec()))
                as Box<dyn tokio::io::AsyncRead + Send + Unpin>
        }),
        stdout: Some(Box::new(out.clone())),
        stderr: stderr.then(|| Box::new(err.clone()) as Box<dyn AsyncWrite + Send + Unpin>),
        tty,
        resize: None,
    };
    (io, out, err)
}

async fn exec_url(cri: &mut Cri<'_>, id: &str, cmd: &[&str], stdin: bool, tty: bool) -> String {
    cri.rt
        .exec(ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        })
        .await
        .unwrap_or_else(|e| panic!("Exec: {e}\n{}", cri.env.d.log_tail()))
        .into_inner()
        .url
}

/// The Attach URL of container `id`; stdout always, stderr unless a terminal.
async fn attach_url(cri: &mut Cri<'_>, id: &str, stdin: bool, tty: bool, stderr: bool) -> String {
    cri.rt
        .attach(AttachRequest {
            container_id: id.into(),
            stdin,
            tty,
            stdout: true,
            stderr,
        })
        .await
        .unwrap_or_else(|e| panic!("Attach: {e}\n{}", cri.env.d.log_tail()))
        .into_inner()
        .url
}

async fn exec(
    cri: &mut Cri<'_>,
    id: &str,
    transport: Transport,
    cmd: &[&str],
    stdin: Option<&[u8]>,
) -> Run {
    let url = exec_url(cri, id, cmd, stdin.is_some(), false).await;
    let (io, stdout, stderr) = command_io(stdin, true, false);
    let exit = remote_command(&url, transport, None, io)
        .await
        .unwrap_or_else(|e| panic!("{transport:?} exec {cmd:?}: {e}\n{}", cri.env.d.log_tail()));
    Run {
        exit,
        stdout,
        stderr,
    }
}

/// A pod with one long-running container (`script`); returns (pod, container, pod config).
async fn pod_with(
    cri: &mut Cri<'_>,
    env: &PodEnv,
    name: &str,
    script: &str,
) -> (String, String, PodSandboxConfig) {
    let config = env.pod(name);
    let pod = cri.run_pod(&config).await;
    let c = cri.run(&pod, &config, env.container(name, script)).await;
    (pod, c, config)
}

fn exit_code(exit: &Exit) -> i32 {
    match exit {
        Exit::Code(c) => *c,
        Exit::Error(e) => panic!("the command failed without an exit code: {e}"),
    }
}

#[test]
fn exec_output_exit_codes_stdin_and_a_terminal_over_both_transports() {
    let case = "exec_output_exit_codes_stdin_and_a_terminal_over_both_transports";
    let Some(env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let (pod, c, _) = pod_with(&mut cri, &env, "exec", "sleep 3600").await;
        for t in BOTH {
            let r = exec(
                &mut cri,
                &c,
                t,
                &["sh", "-c", "echo out; echo err >&2; exit 3"],
                None,
            )
            .await;
            assert_eq!(exit_code(&r.exit), 3, "{t:?}");
            assert_eq!(r.stdout.text(), "out\n", "{t:?}");
            assert_eq!(r.stderr.text(), "err\n", "{t:?}");

            let r = exec(&mut cri, &c, t, &["true"], None).await;
            assert_eq!(exit_code(&r.exit), 0, "{t:?}");

            // stdin reaches the process and its end closes the process's stdin.
            let r = exec(
                &mut cri,
                &c,
                t,
                &["sh", "-c", "cat; echo eof"],
                Some(b"hello\nworld\n"),
            )
            .await;
            assert_eq!(exit_code(&r.exit), 0, "{t:?}");
            assert_eq!(r.stdout.text(), "hello\nworld\neof\n", "{t:?}");

            // A terminal: output through the pty, and the size the client sets.
            let url = exec_url(
                &mut cri,
                &c,
                &["sh", "-c", "read x; stty size; exit 5"],
                true,
                true,
            )
            .await;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let (stdin_w, stdin_r) = tokio::io::duplex(64);
            let out = Capture::default();
            let io = CommandIo {
                stdin: Some(Box::new(stdin_r)),
                stdout: Some(Box::new(out.clone())),
                stderr: None,
                tty: true,
                resize: Some(rx),
            };
            let driver = async move {
                let mut stdin_w = stdin_w;
                tx.send(TermSize {
                    width: 93,
                    height: 41,
                })
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
                stdin_w.write_all(b"go\r").await.unwrap();
                // Keep stdin and the resize channel open until the command is done.
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop((tx, stdin_w));
            };
            let exit = tokio::select! {
                r = remote_command(&url, t, None, io) => r.expect("tty exec"),
                _ = driver => panic!("tty exec did not end"),
            };
            assert_eq!(exit_code(&exit), 5, "{t:?}: {}", out.text());
            assert!(
                out.text().contains("41 93"),
                "{t:?}: stty saw {:?}",
                out.text()
            );
        }

        // Every protocol version each transport offers.
        for (t, p) in [
            (Transport::WebSocket, "v5.channel.k8s.io"),
            (Transport::WebSocket, "v4.channel.k8s.io"),
            (Transport::WebSocket, "v4.base64.channel.k8s.io"),
            (Transport::WebSocket, "base64.channel.k8s.io"),
            (Transport::WebSocket, "channel.k8s.io"),
            (Transport::Spdy, "v4.channel.k8s.io"),
            (Transport::Spdy, "v3.channel.k8s.io"),
            (Transport::Spdy, "v2.channel.k8s.io"),
            (Transport::Spdy, "channel.k8s.io"),
        ] {
            let url = exec_url(
                &mut cri,
                &c,
                &["sh", "-c", "echo $((6*7)); exit 2"],
                false,
                false,
            )
            .await;
            let (io, out, _) = command_io(None, true, false);
            let exit = remote_command(&url, t, Some(&[p]), io)
                .await
                .unwrap_or_else(|e| panic!("{t:?} {p}: {e}"));
            assert_eq!(out.text(), "42\n", "{t:?} {p}");
            // Before v4 the error stream carries only a message, not the code.
            match exit {
                Exit::Code(code) => assert_eq!(code, 2, "{t:?} {p}"),
                Exit::Error(m) => assert!(
                    !p.starts_with('v') || p.starts_with("v2") || p.starts_with("v3"),
                    "{t:?} {p}: {m}"
                ),
            }
        }
        cri.remove_pod(&pod).await;
    });
}

#[test]
fn sixty_four_mebibytes_of_output_arrive_whole_and_in_order() {
    let case = "sixty_four_mebibytes_of_output_arrive_whole_and_in_order";
    let Some(env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let (pod, c, _) = pod_with(&mut cri, &env, "big", "sleep 3600").await;
        // 9 million numbered lines: 70.9 MB.
        const LINES: usize = 9_000_000;
        for t in BOTH {
            let cmd = format!("seq 1 {LINES}");
            let r = exec(&mut cri, &c, t, &["sh", "-c", &cmd], None).await;
            assert_eq!(exit_code(&r.exit), 0, "{t:?}");
            let out = r.stdout.bytes();
            assert!(out.len() >= 64 << 20, "{t:?}: only {} bytes", out.len());
            let mut expected = 1usize;
            for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let n: usize = std::str::from_utf8(line)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                assert_eq!(n, expected, "{t:?}: line out of order");
                expected += 1;
            }
            assert_eq!(expected - 1, LINES, "{t:?}");
        }
        cri.remove_pod(&pod).await;
    });
}

#[test]
fn attach_by_two_clients_with_stdin_and_stdin_once() {
    let case = "attach_by_two_clients_with_stdin_and_stdin_once";
    let Some(env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let config = env.pod("attach");
        let pod = cri.run_pod(&config).await;
        // A container reading its stdin: what one client types, both clients see.
        let mut cat = env.container("cat", "echo ready; exec cat");
        cat.stdin = true;
        let c = cri.run(&pod, &config, cat).await;
        let (u1, u2) = (
            attach_url(&mut cri, &c, false, false, true).await,
            attach_url(&mut cri, &c, true, false, true).await,
        );
        let (io1, out1, _) = command_io(None, true, false);
        let a1 = tokio::spawn(remote_command_owned(u1, Transport::WebSocket, io1));
        let (stdin_w, stdin_r) = tokio::io::duplex(64);
        let out2 = Capture::default();
        let io2 = CommandIo {
            stdin: Some(Box::new(stdin_r)),
            stdout: Some(Box::new(out2.clone())),
            stderr: Some(Box::new(Capture::default())),
            tty: false,
            resize: None,
        };
        let a2 = tokio::spawn(remote_command_owned(u2, Transport::Spdy, io2));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut stdin_w = stdin_w;
        stdin_w.write_all(b"ping-one\n").await.unwrap();
        wait_for(10, "both attach clients see the typed line", || {
            let (o1, o2) = (out1.text(), out2.text());
            async move { (o1.contains("ping-one") && o2.contains("ping-one")).then_some(()) }
        })
        .await;
        // Without StdinOnce, a client ending its stdin leaves the container's stdin open.
        drop(stdin_w);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(cri.status(&c).await.state, pod_support::RUNNING);

        // Stopping the container ends both attaches, successfully.
        cri.rt
            .stop_container(StopContainerRequest {
                container_id: c.clone(),
                timeout: 2,
            })
            .await
            .expect("StopContainer");
        for a in [a1, a2] {
            let exit = tokio::time::timeout(Duration::from_secs(20), a)
                .await
                .expect("attach ends")
                .unwrap();
            assert!(matches!(exit, Ok(Exit::Code(0))), "{exit:?}");
        }

        // StdinOnce: the first attach's stdin closing closes the container's stdin (cat exits).
        let mut once = env.container("once", "cat; echo cat-done; sleep 3600");
        once.stdin = true;
        once.stdin_once = true;
        let c2 = cri.run(&pod, &config, once).await;
        let u = attach_url(&mut cri, &c2, true, false, false).await;
        let (io, out, _) = command_io(Some(b"only-once\n"), false, false);
        let a = tokio::spawn(remote_command_owned(u, Transport::WebSocket, io));
        wait_for(10, "stdin closed once the attach's stdin ended", || {
            let o = out.text();
            async move { o.contains("cat-done").then_some(()) }
        })
        .await;
        assert!(out.text().contains("only-once"), "{}", out.text());
        a.abort();

        // A container with a terminal: attach resizes it.
        let mut term = env.container("term", "while true; do stty size; sleep 0.2; done");
        term.tty = true;
        term.stdin = true;
        let c3 = cri.run(&pod, &config, term).await;
        let u = attach_url(&mut cri, &c3, true, true, false).await;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (_stdin_w, stdin_r) = tokio::io::duplex(64);
        let out = Capture::default();
        let io = CommandIo {
            stdin: Some(Box::new(stdin_r)),
            stdout: Some(Box::new(out.clone())),
            stderr: None,
            tty: true,
            resize: Some(rx),
        };
        let a = tokio::spawn(remote_command_owned(u, Transport::Spdy, io));
        tx.send(TermSize {
            width: 111,
            height: 33,
        })
        .await
        .unwrap();
        wait_for(10, "the attached terminal has the client's size", || {
            let o = out.text();
            async move { o.contains("33 111").then_some(()) }
        })
        .await;
        a.abort();

        // Attach to a container that is not running is refused.
        let (code, _) = code_of(
            cri.rt
                .attach(AttachRequest {
                    container_id: c.clone(),
                    stdin: false,
                    tty: false,
                    stdout: true,
                    stderr: false,
                })
                .await,
        );
        assert_eq!(code, Code::FailedPrecondition);
        cri.remove_pod(&pod).await;
    });
}

async fn remote_command_owned(url: String, t: Transport, io: CommandIo) -> Result<Exit, String> {
    remote_command(&url, t, None, io)
        .await
        .map_err(|e| e.to_string())
}

#[test]
fn port_forward_to_an_echo_server_with_concurrent_connections() {
    let case = "port_forward_to_an_echo_server_with_concurrent_connections";
    let Some(env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    block_on(async {
        let mut cri = Cri::new(&env).await;
        // An echo server listening on the pod's 127.0.0.1 only: reachable only from inside.
        let (pod, _c, _) = pod_with(&mut cri, &env, "echo", "exec nc -ll -p 7070 -e cat").await;
        let url = |cri: &mut Cri<'_>, ports: Vec<i32>| {
            let mut rt = cri.rt.clone();
            let pod = pod.clone();
            async move {
                rt.port_forward(PortForwardRequest {
                    pod_sandbox_id: pod,
                    port: ports,
                })
                .await
                .expect("PortForward")
                .into_inner()
                .url
            }
        };
        // SPDY: one session, five connections at once.
        let u = url(&mut cri, vec![7070]).await;
        let session = wait_for(10, "the echo server listens", || {
            let u = u.clone();
            async move {
                Some(
                    SpdyPortForward::connect(&u)
                        .await
                        .expect("SPDY port-forward"),
                )
            }
        })
        .await;
        let mut echoes = Vec::new();
        for i in 0..5u8 {
            let mut conn = wait_for(10, "a forwarded connection", || {
                let s = &session;
                async move { s.open(7070).await.ok() }
            })
            .await;
            echoes.push(tokio::spawn(async move {
                let payload: Vec<u8> = (0..200_000u32).map(|n| (n as u8) ^ i).collect();
                let (mut rd, mut wr) = tokio::io::split(&mut conn);
                let send = async {
                    wr.write_all(&payload).await.unwrap();
                };
                let mut back = vec![0u8; payload.len()];
                let recv = rd.read_exact(&mut back);
                let (_, r) = tokio::join!(send, recv);
                r.expect("echo");
                assert_eq!(back, payload, "connection {i}");
            }));
        }
        for e in echoes {
            e.await.expect("echo connection");
        }

        // A port nobody listens on: the error stream says so.
        let mut refused = session.open(7071).await.expect("open");
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), refused.read_to_end(&mut buf)).await;
        assert!(
            refused.error().is_some_and(|e| e.contains("7071")),
            "no error for a closed port"
        );

        // WebSocket: one connection per port per URL.
        let u = url(&mut cri, vec![7070]).await;
        let mut conns = websocket_port_forward(&u, &[7070])
            .await
            .expect("WebSocket port-forward");
        let conn = &mut conns[0];
        conn.write_all(b"over websocket\n").await.unwrap();
        let mut back = [0u8; 15];
        tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut back))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(&back, b"over websocket\n");

        // A pod that does not exist.
        let (code, _) = code_of(
            cri.rt
                .port_forward(PortForwardRequest {
                    pod_sandbox_id: "nope".into(),
                    port: vec![80],
                })
                .await,
        );
        assert_eq!(code, Code::NotFound);
        cri.remove_pod(&pod).await;
    });
}

/// Sends a bare upgrade request to `url` and returns the HTTP status line's code.
async fn http_status(url: &str, upgrade: &str) -> u16 {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').expect("path");
    let mut s = tokio::net::TcpStream::connect(host).await.expect("connect");
    let req = format!(
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn tokens_are_single_use_unknown_containers_refused_and_gone_clients_leave_nothing() {
    let case = "tokens_are_single_use_unknown_containers_refused_and_gone_clients_leave_nothing";
    let Some(env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let (pod, c, _) = pod_with(&mut cri, &env, "tokens", "sleep 3600").await;

        // A token works once; the second use and a forged token get 404 and run nothing.
        let url = exec_url(
            &mut cri,
            &c,
            &["sh", "-c", "echo x >> /tmp/runs"],
            false,
            false,
        )
        .await;
        let (io, _, _) = command_io(None, true, false);
        let exit = remote_command(&url, Transport::WebSocket, None, io)
            .await
            .expect("first use");
        assert_eq!(exit_code(&exit), 0);
        for t in BOTH {
            let (io, _, _) = command_io(None, true, false);
            assert!(
                remote_command(&url, t, None, io).await.is_err(),
                "{t:?}: a used token ran"
            );
        }
        assert_eq!(http_status(&url, "SPDY/3.1").await, 404);
        let forged = format!("{}AAAA", &url[..url.rfind('/').unwrap() + 1]);
        assert_eq!(http_status(&forged, "SPDY/3.1").await, 404);
        assert_eq!(
            cri.sh_ok(&c, "cat /tmp/runs").await,
            "x\n",
            "the command ran once"
        );

        // Unknown containers and impossible stream sets are refused by the CRI call.
        let bad = |id: &str, tty: bool, stderr: bool, stdout: bool| ExecRequest {
            container_id: id.into(),
            cmd: vec!["true".into()],
            tty,
            stdin: false,
            stdout,
            stderr,
        };
        let (code, _) = code_of(cri.rt.exec(bad("nope", false, false, true)).await);
        assert_eq!(code, Code::NotFound);
        let (code, _) = code_of(cri.rt.exec(bad(&c, true, true, true)).await);
        assert_eq!(code, Code::InvalidArgument);
        let (code, _) = code_of(cri.rt.exec(bad(&c, false, false, false)).await);
        assert_eq!(code, Code::InvalidArgument);

        // A client that goes away mid-stream takes its process with it, and its FIFOs.
        for t in BOTH {
            let url = exec_url(
                &mut cri,
                &c,
                &["sh", "-c", "echo started; exec sleep 1234"],
                false,
                false,
            )
            .await;
            let (io, out, _) = command_io(None, true, false);
            let running = tokio::spawn(remote_command_owned(url, t, io));
            wait_for(10, "the exec started", || {
                let o = out.text();
                async move { o.contains("started").then_some(()) }
            })
            .await;
            running.abort();
            let _ = running.await;
            let gone_in_time = tokio::time::timeout(
                Duration::from_secs(10),
                wait_for(10, "the exec's process is gone", || {
                    let mut cri = Cri {
                        rt: cri.rt.clone(),
                        env: &env,
                    };
                    let c = c.clone();
                    async move {
                        let ps = cri.sh_ok(&c, "ps -o args").await;
                        (!ps.contains("sleep 1234")).then_some(())
                    }
                }),
            )
            .await;
            assert!(
                gone_in_time.is_ok(),
                "{t:?}: exec still running\n{}",
                env.d.log_tail()
            );
            let exec_dir = env.d.dir().join("state").join("exec");
            wait_for(10, "no exec FIFOs left", || {
                let left = std::fs::read_dir(&exec_dir).map(|d| d.count()).unwrap_or(0);
                async move { (left == 0).then_some(()) }
            })
            .await;
        }
        cri.remove_pod(&pod).await;
    });
}

#[test]
fn the_streaming_server_speaks_tls_with_the_configured_certificate() {
    let case = "the_streaming_server_speaks_tls_with_the_configured_certificate";
    let Ok(dir) = tempfile::tempdir() else {
        panic!("{case}: no temp dir");
    };
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    // A CA and a server certificate for 127.0.0.1 signed by it.
    let ext = dir.path().join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let d = dir.path();
    let steps: [Vec<&str>; 3] = [
        vec![
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=limpet-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        vec![
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
        ],
        vec![
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ],
    ];
    for args in steps {
        match std::process::Command::new("openssl")
            .args(&args)
            .current_dir(d)
            .output()
        {
            Ok(o) if o.status.success() => {}
            other => {
                eprintln!("SKIP {case}: openssl cannot make test certificates: {other:?}");
                return;
            }
        }
    }
    let opts = Options {
        extra_config: format!("[streaming]\ntls_cert = {cert:?}\ntls_key = {key:?}\n"),
        ..Options::default()
    };
    let Some(env) = ready(case, PodEnv::start(opts)) else {
        return;
    };
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let (pod, c, _) = pod_with(&mut cri, &env, "tls", "sleep 3600").await;
        let tls = ClientTls {
            ca: Some(ca.clone()),
        };
        for t in BOTH {
            let url = exec_url(&mut cri, &c, &["echo", "secret"], false, false).await;
            assert!(url.starts_with("https://127.0.0.1:"), "{url}");
            let (io, out, _) = command_io(None, true, false);
            let exit = remote_command_with(&url, t, None, io, &tls)
                .await
                .unwrap_or_else(|e| panic!("{t:?} over TLS: {e}"));
            assert_eq!(exit_code(&exit), 0);
            assert_eq!(out.text(), "secret\n");
        }
        // A client that does not trust the certificate gets nowhere.
        let url = exec_url(&mut cri, &c, &["echo", "secret"], false, false).await;
        let (io, _, _) = command_io(None, true, false);
        assert!(remote_command(&url, Transport::WebSocket, None, io)
            .await
            .is_err());
        cri.remove_pod(&pod).await;
    });
}

#[test]
fn an_exec_cut_off_by_a_limpetd_crash_is_killed_at_the_next_start() {
    let case = "an_exec_cut_off_by_a_limpetd_crash_is_killed_at_the_next_start";
    let Some(mut env) = ready(case, PodEnv::start(Options::default())) else {
        return;
    };
    let (pod, c) = block_on(async {
        let mut cri = Cri::new(&env).await;
        let (pod, c, _) = pod_with(&mut cri, &env, "crash", "sleep 3600").await;
        let url = exec_url(
            &mut cri,
            &c,
            &["sh", "-c", "echo started; exec sleep 4321"],
            true,
            false,
        )
        .await;
        let (stdin_w, stdin_r) = tokio::io::duplex(64);
        let out = Capture::default();
        let io = CommandIo {
            stdin: Some(Box::new(stdin_r)),
            stdout: Some(Box::new(out.clone())),
            stderr: Some(Box::new(Capture::default())),
            tty: false,
            resize: None,
        };
        let running = tokio::spawn(remote_command_owned(url, Transport::Spdy, io));
        wait_for(10, "the exec started", || {
            let o = out.text();
            async move { o.contains("started").then_some(()) }
        })
        .await;
        // The client is still there (stdin open) when limpetd dies.
        std::mem::forget(stdin_w);
        running.abort();
        (pod, c)
    });
    env.d.kill();
    let exec_dir = env.d.dir().join("state").join("exec");
    assert_eq!(
        std::fs::read_dir(&exec_dir).map(|d| d.count()).unwrap_or(0),
        1,
        "the exec's FIFOs"
    );
    env.d.restart().unwrap_or_else(|e| panic!("restart: {e}"));
    block_on(async {
        let mut cri = Cri::new(&env).await;
        let ps = cri.sh_ok(&c, "ps -o args").await;
        assert!(
            !ps.contains("sleep 4321"),
            "the exec survived the restart:\n{ps}"
        );
        assert_eq!(
            std::fs::read_dir(&exec_dir).map(|d| d.count()).unwrap_or(0),
            0,
            "exec FIFOs left"
        );
        cri.remove_pod(&pod).await;
    });
}
