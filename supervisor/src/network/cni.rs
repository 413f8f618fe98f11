//! Attaching a pod's network namespace to the configured CNI network and detaching it, the
//! way CRI runtimes drive a plugin chain: ADD runs the plugins in order, each seeing the
//! previous one's result as `prevResult`; DEL runs them in reverse with the same configs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use super::config::NetworkConfigList;
use super::exec::{self, ExecError};

/// The interface name plugins create inside the pod.
pub const DEFAULT_IFNAME: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI {command} of network {network} for pod {pod}: {source}")]
    Plugin {
        command: &'static str,
        network: String,
        pod: String,
        source: Box<ExecError>,
    },
    #[error("CNI ADD of network {network} for pod {pod}: result has no IP address")]
    NoAddress { network: String, pod: String },
}

/// Where plugins live and how long one may run.
#[derive(Debug, Clone)]
pub struct Cni {
    pub bin_dirs: Vec<PathBuf>,
    pub timeout: Duration,
}

/// Who the attachment is for and what it asks of the plugins.
#[derive(Debug, Clone, Default)]
pub struct PodNetwork {
    /// The sandbox id (CNI_CONTAINERID and K8S_POD_INFRA_CONTAINER_ID).
    pub id: String,
    /// The bound network namespace; on DEL a missing one is passed as empty, as the spec
    /// allows, so plugins still release what they hold (IPAM leases, host rules).
    pub netns: PathBuf,
    /// Empty means `eth0`.
    pub ifname: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub port_mappings: Vec<PortMapping>,
    pub bandwidth: Option<Bandwidth>,
}

/// The `portMappings` capability's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    /// `tcp`, `udp` or `sctp`, lower case.
    pub protocol: String,
    #[serde(rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// The `bandwidth` capability's value: rates in bits per second, bursts in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

/// One address from the chain's final result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// CIDR notation, e.g. `10.88.0.5/24`.
    pub address: String,
    pub gateway: Option<String>,
}

impl IpConfig {
    /// The address without its prefix length.
    pub fn ip(&self) -> &str {
        self.address.split('/').next().unwrap_or(&self.address)
    }
}

#[derive(Debug, Clone)]
pub struct AddResult {
    pub ips: Vec<IpConfig>,
    /// The final result as the chain returned it: keep it and hand it back to `del` as
    /// `prevResult`.
    pub raw: Value,
}

impl Cni {
    /// Attaches the pod; on failure the plugins that already ran are rolled back with DEL so
    /// no half-made attachment (leased IP, veth) is left behind.
    pub fn add(&self, net: &NetworkConfigList, pod: &PodNetwork) -> Result<AddResult, CniError> {
        let env = self.env("ADD", pod, &pod.netns);
        let mut prev: Option<Value> = None;
        for (i, plugin) in net.plugins.iter().enumerate() {
            let conf = plugin_config(net, plugin, prev.as_ref(), pod);
            match self.invoke(plugin, &env, &conf) {
                Ok(out) => prev = Some(out),
                Err(source) => {
                    let _ = self.del_plugins(net, pod, &net.plugins[..=i], prev.as_ref());
                    return Err(self.error("ADD", net, pod, source));
                }
            }
        }
        let raw = prev.unwrap_or(Value::Null);
        let ips = parse_ips(&raw);
        if ips.is_empty() {
            let _ = self.del_plugins(net, pod, &net.plugins, Some(&raw));
            return Err(CniError::NoAddress {
                network: net.name.clone(),
                pod: pod_label(pod),
            });
        }
        Ok(AddResult { ips, raw })
    }

    /// Detaches the pod. Safe to repeat: plugins treat DEL of missing resources as success.
    pub fn del(
        &self,
        net: &NetworkConfigList,
        pod: &PodNetwork,
        prev_result: Option<&Value>,
    ) -> Result<(), CniError> {
        self.del_plugins(net, pod, &net.plugins, prev_result)
            .map_err(|source| self.error("DEL", net, pod, source))
    }

