//! A read buffer kept for a connection's whole life: bytes are read into its spare end,
//! parsed in place and consumed from its front. Its memory is never zeroed (reads go into
//! uninitialised capacity through tokio's `read_buf`), room consumed at the front is
//! reclaimed without allocating, and it grows only for a head larger than it: steady
//! traffic allocates nothing.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The buffer each connection starts with (HAProxy's and Sozu's default too).
pub(crate) const INITIAL: usize = 16 * 1024;
/// The largest head accepted (request or response): the buffer grows to this, not past it.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Below this much room at the end, room is made before reading (reclaimed at the front,
/// or grown), so reads are never tiny.
const MIN_READ: usize = 2 * 1024;

pub(crate) struct IoBuf {
    bytes: BytesMut,
}

impl IoBuf {
    pub fn new() -> IoBuf {
        IoBuf {
            bytes: BytesMut::with_capacity(INITIAL),
        }
    }

    /// What was read and not consumed yet.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.bytes
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.bytes.advance(n.min(self.bytes.len()));
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    /// Reads once into the spare room, making room first when little is left: the unread
    /// bytes move to the front of the allocation, or it grows, up to `max` bytes held. Ok(0):
    /// the peer closed, or `max` bytes are held already (the caller checks [`IoBuf::len`]).
    pub async fn read_from<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        max: usize,
    ) -> std::io::Result<usize> {
        let len = self.bytes.len();
        if self.bytes.capacity() - len < MIN_READ {
            if len >= max {
                return Ok(0);
            }
            // `reserve` moves the unread bytes to the front when the allocation has the room
            // (no allocation), and allocates only when it has not.
            self.bytes.reserve(MIN_READ.max(len).min(max - len));
        }
        io.read_buf(&mut self.bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn consumed_room_is_reused_and_heads_grow_to_the_limit() {
        let mut buf = IoBuf::new();
        let data = vec![7u8; 40 * 1024];
        let mut src: &[u8] = &data;
        let mut total = 0;
        while total < data.len() {
            let n = buf.read_from(&mut src, MAX_HEAD).await.unwrap_or(0);
            assert!(n > 0);
            total += n;
        }
        assert_eq!(
            buf.len(),
            40 * 1024,
            "grew past its first 16 KiB for a large head"
        );
        buf.consume(buf.len());
        assert!(buf.is_empty());
        let mut more: &[u8] = b"next";
        assert_eq!(buf.read_from(&mut more, MAX_HEAD).await.unwrap_or(0), 4);
        assert_eq!(buf.data(), b"next");
        let mut full: &[u8] = &data;
        let mut held = IoBuf::new();
        while held.read_from(&mut full, 8).await.unwrap_or(0) > 0 {}
        assert!(held.len() >= 8 && held.len() <= INITIAL, "{}", held.len());
    }
}
