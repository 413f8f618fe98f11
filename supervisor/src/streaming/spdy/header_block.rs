//! Name/value header blocks: the SPDY/3 layout and the zlib contexts that compress them.
//!
//! A block is `count:32`, then per header `len:32 name len:32 value`, values of one name
//! joined by NUL. Each direction of a session is one zlib stream, primed with the SPDY/3
//! dictionary and sync-flushed after every block, so a block only decodes after all earlier
//! ones of the same direction.

use std::collections::{HashMap, HashSet};

use bytes::BufMut;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame::FrameError;

/// Header names and values in order; names are lowercase on the wire.
pub type Headers = Vec<(String, String)>;

/// Largest decompressed header block we accept or produce.
pub const MAX_BLOCK_LEN: usize = 256 * 1024;
/// Most headers (name/value pairs after splitting NUL-joined values) in one block.
pub const MAX_HEADERS: usize = 1000;

/// The first value of `name`, compared case-insensitively.
pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Serializes `headers` uncompressed: names lowercased, repeated names merged into one
/// NUL-joined value (a block may name each header once).
pub fn encode_block(headers: &Headers) -> Result<Vec<u8>, FrameError> {
    if headers.len() > MAX_HEADERS {
        return Err(FrameError::TooManyHeaders {
            count: headers.len(),
            max: MAX_HEADERS,
        });
    }
    let mut order: Vec<(String, Vec<&str>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (name, value) in headers {
        if name.is_empty() {
            return Err(FrameError::EmptyHeaderName);
        }
        if name.contains('\0') {
            return Err(FrameError::NulInHeaderName(name.clone()));
        }
        let name = name.to_lowercase();
        match index.get(&name) {
            Some(&i) => order[i].1.push(value),
            None => {
                index.insert(name.clone(), order.len());
                order.push((name, vec![value]));
            }
        }
    }
    let mut out = Vec::new();
    out.put_u32(order.len() as u32);
    for (name, values) in &order {
        let value = values.join("\0");
        if out.len() + 8 + name.len() + value.len() > MAX_BLOCK_LEN {
            return Err(FrameError::HeaderBlockTooLarge { max: MAX_BLOCK_LEN });
        }
        out.put_u32(name.len() as u32);
        out.put_slice(name.as_bytes());
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
    Ok(out)
}

/// Parses an uncompressed block. Like Go's framer it refuses uppercase and repeated names, and
/// splits NUL-joined values into one entry each.
pub fn decode_block(raw: &[u8]) -> Result<Headers, FrameError> {
    let mut p = raw;
    let count = take_u32(&mut p)? as usize;
    if count > MAX_HEADERS {
        return Err(FrameError::TooManyHeaders {
            count,
            max: MAX_HEADERS,
        });
    }
    let mut headers = Headers::new();
    let mut seen = HashSet::new();
    // Splitting values repeats the name; bound what that can blow up to.
    let mut expanded = 0usize;
    for _ in 0..count {
        let name = utf8(take_field(&mut p)?)?;
        let value = utf8(take_field(&mut p)?)?;
        if name.is_empty() {
            return Err(FrameError::EmptyHeaderName);
        }
        if name != name.to_lowercase() {
            return Err(FrameError::UppercaseHeaderName(name.to_owned()));
        }
        if !seen.insert(name) {
            return Err(FrameError::DuplicateHeader(name.to_owned()));
        }
        for v in value.split('\0') {
            expanded += name.len() + v.len();
            if headers.len() >= MAX_HEADERS {
                return Err(FrameError::TooManyHeaders {
                    count: headers.len() + 1,
                    max: MAX_HEADERS,
                });
            }
            if expanded > 2 * MAX_BLOCK_LEN {
                return Err(FrameError::HeaderBlockTooLarge { max: MAX_BLOCK_LEN });
            }
            headers.push((name.to_owned(), v.to_owned()));
        }
    }
    if !p.is_empty() {
        return Err(FrameError::TrailingHeaderBytes(p.len()));
    }
    Ok(headers)
}

fn take_u32(p: &mut &[u8]) -> Result<u32, FrameError> {
    let (word, rest) = p
        .split_first_chunk::<4>()
        .ok_or(FrameError::TruncatedHeaderBlock)?;
    *p = rest;
    Ok(u32::from_be_bytes(*word))
}

fn take_field<'a>(p: &mut &'a [u8]) -> Result<&'a [u8], FrameError> {
    let len = take_u32(p)? as usize;
    if len > p.len() {
        return Err(FrameError::TruncatedHeaderBlock);
    }
    let (field, rest) = p.split_at(len);
    *p = rest;
    Ok(field)
}

