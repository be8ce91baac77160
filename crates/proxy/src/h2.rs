//! HTTP/2 connections on fulcrum's own codec (`fulcrum_h2`, sans I/O). The connection's task
//! owns the socket and the codec, and runs every stream of the connection itself: one turn
//! reads what the socket has and hands each frame to the codec, polls the streams (each
//! forwards its request to a member over the same HTTP/1.1 member connections, heads and
//! body copying as `h1`), then writes what all of them queued in one write. Nothing is
//! spawned per stream, and nothing crosses a thread.
//!
//! Streams reach the codec through [`Conn`], behind an uncontended lock (the task is the only
//! one that touches it): a stream sends its response head and data into the codec's output;
//! the task hands it request body bytes, resets and window updates, and wakes it.

use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use fulcrum_h1::{Body, Method, Name, write_field};
use fulcrum_h2::{ErrorCode, Event, Head, ServerConn, Settings};
use futures::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::access_log::{Entry, Termination};
use crate::context::Shared;
use crate::exchange::{self, Attempts, ConnInfo, MemberFailure};
use crate::h1::heads::{proxy_fields, replaced_by_credentials, request_line};
use crate::h1::io::{CopyError, Framing, Pace, copy_body, within, write_two};
use crate::h1::read_response;
use crate::iobuf::IoBuf;
use crate::persistence::Session;
use crate::snapshot::{ListenerRt, PoolRt};
use crate::stats::ErrorKind;
use crate::upstream::UpConn;

/// Streams a client may open at once on one connection.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Flow-control windows: large enough that uploads are not paced by WINDOW_UPDATEs.
const WINDOW: u32 = 1024 * 1024;
/// Output queued and not yet written past which streams wait: a client that does not read
/// holds no more than this (and the codec's own control frames, which it bounds).
const OUTPUT_LIMIT: usize = 256 * 1024;
/// Read buffer bound: room for several whole frames (the codec needs one whole frame).
const READ_LIMIT: usize = 64 * 1024;
/// Bodies up to this size, already read whole from the member, go out at once.
const SMALL_BODY: u64 = 16 * 1024;

/// The codec and what the task knows of each stream it runs.
struct Conn {
    codec: ServerConn,
    streams: Vec<StreamIo>,
}

/// A running stream's mailbox.
struct StreamIo {
    id: u32,
    /// Request body bytes received and not read yet.
    body: Vec<u8>,
    /// The request ended (END_STREAM seen).
    body_ended: bool,
    /// The client reset the stream (or the codec did, for its errors).
    reset: bool,
    /// The stream's task waits for body bytes, window or output room.
    waker: Option<Waker>,
}

impl Conn {
    fn stream(&mut self, id: u32) -> Option<&mut StreamIo> {
        self.streams.iter_mut().find(|s| s.id == id)
    }

    fn wake(&mut self, id: u32) {
        if let Some(w) = self.stream(id).and_then(|s| s.waker.take()) {
            w.wake();
        }
    }

