//! containerd config files for the private instances: 1.x wants schema version 2, 2.x
//! version 3 (plugin names of the split CRI differ, so both sets are disabled). The CRI
//! suite enables the CRI plugin instead, with the shim under test as its runc runtime.

use std::fmt::Write;
use std::path::Path;

/// Plugins these suites never use; CRI above all (it would start its own pod machinery).
const DISABLED_ALWAYS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
    // NRI listens on a fixed host socket, which parallel instances would fight over.
    "io.containerd.nri.v1.nri",
];

/// Plugins that exist only in 2.x (CRI split into parts, extra snapshotters).
const DISABLED_V2: &[&str] = &[
    "io.containerd.cri.v1.images",
    "io.containerd.cri.v1.runtime",
    "io.containerd.podsandbox.controller.v1.podsandbox",
    "io.containerd.snapshotter.v1.blockfile",
    "io.containerd.snapshotter.v1.erofs",
];

pub struct ConfigPaths<'a> {
    pub root: &'a Path,
    pub state: &'a Path,
    pub address: &'a Path,
    pub opt: &'a Path,
}

/// The CRI plugins of 1.x and 2.x (and the 2.x pod sandbox controller CRI needs).
const CRI_PLUGINS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.images",
    "io.containerd.cri.v1.runtime",
    "io.containerd.podsandbox.controller.v1.podsandbox",
];

/// Settings of an enabled CRI plugin: the configuration the README documents (the shim
/// under test as `runtime_path` of the `io.containerd.runc.v2` runtime type), kept private.
pub struct CriConfig<'a> {
    /// A locally imported image; CRI never pulls it when it is present.
    pub sandbox_image: &'a str,
    pub runtime_path: &'a Path,
    /// runc's `Root` option: runc state lives in `<root>/<namespace>/<id>`.
    pub runc_root: &'a Path,
    /// An empty dir: pods use the host network, so no CNI config is loaded.
    pub cni_dir: &'a Path,
    /// More runc options for the runtime, as (key, TOML value), e.g. `("IoUid", "1000")`.
    pub runc_options: &'a [(String, String)],
}

/// Renders the config for a containerd of the given major version; with `cri`, the CRI
/// plugin is enabled and configured.
pub fn render(
    major: u32,
    paths: &ConfigPaths<'_>,
    debug: bool,
    cri: Option<&CriConfig<'_>>,
) -> String {
    let mut disabled: Vec<&str> = DISABLED_ALWAYS.to_vec();
    if major >= 2 {
        disabled.extend_from_slice(DISABLED_V2);
    }
    if cri.is_some() {
        disabled.retain(|p| !CRI_PLUGINS.contains(p));
    }
    let version = if major >= 2 { 3 } else { 2 };
    let list = disabled
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = String::new();
    // writeln! into a String cannot fail.
    let _ = writeln!(out, "version = {version}");
    let _ = writeln!(out, "root = {:?}", paths.root.display().to_string());
    let _ = writeln!(out, "state = {:?}", paths.state.display().to_string());
    let _ = writeln!(out, "disabled_plugins = [{list}]");
    let _ = writeln!(
        out,
        "\n[grpc]\n  address = {:?}",
        paths.address.display().to_string()
    );
    // The ttrpc socket (events from shims) defaults to "<grpc address>.ttrpc".
    let _ = writeln!(
        out,
        "\n[debug]\n  level = {:?}",
        if debug { "debug" } else { "info" }
    );
    let _ = writeln!(
        out,
        "\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {:?}",
        paths.opt.display().to_string()
    );
    if let Some(cri) = cri {
        out.push_str(&render_cri(major, cri));
    }
    out
}

