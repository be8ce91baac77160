//! Frames (RFC 9113 §4, §6): the 9-byte header, the constants, and writers for every frame
//! the server sends. Payload checks live with the connection, which knows the state they
//! depend on.

use crate::ErrorCode;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value and floor (RFC 9113 §6.5.2).
pub const MIN_MAX_FRAME_SIZE: u32 = 16_384;
/// SETTINGS_MAX_FRAME_SIZE's ceiling.
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest flow-control window (RFC 9113 §6.9.1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;
/// Every window's initial size before SETTINGS say otherwise (RFC 9113 §6.9.2).
pub const DEFAULT_WINDOW: u32 = 65_535;

/// Frame types (RFC 9113 §6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (RFC 9113 §6).
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS parameters (RFC 9113 §6.5.2).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Payload length (24 bits).
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    /// Stream identifier, the reserved bit cleared.
    pub stream: u32,
}

impl Header {
    /// The header at the start of `b`, if all nine bytes are there.
    pub fn parse(b: &[u8]) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & MAX_WINDOW,
        })
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Appends the header (`len` must fit 24 bits; the codec never writes more).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes());
    }

    pub fn bytes(&self) -> [u8; HEADER_LEN] {
        let l = self.len.to_be_bytes();
        let s = (self.stream & MAX_WINDOW).to_be_bytes();
        [
            l[1], l[2], l[3], self.kind, self.flags, s[0], s[1], s[2], s[3],
        ]
    }
}

/// The payload of a frame that may be PADDED, without its padding: the range of `payload`
/// that remains. Padding as long as the payload is a connection error (RFC 9113 §6.1, §6.2).
pub fn unpad(flags: u8, payload: &[u8]) -> Result<(usize, usize), ErrorCode> {
    if flags & flag::PADDED == 0 {
        return Ok((0, payload.len()));
    }
    let Some(&pad) = payload.first() else {
        return Err(ErrorCode::FRAME_SIZE_ERROR);
    };
    let pad = usize::from(pad);
    // The pad length byte itself plus the padding must leave room (possibly none).
    if pad >= payload.len() {
        return Err(ErrorCode::PROTOCOL_ERROR);
    }
    Ok((1, payload.len() - pad))
}

fn u31(b: &[u8]) -> u32 {
    match b {
        [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]) & MAX_WINDOW,
        _ => 0,
    }
}

/// A PRIORITY frame's payload, or the priority block of a HEADERS frame: the stream
/// depended on (the exclusive bit cleared).
pub fn priority_dependency(b: &[u8]) -> u32 {
    u31(b)
}

/// A WINDOW_UPDATE's increment (reserved bit cleared).
pub fn window_increment(b: &[u8]) -> u32 {
    u31(b)
}

pub fn write_settings(out: &mut Vec<u8>, params: &[(u16, u32)]) {
    Header {
        len: (params.len() * 6) as u32,
        kind: kind::SETTINGS,
        flags: 0,
        stream: 0,
    }
    .write(out);
    for &(id, value) in params {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

pub fn write_settings_ack(out: &mut Vec<u8>) {
    Header {
        len: 0,
        kind: kind::SETTINGS,
        flags: flag::ACK,
        stream: 0,
    }
    .write(out);
}

pub fn write_ping(out: &mut Vec<u8>, ack: bool, payload: &[u8; 8]) {
    Header {
        len: 8,
        kind: kind::PING,
        flags: if ack { flag::ACK } else { 0 },
        stream: 0,
    }
    .write(out);
    out.extend_from_slice(payload);
}

pub fn write_rst_stream(out: &mut Vec<u8>, stream: u32, code: ErrorCode) {
    Header {
        len: 4,
        kind: kind::RST_STREAM,
        flags: 0,
        stream,
    }
    .write(out);
    out.extend_from_slice(&code.0.to_be_bytes());
}

pub fn write_goaway(out: &mut Vec<u8>, last_stream: u32, code: ErrorCode, debug: &[u8]) {
    Header {
        len: (8 + debug.len()) as u32,
        kind: kind::GOAWAY,
        flags: 0,
        stream: 0,
    }
    .write(out);
    out.extend_from_slice(&(last_stream & MAX_WINDOW).to_be_bytes());
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(debug);
}

pub fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    Header {
        len: 4,
        kind: kind::WINDOW_UPDATE,
        flags: 0,
        stream,
    }
    .write(out);
    out.extend_from_slice(&(increment & MAX_WINDOW).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_clears_the_reserved_bit() {
        let h = Header {
            len: 0x12_3456,
            kind: kind::HEADERS,
            flags: flag::END_HEADERS | flag::END_STREAM,
            stream: 7,
        };
        let mut out = Vec::new();
        h.write(&mut out);
        assert_eq!(out, [0x12, 0x34, 0x56, 1, 5, 0, 0, 0, 7]);
        assert_eq!(Header::parse(&out), Some(h));
        out[5] |= 0x80;
        assert_eq!(Header::parse(&out).unwrap().stream, 7);
        assert_eq!(Header::parse(&out[..8]), None);
    }

    #[test]
    fn padding_as_long_as_the_payload_is_a_protocol_error() {
        assert_eq!(unpad(0, b"abc"), Ok((0, 3)));
        assert_eq!(unpad(flag::PADDED, &[2, b'a', 0, 0]), Ok((1, 2)));
        assert_eq!(unpad(flag::PADDED, &[0]), Ok((1, 1)));
        assert_eq!(
            unpad(flag::PADDED, &[3, 0, 0]),
            Err(ErrorCode::PROTOCOL_ERROR)
        );
        assert_eq!(unpad(flag::PADDED, &[1]), Err(ErrorCode::PROTOCOL_ERROR));
        assert_eq!(unpad(flag::PADDED, &[]), Err(ErrorCode::FRAME_SIZE_ERROR));
    }

    #[test]
    fn writers_produce_well_formed_frames() {
        let mut out = Vec::new();
        write_settings(&mut out, &[(setting::MAX_CONCURRENT_STREAMS, 100)]);
        assert_eq!(out, [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
        out.clear();
        write_goaway(&mut out, 5, ErrorCode::ENHANCE_YOUR_CALM, b"x");
        assert_eq!(
            out,
            [0, 0, 9, 7, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0xb, b'x']
        );
        out.clear();
        write_window_update(&mut out, 3, MAX_WINDOW);
        assert_eq!(out, [0, 0, 4, 8, 0, 0, 0, 0, 3, 0x7f, 0xff, 0xff, 0xff]);
    }
}