    fn wake_all(&mut self) {
        for s in &mut self.streams {
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }
}

/// Serves an HTTP/2 connection (its preface may already have been read: `io` replays it)
/// until the client closes it, it idles out, or the listener stops.
pub(crate) async fn serve<S>(
    dp: &Shared,
    conn: &ConnInfo,
    mut io: S,
    header_deadline: Instant,
    stop: &mut watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let idle = dp
        .snapshot
        .load()
        .listeners
        .get(&conn.listener)
        .map_or(60_000, |l| l.timeouts.idle_ms);
    let idle = Duration::from_millis(u64::from(idle));
    let state = Mutex::new(Conn {
        codec: ServerConn::new(Settings {
            max_concurrent_streams: MAX_CONCURRENT_STREAMS,
            initial_window_size: WINDOW,
            ..Settings::default()
        }),
        streams: Vec::new(),
    });
    let mut rbuf = IoBuf::new();
    let mut streams = FuturesUnordered::new();
    // The client's preface and first frame arrived (before that the header deadline holds).
    let mut started = false;
    // The client closed its side (or reading failed): the streams in flight finish.
    let mut read_closed = false;
    // A connection error: the GOAWAY the codec queued is written, then the connection closes.
    let mut failed = false;
    // We sent GOAWAY: the streams the client opened finish, then the connection closes.
    let mut going_away = false;
    let mut quiet_since = Instant::now();
    let idle_check = tokio::time::sleep(idle);
    tokio::pin!(idle_check);
    let preface_by = tokio::time::sleep_until(header_deadline);
    tokio::pin!(preface_by);
    if *stop.borrow() {
        going_away = true;
        state.lock().codec.send_goaway(ErrorCode::NO_ERROR);
    }
    loop {
        let mut shut = false;
        let (waiting_preface, stopping) = (!started, going_away);
        {
            // One turn: the frames read go to the codec (new requests become streams), every
            // stream makes what progress it can, and what they all queued leaves in one write.
            let turn = std::future::poll_fn(|cx| {
                loop {
                    let mut progressed = false;
                    while !failed {
                        match next_frame(&state, &mut rbuf) {
                            Ok(Turn::NeedMore) => break,
                            Ok(Turn::Handled) => started = true,
                            Ok(Turn::Request {
                                stream,
                                head,
                                end_stream,
                            }) => {
                                started = true;
                                state.lock().streams.push(StreamIo {
                                    id: stream,
                                    body: Vec::new(),
                                    body_ended: end_stream,
                                    reset: false,
                                    waker: None,
                                });
                                let out = H2Stream {
                                    state: &state,
                                    id: stream,
                                };
                                streams.push(run_stream(dp, conn, out, head, end_stream));
                            }
                            Err(e) => {
                                tracing::debug!(reason = e.reason, "HTTP/2 connection error");
                                failed = true;
                            }
                        }
                    }
                    while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {
                        progressed = true;
                        if streams.is_empty() {
                            quiet_since = Instant::now();
                        }
                    }
                    match flush(&state, &mut io, cx) {
                        Ok(wrote) => progressed |= wrote,
                        Err(()) => return Poll::Ready(()),
                    }
                    let output = state.lock().codec.output().len();
                    if output == 0
                        && (failed || ((read_closed || going_away) && streams.is_empty()))
                    {
                        return Poll::Ready(());
                    }
                    if !read_closed && !failed && output < OUTPUT_LIMIT {
                        let read = rbuf.read_from(&mut io, READ_LIMIT);
                        tokio::pin!(read);
                        match read.poll(cx) {
                            Poll::Ready(Ok(0) | Err(_)) => {
                                read_closed = true;
                                progressed = true;
                            }
                            Poll::Ready(Ok(_)) => progressed = true,
                            Poll::Pending => {}
                        }
                    }
                    if !progressed {
                        return Poll::Pending;
                    }
                }
            });
            tokio::select! {
                biased;
                () = turn => return,
                _ = stop.changed(), if !stopping => shut = true,
                () = &mut preface_by, if waiting_preface => {
                    if !started {
                        return;
                    }
                }
                () = &mut idle_check, if !stopping => {
                    if streams.is_empty() && quiet_since.elapsed() >= idle {
                        shut = true;
                    } else {
                        idle_check.as_mut().reset(quiet_since.max(Instant::now()) + idle);
                    }
                }
            }
        }
        if shut {
            // Stopped, idle, or the listener is gone: finish the streams in flight, then close.
            going_away = true;
            state.lock().codec.send_goaway(ErrorCode::NO_ERROR);
        }
    }
}

/// What one frame meant for the connection's task.
enum Turn {
    /// No whole frame is buffered.
    NeedMore,
    /// Handled here or in the codec.
    Handled,
    /// A new request: a stream to run.
    Request {
        stream: u32,
        head: ReqHead,
        end_stream: bool,
    },
}

/// Hands the next buffered frame to the codec and delivers what it meant to the streams.
fn next_frame(state: &Mutex<Conn>, rbuf: &mut IoBuf) -> Result<Turn, fulcrum_h2::ConnError> {
    let mut c = state.lock();
    let (used, event) = c.codec.receive(rbuf.data())?;
    let turn = match event {
        Event::NeedMore => Turn::NeedMore,
        Event::Request { stream, end_stream } => Turn::Request {
            stream,
            head: ReqHead::of(&c.codec.head()),
            end_stream,
        },
        Event::Data {
            stream,
            data,
            end_stream,
        } => {
            let bytes = rbuf.data().get(data).unwrap_or_default();
            match c.stream(stream) {
                Some(s) => {
                    s.body.extend_from_slice(bytes);
                    s.body_ended |= end_stream;
                    c.wake(stream);
                }
                // A stream that finished: its window reopens at once.
                None => c.codec.release(stream, bytes.len()),
            }
            Turn::Handled
        }
        Event::Trailers { stream } => {
            // Trailers are not forwarded to an HTTP/1.1 member; they end the body.
            if let Some(s) = c.stream(stream) {
                s.body_ended = true;
            }
            c.wake(stream);
            Turn::Handled
        }
        Event::StreamReset { stream, .. } => {
            if let Some(s) = c.stream(stream) {
                s.reset = true;
            }
            c.wake(stream);
            Turn::Handled
        }
        Event::WindowOpened { stream: 0 } => {
            c.wake_all();
            Turn::Handled
        }
        Event::WindowOpened { stream } => {
            c.wake(stream);
            Turn::Handled
        }
        Event::Nothing | Event::Rejected { .. } | Event::GoAway { .. } => Turn::Handled,
    };
    drop(c);
    rbuf.consume(used);
    Ok(turn)
}

/// Writes what the codec queued, as far as the socket takes it. Ok(true): something went.
fn flush<S: AsyncWrite + Unpin>(
    state: &Mutex<Conn>,
    io: &mut S,
    cx: &mut Context<'_>,
) -> Result<bool, ()> {
    let mut wrote = false;
    let mut c = state.lock();
    loop {
        let (written, queued) = {
            let out = c.codec.output();
            if out.is_empty() {
                break;
            }
            (Pin::new(&mut *io).poll_write(cx, out), out.len())
        };
        match written {
            Poll::Ready(Ok(0) | Err(_)) => return Err(()),
            Poll::Ready(Ok(n)) => {
                c.codec.consume_output(n);
                wrote = true;
                if queued >= OUTPUT_LIMIT && queued - n < OUTPUT_LIMIT {
                    c.wake_all();
                }
            }
            Poll::Pending => break,
        }
    }
    drop(c);
    if wrote && let Poll::Ready(Err(_)) = Pin::new(&mut *io).poll_flush(cx) {
        return Err(());
    }
    Ok(wrote)
}

/// A request head, copied out of the codec (whose head lives until its next frame).
struct ReqHead {
    buf: Vec<u8>,
    method: Range<usize>,
    path: Range<usize>,
    authority: Option<Range<usize>>,
    /// Regular fields but `host` and `cookie`.
    fields: Vec<(Range<usize>, Range<usize>)>,
    /// The cookie crumbs joined with "; " (RFC 9113 §8.2.3), for one HTTP/1.1 field.
    cookie: Option<Range<usize>>,
    content_length: Option<u64>,
    connect: bool,
}

impl ReqHead {
    fn of(head: &Head<'_>) -> ReqHead {
        let mut buf = Vec::with_capacity(512);
        let put = |buf: &mut Vec<u8>, bytes: &[u8]| {
            let start = buf.len();
            buf.extend_from_slice(bytes);
            start..buf.len()
        };
        let method = put(&mut buf, head.method());
        let path = put(&mut buf, head.path().unwrap_or(b"/"));
        let authority = head.authority().map(|a| put(&mut buf, a));
        let mut fields = Vec::with_capacity(16);
        for (name, value) in head.fields() {
            if name != b"host" && name != b"cookie" {
                let n = put(&mut buf, name);
                let v = put(&mut buf, value);
                fields.push((n, v));
            }
        }
        let mut cookie: Option<Range<usize>> = None;
        for crumb in head.cookies() {
            match &mut cookie {
                None => cookie = Some(put(&mut buf, crumb)),
                Some(r) => {
                    buf.extend_from_slice(b"; ");
                    buf.extend_from_slice(crumb);
                    r.end = buf.len();
                }
            }
        }
        ReqHead {
            buf,
            method,
            path,
            authority,
            fields,
            cookie,
            content_length: head.content_length(),
            connect: head.is_connect(),
        }
    }

