//! SPDY frames as a peer (or an attacker) sends them: decoded or refused, never a panic, and
//! the same whether the bytes arrive at once or a few at a time.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use limpetd::streaming::spdy::frame::{Frame, FrameDecoder, FrameError};
use limpetd::streaming::spdy::header_block::HeaderDecompressor;

/// Every frame in `data` fed `step` bytes at a time, up to the first error.
fn decode(data: &[u8], step: usize) -> (Vec<Frame>, Option<FrameError>) {
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let whole = decode(data, data.len().max(1));
    let trickled = decode(data, 7);
    assert_eq!(whole, trickled);
    // The same bytes as one compressed header block, then as a second block on that context.
    let mut headers = HeaderDecompressor::new();
    let _ = headers.decompress(data);
    let _ = headers.decompress(data);
});
