//! fulcrum's HTTP/1.1 codec, written for proxying.
//!
//! A head is parsed in place (httparse does the tokenising) into [`Span`]s of the read
//! buffer: nothing is copied or allocated, and the caller copies the fields it forwards
//! straight from its buffer into the next hop's. The same pass decides the message's framing
//! from one normalised view of `Content-Length`, `Transfer-Encoding` and `Connection`, and
//! refuses what a proxy must never forward (RFC 9112 §§3.2, 6.1, 6.3, 7.1): two `Host`s, an
//! absolute-form target naming another authority, a request `Transfer-Encoding` other than
//! `chunked`, `Content-Length` with `Transfer-Encoding`, malformed or conflicting lengths.
//! [`Chunked`] walks a chunked body and validates every size line, data terminator and
//! trailer, so a body ends exactly where the sender and the receiver both think it does.
//!
//! Pure: no I/O, no async, no clock. The proxy (`fulcrum-proxy`) drives it for both the
//! client side and the member side.

mod chunked;
mod head;

pub use chunked::{ChunkError, Chunked, Step};
pub use head::{
    Body, Error, Field, MAX_HEADERS, Method, Name, Request, Response, parse_request, parse_response,
};

/// A range of the buffer a head was parsed from. Heads are bounded well below 4 GiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The bytes this span covers in `buf` (the buffer the head was parsed from).
    #[inline]
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    pub fn len(&self) -> usize {
        (self.end.saturating_sub(self.start)) as usize
    }

    fn within(base: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).saturating_sub(base.as_ptr() as usize);
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    fn sub(self, from: usize, to: usize) -> Span {
        Span {
            start: self.start + from as u32,
            end: self.start + to as u32,
        }
    }
}

/// Appends `name: value\r\n`.
#[inline]
pub fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends a decimal number (no allocation, no formatting machinery).
#[inline]
pub fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 15, 1234567890, u64::MAX] {
            let mut v = Vec::new();
            write_decimal(&mut v, n);
            assert_eq!(v, n.to_string().as_bytes());
        }
    }
}