    fn bytes(&self, r: &Range<usize>) -> &[u8] {
        self.buf.get(r.clone()).unwrap_or_default()
    }

    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(n, v)| (self.bytes(n), self.bytes(v)))
    }

    fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// A stream's side of the connection: what it sends and receives goes through the codec.
struct H2Stream<'c> {
    state: &'c Mutex<Conn>,
    id: u32,
}

impl H2Stream<'_> {
    /// Queues the response head. False: the stream is gone (reset by the client).
    fn send_head<'f>(
        &self,
        status: u16,
        fields: impl IntoIterator<Item = (&'f [u8], &'f [u8])>,
        end_stream: bool,
    ) -> bool {
        self.state
            .lock()
            .codec
            .send_headers(self.id, status, fields, end_stream)
    }

    /// Queues `data` (and the end of the stream with `end_stream`), waiting for window and
    /// output room as needed. False: the stream is gone.
    async fn send_all(&self, data: &[u8], end_stream: bool) -> bool {
        let mut sent = 0;
        std::future::poll_fn(|cx| {
            let mut c = self.state.lock();
            loop {
                if c.stream(self.id).is_none_or(|s| s.reset) {
                    return Poll::Ready(false);
                }
                if c.codec.output().len() >= OUTPUT_LIMIT {
                    park(&mut c, self.id, cx);
                    return Poll::Pending;
                }
                let rest = data.get(sent..).unwrap_or_default();
                let n = c.codec.send_data(self.id, rest, end_stream);
                sent += n;
                if sent == data.len() && (!end_stream || !c.codec.can_send(self.id)) {
                    return Poll::Ready(true);
                }
                if n == 0 {
                    if !c.codec.can_send(self.id) {
                        return Poll::Ready(false);
                    }
                    park(&mut c, self.id, cx);
                    return Poll::Pending;
                }
            }
        })
        .await
    }

    /// The stream is done: its mailbox goes, unread body bytes reopen the window, and a
    /// stream the codec still has open is reset (an unfinished response: INTERNAL_ERROR; an
    /// upload the answer did not wait for: NO_ERROR, RFC 9113 §8.1).
    fn finish(&self) {
        let mut c = self.state.lock();
        let Some(at) = c.streams.iter().position(|s| s.id == self.id) else {
            return;
        };
        let io = c.streams.swap_remove(at);
        if !io.body.is_empty() {
            c.codec.release(self.id, io.body.len());
        }
        if c.codec.can_send(self.id) {
            c.codec.send_reset(self.id, ErrorCode::INTERNAL_ERROR);
        } else if !io.body_ended && !io.reset {
            c.codec.send_reset(self.id, ErrorCode::NO_ERROR);
        }
    }
}

