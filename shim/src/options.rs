//! The runc runtime options (`containerd.runc.v1.Options`), as they arrive in Create, in the
//! `start` bootstrap and from the bundle for `delete`.

use std::path::Path;

use limpet_protos::protobuf::well_known_types::any::Any;
use limpet_protos::protobuf::{Message, UnknownValueRef};
use limpet_protos::runc_options::Options;
use limpet_protos::type_urls;
use serde_json::{json, Value};

use crate::error::{Context, Result};

/// The file in the bundle that keeps the options for the `delete` action.
const FILE: &str = "options.json";
/// `criu_path`, field 8 of the options: dropped from newer schemas, still sent by older
/// clients and honoured.
const CRIU_PATH_FIELD: u32 = 8;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RuncOptions {
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    pub shim_cgroup: String,
    pub io_uid: u32,
    pub io_gid: u32,
    pub binary_name: String,
    pub root: String,
    pub systemd_cgroup: bool,
    pub criu_path: String,
    pub criu_image_path: String,
    pub criu_work_path: String,
}

/// True when an `Any` carries a message of type `name` (with or without a URL prefix).
pub fn is_type(any: &Any, name: &str) -> bool {
    any.type_url == name || any.type_url.rsplit('/').next() == Some(name)
}

impl RuncOptions {
    /// Reads the options from an `Any`; any other payload (or none) gives the defaults.
    pub fn from_any(any: Option<&Any>) -> Result<RuncOptions> {
        match any {
            Some(any) if is_type(any, type_urls::RUNC_OPTIONS) => Self::decode(&any.value),
            _ => Ok(RuncOptions::default()),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<RuncOptions> {
        let o = Options::parse_from_bytes(bytes).context("decode runc options")?;
        let criu_path = o
            .special_fields
            .unknown_fields()
            .get(CRIU_PATH_FIELD)
            .and_then(|v| match v {
                UnknownValueRef::LengthDelimited(b) => String::from_utf8(b.to_vec()).ok(),
                _ => None,
            })
            .unwrap_or_default();
        Ok(RuncOptions {
            no_pivot_root: o.no_pivot_root,
            no_new_keyring: o.no_new_keyring,
            shim_cgroup: o.shim_cgroup,
            io_uid: o.io_uid,
            io_gid: o.io_gid,
            binary_name: o.binary_name,
            root: o.root,
            systemd_cgroup: o.systemd_cgroup,
            criu_path,
            criu_image_path: o.criu_image_path,
            criu_work_path: o.criu_work_path,
        })
    }

    /// The owner of the stdio pipes, when IoUid/IoGid ask for one.
    pub fn io_owner(&self) -> Option<(u32, u32)> {
        (self.io_uid != 0 || self.io_gid != 0).then_some((self.io_uid, self.io_gid))
    }

    pub fn save(&self, bundle: &Path) -> Result<()> {
        let v = json!({
            "no_pivot_root": self.no_pivot_root,
            "no_new_keyring": self.no_new_keyring,
            "shim_cgroup": self.shim_cgroup,
            "io_uid": self.io_uid,
            "io_gid": self.io_gid,
            "binary_name": self.binary_name,
            "root": self.root,
            "systemd_cgroup": self.systemd_cgroup,
            "criu_path": self.criu_path,
            "criu_image_path": self.criu_image_path,
            "criu_work_path": self.criu_work_path,
        });
        let path = bundle.join(FILE);
        std::fs::write(&path, v.to_string()).context(format!("write {}", path.display()))
    }

    /// The options saved in a bundle; the defaults when none were saved.
    pub fn load(bundle: &Path) -> Result<RuncOptions> {
        let path = bundle.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RuncOptions::default()),
            Err(e) => return Err(e).context(format!("read {}", path.display())),
        };
        let v: Value = serde_json::from_str(&text).context(format!("parse {}", path.display()))?;
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or_default();
        let u = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or_default() as u32;
        Ok(RuncOptions {
            no_pivot_root: b("no_pivot_root"),
            no_new_keyring: b("no_new_keyring"),
            shim_cgroup: s("shim_cgroup"),
            io_uid: u("io_uid"),
            io_gid: u("io_gid"),
            binary_name: s("binary_name"),
            root: s("root"),
            systemd_cgroup: b("systemd_cgroup"),
            criu_path: s("criu_path"),
            criu_image_path: s("criu_image_path"),
            criu_work_path: s("criu_work_path"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_of(o: &Options) -> Any {
        Any {
            type_url: type_urls::RUNC_OPTIONS.into(),
            value: o.write_to_bytes().unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn typed_options_are_read_and_others_ignored() {
        let o = Options {
            binary_name: "crun".into(),
            root: "/r".into(),
            systemd_cgroup: true,
            io_uid: 1000,
            io_gid: 1001,
            no_pivot_root: true,
            ..Default::default()
        };
        let got = RuncOptions::from_any(Some(&any_of(&o))).unwrap();
        assert_eq!(got.binary_name, "crun");
        assert_eq!(got.io_owner(), Some((1000, 1001)));
        assert!(got.systemd_cgroup && got.no_pivot_root);
        let other = Any {
            type_url: "x.Other".into(),
            value: vec![1, 2],
            ..Default::default()
        };
        assert_eq!(
            RuncOptions::from_any(Some(&other)).unwrap(),
            RuncOptions::default()
        );
        assert_eq!(RuncOptions::from_any(None).unwrap(), RuncOptions::default());
    }

    #[test]
    fn the_old_criu_path_field_is_honoured() {
        let mut bytes = Options {
            root: "/r".into(),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap();
        // field 8, length-delimited: "/usr/sbin/criu"
        bytes.push((8 << 3) | 2);
        bytes.push(14);
        bytes.extend_from_slice(b"/usr/sbin/criu");
        let got = RuncOptions::decode(&bytes).unwrap();
        assert_eq!(
            (got.root.as_str(), got.criu_path.as_str()),
            ("/r", "/usr/sbin/criu")
        );
    }

    #[test]
    fn options_survive_the_bundle_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            RuncOptions::load(dir.path()).unwrap(),
            RuncOptions::default()
        );
        let o = RuncOptions {
            binary_name: "crun".into(),
            root: "/x".into(),
            io_uid: 7,
            ..Default::default()
        };
        o.save(dir.path()).unwrap();
        assert_eq!(RuncOptions::load(dir.path()).unwrap(), o);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        assert!(RuncOptions::decode(&[0xff, 0xff, 0xff]).is_err());
    }
}
