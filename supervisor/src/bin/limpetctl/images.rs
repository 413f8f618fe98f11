//! Image commands: pull, images, inspecti, rmi, imagefsinfo.

use std::time::Duration;

use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::v1::image_service_client::ImageServiceClient;
use limpet_protos::cri::v1::{
    AuthConfig, Image, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest,
    ImageStatusResponse, ListImagesRequest, PullImageRequest, RemoveImageRequest,
};

use crate::client::call;
use crate::output::{self, human_size, table, Format};
use crate::progress::Progress;

type Client = ImageServiceClient<Channel>;

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

/// The AuthConfig of `--creds`, `--auth` or `--username/--password`.
pub fn auth_config(
    creds: Option<String>,
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
) -> anyhow::Result<Option<AuthConfig>> {
    let given = [creds.is_some(), auth.is_some(), username.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given > 1 {
        anyhow::bail!("give only one of --creds, --auth and --username");
    }
    Ok(if let Some(c) = creds {
        let (u, p) = c
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--creds must be USERNAME:PASSWORD"))?;
        Some(AuthConfig {
            username: u.into(),
            password: p.into(),
            ..Default::default()
        })
    } else if let Some(a) = auth {
        Some(AuthConfig {
            auth: a,
            ..Default::default()
        })
    } else {
        username.map(|u| AuthConfig {
            username: u,
            password: password.unwrap_or_default(),
            ..Default::default()
        })
    })
}

pub async fn pull(client: &Client, image: &str, auth: Option<AuthConfig>) -> anyhow::Result<()> {
    let progress = Progress::start(client.clone(), image);
    let mut c = client.clone();
    let req = PullImageRequest {
        image: spec(image),
        auth,
        sandbox_config: None,
    };
    // No deadline: a big image takes what it takes; the runtime bounds a silent registry.
    let result = c.pull_image(req).await;
    progress.stop().await;
    let resp = result.map_err(|s| {
        // limpetd names the image itself; other runtimes may not
        let prefix = if s.message().contains(image) {
            String::new()
        } else {
            format!("pull {image}: ")
        };
        anyhow::anyhow!("{prefix}{} ({:?})", s.message(), s.code())
    })?;
    println!("Image is up to date for {}", resp.into_inner().image_ref);
    Ok(())
}

pub struct ListOptions {
    pub quiet: bool,
    pub verbose: bool,
    pub digests: bool,
    pub no_trunc: bool,
    pub output: Format,
}

pub async fn list(
    client: &Client,
    t: Duration,
    image: Option<String>,
    o: ListOptions,
) -> anyhow::Result<()> {
    let filter = image.map(|i| ImageFilter { image: spec(&i) });
    let mut c = client.clone();
    let resp = call(
        "list images",
        t,
        c.list_images(ListImagesRequest { filter }),
    )
    .await?;
    let mut images = resp.images.clone();
    images.sort_by(|a, b| {
        a.repo_tags
            .first()
            .cmp(&b.repo_tags.first())
            .then(a.id.cmp(&b.id))
    });
    if o.quiet {
        for i in &images {
            println!("{}", i.id);
        }
        return Ok(());
    }
    match o.output {
        Format::Json | Format::Yaml => return output::print(&output::to_value(&resp), o.output),
        Format::Table => {}
    }
    if o.verbose {
        for i in &images {
            print!("{}", verbose_image(i));
        }
        return Ok(());
    }
    let mut header = vec!["IMAGE", "TAG"];
    if o.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "SIZE"]);
    let mut rows = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for i in &images {
        let id = short(&i.id, o.no_trunc);
        let digest = i
            .repo_digests
            .first()
            .and_then(|d| d.split_once('@'))
            .map(|(_, d)| short(d, o.no_trunc))
            .unwrap_or_else(|| "<none>".into());
        let mut names: Vec<(String, String)> = i.repo_tags.iter().map(|t| split_tag(t)).collect();
        if names.is_empty() {
            let repo = i
                .repo_digests
                .first()
                .and_then(|d| d.split_once('@'))
                .map(|(r, _)| r.to_string())
                .unwrap_or_else(|| "<none>".into());
            names.push((repo, "<none>".into()));
        }
        for (repo, tag) in names {
            let mut row = vec![repo, tag];
            if o.digests {
                row.push(digest.clone());
            }
            row.extend([id.clone(), human_size(i.size)]);
            rows.push(row);
        }
    }
    print!("{}", table(&rows));
    Ok(())
}

fn short(id: &str, no_trunc: bool) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    if no_trunc {
        id.to_string()
    } else {
        hex.chars().take(13).collect()
    }
}