fn park(c: &mut Conn, id: u32, cx: &Context<'_>) {
    if let Some(s) = c.stream(id) {
        s.waker = Some(cx.waker().clone());
    }
}

/// One request stream: forwarded, then counted on the listener.
async fn run_stream(
    dp: &Shared,
    conn: &ConnInfo,
    out: H2Stream<'_>,
    head: ReqHead,
    end_stream: bool,
) {
    let started = std::time::Instant::now();
    let listener = dp.snapshot.load().listeners.get(&conn.listener).cloned();
    let Some(listener) = listener else {
        reply(&out, 503, "listener is being removed").await;
        out.finish();
        return;
    };
    let log = dp.log_for(&listener);
    let mut entry = Entry::default();
    if log.is_some() {
        entry.begin("HTTP/2", started, None);
    }
    let status = forward(dp, conn, &listener, &head, !end_stream, &out, &mut entry).await;
    out.finish();
    let elapsed = started.elapsed();
    if status != 0 {
        listener.stats.record(status, elapsed);
    }
    entry.total = Some(elapsed);
    listener.counters.bytes(entry.bytes_in, entry.bytes_out);
    // Every answer of fulcrum's own ends the exchange with a reason other than done.
    if status != 0 && entry.termination != Termination::Done {
        listener.counters.local_reply(status);
    }
    if let Some(log) = log {
        entry.status = status;
        log.emit(&entry, conn.listener.as_str(), conn.peer);
    }
}

