//! PullImage: resolve, pick the platform, fetch manifest and config, fetch and unpack the
//! layers in parallel, then record the image in one transaction. A pull that fails leaves
//! the store as it found it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::StreamExt;

use super::auth::Credentials;
use super::error::PullError;
use super::layer::{self, UnpackTo};
use super::manifest::{self, Descriptor, Document, Manifest};
use super::reference::Reference;
use super::registry::Session;
use super::Images;
use crate::digest::{chain_ids, Digest};
use crate::store::NewImage;

/// A finished pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image id (config digest).
    pub id: Digest,
    /// Bytes transferred from the registry.
    pub transferred: u64,
}

impl Images {
    /// Pulls `image` for this node's platform and returns its id.
    pub async fn pull(&self, image: &str, creds: Credentials) -> Result<Pulled, PullError> {
        let start = Instant::now();
        let result = self.pull_inner(image, creds).await;
        self.metrics.pull_finished(result.is_ok(), start.elapsed());
        match &result {
            Ok(p) => {
                tracing::info!(image, id = %p.id, bytes = p.transferred, secs = start.elapsed().as_secs_f64(), "pulled")
            }
            Err(e) => {
                tracing::warn!(image, error = %e, "pull failed");
                // Drop whatever the failed pull stored and nothing references.
                if let Err(gc) = self.gc().await {
                    tracing::warn!(error = %gc, "garbage collection after a failed pull");
                }
            }
        }
        result
    }

    async fn pull_inner(&self, image: &str, creds: Credentials) -> Result<Pulled, PullError> {
        let reference = Reference::parse(image)?;
        // Concurrent pulls of one image wait here; the later ones then find every layer.
        let _flight = self.flights.enter(format!("image:{reference}")).await;
        let session = self.registry.session(&reference, creds)?;
        let mut lease = self.leases.lease();
        let mut transferred = 0u64;

        let top = session.resolve().await?;
        transferred += top.bytes.len() as u64;
        lease.add([top.digest.clone()]);
        self.put_blob(&top.digest, &top.bytes).await?;
        let (manifest_digest, manifest) =
            match manifest::parse_document(&top.media_type, &top.bytes)? {
                Document::Manifest(m) => (top.digest.clone(), *m),
                Document::Index(index) => {
                    let desc =
                        manifest::select_platform(&index, &manifest::host_platform())?.clone();
                    lease.add([desc.digest.clone()]);
                    let (bytes, n) = self.small_blob(&session, &desc, true).await?;
                    transferred += n;
                    match manifest::parse_document(&desc.media_type, &bytes)? {
                        Document::Manifest(m) => (desc.digest, *m),
                        Document::Index(_) => {
                            return Err(manifest::ManifestError::Invalid {
                                what: "index",
                                message: format!("entry {} is an index itself", desc.digest),
                            }
                            .into())
                        }
                    }
                }
            };

        lease.add([manifest.config.digest.clone()]);
        let (config_bytes, n) = self.small_blob(&session, &manifest.config, false).await?;
        transferred += n;
        let config = manifest::parse_config(&config_bytes, manifest.layers.len())?;
        let chain = chain_ids(&config.rootfs.diff_ids);
        lease.add(manifest.layers.iter().map(|l| l.digest.clone()));
        lease.add(chain.iter().cloned());

        transferred += self
            .layers(&session, &manifest, &config.rootfs.diff_ids, &chain)
            .await?;

        let id = manifest.config.digest.clone();
        let mut names: Vec<String> = reference.tagged().into_iter().collect();
        names.push(reference.with_digest(&top.digest));
        let mut blobs = vec![top.digest.clone(), manifest_digest.clone(), id.clone()];
        blobs.extend(manifest.layers.iter().map(|l| l.digest.clone()));
        blobs.dedup();
        let size = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        let new = NewImage {
            id: &id,
            manifest: &manifest_digest,
            size,
            names: &names,
            blobs: &blobs,
            chain: &chain,
        };
        let orphaned = self.store.put_image(&new)?;
        drop(lease);
        if orphaned > 0 {
            self.gc().await?;
        }
        Ok(Pulled { id, transferred })
    }

    async fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), PullError> {
        let content = self.content.clone();
        let (digest, bytes) = (digest.clone(), bytes.to_vec());
        tokio::task::spawn_blocking(move || content.put(&digest, &bytes))
            .await
            .map_err(|e| PullError::Internal(e.to_string()))??;
        Ok(())
    }

    /// A manifest or config: from the content store if there, else fetched and stored.
    async fn small_blob(
        &self,
        session: &Session<'_>,
        desc: &Descriptor,
        manifest: bool,
    ) -> Result<(Vec<u8>, u64), PullError> {
        if self.content.exists(&desc.digest) {
            return Ok((self.content.read(&desc.digest)?, 0));
        }
        let bytes = session.fetch_small(desc, manifest).await?;
        self.metrics.pull_bytes(bytes.len() as u64);
        self.put_blob(&desc.digest, &bytes).await?;
        let n = bytes.len() as u64;
        Ok((bytes, n))
    }

    /// Every layer, up to `max_concurrent_downloads` at once. On the first failure the others
    /// stop at their next chunk; all are awaited so none commits after we return.
    async fn layers(
        &self,
        session: &Session<'_>,
        m: &Manifest,
        diff_ids: &[Digest],
        chain: &[Digest],
    ) -> Result<u64, PullError> {
        let abort = AtomicBool::new(false);
        let abort = &abort;
        let jobs: Vec<_> = m
            .layers
            .iter()
            .enumerate()
            .map(|(i, desc)| {
                let parent = i.checked_sub(1).map(|p| chain[p].clone());
                async move {
                    let r = self
                        .layer(session, desc, &diff_ids[i], &chain[i], parent, abort)
                        .await;
                    if r.is_err() {
                        abort.store(true, Ordering::Relaxed);
                    }
                    r
                }
            })
            .collect();
        let results: Vec<Result<u64, PullError>> = futures::stream::iter(jobs)
            .buffer_unordered(self.max_concurrent_downloads)
            .collect()
            .await;
        let mut total = 0;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(n) => total += n,
                // A layer stopped because another failed says less than the one that failed.
                Err(PullError::Cancelled(_)) if first_err.is_some() => {}
                Err(e) => {
                    if first_err
                        .as_ref()
                        .map(|f| matches!(f, PullError::Cancelled(_)))
                        .unwrap_or(true)
                    {
                        first_err = Some(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    async fn layer(
        &self,
        session: &Session<'_>,
        desc: &Descriptor,
        diff_id: &Digest,
        chain_id: &Digest,
        parent: Option<Digest>,
        abort: &AtomicBool,
    ) -> Result<u64, PullError> {
        let _flight = self.flights.enter(format!("layer:{}", desc.digest)).await;
        let have_blob = self.content.exists(&desc.digest);
        let have_snapshot = self.snapshots.exists(chain_id)?;
        if have_blob && have_snapshot {
            return Ok(0);
        }
        let unpack_to = if have_snapshot {
            None
        } else {
            Some(UnpackTo {
                pending: self.snapshots.begin()?,
                diff_id: diff_id.clone(),
                chain_id: chain_id.clone(),
                parent,
            })
        };
        if have_blob {
            if let Some(to) = unpack_to {
                layer::unpack_local(desc, &self.content, &self.snapshots, to).await?;
            }
            return Ok(0);
        }
        let metrics = self.metrics.clone();
        layer::fetch_and_process(
            session,
            desc,
            &self.content,
            &self.snapshots,
            unpack_to,
            abort,
            |n| metrics.pull_bytes(n),
        )
        .await
    }
}
