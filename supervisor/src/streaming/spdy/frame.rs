//! SPDY/3 frames: the binary layout of every frame type, without IO.
//!
//! Every frame starts with 8 bytes. Control frames: `1 | version:15 | type:16` then
//! `flags:8 | length:24`; DATA frames: `0 | stream id:31` then `flags:8 | length:24`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::header_block::{HeaderCompressor, HeaderDecompressor, Headers};

/// The only version we speak (moby/spdystream speaks only 3 too).
pub const VERSION: u16 = 3;
/// Largest DATA payload we send in one frame: what Go peers read and write per call.
pub const MAX_DATA_CHUNK: usize = 32 * 1024;
/// The 24-bit length field's limit.
pub const MAX_FRAME_PAYLOAD: usize = (1 << 24) - 1;
/// Control frames carry at most a (capped) header block; a larger one is refused before it is
/// buffered.
pub const MAX_CONTROL_PAYLOAD: usize = 512 * 1024;
/// Stream ids and similar fields are 31 bits; the top bit is reserved.
pub const MAX_STREAM_ID: u32 = 0x7fff_ffff;

const HEADER_LEN: usize = 8;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// FIN on DATA, SYN_STREAM, SYN_REPLY and HEADERS: the sender's last frame on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM only: the receiver must not send on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// SETTINGS only: forget persisted settings.
pub const FLAG_SETTINGS_CLEAR: u8 = 0x01;

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const UNSUPPORTED_VERSION: u32 = 4;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
    pub const INVALID_CREDENTIALS: u32 = 10;
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

/// One SETTINGS entry: 8-bit flags, 24-bit id, 32-bit value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// A decoded frame. Header blocks are already decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream_id: u32,
        associated_to: u32,
        /// 0 (highest) to 7.
        priority: u8,
        slot: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        clear: bool,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame type SPDY/3 does not define (or CREDENTIAL): receivers ignore it.
    Unknown {
        kind: u16,
        flags: u8,
    },
}

