//! Pulling through limpetd from a real registry: every image kind, the unpacked trees checked
//! byte by byte against their layers, snapshots shared, no second download, platform choice,
//! concurrent pulls, mirrors by original name, basic auth, restart, removal, metrics.

use std::path::{Path, PathBuf};

use limpet_protos::cri::v1::{
    AuthConfig, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest,
};
use limpet_tests::limpetd::{block_on, ready, Limpetd, Options};
use limpet_tests::registry::layout::{assert_layer_unpacked, host_arch, Layer};
use limpet_tests::registry::{seed, Registry, Seeded};
use limpetd::digest::{chain_ids, Digest};
use limpetd::store::Store;

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

fn setup(case: &str) -> Option<(Registry, Seeded, tempfile::TempDir, Limpetd)> {
    let reg = ready(case, Registry::start(None))?;
    let work = tempfile::tempdir().expect("temp dir");
    let seeded = ready(case, seed(&reg, &work.path().join("layout")))?;
    let d = ready(case, Limpetd::start(Options::default()))?;
    Some((reg, seeded, work, d))
}

fn chain_of(layers: &[Layer]) -> Vec<Digest> {
    let diffs: Vec<Digest> = layers
        .iter()
        .map(|l| l.diff_id.parse().expect("diff id"))
        .collect();
    chain_ids(&diffs)
}

/// The `fs` directory of the snapshot of `chain`.
fn snapshot_dir(root: &Path, chain: &Digest) -> PathBuf {
    let store = Store::open(&root.join("meta.db")).expect("open metadata");
    let rec = store
        .snapshot(chain)
        .expect("query")
        .unwrap_or_else(|| panic!("no snapshot {chain}"));
    root.join("snapshots").join(rec.id.to_string()).join("fs")
}

fn check_unpacked(root: &Path, layers: &[Layer]) {
    for (layer, chain) in layers.iter().zip(chain_of(layers)) {
        assert_layer_unpacked(&layer.tar, &snapshot_dir(root, &chain));
    }
}

#[test]
fn pull_list_inspect_and_unpacked_bytes() {
    let Some((reg, seeded, _work, mut d)) = setup("pull_list_inspect_and_unpacked_bytes") else {
        return;
    };
    let addr = reg.addr.clone();
    for tag in ["single", "multi", "zstd", "docker"] {
        let out = d.ctl_ok(&["pull", &format!("{addr}/busybox:{tag}")]);
        assert!(out.starts_with("Image is up to date for sha256:"), "{out}");
    }
    // crictl's table
    let table = d.ctl_ok(&["images"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("IMAGE") && lines[0].contains("TAG") && lines[0].contains("IMAGE ID"),
        "{table}"
    );
    for tag in ["single", "multi", "zstd", "docker"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{addr}/busybox"))
                    && l.contains(&format!(" {tag} "))),
            "{tag} missing:\n{table}"
        );
    }
    assert_eq!(d.ctl_ok(&["images", "-q"]).lines().count(), 4);
    let json: serde_json::Value =
        serde_json::from_str(&d.ctl_ok(&["images", "-o", "json"])).expect("images json");
    assert_eq!(json["images"].as_array().map(Vec::len), Some(4), "{json}");
    assert!(json["images"][0]["repoTags"].is_array(), "{json}");
    let yaml = d.ctl_ok(&["images", "-o", "yaml"]);
    assert!(yaml.contains("repoDigests:"), "{yaml}");
    let verbose = d.ctl_ok(&["images", "-v"]);
    assert!(verbose.contains("Username: nobody"), "{verbose}");

    // inspecti: the config as pulled
    let inspect: serde_json::Value =
        serde_json::from_str(&d.ctl_ok(&["inspecti", &format!("{addr}/busybox:multi")]))
            .expect("inspecti json");
    let diff_ids: Vec<String> = seeded.layers["multi"]
        .iter()
        .map(|l| l.diff_id.clone())
        .collect();
    assert_eq!(
        inspect["info"]["imageSpec"]["rootfs"]["diff_ids"],
        serde_json::json!(diff_ids),
        "{inspect}"
    );
    assert_eq!(
        inspect["status"]["repoTags"],
        serde_json::json!([format!("{addr}/busybox:multi")])
    );

    // every layer unpacked exactly as its tar says, snapshots shared by chain id
    for tag in ["single", "multi", "zstd", "docker"] {
        check_unpacked(&d.root, &seeded.layers[tag]);
    }
    let store = Store::open(&d.root.join("meta.db")).expect("open metadata");
    assert_eq!(
        store.snapshots().expect("snapshots").len(),
        3,
        "single/docker share one chain, multi/zstd three"
    );

    // a second pull fetches no layer
    let layer_gets = |tag: &str| {
        seeded.layers[tag]
            .iter()
            .map(|l| reg.blob_gets(&l.digest))
            .collect::<Vec<_>>()
    };
    let before = layer_gets("multi");
    assert!(before.iter().all(|n| *n >= 1), "{before:?}");
    d.ctl_ok(&["pull", &format!("{addr}/busybox:multi")]);
    assert_eq!(
        layer_gets("multi"),
        before,
        "second pull downloaded layers again"
    );

    // the overlay rootfs over multi: whiteouts hide, the opaque dir shows only its new file
    d.stop();
    let multi_chain = chain_of(&seeded.layers["multi"]).pop().expect("chain");
    check_rootfs(&d.root, &multi_chain);
}

