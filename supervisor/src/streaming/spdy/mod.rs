//! SPDY/3.1 sessions, as kubelet's streaming clients speak them.
//!
//! `frame` and `header_block` are the pure wire format (no IO); `session`, `stream` and `tasks`
//! run a connection: a reader task, a writer task and the stream table between them. Every Go peer
//! (moby/spdystream) neither sends nor honours WINDOW_UPDATE, so neither do we.

pub mod frame;
pub mod header_block;
mod session;
mod stream;
mod tasks;

pub use frame::{Frame, FrameDecoder, FrameEncoder, FrameError};
pub use header_block::{header, Headers};
pub use session::{Incoming, Role, Session, SpdyError};
pub use stream::{Stream, StreamReader, StreamWriter};
