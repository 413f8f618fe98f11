//! The CNI network config: the lexically first `*.conflist`, `*.conf` or `*.json` in the
//! conf dir. A single-plugin `.conf`/`.json` is wrapped into a one-plugin list.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no network config found in {0}")]
    NoConfig(PathBuf),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("network config {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// A loaded network: its name and version and the plugin configs, in chain order.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Map<String, Value>>,
    /// The file it came from, for messages.
    pub source: PathBuf,
}

/// Loads the network config from `conf_dir`. A missing dir and an empty one are both
/// `NoConfig` (the runtime then reports NetworkReady false); a file that does not parse is
/// an error naming the file rather than silently falling through to the next one.
pub fn load_network(conf_dir: &Path) -> Result<NetworkConfigList, ConfigError> {
    let entries = match fs::read_dir(conf_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ConfigError::NoConfig(conf_dir.to_path_buf()))
        }
        Err(e) => {
            return Err(ConfigError::Io {
                context: format!("read {}", conf_dir.display()),
                source: e,
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            ) && p.is_file()
        })
        .collect();
    files.sort();
    let Some(path) = files.into_iter().next() else {
        return Err(ConfigError::NoConfig(conf_dir.to_path_buf()));
    };
    let bytes = fs::read(&path).map_err(|e| ConfigError::Io {
        context: format!("read {}", path.display()),
        source: e,
    })?;
    parse(&path, &bytes)
}

/// Parses one config file; `path` decides list vs single plugin and names errors.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<NetworkConfigList, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let value: Value = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    let Value::Object(mut top) = value else {
        return Err(invalid("not a JSON object".into()));
    };
    let is_list = path.extension().and_then(|e| e.to_str()) == Some("conflist");
    let name = match top.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        _ => return Err(invalid("missing \"name\"".into())),
    };
    let cni_version = match top.get("cniVersion") {
        Some(Value::String(v)) => v.clone(),
        None => "0.1.0".to_string(),
        Some(_) => return Err(invalid("\"cniVersion\" is not a string".into())),
    };
    let plugins = if is_list {
        let Some(Value::Array(list)) = top.remove("plugins") else {
            return Err(invalid("missing \"plugins\" list".into()));
        };
        list.into_iter()
            .enumerate()
            .map(|(i, p)| match p {
                Value::Object(p) => Ok(p),
                _ => Err(invalid(format!("plugin {i} is not an object"))),
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![top]
    };
    if plugins.is_empty() {
        return Err(invalid("empty \"plugins\" list".into()));
    }
    for (i, p) in plugins.iter().enumerate() {
        match p.get("type") {
            Some(Value::String(t)) if !t.is_empty() && !t.contains('/') => {}
            _ => return Err(invalid(format!("plugin {i} has no valid \"type\""))),
        }
    }
    Ok(NetworkConfigList {
        name,
        cni_version,
        plugins,
        source: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) {
        fs::write(dir.join(name), body).unwrap();
    }

    #[test]
    fn missing_dir_and_empty_dir_have_no_config() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_network(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(err, ConfigError::NoConfig(_)), "{err}");
        write(dir.path(), "README", "not a config");
        let err = load_network(dir.path()).unwrap_err();
        assert!(matches!(err, ConfigError::NoConfig(_)), "{err}");
        assert!(err.to_string().contains("no network config"));
    }

    #[test]
    fn lexically_first_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "20-b.conflist",
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        );
        write(
            dir.path(),
            "10-a.conflist",
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        );
        let net = load_network(dir.path()).unwrap();
        assert_eq!(net.name, "a");
        assert_eq!(net.cni_version, "1.0.0");
        assert_eq!(net.plugins.len(), 2);
        assert_eq!(net.plugins[1]["type"], "portmap");
        assert!(net.source.ends_with("10-a.conflist"));
    }

    #[test]
    fn single_plugin_conf_is_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "05-one.conf",
            r#"{"cniVersion":"0.4.0","name":"one","type":"bridge","bridge":"cni0"}"#,
        );
        let net = load_network(dir.path()).unwrap();
        assert_eq!(net.name, "one");
        assert_eq!(net.plugins.len(), 1);
        assert_eq!(net.plugins[0]["bridge"], "cni0");
    }

    #[test]
    fn bad_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "10-bad.conflist", "{not json");
        write(
            dir.path(),
            "20-good.conflist",
            r#"{"name":"g","plugins":[{"type":"bridge"}]}"#,
        );
        let err = load_network(dir.path()).unwrap_err().to_string();
        assert!(err.contains("10-bad.conflist"), "{err}");
    }

    #[test]
    fn structural_errors_are_reported() {
        let p = Path::new("/x/n.conflist");
        for (body, want) in [
            (r#"{"plugins":[{"type":"a"}]}"#, "name"),
            (r#"{"name":"n"}"#, "plugins"),
            (r#"{"name":"n","plugins":[]}"#, "empty"),
            (r#"{"name":"n","plugins":[{"type":"../evil"}]}"#, "type"),
            (r#"[1]"#, "object"),
        ] {
            let err = parse(p, body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{body}: {err}");
        }
    }
}
