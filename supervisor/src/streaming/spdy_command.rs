//! Exec and attach over SPDY/3.1: the client opens one stream per stdio stream plus an error
//! stream (and a resize stream from v3 on), named by their `streamType` header; the command
//! runs once all expected streams are there.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::io::{gone_signal, Channel, CommandIo, Outcome, TermSize, OUTPUT_QUEUE};
use super::spdy::{Incoming, Session, StreamReader, StreamWriter};
use super::status;
use super::ws_command::Wanted;

/// Subprotocols served through the `X-Stream-Protocol-Version` handshake, preferred first.
pub const PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

#[derive(Default)]
struct Streams {
    error: Option<StreamWriter>,
    stdin: Option<StreamReader>,
    stdout: Option<StreamWriter>,
    stderr: Option<StreamWriter>,
    resize: Option<StreamReader>,
    /// Read halves we never read and write halves we never write, kept open till the end.
    _unused: Vec<(Option<StreamReader>, Option<StreamWriter>)>,
}

async fn collect(
    incoming: &mut Incoming,
    expected: usize,
    timeout: Duration,
) -> Result<Streams, String> {
    let mut s = Streams::default();
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    while got < expected {
        let stream = match tokio::time::timeout_at(deadline, incoming.accept()).await {
            Ok(Some(stream)) => stream,
            Ok(None) => return Err("client closed the connection".into()),
            Err(_) => return Err("timed out waiting for client to create streams".into()),
        };
        let kind = stream.header("streamtype").unwrap_or("").to_string();
        let (r, w) = stream.split();
        match kind.as_str() {
            "error" => {
                s.error = Some(w);
                s._unused.push((Some(r), None));
            }
            "stdin" => {
                s.stdin = Some(r);
                s._unused.push((None, Some(w)));
            }
            "stdout" => {
                s.stdout = Some(w);
                s._unused.push((Some(r), None));
            }
            "stderr" => {
                s.stderr = Some(w);
                s._unused.push((Some(r), None));
            }
            "resize" => {
                s.resize = Some(r);
                s._unused.push((None, Some(w)));
            }
            other => {
                tracing::debug!(stream_type = other, "unexpected stream type");
                continue;
            }
        }
        got += 1;
    }
    Ok(s)
}

pub async fn serve<F, Fut>(
    session: Session,
    mut incoming: Incoming,
    protocol: &str,
    wanted: Wanted,
    creation_timeout: Duration,
    run: F,
) where
    F: FnOnce(CommandIo) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let resizable = matches!(protocol, "v4.channel.k8s.io" | "v3.channel.k8s.io");
    let expected = 1
        + usize::from(wanted.stdin)
        + usize::from(wanted.stdout)
        + usize::from(wanted.stderr)
        + usize::from(wanted.tty && resizable);
    let mut streams = match collect(&mut incoming, expected, creation_timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "streams not created");
            session.close().await;
            return;
        }
    };

    let (gone_tx, gone) = gone_signal();
    let watch = session.clone();
    let watcher = tokio::spawn(async move {
        watch.closed().await;
        gone_tx.fire();
    });
    let stdin = streams.stdin.take().map(|mut r| {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        tokio::spawn(async move {
            while let Some(data) = r.read().await {
                if !data.is_empty() && tx.send(data).await.is_err() {
                    break;
                }
            }
        });
        rx
    });
    let resize = streams.resize.take().map(|mut r| {
        let (tx, rx) = mpsc::channel::<TermSize>(4);
        tokio::spawn(async move {
            let mut pending = Vec::new();
            while let Some(data) = r.read().await {
                pending.extend_from_slice(&data);
                let mut sizes = serde_json::Deserializer::from_slice(&pending).into_iter();
                let mut malformed = false;
                for size in sizes.by_ref() {
                    match size {
                        Ok(size) => {
                            let _ = tx.try_send(size);
                        }
                        // A size cut between two frames: the rest comes with the next.
                        Err(e) if e.is_eof() => break,
                        Err(_) => {
                            malformed = true;
                            break;
                        }
                    }
                }
                // A size is a few bytes: a long unfinished one is garbage.
                let used = if malformed || pending.len() > 4096 {
                    pending.len()
                } else {
                    sizes.byte_offset()
                };
                pending.drain(..used);
            }
        });
        rx
    });

    let (output_tx, mut output_rx) = mpsc::channel::<(Channel, Bytes)>(OUTPUT_QUEUE);
    let io = CommandIo {
        stdin,
        output: output_tx,
        resize,
        stdout: wanted.stdout,
        stderr: wanted.stderr,
        tty: wanted.tty,
        gone,
    };
    let (stdout, stderr) = (streams.stdout.clone(), streams.stderr.clone());
    let forward = async move {
        let mut alive = true;
        while let Some((channel, data)) = output_rx.recv().await {
            let to = match channel {
                Channel::Stdout => &stdout,
                Channel::Stderr => &stderr,
            };
            if let (true, Some(w)) = (alive, to) {
                alive = w.write(data).await.is_ok();
            }
        }
    };
    let (outcome, ()) = tokio::join!(run(io), forward);

    for w in [&streams.stdout, &streams.stderr].into_iter().flatten() {
        let _ = w.close().await;
    }
    if let Some(error) = &streams.error {
        let body = if protocol == "v4.channel.k8s.io" {
            Some(status::json(&outcome))
        } else {
            status::text(&outcome)
        };
        if let Some(body) = body {
            let _ = error.write(Bytes::from(body)).await;
        }
        let _ = error.close().await;
    }
    watcher.abort();
    session.close().await;
}
