//! fulcrum's HTTP/2 server codec, written for proxying HTTP/2 clients to HTTP/1.1 members.
//!
//! [`ServerConn`] is the server side of one connection (RFC 9113) as a deterministic state
//! machine, in the manner of `quinn-proto`: the caller feeds it what the socket read
//! ([`ServerConn::receive`], one frame per call) and acts on the [`Event`]s; it asks for
//! responses to be sent ([`ServerConn::send_headers`], [`ServerConn::send_data`]) and writes
//! [`ServerConn::output`] to the socket. Request heads are read in place from a reused arena
//! ([`Head`]); request bodies are ranges of the caller's input. [`hpack`] is the header
//! compression (RFC 7541): a decoder with a bounded dynamic table and a table-driven Huffman
//! decoder, and an encoder that keeps no dynamic table. [`frame`] holds the frame header codec
//! and the frame writers.
//!
//! What it refuses, and how:
//! - every frame-size, stream-state, flow-control and CONTINUATION rule of RFC 9113, with the
//!   error code and scope the RFC gives (a connection error queues GOAWAY and returns
//!   [`ConnError`]; a stream error queues RST_STREAM and reports [`Event::StreamReset`]);
//! - malformed requests (RFC 9113 §8.1.1–8.3): uppercase or invalid names, connection-specific
//!   fields, `te` other than `trailers`, pseudo-headers after regular fields, unknown,
//!   duplicate or response pseudo-headers, missing `:method`, `:scheme` or `:path` (CONNECT:
//!   `:authority` only), an empty or non-ASCII `:path`, `host` differing from `:authority`,
//!   CR, LF, NUL or edge whitespace in values, a `content-length` the DATA does not match,
//!   trailers with pseudo-headers or without END_STREAM: stream errors (PROTOCOL_ERROR);
//! - a header list over SETTINGS_MAX_HEADER_LIST_SIZE: answered 431 by the codec itself;
//! - server push, extended CONNECT (`:protocol`) and priorities (parsed, checked, not acted
//!   on) are not implemented;
//! - abuse, bounded without a clock: rapid reset (CVE-2023-44487), SETTINGS and PING floods
//!   against unread output, runs of frames that do nothing, CONTINUATION floods: the
//!   connection is closed with ENHANCE_YOUR_CALM.
//!
//! Pure: no I/O, no async, no clock, no dependencies; once its buffers are warm a connection
//! allocates nothing per request. The caller owns the socket, the timers and back-pressure:
//! stop feeding input while [`ServerConn::output`] is large, and [`ServerConn::release`] every
//! byte of request body handed to it, so the client's windows reopen.

mod conn;
pub mod frame;
mod head;
pub mod hpack;
mod huffman;

pub use conn::{ConnError, Event, ServerConn, Settings};
pub use head::Head;

pub use huffman::HuffmanError;

/// An HTTP/2 error code (RFC 9113 §7). Codes the peer sends may be any value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    pub const NO_ERROR: ErrorCode = ErrorCode(0x0);
    pub const PROTOCOL_ERROR: ErrorCode = ErrorCode(0x1);
    pub const INTERNAL_ERROR: ErrorCode = ErrorCode(0x2);
    pub const FLOW_CONTROL_ERROR: ErrorCode = ErrorCode(0x3);
    pub const SETTINGS_TIMEOUT: ErrorCode = ErrorCode(0x4);
    pub const STREAM_CLOSED: ErrorCode = ErrorCode(0x5);
    pub const FRAME_SIZE_ERROR: ErrorCode = ErrorCode(0x6);
    pub const REFUSED_STREAM: ErrorCode = ErrorCode(0x7);
    pub const CANCEL: ErrorCode = ErrorCode(0x8);
    pub const COMPRESSION_ERROR: ErrorCode = ErrorCode(0x9);
    pub const CONNECT_ERROR: ErrorCode = ErrorCode(0xa);
    pub const ENHANCE_YOUR_CALM: ErrorCode = ErrorCode(0xb);
    pub const INADEQUATE_SECURITY: ErrorCode = ErrorCode(0xc);
    pub const HTTP_1_1_REQUIRED: ErrorCode = ErrorCode(0xd);
}