/// fulcrum's own answer: `<status> <reason>: <detail>` as plain text.
async fn reply(out: &H2Stream<'_>, status: u16, detail: &str) -> u16 {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or("");
    let body = format!("{status} {reason}: {detail}\n");
    let length = body.len().to_string();
    let fields: [(&[u8], &[u8]); 2] = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", length.as_bytes()),
    ];
    if out.send_head(status, fields, false) {
        out.send_all(body.as_bytes(), true).await;
    }
    status
}

/// Request fields an HTTP/1.1 member must not get as they came: connection-specific ones,
/// those written anew (Host, framing, forwarding).
fn dropped(name: &[u8]) -> bool {
    let kind = Name::classify(name);
    kind.is_hop_by_hop()
        || matches!(
            kind,
            Name::Host | Name::XForwardedFor | Name::XForwardedProto
        )
}

/// Forwards one stream; returns the status the client got (0: none, the stream broke).
async fn forward(
    dp: &Shared,
    conn: &ConnInfo,
    listener: &ListenerRt,
    req: &ReqHead,
    has_body: bool,
    out: &H2Stream<'_>,
    log: &mut Entry,
) -> u16 {
    let host = req.authority.as_ref().map(|a| req.bytes(a));
    let target = req.bytes(&req.path);
    let method_bytes = req.bytes(&req.method);
    let mut id_from_client = false;
    let send_id = listener.request_id;
    log.send_id = send_id;
    if log.active {
        log.request(method_bytes, host, target);
    }
    if log.active || send_id {
        let from_client = req.get(b"x-request-id");
        log.set_request_id(from_client);
        id_from_client = from_client.is_some_and(|id| id == log.request_id());
    }
    if req.connect {
        log.termination = Termination::Refused;
        return reply(out, 405, "CONNECT is not served").await;
    }
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    let (pool, strip) = match listener.route(host.and_then(|h| std::str::from_utf8(h).ok()), path) {
        Ok(r) => (r.pool.clone(), r.strip),
        Err(unrouted) => {
            log.termination = Termination::NoRoute;
            let (status, text) = unrouted.answer();
            return reply(out, status, text).await;
        }
    };
    let method = Method::of(std::str::from_utf8(method_bytes).unwrap_or_default());
    let length = req.content_length;
    let retryable = !has_body && method.is_idempotent();
    let session = Session::of(
        &pool,
        conn.peer.ip(),
        req.cookie.iter().map(|c| req.bytes(c)),
    );
    let timeouts = listener.timeouts;
    let idle = Duration::from_millis(u64::from(timeouts.idle_ms));
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    let mut body_pending = has_body;
    let mut head = Vec::with_capacity(512);
    let mut fields = Vec::with_capacity(16);
    let mut attempts = Attempts::new(&pool, session.bound);
    attempts.timed_from = log.active.then_some(log.started);
    let connect = Duration::from_millis(u64::from(timeouts.connect_ms));
    while let Some((idx, _lease, mut up)) = attempts.next(&pool, conn.client_hash, connect).await {
        let member = &pool.members[idx];
        if log.active {
            log.served_by(&pool, idx);
            log.attempts = attempts.made();
            log.connect = attempts.connect_time;
            log.sticky = session.bound == Some(idx);
        }
        // The head, from the client's fields.
        head.clear();
        request_line(&mut head, method_bytes, target, strip, member);
        for (name, value) in req.fields() {
            // A client's id that was unusable is replaced by fulcrum's, not sent beside it.
            let replaced_id = send_id && !id_from_client && name == b"x-request-id";
            if !dropped(name) && !replaced_id && !replaced_by_credentials(member, name) {
                write_field(&mut head, name, value);
            }
        }
        if let Some(c) = &req.cookie
            && !replaced_by_credentials(member, b"cookie")
        {
            write_field(&mut head, b"cookie", req.bytes(c));
        }
        if let Some(h) = host
            && member.host_override.is_none()
        {
            write_field(&mut head, b"Host", h);
        }
        let prior_xff = req
            .fields()
            .filter(|(n, _)| *n == b"x-forwarded-for")
            .map(|(_, v)| v);
        let framing = has_body.then_some(length);
        proxy_fields(&mut head, conn, member, host, prior_xff, framing);
        if send_id && !id_from_client {
            write_field(&mut head, b"X-Request-Id", log.request_id());
        }
        head.extend_from_slice(b"\r\n");

        let sent_at = std::time::Instant::now();
        let sent = if !body_pending {
            within(&mut sleep, idle, write_two(&mut up.io, &head, &[]))
                .await
                .is_some_and(|r| r.is_ok())
        } else {
            // The body is read once: a member that fails after it is not retried.
            body_pending = false;
            let mut input = H2In { stream: out };
            let framing = length.map_or(Framing::EncodeChunked, Framing::Length);
            let mut buf = IoBuf::new();
            let copied = copy_body(
                &mut head,
                &mut buf,
                &mut input,
                &mut up.io,
                framing,
                &mut sleep,
                idle.into(),
            )
            .await;
            match copied {
                Ok(n) => {
                    log.bytes_in += n.saturating_sub(head.len() as u64);
                    true
                }
                Err(CopyError::Write) => false,
                // The client's fault: nothing is charged to the member.
                Err(e) => {
                    log.termination = match e {
                        CopyError::Malformed(_) => Termination::BadRequest,
                        _ => Termination::ClientAborted,
                    };
                    out.state.lock().codec.send_reset(out.id, ErrorCode::CANCEL);
                    return 0;
                }
            }
        };
        let failed = if sent {
            let (mut limit, until) = crate::h1::answer_limits(&pool, &timeouts, sent_at);
            loop {
                match read_response(&mut up, &mut fields, method, &mut sleep, &mut limit).await {
                    // Interim answers are the member's business with this hop.
                    Ok(r) if r.is_interim() => up.buf.consume(r.head_len),
                    Ok(r) if r.status == 101 => {
                        break MemberFailure {
                            kind: ErrorKind::Reset,
                            status: 502,
                            reason: "the member switched protocols unasked",
                            retry: false,
                        };
                    }
                    Ok(r) => {
                        let (status, reusable) = relay(
                            dp,
                            &pool,
                            idx,
                            &session,
                            out,
                            &mut up,
                            &fields,
                            r,
                            sent_at,
                            &mut sleep,
                            Pace { idle, until },
                            log,
                        )
                        .await;
                        if reusable {
                            member.state.idle.put(up);
                        }
                        return status;
                    }
                    Err(f) => {
                        if f.kind == ErrorKind::Timeout {
                            exchange::timed_out(&pool, idx, sent_at);
                        }
                        break f;
                    }
                }
            }
        } else {
            MemberFailure {
                kind: ErrorKind::Reset,
                status: 502,
                reason: "the member closed the connection",
                retry: up.reused,
            }
        };
        if !attempts.member_failed(&pool, idx, failed, up.reused, retryable) {
            break;
        }
    }
    log.attempts = attempts.made();
    log.termination = Termination::no_answer(attempts.last_error());
    let (status, reason) = attempts.failure();
    reply(out, status, reason).await
}