/// `host/repo:tag` into (`host/repo`, `tag`); a port's colon is not a tag's.
fn split_tag(name: &str) -> (String, String) {
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    match name[slash..].rfind(':') {
        Some(i) => (
            name[..slash + i].to_string(),
            name[slash + i + 1..].to_string(),
        ),
        None => (name.to_string(), "<none>".into()),
    }
}

fn verbose_image(i: &Image) -> String {
    let mut s = format!("ID: {}\n", i.id);
    for t in &i.repo_tags {
        s.push_str(&format!("RepoTags: {t}\n"));
    }
    for d in &i.repo_digests {
        s.push_str(&format!("RepoDigests: {d}\n"));
    }
    s.push_str(&format!("Size: {}\n", i.size));
    if let Some(uid) = &i.uid {
        s.push_str(&format!("Uid: {}\n", uid.value));
    }
    if !i.username.is_empty() {
        s.push_str(&format!("Username: {}\n", i.username));
    }
    s.push('\n');
    s
}

async fn status(
    client: &Client,
    t: Duration,
    image: &str,
    verbose: bool,
) -> anyhow::Result<ImageStatusResponse> {
    let mut c = client.clone();
    call(
        &format!("image status {image}"),
        t,
        c.image_status(ImageStatusRequest {
            image: spec(image),
            verbose,
        }),
    )
    .await
}

pub async fn inspect(
    client: &Client,
    t: Duration,
    specs: &[String],
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for s in specs {
        let resp = status(client, t, s, verbose).await?;
        let Some(image) = &resp.image else {
            missing.push(s.clone());
            continue;
        };
        if format == Format::Table {
            print!("{}", verbose_image(image));
            continue;
        }
        let mut doc = serde_json::json!({ "status": output::to_value(image) });
        let mut info = serde_json::Map::new();
        for (k, v) in &resp.info {
            // Values are JSON documents; show them as such.
            let parsed =
                serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.clone()));
            info.insert(k.clone(), parsed);
        }
        if let Some(inner) = info.remove("info") {
            doc["info"] = inner;
        } else if !info.is_empty() {
            doc["info"] = serde_json::Value::Object(info);
        }
        output::print(&doc, format)?;
    }
    if !missing.is_empty() {
        anyhow::bail!("no such image: {}", missing.join(", "));
    }
    Ok(())
}

pub async fn remove(
    client: &Client,
    t: Duration,
    specs: &[String],
    all: bool,
) -> anyhow::Result<()> {
    let mut targets: Vec<(String, Vec<String>)> = Vec::new();
    if all {
        let mut c = client.clone();
        let resp = call(
            "list images",
            t,
            c.list_images(ListImagesRequest { filter: None }),
        )
        .await?;
        for i in resp.images {
            let names = if i.repo_tags.is_empty() {
                vec![i.id.clone()]
            } else {
                i.repo_tags.clone()
            };
            targets.push((i.id, names));
        }
    } else {
        if specs.is_empty() {
            anyhow::bail!("name at least one image, or use --all or --prune");
        }
        for s in specs {
            let resp = status(client, t, s, false).await?;
            match resp.image {
                Some(i) => {
                    let names = if i.repo_tags.is_empty() {
                        vec![i.id.clone()]
                    } else {
                        i.repo_tags.clone()
                    };
                    targets.push((i.id, names));
                }
                None => anyhow::bail!("no such image {s}"),
            }
        }
    }
    for (id, names) in targets {
        let mut c = client.clone();
        call(
            &format!("remove image {id}"),
            t,
            c.remove_image(RemoveImageRequest { image: spec(&id) }),
        )
        .await?;
        for n in names {
            println!("Deleted: {n}");
        }
    }
    Ok(())
}

pub async fn fs_info(client: &Client, t: Duration, format: Format) -> anyhow::Result<()> {
    let mut c = client.clone();
    let resp = call("image fs info", t, c.image_fs_info(ImageFsInfoRequest {})).await?;
    if format != Format::Table {
        return output::print(
            &serde_json::json!({ "status": output::to_value(&resp) }),
            format,
        );
    }
    let mut rows = vec![vec![
        "FILESYSTEM".to_string(),
        "MOUNTPOINT".into(),
        "USED".into(),
        "INODES".into(),
    ]];
    for (kind, list) in [
        ("images", &resp.image_filesystems),
        ("containers", &resp.container_filesystems),
    ] {
        for u in list.iter() {
            rows.push(vec![
                kind.into(),
                u.fs_id
                    .as_ref()
                    .map(|f| f.mountpoint.clone())
                    .unwrap_or_default(),
                human_size(u.used_bytes.as_ref().map(|v| v.value).unwrap_or(0)),
                u.inodes_used
                    .as_ref()
                    .map(|v| v.value)
                    .unwrap_or(0)
                    .to_string(),
            ]);
        }
    }
    print!("{}", table(&rows));
    Ok(())
}
