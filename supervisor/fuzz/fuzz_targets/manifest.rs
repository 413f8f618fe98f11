//! Manifests, indexes, image configs and references from a registry: parsing must answer
//! with a value or an error, never a panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use limpetd::images::manifest::{self, Document};
use limpetd::images::reference::Reference;

fuzz_target!(|data: &[u8]| {
    for content_type in ["", manifest::OCI_MANIFEST, manifest::DOCKER_LIST] {
        match manifest::parse_document(content_type, data) {
            Ok(Document::Index(index)) => {
                let _ = manifest::select_platform(&index, &manifest::host_platform());
            }
            Ok(Document::Manifest(m)) => {
                for l in &m.layers {
                    let _ = manifest::layer_compression(&l.media_type);
                }
            }
            Err(_) => {}
        }
    }
    for layers in [0, 1, 3] {
        if let Ok(config) = manifest::parse_config(data, layers) {
            let _ = limpetd::digest::chain_ids(&config.rootfs.diff_ids);
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(r) = Reference::parse(s) {
            // normalizing is idempotent
            assert_eq!(Reference::parse(&r.to_string()).ok(), Some(r));
        }
    }
});
