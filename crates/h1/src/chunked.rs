//! The chunked transfer coding (RFC 9112 §7.1), walked byte by byte where it frames and
//! a chunk at a time where it carries data.
//!
//! The proxy forwards a chunked body verbatim after checking it here, so both hops agree
//! on where it ends: sizes are hex digits only (at most 16, no sign, no spaces), every line
//! ends in CRLF (a bare LF is refused), each chunk's data is followed by exactly CRLF (an
//! overrun is refused), extensions and trailers are bounded and free of control bytes.

/// Longest chunk extension, and longest trailer section, accepted.
const MAX_EXTENSION: u32 = 4096;
const MAX_TRAILERS: u32 = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    InvalidSize,
    SizeTooLong,
    /// A line ended with a bare LF, or a CR not followed by LF.
    LineEnding,
    /// The chunk's data is not followed by CRLF: the size lied.
    Overrun,
    InvalidExtension,
    InvalidTrailer,
}

impl ChunkError {
    pub fn reason(&self) -> &'static str {
        match self {
            ChunkError::InvalidSize => "invalid chunk size",
            ChunkError::SizeTooLong => "chunk size too long",
            ChunkError::LineEnding => "chunk line not ended by CRLF",
            ChunkError::Overrun => "chunk data longer than its size",
            ChunkError::InvalidExtension => "invalid chunk extension",
            ChunkError::InvalidTrailer => "invalid trailer",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the size's hex digits (`digits` so far).
    Size {
        digits: u8,
    },
    Extension {
        len: u32,
    },
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    Trailer,
    TrailerLf,
    FinalLf,
    Done,
}

/// What the next bytes of a chunked body are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// This many bytes of framing (size lines, CRLFs, extensions, trailers).
    Framing(usize),
    /// This many bytes of chunk data.
    Data(usize),
    /// The body ends after this many more bytes of framing.
    Done(usize),
}

/// Walks one chunked body. Feed it the bytes in order; it never looks past the body's end.
#[derive(Clone, Debug)]
pub struct Chunked {
    state: State,
    size: u64,
    trailer_bytes: u32,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size { digits: 0 },
            size: 0,
            trailer_bytes: 0,
        }
    }
}

fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// Visible characters, spaces, tabs and obs-text: what extensions and trailers may hold.
fn is_text(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Classifies the next bytes of `buf` (which must not be empty unless the body is
    /// done). Framing bytes that end mid-line are consumed; the state carries over.
    pub fn step(&mut self, buf: &[u8]) -> Result<Step, ChunkError> {
        if self.state == State::Done {
            return Ok(Step::Done(0));
        }
        if self.state == State::Data {
            let n = usize::try_from(self.size)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            self.size -= n as u64;
            if self.size == 0 {
                self.state = State::DataCr;
            }
            return Ok(Step::Data(n));
        }
        for (i, &b) in buf.iter().enumerate() {
            self.state = match self.state {
                State::Size { digits } => match (b, hex(b)) {
                    (_, Some(d)) => {
                        if digits == 16 {
                            return Err(ChunkError::SizeTooLong);
                        }
                        self.size = (self.size << 4) | d;
                        State::Size { digits: digits + 1 }
                    }
                    (b';', None) if digits > 0 => State::Extension { len: 0 },
                    (b'\r', None) if digits > 0 => State::SizeLf,
                    (b'\n', None) if digits > 0 => return Err(ChunkError::LineEnding),
                    _ => return Err(ChunkError::InvalidSize),
                },
                State::Extension { len } => match b {
                    b'\r' => State::SizeLf,
                    b'\n' => return Err(ChunkError::LineEnding),
                    _ if !is_text(b) => return Err(ChunkError::InvalidExtension),
                    _ if len >= MAX_EXTENSION => return Err(ChunkError::InvalidExtension),
                    _ => State::Extension { len: len + 1 },
                },
                State::SizeLf => match b {
                    b'\n' if self.size == 0 => State::TrailerStart,
                    b'\n' => {
                        self.state = State::Data;
                        return Ok(Step::Framing(i + 1));
                    }
                    _ => return Err(ChunkError::LineEnding),
                },
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(ChunkError::Overrun),
                },
                State::DataLf => match b {
                    b'\n' => State::Size { digits: 0 },
                    _ => return Err(ChunkError::LineEnding),
                },
                State::TrailerStart => match b {
                    b'\r' => State::FinalLf,
                    b'\n' => return Err(ChunkError::LineEnding),
                    // A trailer field starts with its name; no folding.
                    b' ' | b'\t' => return Err(ChunkError::InvalidTrailer),
                    _ => self.trailer_byte(b)?,
                },
                State::Trailer => match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(ChunkError::LineEnding),
                    _ => self.trailer_byte(b)?,
                },
                State::TrailerLf => match b {
                    b'\n' => State::TrailerStart,
                    _ => return Err(ChunkError::LineEnding),
                },
                State::FinalLf => match b {
                    b'\n' => {
                        self.state = State::Done;
                        return Ok(Step::Done(i + 1));
                    }
                    _ => return Err(ChunkError::LineEnding),
                },
                // Both return before the loop.
                State::Data | State::Done => return Ok(Step::Framing(i)),
            };
        }
        Ok(Step::Framing(buf.len()))
    }

    fn trailer_byte(&mut self, b: u8) -> Result<State, ChunkError> {
        self.trailer_bytes += 1;
        if !is_text(b) || self.trailer_bytes > MAX_TRAILERS {
            return Err(ChunkError::InvalidTrailer);
        }
        Ok(State::Trailer)
    }

    /// Walks as much of `buf` as belongs to the body: returns how many bytes that is, and
    /// whether the body ended there. For forwarding the body verbatim.
    pub fn scan(&mut self, buf: &[u8]) -> Result<(usize, bool), ChunkError> {
        let mut at = 0;
        while at < buf.len() {
            match self.step(&buf[at..])? {
                Step::Framing(n) | Step::Data(n) => at += n,
                Step::Done(n) => return Ok((at + n, true)),
            }
        }
        Ok((at, self.is_done()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(body: &[u8]) -> Result<(usize, bool), ChunkError> {
        Chunked::default().scan(body)
    }

    /// The data bytes of a body, fed `split` bytes at a time.
    fn decode(body: &[u8], split: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut c = Chunked::default();
        let mut data = Vec::new();
        let mut used = 0;
        for piece in body.chunks(split) {
            let mut at = 0;
            while at < piece.len() && !c.is_done() {
                match c.step(&piece[at..])? {
                    Step::Data(n) => {
                        data.extend_from_slice(&piece[at..at + n]);
                        at += n;
                    }
                    Step::Framing(n) => at += n,
                    Step::Done(n) => at += n,
                }
            }
            used += at;
            if c.is_done() {
                return Ok((data, used));
            }
        }
        Ok((data, used))
    }

    #[test]
    fn decodes_whatever_the_split() {
        let body = b"3\r\nabc\r\n10;ext=1\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for split in 1..body.len() {
            let (data, used) = decode(body, split).unwrap();
            assert_eq!(data, b"abc0123456789abcdef", "split {split}");
            assert_eq!(used, body.len() - 4, "split {split}");
        }
        assert_eq!(scan_all(body), Ok((body.len() - 4, true)));
        assert_eq!(scan_all(b"0\r\n\r\n"), Ok((5, true)));
        assert_eq!(scan_all(b"0\r\n"), Ok((3, false)));
    }

    #[test]
    fn refuses_what_could_be_read_two_ways() {
        for (body, err) in [
            (&b"zz\r\n"[..], ChunkError::InvalidSize),
            (b"\r\n", ChunkError::InvalidSize),
            (b" 3\r\nabc\r\n", ChunkError::InvalidSize),
            (b"3 \r\nabc\r\n", ChunkError::InvalidSize),
            (b"-3\r\n", ChunkError::InvalidSize),
            (b"0x3\r\n", ChunkError::InvalidSize),
            (b"3\nabc\n0\n\n", ChunkError::LineEnding),
            (b"3\r\nabc\n", ChunkError::Overrun),
            (b"3\r\nabcde\r\n", ChunkError::Overrun),
            (b"3\r\nabc\rX", ChunkError::LineEnding),
            (b"11111111111111111\r\n", ChunkError::SizeTooLong),
            (b"3;a\0b\r\n", ChunkError::InvalidExtension),
            (b"0\r\nX: a\nb\r\n\r\n", ChunkError::LineEnding),
            (b"0\r\n folded\r\n\r\n", ChunkError::InvalidTrailer),
            (b"0\r\n\n", ChunkError::LineEnding),
        ] {
            assert_eq!(
                scan_all(body),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn sixteen_hex_digits_are_the_limit() {
        let mut c = Chunked::default();
        assert_eq!(c.step(b"ffffffffffffffff\r\n"), Ok(Step::Framing(18)));
        assert_eq!(c.step(&[0u8; 10]), Ok(Step::Data(10)));
    }
}
