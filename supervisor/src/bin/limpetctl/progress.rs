//! Pull progress on a terminal: after a second, a line on stderr with the elapsed time and
//! how much the runtime's image filesystem has grown (ImageFsInfo, so it works with any
//! CRI runtime).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::v1::image_service_client::ImageServiceClient;
use limpet_protos::cri::v1::ImageFsInfoRequest;
use tokio::sync::oneshot;

use crate::output::human_size;

pub struct Progress {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

async fn used(client: &mut ImageServiceClient<Channel>) -> Option<u64> {
    let r = tokio::time::timeout(
        Duration::from_secs(1),
        client.image_fs_info(ImageFsInfoRequest {}),
    )
    .await
    .ok()?
    .ok()?;
    Some(
        r.into_inner()
            .image_filesystems
            .iter()
            .filter_map(|f| f.used_bytes.as_ref().map(|u| u.value))
            .sum(),
    )
}

impl Progress {
    pub fn start(mut client: ImageServiceClient<Channel>, image: &str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress {
                stop: None,
                task: None,
            };
        }
        let (tx, mut rx) = oneshot::channel();
        let image = image.to_string();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let base = used(&mut client).await;
            let spinner = ['|', '/', '-', '\\'];
            let mut shown = false;
            let mut i = 0usize;
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                if start.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                let grown = match (base, used(&mut client).await) {
                    (Some(b), Some(n)) => format!(", {} stored", human_size(n.saturating_sub(b))),
                    _ => String::new(),
                };
                eprint!(
                    "\r\x1b[2K{} pulling {image}: {:.1}s{grown}",
                    spinner[i % 4],
                    start.elapsed().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
                shown = true;
                i += 1;
            }
            if shown {
                eprint!("\r\x1b[2K");
                let _ = std::io::stderr().flush();
            }
        });
        Progress {
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}
