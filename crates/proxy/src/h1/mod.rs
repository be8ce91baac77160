//! One client connection's life on HTTP/1.1: read a head, route it, pick a member, send it
//! the rewritten head and the body, relay the answer, repeat. One task owns the client
//! socket and the member connection it borrows for each exchange; nothing (no channel, no
//! second task) sits between them. Heads are parsed in place by `fulcrum-h1` into the
//! connection's buffer, which lives as long as the connection: a keep-alive request in
//! steady state allocates nothing.

pub(crate) mod heads;
pub(crate) mod io;

use std::os::fd::RawFd;
use std::pin::Pin;
use std::time::Duration;

use fulcrum_h1::{Body, Field, Method, Name, Request, Response, parse_request, parse_response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::access_log::{Entry, Termination};
use crate::context::Shared;
use crate::exchange::{self, Attempts, ConnInfo, MemberFailure};
use crate::iobuf::{IoBuf, MAX_HEAD};
use crate::persistence::Session;
use crate::snapshot::{ListenerRt, PoolRt};
use crate::stats::ErrorKind;
use crate::upstream::UpConn;
use heads::{ClientFraming, ResponseHead};
use io::{CopyError, Framing, Limit, bounded, copy_body, send_in_batch, within, write_two};

/// The HTTP/2 connection preface: on a cleartext listener it switches to HTTP/2.
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection that turned out to speak HTTP/2 (prior knowledge): its socket and the
/// bytes already read, to be served by the HTTP/2 server.
pub(crate) struct SwitchToH2<S> {
    pub io: S,
    pub read: Vec<u8>,
}

/// What the client connection does after an exchange.
enum Next {
    KeepAlive,
    Close,
}

struct Client<S> {
    io: S,
    /// The client's socket when `io` writes to it directly (not TLS): answers at hand are
    /// then sent with the rest of their batch (`worker::send_at_end_of_batch`).
    socket: Option<RawFd>,
    buf: IoBuf,
    fields: Vec<Field>,
    /// The member's response head fields.
    up_fields: Vec<Field>,
    /// Heads being written (to the member, then to the client).
    out: Vec<u8>,
    /// The access-log record of the current request (inactive when not logged).
    log: Entry,
    /// When the current request's head began to arrive, if it took more than one read
    /// (kept only for the access log).
    head_began: Option<std::time::Instant>,
    /// The request id came from the client (so the member has it already).
    id_from_client: bool,
    /// The status fulcrum answered a head it refused with (0: none).
    refused: u16,
}

/// Serves a client connection until it closes, idles out or the listener stops.
/// `detect_h2`: a cleartext listener, where a client may speak HTTP/2 with prior knowledge.
/// `socket`: the client's socket, if `io` writes its bytes to it as they are.
pub(crate) async fn serve<S>(
    dp: &Shared,
    conn: &ConnInfo,
    io: S,
    socket: Option<RawFd>,
    opened: Instant,
    stop: &mut watch::Receiver<bool>,
    detect_h2: bool,
) -> Option<SwitchToH2<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut listener, mut generation) = {
        let snap = dp.snapshot.load();
        (
            snap.listeners.get(&conn.listener).cloned()?,
            snap.generation,
        )
    };
    let mut client = Client {
        io,
        socket,
        buf: IoBuf::new(),
        fields: Vec::with_capacity(16),
        up_fields: Vec::with_capacity(16),
        out: Vec::with_capacity(1024),
        log: Entry::default(),
        head_began: Some(opened.into_std()),
        id_from_client: false,
        refused: 0,
    };
    // The first head must arrive within the header timeout counted from accept.
    let sleep = tokio::time::sleep_until(opened + ms(listener.timeouts.client_header_ms));
    tokio::pin!(sleep);
    let mut first = true;
    loop {
        // What the head reader answers itself (a refused head) is counted from here.
        client.log.bytes_out = 0;
        let Some(req) = client
            .read_head(&listener, first && detect_h2, first, &mut sleep, stop)
            .await
        else {
            if first && detect_h2 && client.buf.data().starts_with(H2_PREFACE) {
                return Some(SwitchToH2 {
                    read: client.buf.data().to_vec(),
                    io: client.io,
                });
            }
            if client.refused != 0
                && let Some(log) = dp.log_for(&listener)
            {
                client.log_refused_head(log, conn);
            }
            return None;
        };
        first = false;
        // The listener as the newest snapshot has it (routes, pools, timeouts), looked up
        // again only when a new snapshot was published.
        let refreshed = {
            let snap = dp.snapshot.load();
            (snap.generation != generation)
                .then(|| (snap.generation, snap.listeners.get(&conn.listener).cloned()))
        };
        if let Some((newer, current)) = refreshed {
            generation = newer;
            let Some(current) = current else {
                let gone = "listener is being removed";
                client
                    .reply(&mut sleep, &listener, &req, 503, gone, true)
                    .await;
                return None;
            };
            listener = current;
        }
        let started = std::time::Instant::now();
        let log = dp.log_for(&listener);
        if log.is_some() {
            let protocol = if req.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
            client.log.begin(protocol, started, client.head_began);
        }
        client.head_began = None;
        client.log.bytes_in = 0;
        client.log.bytes_out = 0;
        let (status, next) = client
            .exchange(dp, conn, &listener, req, &mut sleep, stop)
            .await;
        let elapsed = started.elapsed();
        if status != 0 {
            listener.stats.record(status, elapsed);
        }
        listener
            .counters
            .bytes(client.log.bytes_in, client.log.bytes_out);
        client.log.total = Some(elapsed);
        if let Some(log) = log {
            client.log.status = status;
            log.emit(&client.log, conn.listener.as_str(), conn.peer);
            client.log.active = false;
        }
        match next {
            Next::KeepAlive if !*stop.borrow() => {}
            _ => return None,
        }
    }
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(u64::from(v))
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Waits for and parses the next request head. None: the connection is done (closed,
    /// idle, stopped, or refused with an error answer already sent).
    async fn read_head(
        &mut self,
        listener: &ListenerRt,
        detect_h2: bool,
        first: bool,
        sleep: &mut Pin<&mut Sleep>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Request> {
        let header_limit = ms(listener.timeouts.client_header_ms);
        // Between requests the connection may idle; once a head starts, it must complete
        // within the header timeout.
        let mut limit = if first {
            Limit::At(sleep.deadline())
        } else if self.buf.is_empty() {
            Limit::After(ms(listener.timeouts.idle_ms))
        } else {
            Limit::After(header_limit)
        };
        let mut head_started = first || !self.buf.is_empty();
        let timed = listener.log_one_in > 0;
        loop {
            let data = self.buf.data();
            if detect_h2 && data.starts_with(H2_PREFACE) {
                return None;
            }
            // Possibly the start of HTTP/2's preface: read on until it is whole.
            let maybe_h2 = detect_h2 && H2_PREFACE.starts_with(data);
            if !data.is_empty() && !maybe_h2 {
                match parse_request(data, &mut self.fields, MAX_HEAD) {
                    Ok(Some(req)) => return Some(req),
                    // A head in pieces: its time counts from the first (a whole one's is 0).
                    Ok(None) if timed && self.head_began.is_none() => {
                        self.head_began = Some(std::time::Instant::now());
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.refused = e.status();
                        self.error(sleep, listener, e.status(), e.reason(), true, false)
                            .await;
                        return None;
                    }
                }
            }
            if !head_started && !data.is_empty() {
                // A head began after an idle wait: it has the header timeout from now.
                head_started = true;
                limit = Limit::After(header_limit);
            }
            let waiting = self.buf.is_empty();
            let stopping = *stop.borrow();
            let read = tokio::select! {
                biased;
                r = bounded(sleep, &mut limit, self.buf.read_from(&mut self.io, MAX_HEAD)) => Some(r),
                _ = stop.changed(), if waiting && !stopping => None,
            };
            let Some(read) = read else {
                // Stopping (a shutdown, or another process took over): a request already on
                // its way is still served, with `Connection: close`, so a client that sent
                // it as the stop came loses nothing; a connection that stays quiet closes.
                limit = Limit::After(STOP_LINGER.min(ms(listener.timeouts.idle_ms)));
                continue;
            };
            match read {
                Some(Ok(n)) if n > 0 => {}
                // Closed, failed, or (at MAX_HEAD) the parser already said too large.
                Some(_) => return None,
                None if waiting => return None,
                None => {
                    let detail = "the request head did not arrive in time";
                    self.refused = 408;
                    self.error(sleep, listener, 408, detail, true, false).await;
                    return None;
                }
            }
        }
    }

    /// A record for a head fulcrum refused (malformed, too large, too slow): what arrived
    /// of it counts in, the answer out; no method or path (the head did not parse).
    fn log_refused_head(&mut self, log: &crate::access_log::Sink, conn: &ConnInfo) {
        let out = self.log.bytes_out;
        self.log
            .begin("HTTP/1.1", std::time::Instant::now(), self.head_began);
        self.log.clear_text();
        self.log.set_request_id(None);
        self.log.status = self.refused;
        self.log.bytes_in = self.buf.len() as u64;
        self.log.bytes_out = out;
        self.log.termination = if self.refused == 408 {
            Termination::RequestTimeout
        } else {
            Termination::BadRequest
        };
        log.emit(&self.log, conn.listener.as_str(), conn.peer);
    }

    /// Sends fulcrum's own error answer.
    async fn error(
        &mut self,
        sleep: &mut Pin<&mut Sleep>,
        listener: &ListenerRt,
        status: u16,
        detail: &str,
        close: bool,
        head_only: bool,
    ) {
        heads::error(&mut self.out, status, detail, close, head_only);
        self.log.bytes_out += self.out.len() as u64;
        listener.counters.local_reply(status);
        let idle = ms(listener.timeouts.idle_ms);
        let _ = within(sleep, idle, write_two(&mut self.io, &self.out, &[])).await;
    }

    /// Answers a request with fulcrum's own error, keeping the connection only when the
    /// request has no body left unread.
    async fn reply(
        &mut self,
        sleep: &mut Pin<&mut Sleep>,
        listener: &ListenerRt,
        req: &Request,
        status: u16,
        detail: &str,
        force_close: bool,
    ) -> Next {
        let close = force_close || !req.keep_alive || req.body != Body::None;
        self.buf.consume(req.head_len);
        self.error(
            sleep,
            listener,
            status,
            detail,
            close,
            req.method == Method::Head,
        )
        .await;
        if close { Next::Close } else { Next::KeepAlive }
    }

    /// One request: route, pick, send, relay. Returns the status the client got (0 when
    /// none was sent) and what the connection does next.
    async fn exchange(
        &mut self,
        dp: &Shared,
        conn: &ConnInfo,
        listener: &ListenerRt,
        req: Request,
        sleep: &mut Pin<&mut Sleep>,
        stop: &watch::Receiver<bool>,
    ) -> (u16, Next) {
        let data = self.buf.data();
        let target = req.target.of(data);
        self.log.bytes_in = req.head_len as u64;
        if self.log.active {
            let authority = req.host.or(req.authority).map(|h| h.of(data));
            self.log
                .request(req.method_span.of(data), authority, target);
        } else if listener.request_id {
            self.log.clear_text();
        }
        self.log.send_id = listener.request_id;
        if self.log.active || self.log.send_id {
            let from_client = self
                .fields
                .iter()
                .find(|f| f.kind == Name::XRequestId)
                .map(|f| f.value.of(data));
            self.log.set_request_id(from_client);
            self.id_from_client = from_client.is_some_and(|id| id == self.log.request_id());
            if from_client.is_some() && !self.id_from_client && self.log.send_id {
                // Unusable as sent: replaced by fulcrum's, so the member sees one id.
                for f in self
                    .fields
                    .iter_mut()
                    .filter(|f| f.kind == Name::XRequestId)
                {
                    f.hop = true;
                }
            }
        }
        if req.method == Method::Connect {
            self.log.termination = Termination::Refused;
            let next = self
                .reply(sleep, listener, &req, 405, "CONNECT is not served", true)
                .await;
            return (405, next);
        }
        let data = self.buf.data();
        let host = req
            .host
            .or(req.authority)
            .and_then(|h| std::str::from_utf8(h.of(data)).ok());
        let target = req.target.of(data);
        let path = target
            .iter()
            .position(|b| *b == b'?')
            .map_or(target, |q| &target[..q]);
        let (pool, strip) = match listener.route(host, path) {
            Ok(r) => (r.pool.clone(), r.strip),
            Err(unrouted) => {
                self.log.termination = Termination::NoRoute;
                let (status, text) = unrouted.answer();
                let next = self.reply(sleep, listener, &req, status, text, false).await;
                return (status, next);
            }
        };
        let timeouts = listener.timeouts;
        let session = Session::of(
            &pool,
            conn.peer.ip(),
            self.fields
                .iter()
                .filter(|f| f.kind == Name::Cookie)
                .map(|f| f.value.of(data)),
        );
        let retryable = req.body == Body::None && req.method.is_idempotent();
        let mut attempts = Attempts::new(&pool, session.bound);
        attempts.timed_from = self.log.active.then_some(self.log.started);
        let connect = ms(timeouts.connect_ms);
        while let Some((idx, lease, mut up)) = attempts.next(&pool, conn.client_hash, connect).await
        {
            let member = &pool.members[idx];
            if self.log.active {
                self.log.served_by(&pool, idx);
                self.log.attempts = attempts.made();
                self.log.connect = attempts.connect_time;
                self.log.sticky = session.bound == Some(idx);
            }
            match self
                .attempt(
                    dp, conn, &pool, idx, &req, strip, &mut up, &session, sleep, stop, timeouts,
                )
                .await
            {
                Attempt::Done {
                    status,
                    reusable,
                    next,
                } => {
                    if reusable {
                        member.state.idle.put(up);
                    }
                    drop(lease);
                    return (status, next);
                }
                Attempt::Upgraded { status } => {
                    self.log.termination = Termination::TunnelClosed;
                    self.tunnel(up, sleep, ms(timeouts.idle_ms)).await;
                    drop(lease);
                    return (status, Next::Close);
                }
                Attempt::MemberFailed(f) => {
                    if !attempts.member_failed(&pool, idx, f, up.reused, retryable) {
                        break;
                    }
                }
                Attempt::ClientFailed { answer } => {
                    // The client's fault: nothing is charged to the member.
                    self.log.termination = match answer {
                        Some(_) => Termination::BadRequest,
                        None => Termination::ClientAborted,
                    };
                    if let Some((status, reason)) = answer {
                        self.error(sleep, listener, status, reason, true, false)
                            .await;
                        return (status, Next::Close);
                    }
                    return (0, Next::Close);
                }
                Attempt::Broken => {
                    self.log.termination = Termination::ResponseAborted;
                    return (0, Next::Close);
                }
            }
        }
        if self.log.active {
            self.log.attempts = attempts.made();
            self.log.termination = Termination::no_answer(attempts.last_error());
        }
        let (status, reason) = attempts.failure();
        let next = self
            .reply(sleep, listener, &req, status, reason, false)
            .await;
        (status, next)
    }

    /// Sends the request to the member and relays its answer.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &mut self,
        dp: &Shared,
        conn: &ConnInfo,
        pool: &PoolRt,
        idx: usize,
        req: &Request,
        strip: usize,
        up: &mut UpConn,
        session: &Session,
        sleep: &mut Pin<&mut Sleep>,
        stop: &watch::Receiver<bool>,
        timeouts: fulcrum_model::ListenerTimeouts,
    ) -> Attempt {
        let member = &pool.members[idx];
        let idle = ms(timeouts.idle_ms);
        let answer_continue = req.expect_continue;
        heads::request(
            &mut self.out,
            self.buf.data(),
            &self.fields,
            req,
            strip,
            conn,
            member,
            answer_continue,
        );
        if self.log.send_id && !self.id_from_client {
            heads::append_field(&mut self.out, b"X-Request-Id", self.log.request_id());
        }
        let sent_at = std::time::Instant::now();
        // The head goes with the body bytes already read; a bodiless request's head stays
        // in the buffer until answered, so a failed attempt can be sent again elsewhere.
        let sent = match req.body {
            // Requests of one batch go to members together, after its reads: a member
            // woken by the first then finds the others waiting.
            Body::None => {
                let socket = up.io.socket();
                send_in_batch(&mut up.io, socket, &self.out, sleep, idle).await
            }
            Body::Length(_) | Body::Chunked | Body::UntilClose => {
                self.buf.consume(req.head_len);
                if answer_continue && self.buf.is_empty() {
                    let continued = write_two(&mut self.io, b"HTTP/1.1 100 Continue\r\n\r\n", &[]);
                    if within(sleep, idle, continued)
                        .await
                        .is_none_or(|r| r.is_err())
                    {
                        return Attempt::ClientFailed { answer: None };
                    }
                }
                let framing = match req.body {
                    Body::Length(n) => Framing::Length(n),
                    _ => Framing::Chunked { decode: false },
                };
                let mut out = std::mem::take(&mut self.out);
                let copied = copy_body(
                    &mut out,
                    &mut self.buf,
                    &mut self.io,
                    &mut up.io,
                    framing,
                    sleep,
                    idle.into(),
                )
                .await;
                self.out = out;
                match copied {
                    Ok(n) => {
                        // The head's own length was counted as the client's bytes.
                        let head = self.out.len() as u64;
                        self.log.bytes_in += n.saturating_sub(head);
                        true
                    }
                    Err(CopyError::Read) => return Attempt::ClientFailed { answer: None },
                    Err(CopyError::Malformed(e)) => {
                        return Attempt::ClientFailed {
                            answer: Some((400, e.reason())),
                        };
                    }
                    Err(CopyError::Write) => false,
                }
            }
        };
        if !sent {
            return Attempt::MemberFailed(MemberFailure {
                kind: ErrorKind::Reset,
                status: 502,
                reason: "the member closed the connection",
                retry: up.reused,
            });
        }

        // The response head, after any interim ones.
        let (mut limit, until) = answer_limits(pool, &timeouts, sent_at);
        let resp = loop {
            match read_response(up, &mut self.up_fields, req.method, sleep, &mut limit).await {
                Ok(r) if r.is_interim() => {
                    if !answer_continue && !req.http10 {
                        heads::interim(&mut self.out, up.buf.data(), &self.up_fields, &r);
                        let relayed = write_two(&mut self.io, &self.out, &[]);
                        if within(sleep, idle, relayed)
                            .await
                            .is_none_or(|r| r.is_err())
                        {
                            return Attempt::ClientFailed { answer: None };
                        }
                    }
                    up.buf.consume(r.head_len);
                }
                Ok(r) => break r,
                Err(fail) => {
                    if fail.kind == ErrorKind::Timeout {
                        exchange::timed_out(pool, idx, sent_at);
                    }
                    return Attempt::MemberFailed(fail);
                }
            }
        };
        if resp.status == 101 && (req.upgrade.is_none() || resp.upgrade.is_none()) {
            return Attempt::MemberFailed(MemberFailure {
                kind: ErrorKind::Reset,
                status: 502,
                reason: "the member switched protocols unasked",
                retry: false,
            });
        }
        let waited = sent_at.elapsed();
        if self.log.active {
            let to_send = sent_at.saturating_duration_since(self.log.started);
            self.log.first_byte = Some(to_send + waited);
        }
        let upstream_head = up.buf.data();
        exchange::answered(dp, pool, idx, resp.status, sent_at, waited, || {
            self.up_fields
                .iter()
                .find(|f| f.kind == Name::RetryAfter)
                .map(|f| f.value.of(upstream_head))
        });
        let set_cookie = session.remember(
            pool,
            idx,
            self.up_fields
                .iter()
                .filter(|f| f.kind == Name::SetCookie)
                .map(|f| f.value.of(upstream_head)),
        );
        if req.body == Body::None {
            self.buf.consume(req.head_len);
        }
        let framing = match resp.body {
            Body::Chunked if req.http10 => ClientFraming::Decoded,
            Body::UntilClose => ClientFraming::Close,
            _ => ClientFraming::AsIs,
        };
        let close = !req.keep_alive || framing != ClientFraming::AsIs || *stop.borrow();
        heads::response(
            &mut self.out,
            upstream_head,
            &self.up_fields,
            &resp,
            &ResponseHead {
                framing,
                close,
                client_http10: req.http10,
                set_cookie: set_cookie.as_deref(),
            },
        );
        if self.log.send_id {
            let echoed = self.up_fields.iter().any(|f| f.kind == Name::XRequestId);
            if !echoed {
                heads::append_field(&mut self.out, b"X-Request-Id", self.log.request_id());
            }
        }
        up.buf.consume(resp.head_len);
        if resp.upgrade.is_some() {
            let sent = within(sleep, idle, write_two(&mut self.io, &self.out, &[])).await;
            return match sent {
                Some(Ok(())) => Attempt::Upgraded {
                    status: resp.status,
                },
                _ => Attempt::Broken,
            };
        }
        let body = match (resp.body, framing) {
            (Body::None, _) => None,
            (Body::Length(n), _) => Some(Framing::Length(n)),
            (Body::Chunked, ClientFraming::Decoded) => Some(Framing::Chunked { decode: true }),
            (Body::Chunked, _) => Some(Framing::Chunked { decode: false }),
            (Body::UntilClose, _) => Some(Framing::UntilClose),
        };
        // Answers of one batch of events go out together, after its reads: the client
        // (often one process holding many connections) is woken once for all of them.
        // An answer that ends its connection is written by its task, so that the close
        // follows it at once (batched, the close came a batch later: new connections/s
        // fell by an eighth).
        if let Some(socket) = self.socket
            && !close
            && crate::worker::sends_batched()
            && let Some(len) = self.whole_answer(&mut up.buf, body)
        {
            if !send_in_batch(&mut self.io, Some(socket), &self.out, sleep, idle).await {
                return Attempt::Broken;
            }
            self.log.bytes_out += len as u64;
            return Attempt::Done {
                status: resp.status,
                reusable: resp.keep_alive,
                next: Next::KeepAlive,
            };
        }
        crate::worker::end_of_batch().await;
        let mut out = std::mem::take(&mut self.out);
        let relayed = match body {
            None => within(sleep, idle, write_two(&mut self.io, &out, &[]))
                .await
                .map_or(Err(CopyError::Write), |r| r.map_err(|_| CopyError::Write))
                .map(|()| out.len() as u64),
            Some(framing) => {
                copy_body(
                    &mut out,
                    &mut up.buf,
                    &mut up.io,
                    &mut self.io,
                    framing,
                    sleep,
                    io::Pace { idle, until },
                )
                .await
            }
        };
        self.out = out;
        if let Ok(n) = relayed {
            self.log.bytes_out += n;
        }
        match relayed {
            Ok(_) => Attempt::Done {
                status: resp.status,
                reusable: resp.keep_alive && body != Some(Framing::UntilClose),
                next: if close { Next::Close } else { Next::KeepAlive },
            },
            // The response has begun: all that is left is to close the client connection.
            Err(CopyError::Read | CopyError::Malformed(_)) => {
                exchange::failed(pool, idx, ErrorKind::Reset);
                Attempt::Broken
            }
            Err(CopyError::Write) => Attempt::Broken,
        }
    }

    /// When the member's whole answer is at hand and small, appends its body to the head
    /// in `out` and returns the answer's length: it can then go out in one send.
    fn whole_answer(&mut self, from: &mut IoBuf, body: Option<Framing>) -> Option<usize> {
        match body {
            None => {}
            Some(Framing::Length(n)) => {
                let n = usize::try_from(n).ok()?;
                if from.len() < n || self.out.len() + n > io::JOIN_BELOW {
                    return None;
                }
                self.out.extend_from_slice(&from.data()[..n]);
                from.consume(n);
            }
            Some(_) => return None,
        }
        Some(self.out.len())
    }

    /// Relays bytes both ways after a `101 Switching Protocols` until either side closes
    /// or neither sends anything for `idle`.
    async fn tunnel(&mut self, mut up: UpConn, sleep: &mut Pin<&mut Sleep>, idle: Duration) {
        // Bytes each side sent ahead of the switch go first.
        if !up.buf.is_empty() || !self.buf.is_empty() {
            self.log.bytes_out += up.buf.len() as u64;
            self.log.bytes_in += self.buf.len() as u64;
            let to_client = write_two(&mut self.io, up.buf.data(), &[]);
            if within(sleep, idle, to_client)
                .await
                .is_none_or(|r| r.is_err())
            {
                return;
            }
            let to_member = write_two(&mut up.io, self.buf.data(), &[]);
            if within(sleep, idle, to_member)
                .await
                .is_none_or(|r| r.is_err())
            {
                return;
            }
            up.buf.clear();
            self.buf.clear();
        }
        let buffer = crate::tcp::TUNNEL_BUFFER;
        let end = crate::tcp::copy_until_idle(&mut self.io, &mut up.io, idle, buffer).await;
        self.log.bytes_in += end.from_client;
        self.log.bytes_out += end.from_member;
    }
}