/// Sends the member's response to the client. Returns its status (0 if the stream broke)
/// and whether the member connection may be reused.
#[allow(clippy::too_many_arguments)]
async fn relay(
    dp: &Shared,
    pool: &PoolRt,
    idx: usize,
    session: &Session,
    out: &H2Stream<'_>,
    up: &mut UpConn,
    fields: &[fulcrum_h1::Field],
    resp: fulcrum_h1::Response,
    sent_at: std::time::Instant,
    sleep: &mut Pin<&mut Sleep>,
    pace: Pace,
    log: &mut Entry,
) -> (u16, bool) {
    let waited = sent_at.elapsed();
    if log.active {
        log.first_byte = Some(sent_at.saturating_duration_since(log.started) + waited);
    }
    let data = up.buf.data();
    exchange::answered(dp, pool, idx, resp.status, sent_at, waited, || {
        fields
            .iter()
            .find(|f| f.kind == Name::RetryAfter)
            .map(|f| f.value.of(data))
    });
    let set_cookie = session.remember(
        pool,
        idx,
        fields
            .iter()
            .filter(|f| f.kind == Name::SetCookie)
            .map(|f| f.value.of(data)),
    );
    let framing = match resp.body {
        Body::None => None,
        Body::Length(n) => Some(Framing::Length(n)),
        Body::Chunked => Some(Framing::Chunked { decode: true }),
        Body::UntilClose => Some(Framing::UntilClose),
    };
    // A small body already read whole goes out with the head.
    let small_body = match resp.body {
        Body::Length(n) if n <= SMALL_BODY && (data.len() - resp.head_len) as u64 >= n => {
            Some(n as usize)
        }
        _ => None,
    };
    let mut length = [0u8; 20];
    let length = resp
        .content_length
        .filter(|_| resp.body != Body::Chunked)
        .map(|n| decimal(&mut length, n));
    let member_id = fields.iter().any(|f| f.kind == Name::XRequestId);
    let our_id = (log.send_id && !member_id).then(|| log.request_id());
    let head_fields = fields
        .iter()
        .filter(|f| !f.hop)
        .map(|f| (f.name.of(data), f.value.of(data)))
        .chain(length.map(|l| (&b"content-length"[..], l)))
        .chain(
            set_cookie
                .as_deref()
                .map(|c| (&b"set-cookie"[..], c.as_bytes())),
        )
        .chain(our_id.map(|id| (&b"x-request-id"[..], id)));
    let status = resp.status;
    let end_with_head = framing.is_none() || small_body == Some(0);
    if !out.send_head(status, head_fields, end_with_head) {
        log.termination = Termination::ClientAborted;
        return (0, false);
    }
    up.buf.consume(resp.head_len);
    let Some(framing) = framing else {
        return (status, resp.keep_alive);
    };
    if let Some(n) = small_body {
        if n == 0 {
            return (status, resp.keep_alive);
        }
        log.bytes_out = n as u64;
        let sent = out
            .send_all(up.buf.data().get(..n).unwrap_or_default(), true)
            .await;
        up.buf.consume(n);
        if !sent {
            log.termination = Termination::ClientAborted;
            return (0, false);
        }
        return (status, resp.keep_alive);
    }
    let mut output = H2Out { stream: out };
    let copied = copy_body(
        &mut Vec::new(),
        &mut up.buf,
        &mut up.io,
        &mut output,
        framing,
        sleep,
        pace,
    )
    .await;
    match copied {
        Ok(n) => {
            log.bytes_out = n;
            if !out.send_all(&[], true).await {
                log.termination = Termination::ClientAborted;
                return (0, false);
            }
            (status, resp.keep_alive && framing != Framing::UntilClose)
        }
        Err(CopyError::Read | CopyError::Malformed(_)) => {
            log.termination = Termination::ResponseAborted;
            exchange::failed(pool, idx, ErrorKind::Reset);
            out.state
                .lock()
                .codec
                .send_reset(out.id, ErrorCode::INTERNAL_ERROR);
            (0, false)
        }
        Err(CopyError::Write) => {
            log.termination = Termination::ResponseAborted;
            (0, false)
        }
    }
}

