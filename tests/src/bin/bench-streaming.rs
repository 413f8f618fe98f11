//! The measuring client of scripts/bench-streaming.sh: on one CRI runtime, makes one pod from
//! the given pod and container configs, measures one thing, removes the pod and prints the
//! result as one JSON object on stdout:
//! - `exec-sync`: ExecSync round trips of `sh -c :`;
//! - `exec-spdy`, `exec-ws`: the CRI Exec call, the upgrade of its URL (SPDY or WebSocket,
//!   both asked for v4.channel.k8s.io only) and the command run to its exit status;
//! - `port-forward`: one forwarded connection (SPDY) to an echo server in the pod, MiB sent
//!   while the echo is read back and checked concurrently, per run.
//!
//! A transport the runtime refuses gives `{"refused": reason}` instead of samples.
//!
//! Usage: bench-streaming --endpoint unix:///x.sock --image REF --pod POD.json
//!   --container CONTAINER.json --what exec-sync|exec-spdy|exec-ws|port-forward
//!   [-n 100] [--warmup 10] [--mib 256] [--runs 3] [--port 7070]
//! The configs are crictl-style JSON with the fields the script writes (unknown keys are
//! refused, so that nothing is silently left out); `--image` goes into the container config.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::v1::image_service_client::ImageServiceClient;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecRequest, ExecSyncRequest,
    ImageSpec, LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata, PortForwardRequest,
    PullImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};
use limpetd::streaming::client::{
    remote_command, ClientError, CommandIo, Exit, SpdyPortForward, Transport,
};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Runtime = RuntimeServiceClient<Channel>;

const COMMAND: [&str; 3] = ["sh", "-c", ":"];
/// Both transports are held to the protocol version containerd 1.6 and limpetd share.
const PROTOCOLS: &[&str] = &["v4.channel.k8s.io"];
const MIB: usize = 1 << 20;
/// Bytes per write, and the read buffer.
const CHUNK: usize = 64 * 1024;
/// The echoed byte at offset `o` is `o % PERIOD`: a prime, so shifted or lost chunks show.
const PERIOD: usize = 251;
/// How long the echo server in a just-started container may take to listen.
const ECHO_READY: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("usage: {0}")]
    Usage(String),
    #[error("{path}: {reason}")]
    Config { path: String, reason: String },
    #[error("connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: limpet_protos::cri::ConnectError,
    },
    #[error("{call}: {source}")]
    Cri {
        call: &'static str,
        source: Box<limpet_protos::cri::tonic::Status>,
    },
    #[error("{what}: {source}")]
    Stream {
        what: &'static str,
        source: ClientError,
    },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Check(String),
}

fn cri(call: &'static str) -> impl FnOnce(limpet_protos::cri::tonic::Status) -> BenchError {
    move |s| BenchError::Cri {
        call,
        source: Box::new(s),
    }
}

fn stream(what: &'static str) -> impl FnOnce(ClientError) -> BenchError {
    move |source| BenchError::Stream { what, source }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> BenchError {
    move |source| BenchError::Io { what, source }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    ExecSync,
    Exec(Transport),
    PortForward,
}

impl What {
    fn parse(s: &str) -> Option<What> {
        Some(match s {
            "exec-sync" => What::ExecSync,
            "exec-spdy" => What::Exec(Transport::Spdy),
            "exec-ws" => What::Exec(Transport::WebSocket),
            "port-forward" => What::PortForward,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            What::ExecSync => "exec-sync",
            What::Exec(Transport::Spdy) => "exec-spdy",
            What::Exec(Transport::WebSocket) => "exec-ws",
            What::PortForward => "port-forward",
        }
    }
}

struct Options {
    endpoint: String,
    image: String,
    pod: String,
    container: String,
    what: What,
    n: usize,
    warmup: usize,
    mib: usize,
    runs: usize,
    port: u16,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, BenchError> {
    let mut o = Options {
        endpoint: String::new(),
        image: String::new(),
        pod: String::new(),
        container: String::new(),
        what: What::ExecSync,
        n: 100,
        warmup: 10,
        mib: 256,
        runs: 3,
        port: 7070,
    };
    let mut what = None;
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| BenchError::Usage(format!("{flag} needs a value")))?;
        let number = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| BenchError::Usage(format!("{flag} {v:?}: not a number")))
        };
        match flag.as_str() {
            "--endpoint" => o.endpoint = value,
            "--image" => o.image = value,
            "--pod" => o.pod = value,
            "--container" => o.container = value,
            "--what" => {
                what = Some(
                    What::parse(&value)
                        .ok_or_else(|| BenchError::Usage(format!("--what {value:?}")))?,
                )
            }
            "-n" => o.n = number(&value)?,
            "--warmup" => o.warmup = number(&value)?,
            "--mib" => o.mib = number(&value)?,
            "--runs" => o.runs = number(&value)?,
            "--port" => {
                o.port = value
                    .parse()
                    .map_err(|_| BenchError::Usage(format!("--port {value:?}")))?
            }
            _ => return Err(BenchError::Usage(format!("unknown flag {flag}"))),
        }
    }
    o.what = what.ok_or_else(|| BenchError::Usage("--what is required".into()))?;
    for (flag, v) in [
        ("--endpoint", &o.endpoint),
        ("--image", &o.image),
        ("--pod", &o.pod),
        ("--container", &o.container),
    ] {
        if v.is_empty() {
            return Err(BenchError::Usage(format!("{flag} is required")));
        }
    }
    if o.n == 0 || o.runs == 0 || o.mib == 0 {
        return Err(BenchError::Usage(
            "-n, --runs and --mib must be positive".into(),
        ));
    }
    Ok(o)
}

