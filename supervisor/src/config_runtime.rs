//! The `[runtime]` and `[cni]` tables: runtime handlers (containerd's `runtimes` table), the
//! cgroup driver, the sandbox image, and where CNI configs and plugins are.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Runtime {
    /// Handler used when a pod names none.
    pub default_runtime: String,
    /// `cgroupfs` or `systemd`: how cgroup parents are written and runc told.
    pub cgroup_driver: String,
    /// Image of the pod sandbox process; empty runs the built-in pause of the shim binary.
    pub sandbox_image: String,
    /// Cap on ExecSync output kept per stream, bytes.
    pub max_exec_output: usize,
    /// Handlers named in the file are added to the defaults (or replace one of the same
    /// name), as containerd's `runtimes` table is read.
    #[serde(deserialize_with = "with_default_handlers")]
    pub runtimes: BTreeMap<String, Handler>,
}

fn with_default_handlers<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Handler>, D::Error> {
    let given = BTreeMap::<String, Handler>::deserialize(d)?;
    let mut all = Runtime::default().runtimes;
    all.extend(given);
    Ok(all)
}

/// One runtime handler: the shim that runs it and the runc-compatible binary it drives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Handler {
    /// Shim executable: a path, or a name looked up beside limpetd and then in PATH.
    pub shim: String,
    /// runc-compatible binary (`runc`, `crun`, a path).
    pub binary_name: String,
    /// The runtime's state root; empty: `<state>/runtime/<handler>`.
    pub root: String,
    pub no_pivot_root: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cni {
    /// Directory of `.conflist`/`.conf` files; the first in name order is the pod network.
    pub conf_dir: PathBuf,
    /// Plugin directories, searched in order.
    pub bin_dirs: Vec<PathBuf>,
    /// Seconds one plugin call may take.
    pub timeout: u64,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            default_runtime: "runc".into(),
            cgroup_driver: "cgroupfs".into(),
            sandbox_image: String::new(),
            max_exec_output: 16 << 20,
            runtimes: BTreeMap::from([
                ("runc".to_string(), Handler::default()),
                (
                    "crun".to_string(),
                    Handler {
                        binary_name: "crun".into(),
                        ..Handler::default()
                    },
                ),
            ]),
        }
    }
}

impl Default for Handler {
    fn default() -> Self {
        Handler {
            shim: "containerd-shim-limpet-v2".into(),
            binary_name: "runc".into(),
            root: String::new(),
            no_pivot_root: false,
        }
    }
}

impl Default for Cni {
    fn default() -> Self {
        Cni {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            timeout: 60,
        }
    }
}

impl Runtime {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if !["cgroupfs", "systemd"].contains(&self.cgroup_driver.as_str()) {
            return invalid(
                "runtime.cgroup_driver",
                format!("{:?} is not cgroupfs or systemd", self.cgroup_driver),
            );
        }
        if !self.runtimes.contains_key(&self.default_runtime) {
            return invalid(
                "runtime.default_runtime",
                format!(
                    "{:?} is not a handler of [runtime.runtimes]",
                    self.default_runtime
                ),
            );
        }
        for (name, h) in &self.runtimes {
            if name.is_empty() || name.contains('/') || h.shim.is_empty() {
                return invalid(
                    "runtime.runtimes",
                    format!("handler {name:?} needs a plain name and a shim"),
                );
            }
        }
        if self.max_exec_output < 4096 {
            return invalid("runtime.max_exec_output", "must be at least 4096".into());
        }
        Ok(())
    }

    pub fn systemd_cgroup(&self) -> bool {
        self.cgroup_driver == "systemd"
    }
}

impl Cni {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.conf_dir.is_absolute() || self.bin_dirs.iter().any(|d| !d.is_absolute()) {
            return Err(ConfigError::Invalid {
                key: "cni",
                message: "conf_dir and bin_dirs must be absolute paths".into(),
            });
        }
        if self.timeout == 0 {
            return Err(ConfigError::Invalid {
                key: "cni.timeout",
                message: "must be at least 1 second".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn a_named_handler_joins_the_defaults() {
        let c = Config::parse(
            "[runtime.runtimes.kata]\nshim = \"containerd-shim-kata-v2\"\n\
             [runtime.runtimes.runc]\nshim = \"/opt/shim\"\n",
        )
        .unwrap();
        let names: Vec<&str> = c.runtime.runtimes.keys().map(String::as_str).collect();
        assert_eq!(names, ["crun", "kata", "runc"]);
        assert_eq!(c.runtime.runtimes["runc"].shim, "/opt/shim");
        assert_eq!(c.runtime.runtimes["runc"].binary_name, "runc");
    }

    #[test]
    fn bad_runtime_values_are_named() {
        let err = Config::parse("[runtime]\ncgroup_driver = \"cgroupv3\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime.cgroup_driver"), "{err}");
        let err = Config::parse("[runtime]\ndefault_runtime = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime.default_runtime"), "{err}");
    }
}