    fn del_plugins(
        &self,
        net: &NetworkConfigList,
        pod: &PodNetwork,
        plugins: &[Map<String, Value>],
        prev_result: Option<&Value>,
    ) -> Result<(), ExecError> {
        let netns = if pod.netns.exists() {
            pod.netns.as_path()
        } else {
            Path::new("")
        };
        let env = self.env("DEL", pod, netns);
        let prev = prev_result.filter(|v| !v.is_null());
        // Every plugin gets its DEL even if an earlier one failed; the first error is kept.
        let mut first_err = None;
        for plugin in plugins.iter().rev() {
            let conf = plugin_config(net, plugin, prev, pod);
            if let Err(e) = self.invoke(plugin, &env, &conf) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Brings up `lo` in the pod's namespace with the `loopback` plugin, as containerd does
    /// before the pod network (a conflist rarely lists it, yet pods need 127.0.0.1).
    pub fn loopback(&self, command: &str, pod: &PodNetwork) -> Result<(), CniError> {
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "cni-loopback",
            "type": "loopback",
        });
        let mut plugin = Map::new();
        plugin.insert("type".into(), Value::from("loopback"));
        let mut env = self.env(command, pod, &pod.netns);
        for (k, v) in env.iter_mut() {
            if *k == "CNI_IFNAME" {
                *v = "lo".into();
            }
        }
        self.invoke(&plugin, &env, &conf)
            .map(|_| ())
            .map_err(|source| CniError::Plugin {
                command: if command == "ADD" { "ADD" } else { "DEL" },
                network: "cni-loopback".into(),
                pod: pod_label(pod),
                source: Box::new(source),
            })
    }

    fn invoke(
        &self,
        plugin: &Map<String, Value>,
        env: &[(&'static str, String)],
        conf: &Value,
    ) -> Result<Value, ExecError> {
        let kind = plugin.get("type").and_then(Value::as_str).unwrap_or("");
        let path = exec::find_plugin(kind, &self.bin_dirs)?;
        let stdin = serde_json::to_vec(conf).map_err(|e| ExecError::BadOutput {
            plugin: kind.to_string(),
            reason: format!("encode config: {e}"),
        })?;
        exec::run(&path, env, &stdin, self.timeout)
    }

    fn env(&self, command: &str, pod: &PodNetwork, netns: &Path) -> Vec<(&'static str, String)> {
        let ifname = if pod.ifname.is_empty() {
            DEFAULT_IFNAME.to_string()
        } else {
            pod.ifname.clone()
        };
        vec![
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", pod.id.clone()),
            ("CNI_NETNS", netns.display().to_string()),
            ("CNI_IFNAME", ifname),
            ("CNI_PATH", exec::join_paths(&self.bin_dirs)),
            ("CNI_ARGS", cni_args(pod)),
        ]
    }

    fn error(
        &self,
        command: &'static str,
        net: &NetworkConfigList,
        pod: &PodNetwork,
        source: ExecError,
    ) -> CniError {
        CniError::Plugin {
            command,
            network: net.name.clone(),
            pod: pod_label(pod),
            source: Box::new(source),
        }
    }
}

fn pod_label(pod: &PodNetwork) -> String {
    format!("{}/{} ({})", pod.namespace, pod.name, pod.id)
}

/// `CNI_ARGS` as Kubernetes runtimes pass it; `IgnoreUnknown` lets plugins that know none of
/// the keys accept them.
pub fn cni_args(pod: &PodNetwork) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        pod.namespace, pod.name, pod.id, pod.uid
    )
}