/// `n` in decimal, in `buf`.
fn decimal(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

/// A client's request body as a byte stream, releasing flow-control window as it is read.
struct H2In<'s, 'c> {
    stream: &'s H2Stream<'c>,
}

impl AsyncRead for H2In<'_, '_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let id = self.stream.id;
        let mut c = self.stream.state.lock();
        let Some(s) = c.stream(id) else {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        };
        if !s.body.is_empty() {
            let n = s.body.len().min(buf.remaining());
            buf.put_slice(&s.body[..n]);
            s.body.drain(..n);
            c.codec.release(id, n);
            return Poll::Ready(Ok(()));
        }
        if s.reset {
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
        }
        if s.body_ended {
            return Poll::Ready(Ok(()));
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A response stream as a byte sink that sends only what the client's window allows.
struct H2Out<'s, 'c> {
    stream: &'s H2Stream<'c>,
}

impl AsyncWrite for H2Out<'_, '_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let id = self.stream.id;
        let mut c = self.stream.state.lock();
        if c.stream(id).is_none_or(|s| s.reset) || !c.codec.can_send(id) {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        if c.codec.output().len() < OUTPUT_LIMIT {
            let n = c.codec.send_data(id, buf, false);
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
        }
        park(&mut c, id, cx);
        Poll::Pending
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
