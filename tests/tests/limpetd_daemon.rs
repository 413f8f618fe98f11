//! The daemon itself: its config file (defaults, unknown keys, bad values), the root lock,
//! graceful SIGTERM, and the RuntimeService calls that wait for the runtime.

use std::process::Command;

use limpet_protos::cri::tonic::Code;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::{
    CgroupDriver, CheckpointContainerRequest, ListContainersRequest, RunPodSandboxRequest,
    RuntimeConfigRequest, StatusRequest,
};
use limpet_tests::limpetd::{binary, block_on, ready, Limpetd, Options};

fn limpetd_with(args: &[&str]) -> (bool, String, String) {
    let bin = binary("limpetd").expect("limpetd built");
    let out = Command::new(bin).args(args).output().expect("run limpetd");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_defaults_and_errors_name_the_key() {
    if ready("config_defaults_and_errors_name_the_key", binary("limpetd")).is_none() {
        return;
    }
    let (ok, default, _) = limpetd_with(&["config", "default"]);
    assert!(ok);
    for key in [
        "root = \"/var/lib/limpet\"",
        "state = \"/run/limpet\"",
        "address = \"/run/limpet/limpetd.sock\"",
        "config_path = ",
        "level = \"info\"",
    ] {
        assert!(
            default.contains(key),
            "default config lacks {key}:\n{default}"
        );
    }
    let (ok, _, _) = limpetd_with(&["--help"]);
    assert!(ok);

    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        ("[registry]\nconfig_pth = \"/x\"\n", "config_pth"),
        ("rooot = \"/x\"\n", "rooot"),
        ("[debug]\nlevel = \"loud\"\n", "debug.level"),
        ("[metrics]\naddress = \"nowhere\"\n", "metrics.address"),
        ("root = 7\n", "root"),
        ("[grpc\n", "TOML parse error"),
    ];
    for (text, key) in cases {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, text).expect("write config");
        let (ok, _, err) = limpetd_with(&["--config", file.to_str().expect("utf-8 path")]);
        assert!(!ok, "{text:?} was accepted");
        assert!(
            err.contains(key),
            "{text:?}: error does not name {key}: {err}"
        );
    }
    // the default text round-trips through `config check`
    let file = dir.path().join("default.toml");
    std::fs::write(&file, &default).expect("write");
    let (ok, _, err) =
        limpetd_with(&["--config", file.to_str().expect("utf-8"), "config", "check"]);
    assert!(ok, "{err}");
}

#[test]
fn one_limpetd_per_root_and_graceful_sigterm() {
    let case = "one_limpetd_per_root_and_graceful_sigterm";
    let Some(mut d) = ready(case, Limpetd::start(Options::default())) else {
        return;
    };
    // a second daemon on the same root (another socket) refuses, naming the holder
    let other = d.dir().join("other.toml");
    let text = std::fs::read_to_string(&d.config)
        .expect("config")
        .replace("limpetd.sock", "other.sock");
    std::fs::write(&other, text).expect("write");
    let (ok, _, err) = limpetd_with(&["--config", other.to_str().expect("utf-8")]);
    assert!(!ok);
    let pid = d.pid().expect("pid").to_string();
    assert!(
        err.contains("another limpetd") && err.contains(&pid),
        "{err}"
    );
    // still serving
    d.ctl_ok(&["version"]);
    let status = d.stop().expect("exit status");
    assert!(status.success(), "{status}");
    assert!(!d.socket.exists());
    d.launch().expect("starts again once the first is gone");
}

#[test]
fn status_handlers_network_readiness_and_unimplemented_checkpoint() {
    let case = "status_handlers_network_readiness_and_unimplemented_checkpoint";
    let Some(d) = ready(case, Limpetd::start(Options::default())) else {
        return;
    };
    block_on(async {
        let channel = limpet_protos::cri::connect(&d.endpoint())
            .await
            .expect("connect");
        let mut rt = RuntimeServiceClient::new(channel);
        let err = rt
            .run_pod_sandbox(RunPodSandboxRequest::default())
            .await
            .expect_err("a pod without metadata");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("metadata"), "{}", err.message());
        let list = rt
            .list_containers(ListContainersRequest::default())
            .await
            .expect("list containers")
            .into_inner();
        assert!(list.containers.is_empty());
        let err = rt
            .checkpoint_container(CheckpointContainerRequest {
                container_id: "nope".into(),
                ..Default::default()
            })
            .await
            .expect_err("checkpoints are not served");
        assert_eq!(err.code(), Code::Unimplemented);
        assert!(err.message().contains("Checkpoint"), "{}", err.message());

        let status = rt
            .status(StatusRequest { verbose: true })
            .await
            .expect("status")
            .into_inner();
        let conditions = status.status.expect("status").conditions;
        assert!(conditions
            .iter()
            .any(|c| c.r#type == "RuntimeReady" && c.status));
        // no conflist in this daemon's CNI conf dir
        let net = conditions
            .iter()
            .find(|c| c.r#type == "NetworkReady")
            .expect("NetworkReady");
        assert!(!net.status);
        assert_eq!(net.reason, "NetworkPluginNotReady");
        let handlers: Vec<&str> = status
            .runtime_handlers
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        // the built-in handlers (a handler table in the file adds to them) and the empty name
        for h in ["runc", "crun", ""] {
            assert!(handlers.contains(&h), "{handlers:?}");
        }
        assert!(status.info.contains_key("config"));
        let driver = rt
            .runtime_config(RuntimeConfigRequest {})
            .await
            .expect("runtime config")
            .into_inner()
            .linux
            .expect("linux")
            .cgroup_driver;
        assert_eq!(driver, CgroupDriver::Cgroupfs as i32);
    });
}

#[test]
fn a_client_deadline_ends_a_pull_with_deadline_exceeded() {
    use std::time::Duration;

    use limpet_protos::cri::tonic::Request;
    use limpet_protos::cri::v1::{ImageSpec, ListImagesRequest, PullImageRequest};

    let case = "a_client_deadline_ends_a_pull_with_deadline_exceeded";
    // the registry's own read timeout stays far behind the client's deadline
    let Some(d) = ready(
        case,
        Limpetd::start(Options {
            read_timeout: 60,
            ..Default::default()
        }),
    ) else {
        return;
    };
    // a registry that takes connections and never answers
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("listener address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().flatten() {
            held.push(conn);
        }
    });
    block_on(async {
        let mut images = d.images().await;
        {
            let mut req = Request::new(PullImageRequest {
                image: Some(ImageSpec {
                    image: format!("{addr}/busybox:latest"),
                    ..Default::default()
                }),
                ..Default::default()
            });
            req.set_timeout(Duration::from_secs(1));
            let mut call = std::pin::pin!(images.pull_image(req));
            // A tonic client enforces the same deadline itself and reports its own expiry as
            // Cancelled. So the request goes out, then the call is left alone until the
            // daemon has surely answered: what it yields then is the daemon's answer.
            let early = tokio::time::timeout(Duration::from_millis(300), call.as_mut()).await;
            assert!(early.is_err(), "answered before the deadline: {early:?}");
            tokio::time::sleep(Duration::from_secs(3)).await;
            let err = call.await.expect_err("the registry never answers");
            assert_eq!(
                err.code(),
                Code::DeadlineExceeded,
                "{err:?}\nlimpetd log:\n{}",
                d.log_tail()
            );
        }
        // a call well within its deadline is served as usual
        let mut req = Request::new(ListImagesRequest::default());
        req.set_timeout(Duration::from_secs(30));
        images.list_images(req).await.expect("list images");
    });
}