/// Everything that can be wrong with a frame or a header block, on either side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unsupported SPDY version {0} (only 3 is spoken)")]
    UnsupportedVersion(u16),
    #[error("control frame of type {kind} has a {len}-byte payload, over the {max}-byte limit")]
    ControlFrameTooLarge { kind: u16, len: usize, max: usize },
    #[error("{frame} frame has an invalid length {len}")]
    InvalidLength { frame: &'static str, len: usize },
    #[error("{frame} frame has stream id 0")]
    ZeroStreamId { frame: &'static str },
    #[error("{frame} frame has invalid flags {flags:#04x}")]
    InvalidFlags { frame: &'static str, flags: u8 },
    #[error("RST_STREAM frame has status 0")]
    ZeroStatus,
    #[error("PING frame has id 0")]
    ZeroPingId,
    #[error("SETTINGS frame claims {count} entries in a {len}-byte payload")]
    SettingsCount { count: u32, len: usize },
    #[error("{frame} frame: stream id {id} does not fit 31 bits")]
    StreamIdOutOfRange { frame: &'static str, id: u32 },
    #[error("SYN_STREAM priority {0} is out of range 0..=7")]
    PriorityOutOfRange(u8),
    #[error("setting id {0:#x} does not fit 24 bits")]
    SettingIdOutOfRange(u32),
    #[error("DATA payload of {len} bytes is over the {max}-byte frame limit")]
    DataTooLarge { len: usize, max: usize },
    #[error("{frame} payload of {len} bytes does not fit the 24-bit length field")]
    PayloadTooLarge { frame: &'static str, len: usize },
    #[error("header block decompression failed: {0}")]
    Decompress(String),
    #[error("header block compression failed: {0}")]
    Compress(String),
    #[error("header block is over the {max}-byte limit")]
    HeaderBlockTooLarge { max: usize },
    #[error("header block has {count} headers, over the limit of {max}")]
    TooManyHeaders { count: usize, max: usize },
    #[error("header block is truncated")]
    TruncatedHeaderBlock,
    #[error("header block has {0} trailing bytes")]
    TrailingHeaderBytes(usize),
    #[error("header block has an empty header name")]
    EmptyHeaderName,
    #[error("header name {0:?} is not lowercase")]
    UppercaseHeaderName(String),
    #[error("header name {0:?} appears twice in one block")]
    DuplicateHeader(String),
    #[error("header name {0:?} contains a NUL byte")]
    NulInHeaderName(String),
    #[error("header name or value is not UTF-8")]
    HeaderNotUtf8,
}

/// Reads frames off a byte buffer. Owns the receive direction's header decompression context,
/// so one decoder serves one connection and, after an error, that connection is unusable.
#[derive(Default)]
pub struct FrameDecoder {
    headers: HeaderDecompressor,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one frame off the front of `buf`; `Ok(None)` when `buf` does not hold a whole
    /// frame yet (it then reserves room for the rest). Limits are checked from the 8-byte
    /// header, before the payload is waited for.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(head) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let word0 = be_u32(head, 0);
        let word1 = be_u32(head, 4);
        let flags = (word1 >> 24) as u8;
        let len = (word1 & 0x00ff_ffff) as usize;
        let control = word0 & 0x8000_0000 != 0;
        let kind = (word0 & 0xffff) as u16;
        if control {
            let version = ((word0 >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(FrameError::UnsupportedVersion(version));
            }
            if len > MAX_CONTROL_PAYLOAD {
                return Err(FrameError::ControlFrameTooLarge {
                    kind,
                    len,
                    max: MAX_CONTROL_PAYLOAD,
                });
            }
        }
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(len);
        if !control {
            let stream_id = word0 & MAX_STREAM_ID;
            if stream_id == 0 {
                return Err(FrameError::ZeroStreamId { frame: "DATA" });
            }
            return Ok(Some(Frame::Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: payload.freeze(),
            }));
        }
        self.control(kind, flags, &payload).map(Some)
    }

    fn control(&mut self, kind: u16, flags: u8, p: &[u8]) -> Result<Frame, FrameError> {
        let fin = flags & FLAG_FIN != 0;
        match kind {
            SYN_STREAM => {
                let stream_id = stream_id_at(p, "SYN_STREAM", 10)?;
                let associated_to = be_u32(p, 4) & MAX_STREAM_ID;
                let headers = self.headers.decompress(&p[10..])?;
                Ok(Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority: p[8] >> 5,
                    slot: p[9],
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers,
                })
            }
            SYN_REPLY | HEADERS => {
                let name = if kind == SYN_REPLY {
                    "SYN_REPLY"
                } else {
                    "HEADERS"
                };
                let stream_id = stream_id_at(p, name, 4)?;
                let headers = self.headers.decompress(&p[4..])?;
                Ok(if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                })
            }
            RST_STREAM => {
                exact_len(p, "RST_STREAM", 8)?;
                let stream_id = stream_id_at(p, "RST_STREAM", 8)?;
                let status = be_u32(p, 4);
                if status == 0 {
                    return Err(FrameError::ZeroStatus);
                }
                Ok(Frame::RstStream { stream_id, status })
            }
            SETTINGS => Self::settings(flags, p),
            PING => {
                exact_len(p, "PING", 4)?;
                no_flags(flags, "PING")?;
                let id = be_u32(p, 0);
                if id == 0 {
                    return Err(FrameError::ZeroPingId);
                }
                Ok(Frame::Ping { id })
            }
            GOAWAY => {
                exact_len(p, "GOAWAY", 8)?;
                no_flags(flags, "GOAWAY")?;
                Ok(Frame::GoAway {
                    last_good_stream_id: be_u32(p, 0) & MAX_STREAM_ID,
                    status: be_u32(p, 4),
                })
            }
            WINDOW_UPDATE => {
                exact_len(p, "WINDOW_UPDATE", 8)?;
                no_flags(flags, "WINDOW_UPDATE")?;
                // Stream 0 is the session window (SPDY/3.1).
                Ok(Frame::WindowUpdate {
                    stream_id: be_u32(p, 0) & MAX_STREAM_ID,
                    delta: be_u32(p, 4) & MAX_STREAM_ID,
                })
            }
            _ => Ok(Frame::Unknown { kind, flags }),
        }
    }

    fn settings(flags: u8, p: &[u8]) -> Result<Frame, FrameError> {
        if p.len() < 4 {
            return Err(FrameError::InvalidLength {
                frame: "SETTINGS",
                len: p.len(),
            });
        }
        let count = be_u32(p, 0);
        if (count as usize).checked_mul(8) != Some(p.len() - 4) {
            return Err(FrameError::SettingsCount {
                count,
                len: p.len(),
            });
        }
        let entries = p[4..]
            .chunks_exact(8)
            .map(|e| {
                let word = be_u32(e, 0);
                Setting {
                    flags: (word >> 24) as u8,
                    id: word & 0x00ff_ffff,
                    value: be_u32(e, 4),
                }
            })
            .collect();
        Ok(Frame::Settings {
            clear: flags & FLAG_SETTINGS_CLEAR != 0,
            entries,
        })
    }
}

/// Writes frames. Owns the send direction's header compression context: frames must be
/// written to the wire in the order they were encoded.
#[derive(Default)]
pub struct FrameEncoder {
    headers: HeaderCompressor,
}

impl FrameEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `frame` to `out`. On error nothing is appended, and the compression context is
    /// only unusable if the error came from zlib itself ([`FrameError::Compress`]).
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                check_stream_id(*stream_id, "DATA")?;
                if data.len() > MAX_DATA_CHUNK {
                    return Err(FrameError::DataTooLarge {
                        len: data.len(),
                        max: MAX_DATA_CHUNK,
                    });
                }
                out.reserve(HEADER_LEN + data.len());
                out.put_u32(*stream_id);
                out.put_u32(u32::from(fin_flag(*fin)) << 24 | data.len() as u32);
                out.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                fin,
                unidirectional,
                headers,
            } => {
                check_stream_id(*stream_id, "SYN_STREAM")?;
                if *associated_to > MAX_STREAM_ID {
                    return Err(FrameError::StreamIdOutOfRange {
                        frame: "SYN_STREAM",
                        id: *associated_to,
                    });
                }
                if *priority > 7 {
                    return Err(FrameError::PriorityOutOfRange(*priority));
                }
                let flags = fin_flag(*fin)
                    | if *unidirectional {
                        FLAG_UNIDIRECTIONAL
                    } else {
                        0
                    };
                let block = self.headers.compress(headers)?;
                control_header(out, SYN_STREAM, flags, 10 + block.len(), "SYN_STREAM")?;
                out.put_u32(*stream_id);
                out.put_u32(*associated_to);
                out.put_u8(priority << 5);
                out.put_u8(*slot);
                out.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => self.reply_like(out, SYN_REPLY, "SYN_REPLY", *stream_id, *fin, headers)?,
            Frame::Headers {
                stream_id,
                fin,
                headers,
            } => self.reply_like(out, HEADERS, "HEADERS", *stream_id, *fin, headers)?,
            Frame::RstStream { stream_id, status } => {
                check_stream_id(*stream_id, "RST_STREAM")?;
                if *status == 0 {
                    return Err(FrameError::ZeroStatus);
                }
                control_header(out, RST_STREAM, 0, 8, "RST_STREAM")?;
                out.put_u32(*stream_id);
                out.put_u32(*status);
            }
            Frame::Settings { clear, entries } => {
                if let Some(bad) = entries.iter().find(|e| e.id > 0x00ff_ffff) {
                    return Err(FrameError::SettingIdOutOfRange(bad.id));
                }
                let flags = if *clear { FLAG_SETTINGS_CLEAR } else { 0 };
                let len = entries.len().saturating_mul(8).saturating_add(4);
                control_header(out, SETTINGS, flags, len, "SETTINGS")?;
                out.put_u32(entries.len() as u32);
                for e in entries {
                    out.put_u32(u32::from(e.flags) << 24 | e.id);
                    out.put_u32(e.value);
                }
            }
            Frame::Ping { id } => {
                if *id == 0 {
                    return Err(FrameError::ZeroPingId);
                }
                control_header(out, PING, 0, 4, "PING")?;
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                if *last_good_stream_id > MAX_STREAM_ID {
                    return Err(FrameError::StreamIdOutOfRange {
                        frame: "GOAWAY",
                        id: *last_good_stream_id,
                    });
                }
                control_header(out, GOAWAY, 0, 8, "GOAWAY")?;
                out.put_u32(*last_good_stream_id);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                if *stream_id > MAX_STREAM_ID || *delta > MAX_STREAM_ID {
                    return Err(FrameError::StreamIdOutOfRange {
                        frame: "WINDOW_UPDATE",
                        id: (*stream_id).max(*delta),
                    });
                }
                control_header(out, WINDOW_UPDATE, 0, 8, "WINDOW_UPDATE")?;
                out.put_u32(*stream_id);
                out.put_u32(*delta);
            }
            Frame::Unknown { kind, flags } => control_header(out, *kind, *flags, 0, "unknown")?,
        }
        Ok(())
    }

    fn reply_like(
        &mut self,
        out: &mut BytesMut,
        kind: u16,
        name: &'static str,
        stream_id: u32,
        fin: bool,
        headers: &Headers,
    ) -> Result<(), FrameError> {
        check_stream_id(stream_id, name)?;
        let block = self.headers.compress(headers)?;
        control_header(out, kind, fin_flag(fin), 4 + block.len(), name)?;
        out.put_u32(stream_id);
        out.put_slice(&block);
        Ok(())
    }
}

