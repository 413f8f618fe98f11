//! Connections to 127.0.0.1:PORT inside a pod's network namespace: a short-lived thread
//! enters the namespace, connects, and hands the socket back; a socket keeps the namespace
//! it was created in, so the rest of the relay runs on the runtime's own threads.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a pod's ports are: its namespace file, or the host's namespace for host-network
/// pods.
#[derive(Debug, Clone)]
pub struct Dialer {
    pub netns: Option<PathBuf>,
}

impl Dialer {
    pub async fn connect(&self, port: u16) -> std::io::Result<TcpStream> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let Some(netns) = self.netns.clone() else {
            return TcpStream::connect(addr).await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("netns-dial".into())
            .spawn(move || {
                let _ = tx.send(connect_in(&netns, addr));
            })?;
        let stream = rx
            .await
            .map_err(|_| std::io::Error::other("dial thread ended"))??;
        stream.set_nonblocking(true)?;
        TcpStream::from_std(stream)
    }
}

fn connect_in(netns: &std::path::Path, addr: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let ns = std::fs::File::open(netns)?;
    // This thread is ours alone and ends right after: entering the namespace affects it only.
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(std::io::Error::from)?;
    std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
}

/// Sends what the pod writes on a forwarded connection to the client, chunk by chunk, until
/// the pod closes it or `send` answers false (the client is gone).
pub async fn pod_to_client<F, Fut>(mut rd: OwnedReadHalf, mut send: F)
where
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if !send(Bytes::copy_from_slice(&buf[..n])).await {
                    return;
                }
            }
        }
    }
}