/// How one attempt at a member ended.
enum Attempt {
    /// The response was relayed.
    Done {
        status: u16,
        reusable: bool,
        next: Next,
    },
    /// A 101 was relayed: the connection is now a tunnel to the member.
    Upgraded { status: u16 },
    /// The member failed before answering.
    MemberFailed(MemberFailure),
    /// The client failed (aborted, stalled, malformed body); `answer`: what to tell it.
    ClientFailed { answer: Option<(u16, &'static str)> },
    /// The exchange broke after the response began: close without another word.
    Broken,
}

/// How long an idle connection of a stopping process waits for a request already sent.
const STOP_LINGER: Duration = Duration::from_secs(1);

/// How long a member may take to answer a request sent at `sent_at`: the limit on its
/// answer's head (the pool's first-byte timeout, else the listener's), and when all of the
/// answer must have come (the pool's total timeout).
pub(crate) fn answer_limits(
    pool: &PoolRt,
    timeouts: &fulcrum_model::ListenerTimeouts,
    sent_at: std::time::Instant,
) -> (Limit, Option<Instant>) {
    let limits = pool.member_timeouts;
    let first_byte = ms(limits
        .first_byte_ms
        .unwrap_or(timeouts.upstream_response_ms));
    let until = limits.total_ms.map(|t| Instant::from_std(sent_at) + ms(t));
    let limit = match until {
        Some(at) => Limit::AfterUntil(first_byte, at),
        None => Limit::After(first_byte),
    };
    (limit, until)
}

/// Reads the member's next response head into its buffer.
pub(crate) async fn read_response(
    up: &mut UpConn,
    fields: &mut Vec<Field>,
    method: Method,
    sleep: &mut Pin<&mut Sleep>,
    limit: &mut Limit,
) -> Result<Response, MemberFailure> {
    loop {
        if !up.buf.is_empty() {
            match parse_response(up.buf.data(), fields, MAX_HEAD, method) {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(_) => {
                    return Err(MemberFailure {
                        kind: ErrorKind::Reset,
                        status: 502,
                        reason: "the member sent an invalid response",
                        retry: false,
                    });
                }
            }
        }
        let got_nothing = up.buf.is_empty();
        match bounded(sleep, limit, up.buf.read_from(&mut up.io, MAX_HEAD)).await {
            Some(Ok(n)) if n > 0 => {}
            // Nothing of an answer came: the request may go elsewhere if it is safe to
            // send again (the caller knows).
            Some(_) => {
                return Err(MemberFailure {
                    kind: ErrorKind::Reset,
                    status: 502,
                    reason: "the member closed the connection",
                    retry: got_nothing,
                });
            }
            None => {
                return Err(MemberFailure {
                    kind: ErrorKind::Timeout,
                    status: 504,
                    reason: "the member did not answer in time",
                    retry: got_nothing,
                });
            }
        }
    }
}