fn control_header(
    out: &mut BytesMut,
    kind: u16,
    flags: u8,
    len: usize,
    frame: &'static str,
) -> Result<(), FrameError> {
    if len > MAX_FRAME_PAYLOAD {
        return Err(FrameError::PayloadTooLarge { frame, len });
    }
    out.reserve(HEADER_LEN + len);
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32(u32::from(flags) << 24 | len as u32);
    Ok(())
}

fn fin_flag(fin: bool) -> u8 {
    if fin {
        FLAG_FIN
    } else {
        0
    }
}

fn check_stream_id(id: u32, frame: &'static str) -> Result<(), FrameError> {
    match id {
        0 => Err(FrameError::ZeroStreamId { frame }),
        id if id > MAX_STREAM_ID => Err(FrameError::StreamIdOutOfRange { frame, id }),
        _ => Ok(()),
    }
}

/// The stream id in the first 4 bytes of a payload that must be at least `min_len` long.
fn stream_id_at(p: &[u8], frame: &'static str, min_len: usize) -> Result<u32, FrameError> {
    if p.len() < min_len {
        return Err(FrameError::InvalidLength {
            frame,
            len: p.len(),
        });
    }
    let id = be_u32(p, 0) & MAX_STREAM_ID;
    if id == 0 {
        return Err(FrameError::ZeroStreamId { frame });
    }
    Ok(id)
}

