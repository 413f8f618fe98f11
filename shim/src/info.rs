//! `-info`: the runtime's name, version, options and the runc features, as a protobuf
//! `RuntimeInfo` on stdout (containerd 2.x asks for it).

use std::io::Read;

use limpet_protos::protobuf::well_known_types::any::Any;
use limpet_protos::protobuf::Message;
use limpet_protos::types::introspection::{RuntimeInfo, RuntimeVersion};

use crate::error::{Context, Result};
use crate::options::RuncOptions;
use crate::runc::Runc;

const FEATURES_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// The runtime name this binary answers to: installed as the runc shim, it is that runtime.
pub fn runtime_name() -> &'static str {
    let argv0 = std::env::args().next().unwrap_or_default();
    if argv0.ends_with("containerd-shim-runc-v2") {
        "io.containerd.runc.v2"
    } else {
        "io.containerd.limpet.v2"
    }
}

pub fn info() -> Result<Vec<u8>> {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let options = if stdin.is_empty() {
        None
    } else {
        Some(Any::parse_from_bytes(&stdin).context("decode runtime options on stdin")?)
    };
    let opts = RuncOptions::from_any(options.as_ref())?;
    let runc = Runc::new(&opts, "default", std::path::Path::new("/"));
    // A runtime without `features` (older runc, youki) still gets an answer.
    let features = runc.features().unwrap_or_else(|_| b"{}".to_vec());
    let info = RuntimeInfo {
        name: runtime_name().to_string(),
        version: Some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: String::new(),
            ..Default::default()
        })
        .into(),
        options: options.into(),
        features: Some(Any {
            type_url: FEATURES_TYPE.into(),
            value: features,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    Ok(info.write_to_bytes().unwrap_or_default())
}