// ---- configs ---------------------------------------------------------------------------

/// The fields of a JSON object, refusing keys outside `known`.
fn object<'a>(v: &'a Value, what: &str, known: &[&str]) -> Result<&'a Map<String, Value>, String> {
    let map = v
        .as_object()
        .ok_or_else(|| format!("{what}: not an object"))?;
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!("{what}: unsupported key {k:?}")),
        None => Ok(map),
    }
}

fn string(map: &Map<String, Value>, key: &str) -> Result<String, String> {
    match map.get(key) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{key}: not a string")),
    }
}

fn strings(map: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    match map.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{key}: not a list of strings"))
            })
            .collect(),
        Some(_) => Err(format!("{key}: not a list")),
    }
}

fn attempt(map: &Map<String, Value>) -> Result<u32, String> {
    match map.get("attempt") {
        None => Ok(0),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| "attempt: not a number".to_string()),
    }
}

fn read_json(path: &str) -> Result<Value, BenchError> {
    let text = std::fs::read_to_string(Path::new(path)).map_err(|e| BenchError::Config {
        path: path.into(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| BenchError::Config {
        path: path.into(),
        reason: e.to_string(),
    })
}

fn pod_config(path: &str) -> Result<PodSandboxConfig, BenchError> {
    let v = read_json(path)?;
    let parse = || -> Result<PodSandboxConfig, String> {
        let top = object(
            &v,
            "pod",
            &["metadata", "hostname", "log_directory", "linux"],
        )?;
        let empty = Value::Object(Map::new());
        let meta = object(
            top.get("metadata").unwrap_or(&empty),
            "metadata",
            &["name", "namespace", "uid", "attempt"],
        )?;
        let linux = object(
            top.get("linux").unwrap_or(&empty),
            "linux",
            &["cgroup_parent"],
        )?;
        Ok(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: string(meta, "name")?,
                uid: string(meta, "uid")?,
                namespace: string(meta, "namespace")?,
                attempt: attempt(meta)?,
            }),
            hostname: string(top, "hostname")?,
            log_directory: string(top, "log_directory")?,
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: string(linux, "cgroup_parent")?,
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    parse().map_err(|reason| BenchError::Config {
        path: path.into(),
        reason,
    })
}

fn container_config(path: &str, image: &str) -> Result<ContainerConfig, BenchError> {
    let v = read_json(path)?;
    let parse = || -> Result<ContainerConfig, String> {
        let top = object(
            &v,
            "container",
            &["metadata", "command", "args", "log_path"],
        )?;
        let empty = Value::Object(Map::new());
        let meta = object(
            top.get("metadata").unwrap_or(&empty),
            "metadata",
            &["name", "attempt"],
        )?;
        Ok(ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: string(meta, "name")?,
                attempt: attempt(meta)?,
            }),
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            command: strings(top, "command")?,
            args: strings(top, "args")?,
            log_path: string(top, "log_path")?,
            ..Default::default()
        })
    };
    parse().map_err(|reason| BenchError::Config {
        path: path.into(),
        reason,
    })
}

