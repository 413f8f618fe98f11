//! Attach: the client gets the container's own output from the moment it attaches, through
//! the shim's attach socket (`<bundle>/attach`, which fans output out to every client), and
//! writes the container's stdin FIFO when the container was created with stdin.

use std::os::fd::AsRawFd;

use bytes::Bytes;
use limpet_protos::cri::v1;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use super::error::{io_err, Result};
use super::exec_stream::{open_writer, pump_in};
use super::Runtime;
use crate::streaming::io::{Channel, CommandIo, Outcome};

/// Largest output chunk the shim sends in one frame, with room to spare.
const MAX_FRAME: usize = 1 << 20;

impl Runtime {
    pub async fn attach(&self, req: v1::AttachRequest, io: CommandIo) -> Result<Outcome> {
        let c = self.running_container(&req.container_id)?;
        let id = c.record.id.clone();
        let address = self.sandbox(&c.record.sandbox_id)?.record.shim_address;
        let bundle = self.dirs.bundle(&id);
        let CommandIo {
            stdin,
            output,
            resize,
            stdout,
            stderr,
            tty,
            mut gone,
        } = io;

        // Through the directory's descriptor: a bundle path can be longer than a socket path.
        let dir =
            std::fs::File::open(&bundle).map_err(io_err(format!("open {}", bundle.display())))?;
        let socket = format!("/proc/self/fd/{}/attach", dir.as_raw_fd());
        let mut conn = UnixStream::connect(&socket)
            .await
            .map_err(io_err(format!("connect to the attach socket of {id}")))?;
        drop(dir);

        let stdin_task = match stdin {
            Some(rx) if c.config.stdin => {
                let tx = open_writer(&bundle.join("stdin"))?;
                let once = c.config.stdin_once;
                let (shims, a, i) = (self.shims.clone(), address.clone(), id.clone());
                Some(tokio::spawn(async move {
                    pump_in(rx, tx).await;
                    if once {
                        let _ = shims.close_io(&a, &i, "").await;
                    }
                }))
            }
            _ => None,
        };
        let resize_task = resize
            .filter(|_| tty && c.config.tty)
            .map(|rx| self.spawn_resizes(rx, &address, &id, ""));

        let relay = async {
            loop {
                let mut head = [0u8; 5];
                if conn.read_exact(&mut head).await.is_err() {
                    return;
                }
                let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
                if len > MAX_FRAME {
                    tracing::warn!(%id, len, "attach socket sent an oversize frame");
                    return;
                }
                let mut data = vec![0u8; len];
                if conn.read_exact(&mut data).await.is_err() {
                    return;
                }
                let (channel, wanted) = match head[0] {
                    2 => (Channel::Stderr, stderr),
                    _ => (Channel::Stdout, stdout),
                };
                if wanted && output.send((channel, Bytes::from(data))).await.is_err() {
                    return;
                }
            }
        };
        // The container's output ending (it exited) or the client leaving ends the attach.
        tokio::select! {
            _ = relay => {}
            _ = gone.wait() => {}
        }
        for t in [stdin_task, resize_task].into_iter().flatten() {
            t.abort();
        }
        Ok(Outcome::Success)
    }
}
