//! Bad input changes nothing: invalid references, unknown registries and tags, malicious or
//! inconsistent layers, broken downloads, a hanging registry, a full disk and a SIGKILL in the
//! middle of a pull each end in a clear gRPC error (or a clean store after restart), and the
//! store holds no blob, snapshot or record of the failed pull.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use limpet_tests::limpetd::{files_under, ready, Limpetd, Options};
use limpet_tests::registry::layout::{self, Compression, Entry, Layer, TarBuilder};
use limpet_tests::registry::proxy::{Fault, FaultProxy};
use limpet_tests::registry::{free_port, seed, Registry};
use limpetd::store::Store;

/// The pull fails, its message has `code`, and the store is as empty as before.
fn pull_fails(d: &Limpetd, image: &str, code: &str) -> String {
    let out = d.ctl(&["pull", image]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "pull {image} succeeded");
    assert!(
        err.contains(code),
        "pull {image}: expected {code}, got: {err}"
    );
    assert_clean(d);
    err
}

/// No image, no blob, no snapshot, nothing half-written.
fn assert_clean(d: &Limpetd) {
    assert_eq!(
        d.ctl_ok(&["images", "-q"]).trim(),
        "",
        "an image record was left"
    );
    let content = files_under(&d.root.join("content"));
    assert!(content.is_empty(), "content store not clean: {content:?}");
    let snaps = files_under(&d.root.join("snapshots"));
    assert!(snaps.is_empty(), "snapshot files left: {snaps:?}");
    let dirs: Vec<String> = std::fs::read_dir(d.root.join("snapshots"))
        .expect("snapshots dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "tmp" && n != "rootfs")
        .collect();
    assert!(dirs.is_empty(), "snapshot directories left: {dirs:?}");
    let store = Store::open(&d.root.join("meta.db")).expect("metadata");
    assert!(
        store.snapshots().expect("snapshots").is_empty(),
        "snapshot records left"
    );
}

#[test]
fn bad_references_and_missing_images() {
    let case = "bad_references_and_missing_images";
    let Some(reg) = ready(case, Registry::start(None)) else {
        return;
    };
    let Some(d) = ready(case, Limpetd::start(Options::default())) else {
        return;
    };
    pull_fails(&d, "UPPER/Case:1", "InvalidArgument");
    pull_fails(&d, "busybox@sha256:1234", "InvalidArgument");
    pull_fails(&d, &format!("{}/busybox:absent", reg.addr), "NotFound");
    let closed = free_port().expect("port");
    let err = pull_fails(&d, &format!("127.0.0.1:{closed}/busybox:1"), "Unavailable");
    assert!(err.contains("127.0.0.1"), "{err}");
}

/// Pushes an image whose top layer is `tar` (over the busybox base) as `busybox:<tag>`.
fn push_with_layer(reg: &Registry, l: &mut layout::Layout, tag: &str, top: Layer) {
    let base = Layer::new(
        layout::busybox_layer_tar().expect("base"),
        Compression::Gzip,
    );
    let d = l
        .image(
            &[&base, &top],
            layout::host_arch(),
            serde_json::json!({}),
            false,
        )
        .expect("image");
    l.tag(tag, &d);
    l.save().expect("save layout");
    reg.push(&l.dir, tag, &format!("busybox:{tag}"))
        .expect("push");
}

#[test]
fn malicious_and_inconsistent_layers_are_refused() {
    let case = "malicious_and_inconsistent_layers_are_refused";
    let Some(reg) = ready(case, Registry::start(None)) else {
        return;
    };
    let Some(d) = ready(case, Limpetd::start(Options::default())) else {
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    let mut l = layout::Layout::create(&work.path().join("layout")).expect("layout");
    let outside = tempfile::tempdir().expect("outside dir");
    let target = outside.path().display().to_string();

    let layer = |entries: &[Entry<'_>]| {
        let mut t = TarBuilder::new();
        for e in entries {
            t.add(match e {
                Entry::Dir(n, m) => Entry::Dir(n, *m),
                Entry::File(n, b, m) => Entry::File(n, b, *m),
                Entry::Symlink(n, t) => Entry::Symlink(n, t),
                Entry::Hardlink(n, t) => Entry::Hardlink(n, t),
                Entry::Fifo(n) => Entry::Fifo(n),
                Entry::CharDevice(n) => Entry::CharDevice(n),
            });
        }
        Layer::new(t.finish(), Compression::Gzip)
    };
    let cases: Vec<(&str, Layer, &str)> = vec![
        (
            "dotdot",
            layer(&[Entry::File("a/../../escape", b"x", 0o644)]),
            "`..`",
        ),
        (
            "symlink-out",
            layer(&[
                Entry::Symlink("etc2", &target),
                Entry::File("etc2/planted", b"x", 0o644),
            ]),
            "symlink",
        ),
        (
            "hardlink-out",
            layer(&[Entry::Hardlink("h", "../../etc/passwd")]),
            "hardlink",
        ),
        (
            "hardlink-missing",
            layer(&[Entry::Hardlink("h", "not/here")]),
            "hardlink",
        ),
        ("device", layer(&[Entry::CharDevice("dev/mem")]), "device"),
    ];
    for (tag, top, why) in cases {
        push_with_layer(&reg, &mut l, tag, top);
        let err = pull_fails(
            &d,
            &format!("{}/busybox:{tag}", reg.addr),
            "InvalidArgument",
        );
        assert!(err.contains(why), "{tag}: {err}");
        assert_eq!(
            std::fs::read_dir(outside.path()).expect("outside").count(),
            0,
            "{tag} wrote outside the layer"
        );
    }

    // a layer whose content is not what the config's diff_id says
    let mut lying = layer(&[Entry::File("x", b"real", 0o644)]);
    lying.diff_id = layout::sha256(b"something else");
    push_with_layer(&reg, &mut l, "diffid", lying);
    let err = pull_fails(&d, &format!("{}/busybox:diffid", reg.addr), "DataLoss");
    assert!(err.contains("uncompressed content"), "{err}");

    // a layer far bigger than its descriptor says
    let seeded = seed(&reg, &work.path().join("good")).expect("seed");
    let layer0 = &seeded.layers["single"][0];
    let (config, config_size) = seeded
        .layout
        .config(&[layer0], layout::host_arch(), serde_json::json!({}))
        .expect("config");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer0.digest, "size": 4096}],
    });
    reg.put_manifest(
        "busybox",
        "oversize",
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).expect("json"),
    )
    .expect("put manifest");
    let err = pull_fails(&d, &format!("{}/busybox:oversize", reg.addr), "DataLoss");
    assert!(err.contains("larger than"), "{err}");
}