// ---- measurements ----------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest rank, as the other bench scripts compute it.
fn percentile(samples: &[f64], p: usize) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = (s.len() * p).div_ceil(100).max(1);
    s.get(rank - 1).copied().unwrap_or(f64::NAN)
}

fn latency_result(samples: Vec<f64>) -> Value {
    json!({
        "median_ms": percentile(&samples, 50),
        "p90_ms": percentile(&samples, 90),
        "samples_ms": samples,
    })
}

async fn exec_sync(rt: &mut Runtime, container: &str, o: &Options) -> Result<Value, BenchError> {
    let mut samples = Vec::with_capacity(o.n);
    for i in 0..o.warmup + o.n {
        let t0 = Instant::now();
        let r = rt
            .exec_sync(ExecSyncRequest {
                container_id: container.into(),
                cmd: COMMAND.iter().map(|s| s.to_string()).collect(),
                timeout: 10,
            })
            .await
            .map_err(cri("ExecSync"))?
            .into_inner();
        let elapsed = t0.elapsed();
        if r.exit_code != 0 {
            return Err(BenchError::Check(format!(
                "ExecSync {COMMAND:?} exited {}: {}",
                r.exit_code,
                String::from_utf8_lossy(&r.stderr)
            )));
        }
        if i >= o.warmup {
            samples.push(ms(elapsed));
        }
    }
    Ok(latency_result(samples))
}

async fn exec_stream(
    rt: &mut Runtime,
    container: &str,
    transport: Transport,
    o: &Options,
) -> Result<Value, BenchError> {
    let mut samples = Vec::with_capacity(o.n);
    for i in 0..o.warmup + o.n {
        let t0 = Instant::now();
        let url = rt
            .exec(ExecRequest {
                container_id: container.into(),
                cmd: COMMAND.iter().map(|s| s.to_string()).collect(),
                tty: false,
                stdin: false,
                stdout: true,
                stderr: true,
            })
            .await
            .map_err(cri("Exec"))?
            .into_inner()
            .url;
        let io = CommandIo {
            stdout: Some(Box::new(tokio::io::sink())),
            stderr: Some(Box::new(tokio::io::sink())),
            ..Default::default()
        };
        let exit = match remote_command(&url, transport, Some(PROTOCOLS), io).await {
            Ok(exit) => exit,
            // Only the first attempt tells whether the runtime speaks this transport.
            Err(e) if i == 0 && e.is_upgrade_refused() => {
                return Ok(json!({ "refused": e.to_string() }));
            }
            Err(source) => {
                return Err(BenchError::Stream {
                    what: "exec",
                    source,
                })
            }
        };
        let elapsed = t0.elapsed();
        if exit != Exit::Code(0) {
            return Err(BenchError::Check(format!(
                "{transport} exec {COMMAND:?} ended with {exit:?}"
            )));
        }
        if i >= o.warmup {
            samples.push(ms(elapsed));
        }
    }
    Ok(latency_result(samples))
}

async fn forward(rt: &mut Runtime, pod: &str, port: u16) -> Result<SpdyPortForward, BenchError> {
    let url = rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.into(),
            port: vec![i32::from(port)],
        })
        .await
        .map_err(cri("PortForward"))?
        .into_inner()
        .url;
    SpdyPortForward::connect(&url)
        .await
        .map_err(stream("port-forward connect"))
}

/// Sends `bytes` through a new forwarded connection while reading the echo back and
/// checking it; the time from the first byte sent to the last byte echoed.
async fn echo(
    rt: &mut Runtime,
    pod: &str,
    port: u16,
    bytes: usize,
) -> Result<Duration, BenchError> {
    let session = forward(rt, pod, port).await?;
    let conn = session
        .open(port)
        .await
        .map_err(stream("port-forward open"))?;
    let (mut rd, mut wr) = tokio::io::split(conn);
    let pattern: Vec<u8> = (0..PERIOD + CHUNK).map(|i| (i % PERIOD) as u8).collect();
    let t0 = Instant::now();
    let send = async {
        let mut sent = 0;
        while sent < bytes {
            let len = CHUNK.min(bytes - sent);
            let off = sent % PERIOD;
            wr.write_all(&pattern[off..off + len])
                .await
                .map_err(io("send to the forwarded port"))?;
            sent += len;
        }
        // Half-close, as a client piping a file would: the echo still comes back.
        wr.shutdown().await.map_err(io("half-close"))
    };
    let receive = async {
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0;
        while got < bytes {
            let k = rd.read(&mut buf).await.map_err(io("read the echo"))?;
            if k == 0 {
                return Err(BenchError::Check(format!(
                    "the echo ended after {got} of {bytes} bytes"
                )));
            }
            let off = got % PERIOD;
            if buf[..k] != pattern[off..off + k] {
                return Err(BenchError::Check(format!(
                    "the echo differs from what was sent in bytes {got}..{}",
                    got + k
                )));
            }
            got += k;
        }
        Ok(t0.elapsed())
    };
    let ((), elapsed) = tokio::try_join!(send, receive)?;
    Ok(elapsed)
}