/// `runtimeConfig` for one plugin: only the capabilities it declares, and only those the pod
/// has a value for.
pub fn runtime_config(plugin: &Map<String, Value>, pod: &PodNetwork) -> Map<String, Value> {
    let declared = |cap: &str| {
        plugin
            .get("capabilities")
            .and_then(|c| c.get(cap))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let mut rc = Map::new();
    if declared("portMappings") && !pod.port_mappings.is_empty() {
        if let Ok(v) = serde_json::to_value(&pod.port_mappings) {
            rc.insert("portMappings".into(), v);
        }
    }
    if let Some(bw) = pod.bandwidth.filter(|_| declared("bandwidth")) {
        if let Ok(v) = serde_json::to_value(bw) {
            rc.insert("bandwidth".into(), v);
        }
    }
    rc
}

/// The stdin config of one plugin: its own keys plus the list's `cniVersion` and `name`,
/// the previous result and the runtime config.
pub fn plugin_config(
    net: &NetworkConfigList,
    plugin: &Map<String, Value>,
    prev_result: Option<&Value>,
    pod: &PodNetwork,
) -> Value {
    let mut conf = plugin.clone();
    conf.insert("cniVersion".into(), Value::String(net.cni_version.clone()));
    conf.insert("name".into(), Value::String(net.name.clone()));
    conf.remove("prevResult");
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    let rc = runtime_config(plugin, pod);
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    Value::Object(conf)
}

/// Addresses in a result: `ips[]` (0.3.0 and later) or `ip4`/`ip6` (0.2.0 and older).
pub fn parse_ips(result: &Value) -> Vec<IpConfig> {
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        return ips
            .iter()
            .filter_map(|ip| {
                Some(IpConfig {
                    address: str_of(ip, "address")?,
                    gateway: str_of(ip, "gateway"),
                })
            })
            .collect();
    }
    ["ip4", "ip6"]
        .iter()
        .filter_map(|k| result.get(*k))
        .filter_map(|ip| {
            Some(IpConfig {
                address: str_of(ip, "ip")?,
                gateway: str_of(ip, "gateway"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> PodNetwork {
        PodNetwork {
            id: "abc123".into(),
            netns: "/run/limpet/netns/abc123".into(),
            namespace: "default".into(),
            name: "web".into(),
            uid: "u-1".into(),
            ..Default::default()
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn net(plugins: Vec<Value>) -> NetworkConfigList {
        NetworkConfigList {
            name: "limpet".into(),
            cni_version: "1.0.0".into(),
            plugins: plugins.into_iter().map(obj).collect(),
            source: "/etc/cni/net.d/10-limpet.conflist".into(),
        }
    }

    #[test]
    fn cni_args_carry_the_pod() {
        assert_eq!(
            cni_args(&pod()),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1"
        );
    }

    #[test]
    fn runtime_config_follows_declared_capabilities() {
        let mut p = pod();
        p.port_mappings = vec![
            PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            },
            PortMapping {
                host_port: 5353,
                container_port: 53,
                protocol: "udp".into(),
                host_ip: "127.0.0.1".into(),
            },
        ];
        p.bandwidth = Some(Bandwidth {
            ingress_rate: 1_000_000,
            ingress_burst: 2_000,
            egress_rate: 3_000_000,
            egress_burst: 4_000,
        });
        let portmap = obj(json!({"type":"portmap","capabilities":{"portMappings":true}}));
        assert_eq!(
            Value::Object(runtime_config(&portmap, &p)),
            json!({"portMappings":[
                {"hostPort":8080,"containerPort":80,"protocol":"tcp"},
                {"hostPort":5353,"containerPort":53,"protocol":"udp","hostIP":"127.0.0.1"}
            ]})
        );
        let bw = obj(json!({"type":"bandwidth","capabilities":{"bandwidth":true}}));
        assert_eq!(
            Value::Object(runtime_config(&bw, &p)),
            json!({"bandwidth":{"ingressRate":1000000,"ingressBurst":2000,
                                "egressRate":3000000,"egressBurst":4000}})
        );
        let off = obj(json!({"type":"portmap","capabilities":{"portMappings":false}}));
        assert!(runtime_config(&off, &p).is_empty());
        let none = obj(json!({"type":"bridge"}));
        assert!(runtime_config(&none, &p).is_empty());
        // Declared but nothing asked for: no key at all.
        assert!(runtime_config(&portmap, &pod()).is_empty());
    }

    #[test]
    fn plugin_config_injects_list_fields_and_prev_result() {
        let n = net(vec![
            json!({"type":"bridge","name":"ignored","cniVersion":"0.1.0"}),
        ]);
        let prev = json!({"ips":[{"address":"10.1.2.3/24"}]});
        let conf = plugin_config(&n, &n.plugins[0], Some(&prev), &pod());
        assert_eq!(conf["name"], "limpet");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["prevResult"], prev);
        assert!(conf.get("runtimeConfig").is_none());
        let conf = plugin_config(&n, &n.plugins[0], None, &pod());
        assert!(conf.get("prevResult").is_none());
    }

    #[test]
    fn ips_are_read_from_new_and_old_results() {
        let new = json!({"ips":[{"address":"10.88.0.5/24","gateway":"10.88.0.1"},
                                {"address":"fd00::5/64"}]});
        let ips = parse_ips(&new);
        assert_eq!(ips.len(), 2);
        assert_eq!(ips[0].ip(), "10.88.0.5");
        assert_eq!(ips[0].gateway.as_deref(), Some("10.88.0.1"));
        assert_eq!(ips[1].gateway, None);
        let old = json!({"ip4":{"ip":"10.0.0.2/16"}});
        assert_eq!(parse_ips(&old)[0].address, "10.0.0.2/16");
        assert!(parse_ips(&Value::Null).is_empty());
    }

    /// A fake chain of shell plugins that log their calls: order, env and stdin.
    #[test]
    fn add_and_del_run_the_chain_in_order() {
        use std::os::unix::fs::PermissionsExt;
        let bin = tempfile::tempdir().unwrap();
        let log = bin.path().join("log");
        for (name, out) in [
            (
                "first",
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.9.0.2/24"}]}"#,
            ),
            ("second", ""),
        ] {
            // `second` passes prevResult through, as chained plugins do.
            let body = if out.is_empty() {
                r#"conf=$(cat); echo "$CNI_COMMAND second $CNI_NETNS|$conf" >> LOG
if [ "$CNI_COMMAND" = ADD ]; then
  case "$conf" in *'"prevResult"'*10.9.0.2*) echo '{"ips":[{"address":"10.9.0.2/24"}]}' ;; esac
fi
exit 0"#
                    .to_string()
            } else {
                format!(
                    r#"conf=$(cat); echo "$CNI_COMMAND {name} $CNI_NETNS $CNI_IFNAME $CNI_PATH|$conf" >> LOG
[ "$CNI_COMMAND" = ADD ] && echo '{out}'
exit 0"#
                )
            };
            let path = bin.path().join(name);
            let body = body.replace("LOG", &log.display().to_string());
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let cni = Cni {
            bin_dirs: vec!["/nonexistent".into(), bin.path().to_path_buf()],
            timeout: Duration::from_secs(5),
        };
        let n = net(vec![json!({"type":"first"}), json!({"type":"second"})]);
        let mut p = pod();
        p.netns = bin.path().to_path_buf();
        let res = cni.add(&n, &p).unwrap();
        assert_eq!(res.ips[0].address, "10.9.0.2/24");
        p.netns = bin.path().join("gone");
        cni.del(&n, &p, Some(&res.raw)).unwrap();
        let log = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 4, "{log}");
        let ns = bin.path().display().to_string();
        assert!(
            lines[0].starts_with(&format!("ADD first {ns} eth0 /nonexistent:{ns}|")),
            "{log}"
        );
        assert!(lines[1].starts_with("ADD second ") && lines[1].contains("10.9.0.2"));
        // DEL: reverse order, a missing netns passed as empty, the ADD result as prevResult.
        assert!(lines[2].starts_with("DEL second |"), "{log}");
        assert!(lines[3].starts_with("DEL first  eth0"), "{log}");
        assert!(lines[3].contains("\"prevResult\""), "{log}");
    }

    #[test]
    fn failed_add_rolls_back_and_names_the_network() {
        use std::os::unix::fs::PermissionsExt;
        let bin = tempfile::tempdir().unwrap();
        let log = bin.path().join("log");
        let mk = |name: &str, body: &str| {
            let path = bin.path().join(name);
            let body = body.replace("LOG", &log.display().to_string());
            std::fs::write(&path, format!("#!/bin/sh\ncat >/dev/null\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        mk(
            "ok",
            r#"echo "$CNI_COMMAND ok" >> LOG; [ "$CNI_COMMAND" = ADD ] && echo '{"ips":[{"address":"10.9.0.3/24"}]}'; exit 0"#,
        );
        mk(
            "bad",
            r#"echo "$CNI_COMMAND bad" >> LOG; [ "$CNI_COMMAND" = DEL ] && exit 0; echo '{"code":11,"msg":"boom"}'; exit 1"#,
        );
        let cni = Cni {
            bin_dirs: vec![bin.path().to_path_buf()],
            timeout: Duration::from_secs(5),
        };
        let n = net(vec![json!({"type":"ok"}), json!({"type":"bad"})]);
        let err = cni.add(&n, &pod()).unwrap_err().to_string();
        assert!(
            err.contains("limpet") && err.contains("boom") && err.contains("ADD"),
            "{err}"
        );
        let log = std::fs::read_to_string(&log).unwrap();
        assert_eq!(log, "ADD ok\nADD bad\nDEL bad\nDEL ok\n");
    }
}