#[test]
fn broken_downloads_and_a_hanging_registry() {
    let case = "broken_downloads_and_a_hanging_registry";
    let Some(reg) = ready(case, Registry::start(None)) else {
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    let Some(seeded) = ready(case, seed(&reg, &work.path().join("layout"))) else {
        return;
    };
    let Some(d) = ready(
        case,
        Limpetd::start(Options {
            read_timeout: 2,
            ..Default::default()
        }),
    ) else {
        return;
    };
    let proxy = FaultProxy::start(&reg.addr).expect("proxy");
    let layer = seeded.layers["single"][0].digest.clone();
    let image = format!("{}/busybox:single", proxy.addr);

    proxy.set(&layer, Fault::Truncate(200_000));
    pull_fails(&d, &image, "");
    proxy.set(&layer, Fault::Corrupt(300_000));
    pull_fails(&d, &image, "DataLoss");
    proxy.set(&layer, Fault::Stall(200_000));
    let start = Instant::now();
    let err = pull_fails(&d, &image, "DeadlineExceeded");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "a hanging registry held the pull {:?}",
        start.elapsed()
    );
    assert!(err.contains("no answer within 2 s"), "{err}");

    // the proxy itself is sound: without a fault the same pull works
    proxy.set(&layer, Fault::None);
    d.ctl_ok(&["pull", &image]);
}

#[test]
fn a_full_disk_is_a_clear_error() {
    let case = "a_full_disk_is_a_clear_error";
    let Some(reg) = ready(case, Registry::start(None)) else {
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    let Some(_seeded) = ready(case, seed(&reg, &work.path().join("layout"))) else {
        return;
    };
    let root = work.path().join("small");
    std::fs::create_dir_all(&root).expect("mount point");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2500k", "tmpfs"])
        .arg(&root)
        .status()
        .map(|s| s.success());
    if !matches!(ok, Ok(true)) {
        limpet_tests::skip(&format!("{case} (cannot mount a tmpfs)"));
        return;
    }
    let _unmount = Unmount(root.clone());
    let Some(d) = ready(
        case,
        Limpetd::start(Options {
            root: Some(root.clone()),
            ..Default::default()
        }),
    ) else {
        return;
    };
    pull_fails(
        &d,
        &format!("{}/busybox:multi", reg.addr),
        "ResourceExhausted",
    );
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn sigkill_in_the_middle_of_a_pull_leaves_a_clean_store() {
    let case = "sigkill_in_the_middle_of_a_pull_leaves_a_clean_store";
    let Some(reg) = ready(case, Registry::start(None)) else {
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    let Some(seeded) = ready(case, seed(&reg, &work.path().join("layout"))) else {
        return;
    };
    let Some(mut d) = ready(
        case,
        Limpetd::start(Options {
            read_timeout: 60,
            ..Default::default()
        }),
    ) else {
        return;
    };
    let proxy = FaultProxy::start(&reg.addr).expect("proxy");
    // the small layers of multi go through; the big one stalls half way
    let layers = &seeded.layers["multi"];
    proxy.set(&layers[0].digest, Fault::Stall(400_000));
    let image = format!("{}/busybox:multi", proxy.addr);
    let ctl = limpet_tests::limpetd::binary("limpetctl").expect("limpetctl");
    let mut pull = Command::new(ctl)
        .args(["--runtime-endpoint", &d.endpoint(), "pull", &image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pull");
    let ingest = d.root.join("content/ingest");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !partial_download(&ingest) {
        assert!(
            Instant::now() < deadline,
            "the pull never got going: {}",
            d.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300)); // let the small layers land
    d.kill();
    let _ = pull.kill();
    let _ = pull.wait();
    proxy.set("", Fault::None);
    d.launch().expect("restart");
    assert_clean(&d);
    d.ctl_ok(&["pull", &image]);
}

fn partial_download(ingest: &Path) -> bool {
    std::fs::read_dir(ingest)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.metadata().map(|m| m.len() > 100_000).unwrap_or(false))
        })
        .unwrap_or(false)
}
