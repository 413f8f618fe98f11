//! limpetctl is a CRI client like crictl: pointed at stock containerd's CRI socket with
//! `--runtime-endpoint` or `CONTAINER_RUNTIME_ENDPOINT`, it reports that runtime and its
//! images.

use std::process::{Command, Output, Stdio};

use limpet_tests::limpetd::binary;
use limpet_tests::{cri_cases, skip, Harness};

fn limpetctl(endpoint_flag: Option<&str>, env: Option<&str>, args: &[&str]) -> Output {
    let bin = match binary("limpetctl") {
        Ok(b) => b,
        Err(e) => panic!("limpetctl: {e}"),
    };
    let mut cmd = Command::new(bin);
    cmd.env_remove("CONTAINER_RUNTIME_ENDPOINT");
    if let Some(endpoint) = endpoint_flag {
        cmd.args(["--runtime-endpoint", endpoint]);
    }
    if let Some(endpoint) = env {
        cmd.env("CONTAINER_RUNTIME_ENDPOINT", endpoint);
    }
    cmd.args(args).stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("run limpetctl: {e}"))
}

fn ok(out: Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "limpetctl failed: {}\nstdout: {text}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn talks_to_containerd(h: &Harness) {
    if binary("limpetctl").is_err() {
        skip("limpetctl_cri: limpetctl is not built");
        return;
    }
    let endpoint = h.cri_endpoint();

    let version = ok(limpetctl(Some(&endpoint), None, &["version"]));
    assert!(version.contains("RuntimeName:  containerd"), "{version}");
    // The same through the environment, as crictl reads it.
    let version = ok(limpetctl(None, Some(&endpoint), &["version"]));
    assert!(version.contains("RuntimeName:  containerd"), "{version}");

    let images: serde_json::Value = serde_json::from_str(&ok(limpetctl(
        Some(&endpoint),
        None,
        &["images", "-o", "json"],
    )))
    .unwrap_or_else(|e| panic!("images -o json: {e}"));
    let tags: Vec<&str> = images["images"]
        .as_array()
        .map(|a| {
            a.iter()
                .flat_map(|i| i["repoTags"].as_array().into_iter().flatten())
                .filter_map(|t| t.as_str())
                .collect()
        })
        .unwrap_or_default();
    assert!(tags.contains(&h.image()), "{tags:?}");

    let quiet = ok(limpetctl(Some(&endpoint), None, &["images", "-q"]));
    assert!(
        quiet.lines().all(|l| l.starts_with("sha256:")) && !quiet.trim().is_empty(),
        "{quiet}"
    );

    let status: serde_json::Value = serde_json::from_str(&ok(limpetctl(
        Some(&endpoint),
        None,
        &["inspecti", "-o", "json", h.image()],
    )))
    .unwrap_or_else(|e| panic!("inspecti -o json: {e}"));
    assert!(
        status["status"]["repoTags"].to_string().contains(h.image()),
        "{status}"
    );

    let fsinfo = ok(limpetctl(
        Some(&endpoint),
        None,
        &["imagefsinfo", "-o", "json"],
    ));
    assert!(fsinfo.contains("imageFilesystems"), "{fsinfo}");

    // A runtime that is not there is a clear error, not a hang.
    let missing = limpetctl(Some("unix:///nonexistent/cri.sock"), None, &["version"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/cri.sock"));
}

cri_cases!(talks_to_containerd);
