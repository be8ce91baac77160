//! Moving bytes for the HTTP/1.1 path: one deadline per connection (a single `Sleep`
//! re-armed per phase, never a timer per operation), heads sent together with the body
//! bytes already at hand in one vectored write, and bodies streamed by their framing.

use std::future::Future;
use std::io::IoSlice;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use fulcrum_h1::{ChunkError, Chunked, Step};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use crate::iobuf::{INITIAL, IoBuf};

/// When an operation gives up.
#[derive(Clone, Copy)]
pub(crate) enum Limit {
    At(Instant),
    /// This long after the operation first has to wait (then it becomes `At`, so a phase
    /// made of several operations keeps one deadline).
    After(Duration),
    /// As `After`, but never later than the instant.
    AfterUntil(Duration, Instant),
}

/// How long each step of a body copy may wait: `idle` for each read or write, and the
/// whole copy no later than `until`, when given.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pace {
    pub idle: Duration,
    pub until: Option<Instant>,
}

impl From<Duration> for Pace {
    fn from(idle: Duration) -> Pace {
        Pace { idle, until: None }
    }
}

impl Pace {
    fn limit(self) -> Limit {
        match self.until {
            Some(at) => Limit::AfterUntil(self.idle, at),
            None => Limit::After(self.idle),
        }
    }
}

/// Runs `io` unless it waits longer than `limit` (idle time).
pub(crate) async fn within<F: Future>(
    sleep: &mut Pin<&mut Sleep>,
    limit: Duration,
    io: F,
) -> Option<F::Output> {
    bounded(sleep, &mut Limit::After(limit), io).await
}

/// The connection's one timer is armed only once `io` has to wait: most reads and writes
/// on a busy connection complete at once and never touch the clock or the timer wheel.
pub(crate) async fn bounded<F: Future>(
    sleep: &mut Pin<&mut Sleep>,
    limit: &mut Limit,
    io: F,
) -> Option<F::Output> {
    let mut io = std::pin::pin!(io);
    let mut armed = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = io.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if !armed {
            armed = true;
            let deadline = match *limit {
                Limit::At(at) => at,
                Limit::After(d) => Instant::now() + d,
                Limit::AfterUntil(d, at) => (Instant::now() + d).min(at),
            };
            *limit = Limit::At(deadline);
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
        }
        sleep.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// A body part this small that comes with a head is appended to the head's buffer and
/// both go in one `send`: cheaper in the kernel than a `writev` (no iovec import, no
/// file-write hooks; `perf` put `vfs_writev` alone at 1.7 % of a worker's time).
pub(crate) const JOIN_BELOW: usize = 4096;

/// Writes `head` then `body` (either may be empty) with as few calls as the socket allows,
/// then flushes (a no-op on plain TCP; TLS may hold records back).
pub(crate) async fn write_two<W: AsyncWrite + Unpin>(
    w: &mut W,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<()> {
    if body.is_empty() || head.is_empty() {
        return write_one(w, if body.is_empty() { head } else { body }).await;
    }
    write_all(w, &mut [IoSlice::new(head), IoSlice::new(body)]).await
}

/// Sends all of `data` to `socket` with the rest of the worker's batch
/// (`worker::send_at_end_of_batch`), then whatever the socket could not take at once
/// through `w`; with no socket (TLS) or no batched sends on this thread, through `w` at
/// once. True once all of it went.
pub(crate) async fn send_in_batch<W: AsyncWrite + Unpin>(
    w: &mut W,
    socket: Option<RawFd>,
    data: &[u8],
    sleep: &mut Pin<&mut Sleep>,
    idle: Duration,
) -> bool {
    let sent = match socket {
        Some(fd) if crate::worker::sends_batched() => {
            crate::worker::send_at_end_of_batch(fd, data).await
        }
        _ => None,
    };
    let rest = match sent {
        Some(Ok(n)) => &data[n.min(data.len())..],
        Some(Err(_)) => return false,
        None => data,
    };
    rest.is_empty()
        || within(sleep, idle, write_one(w, rest))
            .await
            .is_some_and(|r| r.is_ok())
}

/// Writes all of `data` with plain writes, then flushes.
async fn write_one<W: AsyncWrite + Unpin>(w: &mut W, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let n = w.write(data).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
    }
    w.flush().await
}

/// Writes every slice, vectored, then flushes.
pub(crate) async fn write_all<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut parts: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        let n = if parts.len() == 1 {
            w.write(&parts[0]).await?
        } else {
            w.write_vectored(parts).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut parts, n);
    }
    w.flush().await
}

/// How a body is delimited on the way through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(u64),
    /// Chunked, forwarded as is (`decode: false`) or as its data only.
    Chunked {
        decode: bool,
    },
    UntilClose,
    /// Everything until the sender's end, sent chunked (a body of unknown length, from an
    /// HTTP/2 client, to an HTTP/1.1 member).
    EncodeChunked,
}

/// Why a body could not be copied; the caller knows which side each end is.
#[derive(Debug)]
pub(crate) enum CopyError {
    /// The sending side failed, went quiet past the idle timeout, or closed early.
    Read,
    /// The receiving side failed or stopped reading.
    Write,
    /// The chunked framing is invalid: the sender's fault.
    Malformed(ChunkError),
}