async fn port_forward(rt: &mut Runtime, pod: &str, o: &Options) -> Result<Value, BenchError> {
    // The server may not listen yet: retry a small echo until it answers.
    let deadline = Instant::now() + ECHO_READY;
    loop {
        match tokio::time::timeout(Duration::from_secs(2), echo(rt, pod, o.port, 4096)).await {
            Ok(Ok(_)) => break,
            Ok(Err(e)) if Instant::now() >= deadline => {
                return Err(BenchError::Check(format!(
                    "the echo server on port {} did not answer: {e}",
                    o.port
                )))
            }
            Err(_) if Instant::now() >= deadline => {
                return Err(BenchError::Check(format!(
                    "the echo server on port {} did not answer in time",
                    o.port
                )))
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    // A warm-up transfer, not counted.
    echo(rt, pod, o.port, (o.mib * MIB).min(32 * MIB)).await?;
    let mut rates = Vec::with_capacity(o.runs);
    for _ in 0..o.runs {
        let d = echo(rt, pod, o.port, o.mib * MIB).await?;
        rates.push(o.mib as f64 / d.as_secs_f64());
    }
    Ok(json!({
        "mib": o.mib,
        "median_mib_per_s": percentile(&rates, 50),
        "mib_per_s": rates,
    }))
}

// ---- the pod ---------------------------------------------------------------------------

async fn measure(
    rt: &mut Runtime,
    pod_id: &str,
    pod: &PodSandboxConfig,
    container: ContainerConfig,
    o: &Options,
) -> Result<Value, BenchError> {
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(container),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .map_err(cri("CreateContainer"))?
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .map_err(cri("StartContainer"))?;
    match o.what {
        What::ExecSync => exec_sync(rt, &id, o).await,
        What::Exec(t) => exec_stream(rt, &id, t, o).await,
        What::PortForward => port_forward(rt, pod_id, o).await,
    }
}

async fn run(o: &Options) -> Result<Value, BenchError> {
    let pod = pod_config(&o.pod)?;
    let container = container_config(&o.container, &o.image)?;
    let channel = limpet_protos::cri::connect(&o.endpoint)
        .await
        .map_err(|source| BenchError::Connect {
            endpoint: o.endpoint.clone(),
            source,
        })?;
    let mut rt = RuntimeServiceClient::new(channel.clone());
    ImageServiceClient::new(channel)
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: o.image.clone(),
                ..Default::default()
            }),
            sandbox_config: Some(pod.clone()),
            ..Default::default()
        })
        .await
        .map_err(cri("PullImage"))?;
    let pod_id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(cri("RunPodSandbox"))?
        .into_inner()
        .pod_sandbox_id;
    let result = measure(&mut rt, &pod_id, &pod, container, o).await;
    // The pod goes whatever happened; a failure to remove it is reported, the script's
    // cleanup removes what is left.
    let removed = async {
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .map_err(cri("StopPodSandbox"))?;
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .map_err(cri("RemovePodSandbox"))
    }
    .await;
    let mut value = result?;
    removed?;
    if let Value::Object(map) = &mut value {
        map.insert("what".into(), o.what.name().into());
        if o.what != What::PortForward {
            map.insert("n".into(), o.n.into());
            map.insert("warmup".into(), o.warmup.into());
        }
    }
    Ok(value)
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match parse_args(std::env::args().skip(1)) {
        Ok(o) => run(&o).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-streaming: {e}");
            ExitCode::FAILURE
        }
    }
}
