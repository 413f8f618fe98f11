//! The layer unpacker on arbitrary archives: an error or a tree, never a panic, and never a
//! file outside the layer directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use limpetd::snapshots::unpack::unpack;

fuzz_target!(|data: &[u8]| {
    let Ok(base) = tempfile::tempdir() else {
        return;
    };
    let layer = base.path().join("layer");
    if std::fs::create_dir(&layer).is_err() {
        return;
    }
    let _ = unpack(data, &layer);
    // Only `layer` may exist beside nothing: any other entry escaped.
    let escaped: Vec<_> = std::fs::read_dir(base.path())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name())
                .filter(|n| n != "layer")
                .collect()
        })
        .unwrap_or_default();
    assert!(escaped.is_empty(), "entries escaped the layer: {escaped:?}");
});