fn utf8(b: &[u8]) -> Result<&str, FrameError> {
    std::str::from_utf8(b).map_err(|_| FrameError::HeaderNotUtf8)
}

/// The send direction's zlib stream.
pub struct HeaderCompressor {
    z: Compress,
    primed: bool,
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self {
            z: Compress::new(Compression::default(), true),
            primed: false,
        }
    }
}

impl HeaderCompressor {
    pub fn new() -> Self {
        Self::default()
    }

    /// One compressed block, ending in a sync flush so the peer can decode it now.
    /// Invalid headers are refused before the zlib stream is touched.
    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let raw = encode_block(headers)?;
        let zerr = |e: flate2::CompressError| FrameError::Compress(e.to_string());
        if !self.primed {
            // Before the first byte: the zlib header then names the dictionary (FDICT).
            self.z.set_dictionary(DICTIONARY).map_err(zerr)?;
            self.primed = true;
        }
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let mut input = raw.as_slice();
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(zerr)?;
            let used = usize::try_from(self.z.total_in() - before).unwrap_or(usize::MAX);
            input = input.get(used..).unwrap_or_default();
            // Done once all input is in and zlib stopped short of filling the buffer.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The receive direction's zlib stream.
pub struct HeaderDecompressor {
    z: Decompress,
    dictionary_set: bool,
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self {
            z: Decompress::new(true),
            dictionary_set: false,
        }
    }
}

impl HeaderDecompressor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inflates one frame's compressed block (all of it: a block may not spill into the
    /// next frame) and parses it.
    pub fn decompress(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let raw = self.inflate(compressed)?;
        decode_block(&raw)
    }

    fn inflate(&mut self, compressed: &[u8]) -> Result<Vec<u8>, FrameError> {
        let zerr = |e: flate2::DecompressError| FrameError::Decompress(e.to_string());
        let mut out = Vec::with_capacity(256);
        let mut input = compressed;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let (in_before, out_before) = (self.z.total_in(), out.len());
            let result = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = usize::try_from(self.z.total_in() - in_before).unwrap_or(usize::MAX);
            input = input.get(used..).unwrap_or_default();
            match result {
                Ok(Status::StreamEnd) => {
                    // Later blocks would have no stream to continue.
                    return Err(FrameError::Decompress("the zlib stream ended".into()));
                }
                Ok(_) => {}
                // Go's first block names the SPDY/3 dictionary in its zlib header.
                Err(e) if e.needs_dictionary().is_some() && !self.dictionary_set => {
                    self.dictionary_set = true;
                    self.z.set_dictionary(DICTIONARY).map_err(zerr)?;
                    continue;
                }
                Err(e) => return Err(zerr(e)),
            }
            if out.len() > MAX_BLOCK_LEN {
                return Err(FrameError::HeaderBlockTooLarge { max: MAX_BLOCK_LEN });
            }
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            if used == 0 && out.len() == out_before && !input.is_empty() {
                return Err(FrameError::Decompress("no progress".into()));
            }
        }
    }
}