fn exact_len(p: &[u8], frame: &'static str, len: usize) -> Result<(), FrameError> {
    if p.len() != len {
        return Err(FrameError::InvalidLength {
            frame,
            len: p.len(),
        });
    }
    Ok(())
}

fn no_flags(flags: u8, frame: &'static str) -> Result<(), FrameError> {
    if flags != 0 {
        return Err(FrameError::InvalidFlags { frame, flags });
    }
    Ok(())
}

/// Callers check the length first; a short slice reads as zeros rather than panicking.
fn be_u32(p: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(bytes) = p.get(at..at + 4) {
        word.copy_from_slice(bytes);
    }
    u32::from_be_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// Decodes every frame in `bytes`; the buffer must end on a frame boundary.
    fn decode_all(dec: &mut FrameDecoder, bytes: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(f) = dec.decode(&mut buf).expect("valid frames") {
            frames.push(f);
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        frames
    }

    fn decode_one(bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
        FrameDecoder::new().decode(&mut BytesMut::from(bytes))
    }

    fn encode(enc: &mut FrameEncoder, f: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        enc.encode(f, &mut out).expect("encodes");
        out.to_vec()
    }

    // Written by moby/spdystream's framer (a Go client): SYN_STREAM 1 {streamtype: error},
    // then SYN_STREAM 3 {streamtype: stdout} and SYN_REPLY 2 {} on the same zlib stream.
    const GO_SYN_STREAM_1: &[u8] = &[
        0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x2a, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x62, 0x60, 0x60, 0x60, 0x04, 0xa7,
        0xb3, 0x92, 0xa2, 0xd4, 0xc4, 0x5c, 0x68, 0x51, 0xc2, 0x9a, 0x5a, 0x54, 0x94, 0x5f, 0x04,
        0x00, 0x00, 0x00, 0xff, 0xff,
    ];
    const GO_SYN_STREAM_3: &[u8] = &[
        0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x19, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0xc2, 0x2a, 0xc5, 0x56, 0x5c, 0x92, 0x92, 0x5f, 0x5a, 0x02, 0x00, 0x00,
        0x00, 0xff, 0xff,
    ];
    const GO_SYN_REPLY_2: &[u8] = &[
        0x80, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x0e, 0x00, 0x00, 0x00, 0x02, 0x62, 0x60, 0x60,
        0x60, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
    ];
    // A Go server's first frames: SYN_REPLY 1 {} on a fresh zlib stream, later HEADERS with FIN.
    const GO_FRESH_SYN_REPLY_1: &[u8] = &[
        0x80, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x01, 0x78, 0xf9, 0xe3,
        0xc6, 0xa7, 0xc2, 0x62, 0x60, 0x60, 0x60, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
    ];
    const GO_HEADERS_1_FIN: &[u8] = &[
        0x80, 0x03, 0x00, 0x08, 0x01, 0x00, 0x00, 0x1a, 0x00, 0x00, 0x00, 0x01, 0x62, 0x60, 0x60,
        0x60, 0x64, 0x60, 0x60, 0x60, 0xae, 0xd0, 0x4d, 0x64, 0x60, 0x60, 0x60, 0x34, 0x04, 0x00,
        0x00, 0x00, 0xff, 0xff,
    ];
    // A port-forward SYN_STREAM 5: four names, one with two values (Go orders them at random).
    const GO_SYN_STREAM_5_PORTFORWARD: &[u8] = &[
        0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x4e, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x62, 0x60, 0x60, 0x60, 0x01, 0xa7,
        0xb3, 0x92, 0xa2, 0xd4, 0xc4, 0x5c, 0xa4, 0xa2, 0x24, 0x11, 0x52, 0x2a, 0x17, 0x95, 0x80,
        0x68, 0x0b, 0x03, 0x0b, 0x03, 0x06, 0x06, 0x06, 0xce, 0x22, 0x48, 0x2c, 0x66, 0xa6, 0x30,
        0x30, 0x30, 0x30, 0x82, 0x44, 0xd8, 0x2b, 0x74, 0x73, 0x4b, 0x73, 0x4a, 0x32, 0x19, 0x18,
        0x18, 0x98, 0x13, 0x19, 0x92, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
    ];
    // Frames without header blocks, byte for byte as Go writes them.
    const GO_DATA_1_HELLO: &[u8] = &[
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o',
    ];
    const GO_DATA_1_FIN: &[u8] = &[0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00];
    const GO_RST_3_CANCEL: &[u8] = &[
        0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00,
        0x05,
    ];
    const GO_PING_1: &[u8] = &[
        0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01,
    ];
    const GO_GOAWAY_5: &[u8] = &[
        0x80, 0x03, 0x00, 0x07, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00,
        0x00,
    ];
    const GO_WINDOW_UPDATE: &[u8] = &[
        0x80, 0x03, 0x00, 0x09, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00,
        0x00,
    ];
    const GO_SETTINGS: &[u8] = &[
        0x80, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x07, 0x00, 0x01, 0x00, 0x00,
    ];

    #[test]
    fn decodes_go_client_frames_on_one_header_context() {
        let wire = [GO_SYN_STREAM_1, GO_SYN_STREAM_3, GO_SYN_REPLY_2].concat();
        let frames = decode_all(&mut FrameDecoder::new(), &wire);
        let syn = |id, t| Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: h(&[("streamtype", t)]),
        };
        assert_eq!(
            frames,
            vec![
                syn(1, "error"),
                syn(3, "stdout"),
                Frame::SynReply {
                    stream_id: 2,
                    fin: false,
                    headers: vec![],
                },
            ]
        );
    }

    #[test]
    fn decodes_go_server_frames() {
        let wire = [
            GO_FRESH_SYN_REPLY_1,
            GO_DATA_1_HELLO,
            GO_DATA_1_FIN,
            GO_RST_3_CANCEL,
            GO_PING_1,
            GO_GOAWAY_5,
            GO_WINDOW_UPDATE,
            GO_SETTINGS,
            GO_HEADERS_1_FIN,
        ]
        .concat();
        let frames = decode_all(&mut FrameDecoder::new(), &wire);
        assert_eq!(
            frames,
            vec![
                Frame::SynReply {
                    stream_id: 1,
                    fin: false,
                    headers: vec![],
                },
                Frame::Data {
                    stream_id: 1,
                    fin: false,
                    data: Bytes::from_static(b"hello"),
                },
                Frame::Data {
                    stream_id: 1,
                    fin: true,
                    data: Bytes::new(),
                },
                Frame::RstStream {
                    stream_id: 3,
                    status: rst::CANCEL,
                },
                Frame::Ping { id: 1 },
                Frame::GoAway {
                    last_good_stream_id: 5,
                    status: goaway::OK,
                },
                Frame::WindowUpdate {
                    stream_id: 1,
                    delta: 65536,
                },
                Frame::Settings {
                    clear: false,
                    entries: vec![Setting {
                        flags: 0,
                        id: 7,
                        value: 65536,
                    }],
                },
                Frame::Headers {
                    stream_id: 1,
                    fin: true,
                    headers: h(&[("x-a", "1")]),
                },
            ]
        );
    }

    #[test]
    fn decodes_go_multi_value_block() {
        let frames = decode_all(&mut FrameDecoder::new(), GO_SYN_STREAM_5_PORTFORWARD);
        let Frame::SynStream {
            stream_id,
            mut headers,
            ..
        } = frames[0].clone()
        else {
            panic!("not a SYN_STREAM: {frames:?}");
        };
        assert_eq!(stream_id, 5);
        headers.sort();
        assert_eq!(
            headers,
            h(&[
                ("port", "8080"),
                ("requestid", "0"),
                ("streamtype", "data"),
                ("x-multi", "a"),
                ("x-multi", "b"),
            ])
        );
    }

    #[test]
    fn encodes_plain_frames_like_go() {
        let mut enc = FrameEncoder::new();
        let cases: [(Frame, &[u8]); 8] = [
            (
                Frame::Data {
                    stream_id: 1,
                    fin: false,
                    data: Bytes::from_static(b"hello"),
                },
                GO_DATA_1_HELLO,
            ),
            (
                Frame::Data {
                    stream_id: 1,
                    fin: true,
                    data: Bytes::new(),
                },
                GO_DATA_1_FIN,
            ),
            (
                Frame::RstStream {
                    stream_id: 3,
                    status: rst::CANCEL,
                },
                GO_RST_3_CANCEL,
            ),
            (Frame::Ping { id: 1 }, GO_PING_1),
            (
                Frame::GoAway {
                    last_good_stream_id: 5,
                    status: goaway::OK,
                },
                GO_GOAWAY_5,
            ),
            (
                Frame::WindowUpdate {
                    stream_id: 1,
                    delta: 65536,
                },
                GO_WINDOW_UPDATE,
            ),
            (
                Frame::Settings {
                    clear: false,
                    entries: vec![Setting {
                        flags: 0,
                        id: 7,
                        value: 65536,
                    }],
                },
                GO_SETTINGS,
            ),
            (
                Frame::Unknown { kind: 10, flags: 0 },
                &[0x80, 0x03, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00],
            ),
        ];
        for (frame, want) in cases {
            assert_eq!(encode(&mut enc, &frame), want, "{frame:?}");
        }
    }

    #[test]
    fn syn_stream_layout_and_zlib_header() {
        let mut enc = FrameEncoder::new();
        let first = encode(
            &mut enc,
            &Frame::SynStream {
                stream_id: 7,
                associated_to: 3,
                priority: 5,
                slot: 9,
                fin: true,
                unidirectional: true,
                headers: h(&[("streamtype", "error")]),
            },
        );
        let len = first.len() - 8;
        assert_eq!(&first[..4], &[0x80, 0x03, 0x00, 0x01]);
        assert_eq!(first[4], FLAG_FIN | FLAG_UNIDIRECTIONAL);
        assert_eq!(&first[5..8], &(len as u32).to_be_bytes()[1..]);
        assert_eq!(&first[8..16], &[0, 0, 0, 7, 0, 0, 0, 3]);
        assert_eq!(first[16], 5 << 5);
        assert_eq!(first[17], 9);
        // A zlib header with FDICT set, naming the SPDY/3 dictionary (adler32 0xe3c6a7c2).
        assert_eq!(first[18], 0x78);
        assert_eq!(first[19] & 0x20, 0x20);
        assert_eq!((u16::from(first[18]) << 8 | u16::from(first[19])) % 31, 0);
        assert_eq!(&first[20..24], &[0xe3, 0xc6, 0xa7, 0xc2]);
        // Every block ends in a sync flush.
        assert_eq!(&first[first.len() - 4..], &[0x00, 0x00, 0xff, 0xff]);
        // Later blocks continue the stream: no second zlib header.
        let second = encode(
            &mut enc,
            &Frame::SynReply {
                stream_id: 7,
                fin: false,
                headers: vec![],
            },
        );
        assert_ne!(&second[12..14], &first[18..20]);
        assert_eq!(&second[second.len() - 4..], &[0x00, 0x00, 0xff, 0xff]);
    }

    #[test]
    fn round_trips_every_frame_type_on_one_connection() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                slot: 0,
                fin: false,
                unidirectional: false,
                headers: h(&[("streamtype", "error")]),
            },
            Frame::SynStream {
                stream_id: MAX_STREAM_ID,
                associated_to: 1,
                priority: 7,
                slot: 255,
                fin: true,
                unidirectional: true,
                headers: h(&[("a", "1"), ("b", ""), ("c", "x")]),
            },
            Frame::SynReply {
                stream_id: 2,
                fin: true,
                headers: vec![],
            },
            Frame::Headers {
                stream_id: 2,
                fin: false,
                headers: h(&[("x-big", &"v".repeat(100_000))]),
            },
            Frame::Data {
                stream_id: 3,
                fin: false,
                data: Bytes::from(vec![0xab; MAX_DATA_CHUNK]),
            },
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream_id: 5,
                status: rst::FRAME_TOO_LARGE,
            },
            Frame::Settings {
                clear: true,
                entries: vec![
                    Setting {
                        flags: 1,
                        id: 4,
                        value: 100,
                    },
                    Setting {
                        flags: 2,
                        id: 0x00ff_ffff,
                        value: u32::MAX,
                    },
                ],
            },
            Frame::Settings {
                clear: false,
                entries: vec![],
            },
            Frame::Ping { id: u32::MAX },
            Frame::GoAway {
                last_good_stream_id: 9,
                status: goaway::PROTOCOL_ERROR,
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: MAX_STREAM_ID,
            },
            Frame::Unknown { kind: 10, flags: 3 },
            Frame::SynReply {
                stream_id: 4,
                fin: false,
                headers: h(&[("streamtype", "stdout")]),
            },
        ];
        let mut enc = FrameEncoder::new();
        let wire: Vec<u8> = frames.iter().flat_map(|f| encode(&mut enc, f)).collect();
        assert_eq!(decode_all(&mut FrameDecoder::new(), &wire), frames);
        // Byte by byte: partial input is never an error.
        let mut dec = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire {
            buf.put_u8(b);
            while let Some(f) = dec.decode(&mut buf).expect("valid") {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn encoder_refuses_invalid_frames() {
        let mut enc = FrameEncoder::new();
        let mut out = BytesMut::new();
        let bad = [
            (
                Frame::Data {
                    stream_id: 1,
                    fin: false,
                    data: Bytes::from(vec![0; MAX_DATA_CHUNK + 1]),
                },
                FrameError::DataTooLarge {
                    len: MAX_DATA_CHUNK + 1,
                    max: MAX_DATA_CHUNK,
                },
            ),
            (
                Frame::Data {
                    stream_id: 0,
                    fin: true,
                    data: Bytes::new(),
                },
                FrameError::ZeroStreamId { frame: "DATA" },
            ),
            (
                Frame::RstStream {
                    stream_id: 1 << 31,
                    status: 1,
                },
                FrameError::StreamIdOutOfRange {
                    frame: "RST_STREAM",
                    id: 1 << 31,
                },
            ),
            (
                Frame::RstStream {
                    stream_id: 1,
                    status: 0,
                },
                FrameError::ZeroStatus,
            ),
            (Frame::Ping { id: 0 }, FrameError::ZeroPingId),
            (
                Frame::SynStream {
                    stream_id: 1,
                    associated_to: 0,
                    priority: 8,
                    slot: 0,
                    fin: false,
                    unidirectional: false,
                    headers: vec![],
                },
                FrameError::PriorityOutOfRange(8),
            ),
            (
                Frame::SynReply {
                    stream_id: 1,
                    fin: false,
                    headers: h(&[("", "x")]),
                },
                FrameError::EmptyHeaderName,
            ),
            (
                Frame::Settings {
                    clear: false,
                    entries: vec![Setting {
                        flags: 0,
                        id: 1 << 24,
                        value: 0,
                    }],
                },
                FrameError::SettingIdOutOfRange(1 << 24),
            ),
        ];
        for (frame, want) in bad {
            assert_eq!(enc.encode(&frame, &mut out), Err(want));
            assert!(out.is_empty(), "{frame:?} left bytes behind");
        }
        // Refused headers leave the compression context usable.
        let ok = Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: h(&[("a", "b")]),
        };
        let wire = encode(&mut enc, &ok);
        assert_eq!(decode_all(&mut FrameDecoder::new(), &wire), vec![ok]);
    }

    /// A control frame header followed by `payload`.
    fn control(version: u16, kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.put_u16(0x8000 | version);
        v.put_u16(kind);
        v.put_u32(u32::from(flags) << 24 | payload.len() as u32);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn rejects_malformed_frames() {
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (
                control(2, PING, 0, &[0, 0, 0, 1]),
                FrameError::UnsupportedVersion(2),
            ),
            (
                control(3, RST_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 5, 0]),
                FrameError::InvalidLength {
                    frame: "RST_STREAM",
                    len: 9,
                },
            ),
            (
                control(3, RST_STREAM, 0, &[0, 0, 0, 0, 0, 0, 0, 5]),
                FrameError::ZeroStreamId {
                    frame: "RST_STREAM",
                },
            ),
            (
                control(3, RST_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0]),
                FrameError::ZeroStatus,
            ),
            (
                control(3, PING, 0, &[0, 0, 1]),
                FrameError::InvalidLength {
                    frame: "PING",
                    len: 3,
                },
            ),
            (control(3, PING, 0, &[0, 0, 0, 0]), FrameError::ZeroPingId),
            (
                control(3, PING, 1, &[0, 0, 0, 1]),
                FrameError::InvalidFlags {
                    frame: "PING",
                    flags: 1,
                },
            ),
            (
                control(3, GOAWAY, 0, &[0, 0, 0, 1]),
                FrameError::InvalidLength {
                    frame: "GOAWAY",
                    len: 4,
                },
            ),
            (
                control(3, GOAWAY, 2, &[0; 8]),
                FrameError::InvalidFlags {
                    frame: "GOAWAY",
                    flags: 2,
                },
            ),
            (
                control(3, WINDOW_UPDATE, 0, &[0; 12]),
                FrameError::InvalidLength {
                    frame: "WINDOW_UPDATE",
                    len: 12,
                },
            ),
            (
                control(3, SETTINGS, 0, &[0, 0]),
                FrameError::InvalidLength {
                    frame: "SETTINGS",
                    len: 2,
                },
            ),
            (
                control(3, SETTINGS, 0, &[0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1]),
                FrameError::SettingsCount { count: 2, len: 12 },
            ),
            (
                control(3, SETTINGS, 0, &[0xff, 0xff, 0xff, 0xff]),
                FrameError::SettingsCount {
                    count: u32::MAX,
                    len: 4,
                },
            ),
            (
                control(3, SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0]),
                FrameError::InvalidLength {
                    frame: "SYN_STREAM",
                    len: 9,
                },
            ),
            (
                control(3, SYN_STREAM, 0, &[0; 10]),
                FrameError::ZeroStreamId {
                    frame: "SYN_STREAM",
                },
            ),
            (
                control(3, SYN_REPLY, 0, &[0, 0, 1]),
                FrameError::InvalidLength {
                    frame: "SYN_REPLY",
                    len: 3,
                },
            ),
            (
                vec![0, 0, 0, 0, 0, 0, 0, 1, 0],
                FrameError::ZeroStreamId { frame: "DATA" },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode_one(&bytes), Err(want), "{bytes:02x?}");
        }
    }

    #[test]
    fn refuses_oversized_control_frames_from_the_header_alone() {
        let mut head = BytesMut::new();
        head.put_u16(0x8000 | VERSION);
        head.put_u16(SYN_STREAM);
        head.put_u32((MAX_CONTROL_PAYLOAD + 1) as u32);
        assert_eq!(
            FrameDecoder::new().decode(&mut head),
            Err(FrameError::ControlFrameTooLarge {
                kind: SYN_STREAM,
                len: MAX_CONTROL_PAYLOAD + 1,
                max: MAX_CONTROL_PAYLOAD,
            })
        );
        // A large DATA frame is fine: it waits for its payload.
        let mut head = BytesMut::from(&[0, 0, 0, 1, 0, 0xff, 0xff, 0xff][..]);
        assert_eq!(FrameDecoder::new().decode(&mut head), Ok(None));
        assert!(head.capacity() >= 8 + MAX_FRAME_PAYLOAD);
    }

    #[test]
    fn rejects_corrupt_header_blocks() {
        // Valid frame layout, but the block is not a zlib stream.
        let bogus = control(3, SYN_REPLY, 0, &[0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef]);
        assert!(matches!(decode_one(&bogus), Err(FrameError::Decompress(_))));
        // A block cut short inside its deflate data: the headers are incomplete.
        let cut = &GO_FRESH_SYN_REPLY_1[..GO_FRESH_SYN_REPLY_1.len() - 8];
        let mut frame = cut.to_vec();
        frame[7] -= 8;
        assert_eq!(decode_one(&frame), Err(FrameError::TruncatedHeaderBlock));
        // A later block decoded without the earlier ones cannot be read.
        assert!(decode_one(GO_SYN_REPLY_2).is_err());
    }

    #[test]
    fn unknown_control_frames_are_skipped() {
        let wire = [control(3, 10, 0, &[1, 2, 3, 4, 5]), GO_PING_1.to_vec()].concat();
        assert_eq!(
            decode_all(&mut FrameDecoder::new(), &wire),
            vec![Frame::Unknown { kind: 10, flags: 0 }, Frame::Ping { id: 1 }]
        );
    }
}