/// Copies one body from `src` (bytes already read are in `buf`) to `dst`, after `head`
/// (sent with the first body bytes in one write, or alone at once if none are at hand).
/// Stops exactly at the body's end: bytes after it stay in `buf`. Returns the bytes
/// written, head included.
pub(crate) async fn copy_body<R, W>(
    head: &mut Vec<u8>,
    buf: &mut IoBuf,
    src: &mut R,
    dst: &mut W,
    framing: Framing,
    sleep: &mut Pin<&mut Sleep>,
    pace: Pace,
) -> Result<u64, CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if framing == Framing::EncodeChunked {
        return encode_chunked(head, buf, src, dst, sleep, pace).await;
    }
    let head_len = head.len();
    let mut head_pending = head_len > 0;
    let mut written = 0u64;
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut chunked = Chunked::default();
    loop {
        if !buf.is_empty() {
            let data = buf.data();
            // How much of the buffer is body, how much of that to send, and whether it ends.
            let (body_len, send_from, send_len, done) = match framing {
                Framing::Length(_) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                    left -= n as u64;
                    (n, 0, n, left == 0)
                }
                Framing::Chunked { decode: false } => {
                    let (n, done) = chunked.scan(data).map_err(CopyError::Malformed)?;
                    (n, 0, n, done)
                }
                Framing::Chunked { decode: true } => {
                    match chunked.step(data).map_err(CopyError::Malformed)? {
                        Step::Data(n) => (n, 0, n, false),
                        Step::Framing(n) => (n, 0, 0, false),
                        Step::Done(n) => (n, 0, 0, true),
                    }
                }
                Framing::UntilClose | Framing::EncodeChunked => (data.len(), 0, data.len(), false),
            };
            if send_len > 0 || (done && head_pending) {
                let part = &data[send_from..send_from + send_len];
                let sent = if !head_pending {
                    bounded(sleep, &mut pace.limit(), write_one(dst, part)).await
                } else if head_len + part.len() <= JOIN_BELOW {
                    // The head's buffer keeps its capacity across requests: no allocation.
                    head.extend_from_slice(part);
                    let sent = bounded(sleep, &mut pace.limit(), write_one(dst, head)).await;
                    head.truncate(head_len);
                    sent
                } else {
                    bounded(sleep, &mut pace.limit(), write_two(dst, head, part)).await
                };
                sent.ok_or(CopyError::Write)?
                    .map_err(|_| CopyError::Write)?;
                let head_sent = if head_pending { head_len } else { 0 };
                written += (head_sent + part.len()) as u64;
                head_pending = false;
            }
            buf.consume(body_len);
            if done {
                return Ok(written);
            }
            if !buf.is_empty() {
                continue;
            }
        }
        if head_pending {
            // Nothing of the body at hand yet: the head goes now, the body as it comes.
            bounded(sleep, &mut pace.limit(), write_one(dst, head))
                .await
                .ok_or(CopyError::Write)?
                .map_err(|_| CopyError::Write)?;
            written += head_len as u64;
            head_pending = false;
        }
        match bounded(sleep, &mut pace.limit(), buf.read_from(src, INITIAL)).await {
            Some(Ok(0)) if framing == Framing::UntilClose => return Ok(written),
            Some(Ok(n)) if n > 0 => {}
            _ => return Err(CopyError::Read),
        }
    }
}

/// Copies everything `src` sends until its end to `dst` as a chunked body, after `head`.
async fn encode_chunked<R, W>(
    head: &[u8],
    buf: &mut IoBuf,
    src: &mut R,
    dst: &mut W,
    sleep: &mut Pin<&mut Sleep>,
    pace: Pace,
) -> Result<u64, CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut head = head;
    let mut written = 0u64;
    loop {
        let read = bounded(sleep, &mut pace.limit(), buf.read_from(src, INITIAL)).await;
        let ended = match read {
            Some(Ok(0)) => true,
            Some(Ok(_)) => false,
            _ => return Err(CopyError::Read),
        };
        // `<hex>\r\n<data>\r\n`, or the last chunk `0\r\n\r\n`.
        let mut size = Vec::<u8>::with_capacity(20);
        if ended {
            size.extend_from_slice(b"0\r\n\r\n");
        } else {
            size.extend_from_slice(format!("{:x}\r\n", buf.len()).as_bytes());
        }
        let data: &[u8] = if ended { &[] } else { buf.data() };
        let crlf: &[u8] = if ended { &[] } else { b"\r\n" };
        let mut parts = [
            IoSlice::new(head),
            IoSlice::new(&size),
            IoSlice::new(data),
            IoSlice::new(crlf),
        ];
        bounded(sleep, &mut pace.limit(), write_all(dst, &mut parts))
            .await
            .ok_or(CopyError::Write)?
            .map_err(|_| CopyError::Write)?;
        written += (head.len() + size.len() + data.len() + crlf.len()) as u64;
        head = &[];
        buf.clear();
        if ended {
            return Ok(written);
        }
    }
}