/// The CRI sections: one `grpc.v1.cri` plugin in 1.x, split into `cri.v1.images` and
/// `cri.v1.runtime` (plus the stream server left in `grpc.v1.cri`) in 2.x.
fn render_cri(major: u32, cri: &CriConfig<'_>) -> String {
    let (runtime, images) = if major >= 2 {
        (
            "io.containerd.cri.v1.runtime",
            "io.containerd.cri.v1.images",
        )
    } else {
        ("io.containerd.grpc.v1.cri", "io.containerd.grpc.v1.cri")
    };
    let quote = |p: &Path| format!("{:?}", p.display().to_string());
    let mut out = String::new();
    // Loopback only, on a free port.
    let _ = writeln!(
        out,
        "\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\""
    );
    if major >= 2 {
        let _ = writeln!(
            out,
            "\n[plugins.\"{images}\"]\n  snapshotter = \"overlayfs\"\n\n[plugins.\"{images}\".pinned_images]\n  sandbox = {:?}\n\n[plugins.\"{runtime}\"]",
            cri.sandbox_image
        );
    } else {
        let _ = writeln!(out, "  sandbox_image = {:?}", cri.sandbox_image);
    }
    // Without CAP_SYS_RESOURCE the sandbox's oom_score_adj of -998 cannot be set.
    let _ = writeln!(
        out,
        "  restrict_oom_score_adj = true\n  disable_apparmor = true"
    );
    let _ = writeln!(out, "\n[plugins.\"{runtime}\".cni]");
    if major < 2 {
        // 2.2+ deprecates bin_dir; no CNI plugin runs for host-network pods anyway.
        let _ = writeln!(out, "  bin_dir = {}", quote(cri.cni_dir));
    }
    let _ = writeln!(out, "  conf_dir = {}", quote(cri.cni_dir));
    let _ = writeln!(
        out,
        "\n[plugins.\"{runtime}\".containerd]\n  default_runtime_name = \"runc\""
    );
    if major < 2 {
        let _ = writeln!(out, "  snapshotter = \"overlayfs\"");
    }
    let _ = writeln!(
        out,
        "\n[plugins.\"{runtime}\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n  runtime_path = {}",
        quote(cri.runtime_path)
    );
    let _ = writeln!(
        out,
        "\n[plugins.\"{runtime}\".containerd.runtimes.runc.options]\n  BinaryName = \"runc\"\n  Root = {}",
        quote(cri.runc_root)
    );
    for (key, value) in cri.runc_options {
        let _ = writeln!(out, "  {key} = {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_schema_by_major_version() {
        let p = Path::new("/t");
        let paths = ConfigPaths {
            root: p,
            state: p,
            address: p,
            opt: p,
        };
        let v1 = render(1, &paths, false, None);
        assert!(v1.starts_with("version = 2\n"), "{v1}");
        assert!(!v1.contains("io.containerd.cri.v1.runtime"));
        let v2 = render(2, &paths, true, None);
        assert!(v2.starts_with("version = 3\n"), "{v2}");
        assert!(v2.contains("\"io.containerd.cri.v1.runtime\""));
        assert!(v2.contains("level = \"debug\""));
        assert!(!v2.contains("pinned_images"));
    }

    #[test]
    fn cri_enables_the_plugin_with_the_shim_as_runc_runtime() {
        let p = Path::new("/t");
        let paths = ConfigPaths {
            root: p,
            state: p,
            address: p,
            opt: p,
        };
        let cri = CriConfig {
            sandbox_image: "localhost/pause:1",
            runtime_path: Path::new("/bin/shim"),
            runc_root: Path::new("/t/runc"),
            cni_dir: Path::new("/t/cni"),
            runc_options: &[("IoUid".to_string(), "1000".to_string())],
        };
        let v1 = render(1, &paths, false, Some(&cri));
        assert!(!v1.contains("\"io.containerd.grpc.v1.cri\","), "{v1}");
        assert!(v1.contains("sandbox_image = \"localhost/pause:1\""), "{v1}");
        assert!(v1.contains(
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n  runtime_path = \"/bin/shim\""
        ));
        assert!(v1.contains("Root = \"/t/runc\"\n  IoUid = 1000\n"), "{v1}");
        let v2 = render(2, &paths, false, Some(&cri));
        let disabled = v2.lines().find(|l| l.starts_with("disabled_plugins"));
        for enabled in CRI_PLUGINS {
            assert!(!disabled.is_some_and(|l| l.contains(enabled)), "{v2}");
        }
        assert!(v2.contains("[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc]"));
        assert!(v2.contains("sandbox = \"localhost/pause:1\""), "{v2}");
    }
}
