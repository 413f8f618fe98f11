//! containerd config files for the private instances: 1.x wants schema version 2, 2.x
//! version 3 (plugin names of the split CRI differ, so both sets are disabled).

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

/// Renders the config for a containerd of the given major version.
pub fn render(major: u32, paths: &ConfigPaths<'_>, debug: bool) -> String {
    let mut disabled: Vec<&str> = DISABLED_ALWAYS.to_vec();
    if major >= 2 {
        disabled.extend_from_slice(DISABLED_V2);
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
        let v1 = render(1, &paths, false);
        assert!(v1.starts_with("version = 2\n"), "{v1}");
        assert!(!v1.contains("io.containerd.cri.v1.runtime"));
        let v2 = render(2, &paths, true);
        assert!(v2.starts_with("version = 3\n"), "{v2}");
        assert!(v2.contains("\"io.containerd.cri.v1.runtime\""));
        assert!(v2.contains("level = \"debug\""));
    }
}
