//! A read buffer kept for a connection's whole life: bytes are read into its spare end,
//! parsed in place and consumed from its front, and it is compacted only when a head
//! needs the room. Reused across keep-alive requests, so steady traffic allocates nothing.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The buffer each connection starts with (HAProxy's and Sozu's default too).
pub(crate) const INITIAL: usize = 16 * 1024;
/// The largest head accepted (request or response): the buffer grows to this, not past it.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

pub(crate) struct IoBuf {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
}

impl IoBuf {
    pub fn new() -> IoBuf {
        IoBuf {
            bytes: vec![0; INITIAL],
            start: 0,
            end: 0,
        }
    }

    /// What was read and not consumed yet.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Makes room at the end: moves the unread bytes to the front, and grows up to `max`
    /// when the buffer is full of them. False when it is full and already `max` long.
    fn make_room(&mut self, max: usize) -> bool {
        if self.end < self.bytes.len() {
            return true;
        }
        if self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return true;
        }
        if self.bytes.len() < max {
            let grown = (self.bytes.len() * 2).min(max);
            self.bytes.resize(grown, 0);
            return true;
        }
        false
    }

    /// Reads once into the spare room (growing up to `max` if there is none). Ok(0): the
    /// peer closed, or the buffer is full at `max` (the caller checks [`IoBuf::len`]).
    pub async fn read_from<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        max: usize,
    ) -> std::io::Result<usize> {
        if !self.make_room(max) {
            return Ok(0);
        }
        let n = io.read(&mut self.bytes[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Moves the unread bytes (pipelined ones; usually there are none) to the front, so
    /// the next head can use the whole buffer.
    pub fn compact(&mut self) {
        if self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}
