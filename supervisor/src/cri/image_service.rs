//! The CRI ImageService.

use std::collections::HashMap;
use std::sync::Arc;

use limpet_protos::cri::v1::image_service_server::ImageService;
use limpet_protos::cri::v1::{
    FilesystemIdentifier, FilesystemUsage, Image, ImageFsInfoRequest, ImageFsInfoResponse,
    ImageSpec, ImageStatusRequest, ImageStatusResponse, Int64Value, ListImagesRequest,
    ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest,
    RemoveImageResponse, UInt64Value,
};
use tonic::{Request, Response, Status};

use super::observe;
use super::status::{pull_status, query_status};
use crate::images::auth::Credentials;
use crate::images::{ImageInfo, Images};
use crate::metrics::Metrics;

pub struct ImageServiceImpl {
    images: Arc<Images>,
    metrics: Arc<Metrics>,
    root: std::path::PathBuf,
}

impl ImageServiceImpl {
    pub fn new(images: Arc<Images>, metrics: Arc<Metrics>, root: std::path::PathBuf) -> Self {
        ImageServiceImpl {
            images,
            metrics,
            root,
        }
    }
}

fn image_of(spec: Option<&ImageSpec>) -> Result<&str, Status> {
    spec.map(|s| s.image.as_str())
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| Status::invalid_argument("image spec is empty: name the image"))
}

fn to_cri(info: &ImageInfo) -> Image {
    Image {
        id: info.id.to_string(),
        repo_tags: info.repo_tags.clone(),
        repo_digests: info.repo_digests.clone(),
        size: info.size,
        uid: info.uid.map(|value| Int64Value { value }),
        username: info.username.clone(),
        spec: Some(ImageSpec {
            image: info.id.to_string(),
            ..Default::default()
        }),
        pinned: false,
    }
}

/// `ImageStatus` verbose info: the config as pulled, the manifest and top chain id.
fn verbose(info: &ImageInfo) -> HashMap<String, String> {
    let doc = serde_json::json!({
        "imageSpec": info.config_json,
        "manifest": info.manifest.to_string(),
        "chainID": info.chain_id.as_ref().map(|c| c.to_string()),
        "size": info.size,
    });
    HashMap::from([("info".to_string(), doc.to_string())])
}

fn usage(mountpoint: String, (bytes, inodes): (u64, u64), now: i64) -> FilesystemUsage {
    FilesystemUsage {
        timestamp: now,
        fs_id: Some(FilesystemIdentifier { mountpoint }),
        used_bytes: Some(UInt64Value { value: bytes }),
        inodes_used: Some(UInt64Value { value: inodes }),
    }
}

#[tonic::async_trait]
impl ImageService for ImageServiceImpl {
    async fn list_images(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        observe(&self.metrics, "ImageService/ListImages", async {
            let req = req.into_inner();
            let filter = req
                .filter
                .as_ref()
                .and_then(|f| f.image.as_ref())
                .map(|s| s.image.as_str());
            let images = self.images.list(filter).map_err(|e| query_status(&e))?;
            Ok(ListImagesResponse {
                images: images.iter().map(to_cri).collect(),
            })
        })
        .await
    }

    async fn image_status(
        &self,
        req: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        observe(&self.metrics, "ImageService/ImageStatus", async {
            let req = req.into_inner();
            let spec = image_of(req.image.as_ref())?;
            let Some(info) = self.images.status(spec).map_err(|e| query_status(&e))? else {
                return Ok(ImageStatusResponse::default());
            };
            let info_map = if req.verbose {
                verbose(&info)
            } else {
                HashMap::new()
            };
            Ok(ImageStatusResponse {
                image: Some(to_cri(&info)),
                info: info_map,
            })
        })
        .await
    }

    async fn pull_image(
        &self,
        req: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        observe(&self.metrics, "ImageService/PullImage", async {
            let req = req.into_inner();
            let image = image_of(req.image.as_ref())?.to_string();
            let creds = match &req.auth {
                None => Credentials::default(),
                Some(a) => Credentials::new(
                    &a.username,
                    &a.password,
                    &a.auth,
                    &a.server_address,
                    &a.identity_token,
                    &a.registry_token,
                )
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
            };
            // Run to the end even if the client goes away: a pull cut short would be GC'd.
            let images = self.images.clone();
            let name = image.clone();
            let pulled = tokio::spawn(async move { images.pull(&name, creds).await })
                .await
                .map_err(|e| Status::internal(format!("pull {image}: {e}")))?
                .map_err(|e| pull_status(&image, &e))?;
            Ok(PullImageResponse {
                image_ref: pulled.id.to_string(),
            })
        })
        .await
    }

    async fn remove_image(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        observe(&self.metrics, "ImageService/RemoveImage", async {
            let req = req.into_inner();
            let spec = image_of(req.image.as_ref())?;
            self.images
                .remove(spec)
                .await
                .map_err(|e| query_status(&e))?;
            Ok(RemoveImageResponse {})
        })
        .await
    }

    async fn image_fs_info(
        &self,
        _req: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        observe(&self.metrics, "ImageService/ImageFsInfo", async {
            let images = self.images.clone();
            let u = tokio::task::spawn_blocking(move || images.fs_usage())
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| query_status(&e))?;
            let now = crate::store::now();
            Ok(ImageFsInfoResponse {
                image_filesystems: vec![usage(self.root.display().to_string(), u.images, now)],
                container_filesystems: vec![usage(
                    self.images.snapshots.rootfs_dir().display().to_string(),
                    u.containers,
                    now,
                )],
            })
        })
        .await
    }
}
