//! HTTP/2 connections (the h2 crate): every stream of a connection runs inside the
//! connection's own task, so the frames that several streams produce in one turn leave in
//! one flush, and nothing is spawned per stream. Each stream is forwarded to a member over
//! the same HTTP/1.1 member connections, heads and body copying as `h1`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use fulcrum_h1::{Body, Method, Name, write_field};
use futures::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
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
/// Bodies up to this size are queued to the client at once instead of waiting for window.
const SMALL_BODY: u64 = 16 * 1024;

/// Serves an HTTP/2 connection (its preface may already have been read: `io` replays it)
/// until the client closes it, it idles out, or the listener stops.
pub(crate) async fn serve<S>(
    dp: &Shared,
    conn: &ConnInfo,
    io: S,
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
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .handshake::<_, Bytes>(io);
    let mut connection = match tokio::time::timeout_at(header_deadline, handshake).await {
        Ok(Ok(c)) => c,
        _ => return,
    };
    let mut streams = FuturesUnordered::new();
    let mut quiet_since = Instant::now();
    let idle_check = tokio::time::sleep(idle);
    tokio::pin!(idle_check);
    let mut stopping = *stop.borrow();
    if stopping {
        connection.graceful_shutdown();
    }
    loop {
        let mut shut = false;
        {
            // One turn: every stream makes what progress it can, new streams are accepted,
            // and the connection, polled last, flushes what all of them queued in one write.
            let driver = std::future::poll_fn(|cx| {
                loop {
                    let mut progressed = false;
                    while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {
                        progressed = true;
                        if streams.is_empty() {
                            quiet_since = Instant::now();
                        }
                    }
                    match connection.poll_accept(cx) {
                        Poll::Ready(Some(Ok((req, respond)))) => {
                            streams.push(stream(dp, conn, req, respond));
                            progressed = true;
                        }
                        Poll::Ready(Some(Err(e))) => {
                            tracing::debug!(error = %e, "HTTP/2 connection failed");
                            return Poll::Ready(());
                        }
                        Poll::Ready(None) => return Poll::Ready(()),
                        Poll::Pending => {}
                    }
                    if !progressed {
                        return Poll::Pending;
                    }
                }
            });
            tokio::select! {
                biased;
                () = driver => return,
                _ = stop.changed(), if !stopping => shut = true,
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
            stopping = true;
            connection.graceful_shutdown();
        }
    }
}

/// One request stream: forwarded, then counted on the listener.
async fn stream(
    dp: &Shared,
    conn: &ConnInfo,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let started = std::time::Instant::now();
    let listener = dp.snapshot.load().listeners.get(&conn.listener).cloned();
    let Some(listener) = listener else {
        reply(&mut respond, 503, "listener is being removed");
        return;
    };
    let log = dp.log_for(&listener);
    let mut entry = Entry::default();
    if log.is_some() {
        entry.begin("HTTP/2", started, None);
    }
    let status = forward(dp, conn, &listener, req, &mut respond, &mut entry).await;
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
fn reply(respond: &mut SendResponse<Bytes>, status: u16, detail: &str) -> u16 {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = Bytes::from(format!(
        "{} {}: {detail}\n",
        code.as_u16(),
        code.canonical_reason().unwrap_or("")
    ));
    let mut resp = Response::new(());
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let Ok(mut s) = respond.send_response(resp, false) {
        let _ = s.send_data(body, true);
    }
    status
}

/// Request fields an HTTP/1.1 member must not get as they came: connection-specific ones,
/// those written anew (Host, framing, forwarding).
fn dropped(name: &HeaderName) -> bool {
    let kind = Name::classify(name.as_str().as_bytes());
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
    req: Request<RecvStream>,
    respond: &mut SendResponse<Bytes>,
    log: &mut Entry,
) -> u16 {
    let (parts, body) = req.into_parts();
    let host = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut id_from_client = false;
    let send_id = listener.request_id;
    log.send_id = send_id;
    if log.active {
        log.request(
            parts.method.as_str().as_bytes(),
            host.map(str::as_bytes),
            target.as_bytes(),
        );
    }
    if log.active || send_id {
        let from_client = parts.headers.get(X_REQUEST_ID).map(HeaderValue::as_bytes);
        log.set_request_id(from_client);
        id_from_client = from_client.is_some_and(|id| id == log.request_id());
    }
    if parts.method == http::Method::CONNECT {
        log.termination = Termination::Refused;
        return reply(respond, 405, "CONNECT is not served");
    }
    let Some(pool) = listener.route(host, parts.uri.path().as_bytes()).cloned() else {
        log.termination = Termination::NoRoute;
        return reply(respond, 503, "no pool serves this request");
    };
    let method = Method::of(parts.method.as_str());
    let has_body = !body.is_end_stream();
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let retryable = !has_body && method.is_idempotent();
    let session = Session::of(
        &pool,
        conn.peer.ip(),
        parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    let timeouts = listener.timeouts;
    let idle = Duration::from_millis(u64::from(timeouts.idle_ms));
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    let mut body = Some(body);
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
        request_line(
            &mut head,
            parts.method.as_str().as_bytes(),
            target.as_bytes(),
            member,
        );
        for (name, value) in &parts.headers {
            // A client's id that was unusable is replaced by fulcrum's, not sent beside it.
            let replaced_id = send_id && !id_from_client && *name == X_REQUEST_ID;
            if !dropped(name)
                && !replaced_id
                && !replaced_by_credentials(member, name.as_str().as_bytes())
            {
                write_field(&mut head, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        if let Some(h) = host {
            write_field(&mut head, b"Host", h.as_bytes());
        }
        let prior_xff = parts
            .headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .map(HeaderValue::as_bytes);
        let framing = has_body.then_some(length);
        proxy_fields(
            &mut head,
            conn,
            member,
            host.map(str::as_bytes),
            prior_xff,
            framing,
        );
        if send_id && !id_from_client {
            write_field(&mut head, b"X-Request-Id", log.request_id());
        }
        head.extend_from_slice(b"\r\n");

        let sent_at = std::time::Instant::now();
        let sent = match body.take().filter(|_| has_body) {
            None => within(&mut sleep, idle, write_two(&mut up.io, &head, &[]))
                .await
                .is_some_and(|r| r.is_ok()),
            Some(mut recv) => {
                let mut input = H2In {
                    body: &mut recv,
                    pending: Bytes::new(),
                };
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
                        respond.send_reset(h2::Reason::CANCEL);
                        return 0;
                    }
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
                            respond,
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
    reply(respond, status, reason)
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Sends the member's response to the client. Returns its status (0 if the stream broke)
/// and whether the member connection may be reused.
#[allow(clippy::too_many_arguments)]
async fn relay(
    dp: &Shared,
    pool: &PoolRt,
    idx: usize,
    session: &Session,
    respond: &mut SendResponse<Bytes>,
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
    let head = up.buf.data();
    exchange::answered(dp, pool, idx, resp.status, sent_at, waited, || {
        fields
            .iter()
            .find(|f| f.kind == Name::RetryAfter)
            .map(|f| f.value.of(head))
    });
    let set_cookie = session.remember(
        pool,
        idx,
        fields
            .iter()
            .filter(|f| f.kind == Name::SetCookie)
            .map(|f| f.value.of(head)),
    );
    // The head (and a small body already read whole) copied once; header values and the
    // data are slices of that one allocation.
    let small_body = match resp.body {
        Body::Length(n) if n <= SMALL_BODY && (up.buf.len() - resp.head_len) as u64 >= n => {
            Some(n as usize)
        }
        _ => None,
    };
    let shared = Bytes::copy_from_slice(&head[..resp.head_len + small_body.unwrap_or(0)]);
    let mut out = Response::new(());
    *out.status_mut() = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = out.headers_mut();
    for f in fields.iter().filter(|f| !f.hop) {
        let value = shared.slice(f.value.start as usize..f.value.end as usize);
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(f.name.of(head)),
            HeaderValue::from_maybe_shared(value),
        ) {
            headers.append(name, value);
        }
    }
    if let Some(n) = resp.content_length.filter(|_| resp.body != Body::Chunked) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if let Some(v) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.append(header::SET_COOKIE, v);
    }
    if log.send_id
        && !headers.contains_key(X_REQUEST_ID)
        && let Ok(id) = HeaderValue::from_bytes(log.request_id())
    {
        headers.insert(X_REQUEST_ID, id);
    }
    up.buf.consume(resp.head_len);
    let framing = match resp.body {
        Body::None => None,
        Body::Length(n) => Some(Framing::Length(n)),
        Body::Chunked => Some(Framing::Chunked { decode: true }),
        Body::UntilClose => Some(Framing::UntilClose),
    };
    let Ok(mut send) = respond.send_response(out, framing.is_none()) else {
        log.termination = Termination::ClientAborted;
        return (0, false);
    };
    let status = resp.status;
    let Some(framing) = framing else {
        return (status, resp.keep_alive);
    };
    // A small body already read whole goes out as one final DATA frame.
    if let Some(n) = small_body {
        up.buf.consume(n);
        let data = shared.slice(resp.head_len..resp.head_len + n);
        log.bytes_out = n as u64;
        return (
            status,
            send.send_data(data, true).is_ok() && resp.keep_alive,
        );
    }
    let mut output = H2Out { stream: &mut send };
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
            if send.send_data(Bytes::new(), true).is_err() {
                log.termination = Termination::ClientAborted;
                return (0, false);
            }
            (status, resp.keep_alive && framing != Framing::UntilClose)
        }
        Err(CopyError::Read | CopyError::Malformed(_)) => {
            log.termination = Termination::ResponseAborted;
            exchange::failed(pool, idx, ErrorKind::Reset);
            send.send_reset(h2::Reason::INTERNAL_ERROR);
            (0, false)
        }
        Err(CopyError::Write) => {
            log.termination = Termination::ResponseAborted;
            (0, false)
        }
    }
}

/// A client's request body as a byte stream, releasing flow-control window as it is read.
struct H2In<'a> {
    body: &'a mut RecvStream,
    pending: Bytes,
}

impl AsyncRead for H2In<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() {
            match this.body.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = this.body.flow_control().release_capacity(data.len());
                    this.pending = data;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(std::io::Error::other(e))),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

/// A response stream as a byte sink that sends only what the client's window allows.
struct H2Out<'a> {
    stream: &'a mut SendStream<Bytes>,
}

impl AsyncWrite for H2Out<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let stream = &mut *self.stream;
        if stream.capacity() == 0 {
            stream.reserve_capacity(buf.len());
            match stream.poll_capacity(cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(std::io::Error::other(e))),
                Poll::Ready(None) => {
                    return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = stream.capacity().min(buf.len());
        if n == 0 {
            return Poll::Pending;
        }
        match stream.send_data(Bytes::copy_from_slice(&buf[..n]), false) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(e) => Poll::Ready(Err(std::io::Error::other(e))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