fn check_rootfs(root: &Path, chain: &Digest) {
    use std::sync::Arc;
    let store = Arc::new(Store::open(&root.join("meta.db")).expect("open metadata"));
    let snaps =
        limpetd::snapshots::Snapshotter::open(&root.join("snapshots"), store).expect("snapshotter");
    let mounts = snaps
        .prepare_rootfs("test-rootfs", chain, false)
        .expect("prepare rootfs");
    let target = tempfile::tempdir().expect("mount point");
    for m in &mounts {
        m.mount(target.path())
            .unwrap_or_else(|e| panic!("mount {m:?}: {e}"));
    }
    let t = target.path();
    let mounted = Mounted(t);
    {
        assert!(
            !t.join("etc/motd").exists(),
            "whited-out etc/motd is visible"
        );
        assert!(!t.join("data/a").exists(), "whited-out data/a is visible");
        assert!(
            std::fs::symlink_metadata(t.join("bin/true")).is_err(),
            "whited-out bin/true is visible"
        );
        assert_eq!(
            std::fs::read(t.join("data/b")).expect("data/b"),
            b"second file\n"
        );
        let mut opaque: Vec<String> = std::fs::read_dir(t.join("opaque"))
            .expect("opaque")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        opaque.sort();
        assert_eq!(
            opaque,
            vec!["new".to_string()],
            "opaque dir shows lower files"
        );
        assert_eq!(
            std::fs::read(t.join("bin/busybox")).expect("busybox"),
            std::fs::read("/bin/busybox").expect("host busybox")
        );
        // the rootfs is writable into its own upper dir, leaving the layers alone
        std::fs::write(t.join("etc/new-file"), b"x").expect("write in rootfs");
    }
    drop(mounted);
    snaps.remove_rootfs("test-rootfs").expect("remove rootfs");
    assert!(!root.join("snapshots/rootfs/test-rootfs").exists());
}