/// The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1); adler32 0xe3c6a7c2.
const DICTIONARY: &[u8] = b"\
    \x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\
    \x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-char\
    set\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-\
    ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\
    \x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10c\
    ontent-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\
    \x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\
    \x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\
    \x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\
    \x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\
    \x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\
    \x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\
    \x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0br\
    etry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\
    \x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04va\
    ry\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\
    \x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\
    \x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\
    \x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin10010120120220520630030230\
    3304305306307402405406407408409410411412413414415416417502504505203 Non-Authoritative In\
    formation204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden\
    404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb \
    Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT\
    chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,te\
    xt/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-\
    8859-1,utf-,*,enq=0.";

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in data {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        b << 16 | a
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(adler32(DICTIONARY), 0xe3c6_a7c2);
        assert!(DICTIONARY.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(DICTIONARY.ends_with(b"charset=iso-8859-1,utf-,*,enq=0."));
    }

    #[test]
    fn block_layout() {
        let raw = encode_block(&h(&[("Streamtype", "error")])).expect("valid");
        assert_eq!(raw, b"\0\0\0\x01\0\0\0\x0astreamtype\0\0\0\x05error");
        assert_eq!(encode_block(&vec![]).expect("valid"), b"\0\0\0\0");
    }

    #[test]
    fn block_round_trip_merges_and_splits_repeated_names() {
        let headers = h(&[("A", "1"), ("b", "2"), ("a", "3"), ("c", "")]);
        let raw = encode_block(&headers).expect("valid");
        assert_eq!(
            decode_block(&raw).expect("valid"),
            h(&[("a", "1"), ("a", "3"), ("b", "2"), ("c", "")])
        );
        assert_eq!(header(&headers, "B"), Some("2"));
        assert_eq!(header(&headers, "a"), Some("1"));
        assert_eq!(header(&headers, "missing"), None);
    }

    #[test]
    fn decode_rejects_malformed_blocks() {
        let field = |s: &[u8]| [&(s.len() as u32).to_be_bytes()[..], s].concat();
        let block = |fields: &[&[u8]]| {
            let mut v = ((fields.len() / 2) as u32).to_be_bytes().to_vec();
            for f in fields {
                v.extend(field(f));
            }
            v
        };
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (vec![0, 0, 0], FrameError::TruncatedHeaderBlock),
            (
                vec![0, 0, 0, 1, 0, 0, 0, 9, b'x'],
                FrameError::TruncatedHeaderBlock,
            ),
            (
                [block(&[b"a", b"1"]), vec![0]].concat(),
                FrameError::TrailingHeaderBytes(1),
            ),
            (block(&[b"", b"1"]), FrameError::EmptyHeaderName),
            (
                block(&[b"Host", b"x"]),
                FrameError::UppercaseHeaderName("Host".into()),
            ),
            (
                block(&[b"a", b"1", b"a", b"2"]),
                FrameError::DuplicateHeader("a".into()),
            ),
            (block(&[b"a", b"\xff"]), FrameError::HeaderNotUtf8),
            (
                vec![0, 0, 0x03, 0xe9],
                FrameError::TooManyHeaders {
                    count: 1001,
                    max: MAX_HEADERS,
                },
            ),
            (
                block(&[b"a", &[0u8; MAX_HEADERS]]),
                FrameError::TooManyHeaders {
                    count: MAX_HEADERS + 1,
                    max: MAX_HEADERS,
                },
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(decode_block(&raw), Err(want), "{raw:02x?}");
        }
    }

    #[test]
    fn encode_refuses_bad_headers() {
        assert_eq!(
            encode_block(&h(&[("", "x")])),
            Err(FrameError::EmptyHeaderName)
        );
        assert_eq!(
            encode_block(&h(&[("a\0b", "x")])),
            Err(FrameError::NulInHeaderName("a\0b".into()))
        );
        assert_eq!(
            encode_block(&h(&[("a", &"x".repeat(MAX_BLOCK_LEN))])),
            Err(FrameError::HeaderBlockTooLarge { max: MAX_BLOCK_LEN })
        );
        let many: Headers = (0..=MAX_HEADERS)
            .map(|i| (format!("h{i}"), String::new()))
            .collect();
        assert!(matches!(
            encode_block(&many),
            Err(FrameError::TooManyHeaders { .. })
        ));
    }

    #[test]
    fn many_blocks_on_one_context() {
        let mut tx = HeaderCompressor::new();
        let mut rx = HeaderDecompressor::new();
        let blocks = [
            h(&[("streamtype", "error")]),
            h(&[]),
            h(&[("big", &"0123456789".repeat(20_000))]),
            h(&[("streamtype", "stdout"), ("requestid", "12345")]),
            h(&[("streamtype", "stdout"), ("requestid", "12345")]),
        ];
        let mut sizes = Vec::new();
        for headers in &blocks {
            let compressed = tx.compress(headers).expect("compresses");
            assert!(compressed.ends_with(&[0, 0, 0xff, 0xff]), "sync flush");
            sizes.push(compressed.len());
            assert_eq!(&rx.decompress(&compressed).expect("decompresses"), headers);
        }
        // The context remembers earlier blocks: a repeated block costs a few bytes.
        assert!(sizes[4] < sizes[3] / 2, "{sizes:?}");
    }

    /// A zlib stream written by hand from RFC 1950/1951: a header with FDICT naming the SPDY
    /// dictionary (0x78 0xbb as Chrome wrote it), then a stored block, which is what a sync
    /// flush of uncompressed bytes produces.
    #[test]
    fn decompresses_hand_built_stored_block() {
        let raw = encode_block(&h(&[("streamtype", "stdin")])).expect("valid");
        let mut z = vec![0x78, 0xbb, 0xe3, 0xc6, 0xa7, 0xc2, 0x00];
        z.extend((raw.len() as u16).to_le_bytes());
        z.extend((!(raw.len() as u16)).to_le_bytes());
        z.extend(&raw);
        let mut rx = HeaderDecompressor::new();
        assert_eq!(
            rx.decompress(&z).expect("decompresses"),
            h(&[("streamtype", "stdin")])
        );
        // The next block on the same stream: no header, just another stored block.
        let raw = encode_block(&h(&[])).expect("valid");
        let mut z = vec![0x00];
        z.extend((raw.len() as u16).to_le_bytes());
        z.extend((!(raw.len() as u16)).to_le_bytes());
        z.extend(&raw);
        assert_eq!(rx.decompress(&z).expect("decompresses"), h(&[]));
    }

    #[test]
    fn refuses_wrong_dictionary_and_finished_streams() {
        let mut rx = HeaderDecompressor::new();
        assert!(matches!(
            rx.decompress(&[0x78, 0xbb, 0x12, 0x34, 0x56, 0x78, 0x00]),
            Err(FrameError::Decompress(_))
        ));
        // A peer that finishes its zlib stream leaves nothing for the next block.
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(DICTIONARY).expect("dictionary");
        let mut out = Vec::with_capacity(1024);
        z.compress_vec(
            &encode_block(&h(&[])).expect("valid"),
            &mut out,
            FlushCompress::Finish,
        )
        .expect("compresses");
        assert!(matches!(
            HeaderDecompressor::new().decompress(&out),
            Err(FrameError::Decompress(_))
        ));
    }

    #[test]
    fn caps_decompressed_size() {
        // 1 MiB of zeros compresses to about 1 KiB.
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(DICTIONARY).expect("dictionary");
        let mut out = Vec::with_capacity(64 * 1024);
        z.compress_vec(&vec![0u8; 1 << 20], &mut out, FlushCompress::Sync)
            .expect("compresses");
        assert!(out.len() < 8 * 1024);
        assert_eq!(
            HeaderDecompressor::new().decompress(&out),
            Err(FrameError::HeaderBlockTooLarge { max: MAX_BLOCK_LEN })
        );
    }
}