#[test]
fn platform_choice_and_concurrent_pulls_over_grpc() {
    let Some((reg, seeded, _work, d)) = setup("platform_choice_and_concurrent_pulls_over_grpc")
    else {
        return;
    };
    let image = format!("{}/busybox:multiarch", reg.addr);
    block_on(async {
        let (mut a, mut b) = (d.images().await, d.images().await);
        let req = || PullImageRequest {
            image: spec(&image),
            ..Default::default()
        };
        let (ra, rb) = tokio::join!(a.pull_image(req()), b.pull_image(req()));
        let (ra, rb) = (
            ra.expect("pull a").into_inner(),
            rb.expect("pull b").into_inner(),
        );
        assert_eq!(ra.image_ref, rb.image_ref);

        let status = a
            .image_status(ImageStatusRequest {
                image: spec(&image),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner();
        let img = status.image.expect("image present");
        assert_eq!(img.id, ra.image_ref);
        assert_eq!(img.uid.map(|u| u.value), Some(1000));
        let info: serde_json::Value =
            serde_json::from_str(&status.info["info"]).expect("verbose info");
        assert_eq!(info["imageSpec"]["architecture"], host_arch());

        let listed = a
            .list_images(ListImagesRequest {
                filter: Some(ImageFilter {
                    image: spec(&image),
                }),
            })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed.images.len(), 1);
        let none = a
            .list_images(ListImagesRequest {
                filter: Some(ImageFilter {
                    image: spec("nothing/here:1"),
                }),
            })
            .await
            .expect("list")
            .into_inner();
        assert!(none.images.is_empty());

        a.remove_image(RemoveImageRequest {
            image: spec(&ra.image_ref),
        })
        .await
        .expect("remove");
        // removing what is gone is not an error
        a.remove_image(RemoveImageRequest {
            image: spec(&ra.image_ref),
        })
        .await
        .expect("remove again");
        let status = a
            .image_status(ImageStatusRequest {
                image: spec(&image),
                verbose: false,
            })
            .await
            .expect("status")
            .into_inner();
        assert!(status.image.is_none());
    });
    // this platform's layers were fetched once for both pulls, the other platform's never
    let here = &seeded.layers["multiarch"];
    check_counts(&reg, here, 1);
    assert_eq!(
        reg.blob_gets(&seeded.other_platform_layer.digest),
        0,
        "fetched the other platform's layer"
    );
}

fn check_counts(reg: &Registry, layers: &[Layer], want: usize) {
    for l in layers {
        assert_eq!(reg.blob_gets(&l.digest), want, "GETs of layer {}", l.digest);
    }
}

#[test]
fn mirrors_serve_original_names() {
    let Some((reg, seeded, _work, d)) = setup("mirrors_serve_original_names") else {
        return;
    };
    ready(
        "mirrors_serve_original_names",
        reg.push(
            &seeded.layout.dir,
            "single",
            "e2e-test-images/busybox:1.29-2",
        ),
    )
    .expect("push");
    ready(
        "mirrors_serve_original_names",
        reg.push(&seeded.layout.dir, "multi", "library/busybox:1.36"),
    )
    .expect("push");
    let mirror = |host: &str| {
        format!("server = \"https://{host}\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n", reg.addr)
    };
    d.hosts_toml("registry.k8s.io", &mirror("registry.k8s.io"))
        .expect("hosts.toml");
    d.hosts_toml("docker.io", &mirror("registry-1.docker.io"))
        .expect("hosts.toml");
    d.ctl_ok(&["pull", "registry.k8s.io/e2e-test-images/busybox:1.29-2"]);
    d.ctl_ok(&["pull", "busybox:1.36"]);
    let table = d.ctl_ok(&["images"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("registry.k8s.io/e2e-test-images/busybox")
                && l.contains("1.29-2")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("docker.io/library/busybox") && l.contains("1.36")),
        "{table}"
    );
    check_unpacked(&d.root, &seeded.layers["multi"]);
    // the registry saw the mirror requests with the original host as `ns`
    assert!(
        reg.log().contains("ns=registry.k8s.io"),
        "no ns parameter in mirror requests"
    );
}

#[test]
fn basic_auth_from_the_request() {
    let case = "basic_auth_from_the_request";
    let Some(reg) = ready(case, Registry::start(Some(("tester", "s3cret")))) else {
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    let Some(seeded) = ready(case, seed(&reg, &work.path().join("layout"))) else {
        return;
    };
    let Some(d) = ready(case, Limpetd::start(Options::default())) else {
        return;
    };
    let image = format!("{}/busybox:single", reg.addr);
    let out = d.ctl(&["pull", &image]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Unauthenticated") && err.contains("username"),
        "{err}"
    );
    let out = d.ctl(&["pull", "--creds", "tester:wrong", &image]);
    assert!(!out.status.success(), "wrong password accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));
    assert_eq!(
        d.ctl_ok(&["images", "-q"]).trim(),
        "",
        "a failed pull left an image"
    );
    d.ctl_ok(&["pull", "--creds", "tester:s3cret", &image]);
    check_unpacked(&d.root, &seeded.layers["single"]);
    // the `auth` field (base64 user:password) over gRPC
    block_on(async {
        let mut c = d.images().await;
        let auth = AuthConfig {
            auth: "dGVzdGVyOnMzY3JldA==".into(),
            ..Default::default()
        };
        let req = PullImageRequest {
            image: spec(&format!("{}/busybox:multi", reg.addr)),
            auth: Some(auth),
            sandbox_config: None,
        };
        c.pull_image(req).await.expect("pull with auth");
    });
}

#[test]
fn restart_keeps_images_and_removal_returns_space() {
    let Some((reg, seeded, _work, mut d)) = setup("restart_keeps_images_and_removal_returns_space")
    else {
        return;
    };
    let empty = limpetd::fsusage::tree_usage(&d.root.join("content")).0
        + limpetd::fsusage::tree_usage(&d.root.join("snapshots")).0;
    for tag in ["single", "multi"] {
        d.ctl_ok(&["pull", &format!("{}/busybox:{tag}", reg.addr)]);
    }
    let full = limpetd::fsusage::tree_usage(&d.root.join("content")).0
        + limpetd::fsusage::tree_usage(&d.root.join("snapshots")).0;
    assert!(full > empty + 2_000_000, "{full} vs {empty}");
    let ids = d.ctl_ok(&["images", "-q"]);

    let status = d.stop().expect("stopped");
    assert!(status.success(), "SIGTERM exit: {status}");
    assert!(!d.socket.exists(), "socket left after shutdown");
    d.launch().expect("restart");
    assert_eq!(
        d.ctl_ok(&["images", "-q"]),
        ids,
        "images changed across a restart"
    );
    check_unpacked(&d.root, &seeded.layers["multi"]);

    // removing multi keeps the layer single shares
    let out = d.ctl_ok(&["rmi", &format!("{}/busybox:multi", reg.addr)]);
    assert!(out.contains("Deleted: "), "{out}");
    check_unpacked(&d.root, &seeded.layers["single"]);
    let store = Store::open(&d.root.join("meta.db")).expect("metadata");
    assert_eq!(store.snapshots().expect("snapshots").len(), 1);
    drop(store);

    let fs: serde_json::Value =
        serde_json::from_str(&d.ctl_ok(&["imagefsinfo"])).expect("imagefsinfo json");
    let used = fs["status"]["imageFilesystems"][0]["usedBytes"]["value"]
        .as_u64()
        .expect("used bytes");
    assert!(used > 1_000_000, "{fs}");

    d.ctl_ok(&["rmi", "--prune"]);
    assert_eq!(d.ctl_ok(&["images", "-q"]).trim(), "");
    let after = limpetd::fsusage::tree_usage(&d.root.join("content")).0
        + limpetd::fsusage::tree_usage(&d.root.join("snapshots")).0;
    assert_eq!(after, empty, "disk space not returned");
    block_on(async {
        let mut c = d.images().await;
        let fs = c
            .image_fs_info(ImageFsInfoRequest {})
            .await
            .expect("fs info")
            .into_inner();
        let used = fs.image_filesystems[0]
            .used_bytes
            .as_ref()
            .map(|u| u.value)
            .unwrap_or(u64::MAX);
        assert!(used < 100_000, "image fs still uses {used} bytes");
    });
}

#[test]
fn metrics_and_runtime_status() {
    let case = "metrics_and_runtime_status";
    let Some(reg) = ready(case, Registry::start(None)) else {
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    let Some(_seeded) = ready(case, seed(&reg, &work.path().join("layout"))) else {
        return;
    };
    let Some(d) = ready(
        case,
        Limpetd::start(Options {
            metrics: true,
            ..Default::default()
        }),
    ) else {
        return;
    };
    d.ctl_ok(&["pull", &format!("{}/busybox:single", reg.addr)]);
    let _ = d.ctl(&["pull", &format!("{}/busybox:missing", reg.addr)]);
    let version = d.ctl_ok(&["version"]);
    assert!(
        version.contains("RuntimeName:  limpetd") && version.contains("RuntimeApiVersion:  v1"),
        "{version}"
    );
    let info: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["info"])).expect("info json");
    let conditions = info["status"]["conditions"].as_array().expect("conditions");
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "RuntimeReady" && c["status"] == true),
        "{info}"
    );
    assert!(
        conditions.iter().any(|c| c["type"] == "NetworkReady"),
        "{info}"
    );
    assert!(info["config"]["root"].is_string(), "{info}");

    let m = d.metrics().expect("metrics endpoint");
    for want in [
        "limpetd_image_pulls_total{result=\"success\"} 1",
        "limpetd_image_pulls_total{result=\"failure\"} 1",
        "limpetd_image_pull_duration_seconds_count 2",
        "limpetd_grpc_requests_total{method=\"ImageService/PullImage\",code=\"Ok\"} 1",
        "limpetd_grpc_requests_total{method=\"ImageService/PullImage\",code=\"NotFound\"} 1",
        "limpetd_grpc_request_duration_seconds_count{method=\"RuntimeService/Version\"} 1",
    ] {
        assert!(m.contains(want), "metrics lack {want:?}:\n{m}");
    }
    let bytes: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("limpetd_image_pull_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("pull bytes");
    assert!(bytes > 500_000, "{bytes}");
}

/// Unmounts on drop, so a failed assertion leaves no mount behind.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        limpetd::snapshots::unmount(self.0).expect("unmount rootfs");
    }
}
