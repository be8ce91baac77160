//! The server side of an HTTP/2 connection (RFC 9113) as a state machine: bytes in, events
//! out; sends asked for, bytes out.

use std::ops::Range;

use crate::ErrorCode;
use crate::frame::{
    self, DEFAULT_WINDOW, HEADER_LEN, Header, MAX_MAX_FRAME_SIZE, MAX_WINDOW, MIN_MAX_FRAME_SIZE,
    PREFACE, flag, kind, setting,
};
use crate::head::{self, Head, HeadInfo};
use crate::hpack::{self, Decoder, FieldList};

/// Our side of the connection's settings, and the bounds that keep a hostile client cheap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS: streams past it are refused (REFUSED_STREAM).
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE for every stream, and the connection's window too (raised
    /// with a WINDOW_UPDATE at once): large enough that uploads are not paced.
    pub initial_window_size: u32,
    /// SETTINGS_MAX_FRAME_SIZE: larger frames are a FRAME_SIZE_ERROR.
    pub max_frame_size: u32,
    /// SETTINGS_HEADER_TABLE_SIZE: the decoder's dynamic table limit.
    pub header_table_size: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: a larger request head is answered 431.
    pub max_header_list_size: u32,
    /// Streams reset (by the client, or by us for its errors) beyond those completed before
    /// the connection is closed with ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).
    pub max_reset_debt: u32,
    /// Control frames (SETTINGS and PING acknowledgements, RST_STREAMs) that may wait in the
    /// output unwritten before the connection is closed with ENHANCE_YOUR_CALM.
    pub max_queued_control: u32,
    /// Frames in a row that do nothing (empty DATA or CONTINUATION, PRIORITY, unknown types)
    /// before the connection is closed with ENHANCE_YOUR_CALM.
    pub max_idle_frames: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_concurrent_streams: 256,
            initial_window_size: 1 << 20,
            max_frame_size: MIN_MAX_FRAME_SIZE,
            header_table_size: 4096,
            max_header_list_size: 64 * 1024,
            max_reset_debt: 256,
            max_queued_control: 1024,
            max_idle_frames: 128,
        }
    }
}

/// What [`ServerConn::receive`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// No complete frame yet: call again with more input.
    NeedMore,
    /// A frame handled inside (SETTINGS, PING, PRIORITY, frames on closed streams...).
    Nothing,
    /// A request head, readable through [`ServerConn::head`] until the next `receive`.
    Request { stream: u32, end_stream: bool },
    /// Request body bytes: `data` is a range of the input given to `receive`, padding
    /// excluded. Hand the bytes on, then [`ServerConn::release`] them.
    Data {
        stream: u32,
        data: Range<usize>,
        end_stream: bool,
    },
    /// Request trailers (the stream's end), readable through [`ServerConn::head`].
    Trailers { stream: u32 },
    /// The stream is gone: reset by the client (`remote`), or by us for a stream error, in
    /// which case the RST_STREAM is already queued. Streams never reported as a request
    /// (refused, malformed) are reported too: ignore the ids you do not know.
    StreamReset {
        stream: u32,
        code: ErrorCode,
        remote: bool,
    },
    /// We answered the stream ourselves (431: its head was over the list size limit); it is
    /// closed.
    Rejected { stream: u32, status: u16 },
    /// The client granted window: to `stream`, or with stream 0 to the connection or (after
    /// a SETTINGS change) every stream. Resume blocked sends.
    WindowOpened { stream: u32 },
    /// The client is going away: it opens no more streams.
    GoAway { last_stream: u32, code: ErrorCode },
}

/// A connection error (RFC 9113 §5.4.1): a GOAWAY with this code is queued; flush the
/// output and close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnError {
    pub code: ErrorCode,
    pub reason: &'static str,
}

fn err(code: ErrorCode, reason: &'static str) -> ConnError {
    ConnError { code, reason }
}

fn protocol(reason: &'static str) -> ConnError {
    err(ErrorCode::PROTOCOL_ERROR, reason)
}

#[derive(Clone, Copy, Debug)]
struct Stream {
    id: u32,
    /// What we may still send (may go negative after a SETTINGS change).
    send_window: i64,
    /// What the client may still send.
    recv_window: i64,
    /// Bytes released by the caller, not yet granted back.
    unacked: u32,
    remote_ended: bool,
    local_ended: bool,
    /// The final (non-1xx) response head went out.
    head_sent: bool,
    content_length: Option<u64>,
    received: u64,
}

/// How a stream we no longer track ended, for the frames that may still arrive on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    /// We reset (or refused, or ignored) it: frames already in flight are ignored.
    ByUs,
    /// The client reset it: more frames are a stream error (STREAM_CLOSED).
    ByPeer,
    /// Both sides ended it: more frames are a connection error (STREAM_CLOSED).
    Ended,
}

/// Streams recently closed, so frames on them are told apart; older closed streams are
/// treated as `Closed::ByPeer` (DATA) or never opened (HEADERS). Bounded: a ring.
const CLOSED_MEMORY: usize = 128;

#[derive(Debug)]
struct ClosedRing {
    ids: [u32; CLOSED_MEMORY],
    how: [Closed; CLOSED_MEMORY],
    next: usize,
}

impl ClosedRing {
    fn push(&mut self, id: u32, how: Closed) {
        self.ids[self.next] = id;
        self.how[self.next] = how;
        self.next = (self.next + 1) % CLOSED_MEMORY;
    }

    /// How `id` closed, newest record first (a stream the client reset and we then reset
    /// again for a late frame is recorded twice).
    fn find(&self, id: u32) -> Option<Closed> {
        // Id 0 is never a stream, so the ring's initial zeros match nothing.
        if id == 0 {
            return None;
        }
        (1..=CLOSED_MEMORY)
            .map(|back| (self.next + CLOSED_MEMORY - back) % CLOSED_MEMORY)
            .find(|&i| self.ids[i] == id)
            .map(|i| self.how[i])
    }
}

/// A header block split over HEADERS and CONTINUATION frames, being gathered.
#[derive(Clone, Copy, Debug)]
struct Pending {
    stream: u32,
    end_stream: bool,
    self_dependent: bool,
}

/// The server side of one HTTP/2 connection.
///
/// Feed it what the socket read with [`receive`](Self::receive) (one frame per call) and act
/// on the events; queue responses with [`send_headers`](Self::send_headers) and
/// [`send_data`](Self::send_data); write [`output`](Self::output) to the socket and
/// [`consume_output`](Self::consume_output) what was written.
#[derive(Debug)]
pub struct ServerConn {
    local: Settings,
    /// The client acknowledged our SETTINGS.
    local_acked: bool,
    preface_done: bool,
    settings_seen: bool,
    failed: Option<ConnError>,
    decoder: Decoder,
    fields: FieldList,
    info: HeadInfo,
    block: Vec<u8>,
    block_limit: usize,
    pending: Option<Pending>,
    /// Open streams, and their ids alone beside them (the lookup scans only these).
    streams: Vec<Stream>,
    ids: Vec<u32>,
    closed: ClosedRing,
    /// The highest stream id the client used (opened, refused or ignored).
    highest: u32,
    /// Last stream id of the GOAWAY we sent: later streams are ignored.
    goaway_last: Option<u32>,
    peer_initial_window: u32,
    peer_max_frame_size: u32,
    conn_send: i64,
    conn_recv: i64,
    conn_unacked: u32,
    out: Vec<u8>,
    out_pos: usize,
    scratch: Vec<u8>,
    queued_control: u32,
    reset_debt: u32,
    idle_frames: u32,
}

/// Fields an HTTP/2 message must not carry (RFC 9113 §8.2.2): dropped from responses.
fn is_connection_specific(name: &[u8]) -> bool {
    let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        _ => false,
    }
}

impl ServerConn {
    /// A connection with `settings` (out-of-range values are brought into range); our
    /// SETTINGS, and the WINDOW_UPDATE that raises the connection's window, are queued in
    /// the output at once.
    pub fn new(settings: Settings) -> ServerConn {
        let mut local = settings;
        local.max_frame_size = local
            .max_frame_size
            .clamp(MIN_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE);
        local.initial_window_size = local.initial_window_size.min(MAX_WINDOW);
        local.max_header_list_size = local.max_header_list_size.max(1024);
        let table = local.header_table_size.max(4096) as usize;
        let mut out = Vec::with_capacity(256);
        let mut params = [(0u16, 0u32); 5];
        let mut n = 0;
        for (id, value, default) in [
            (setting::HEADER_TABLE_SIZE, local.header_table_size, 4096),
            (
                setting::MAX_CONCURRENT_STREAMS,
                local.max_concurrent_streams,
                u32::MAX,
            ),
            (
                setting::INITIAL_WINDOW_SIZE,
                local.initial_window_size,
                DEFAULT_WINDOW,
            ),
            (
                setting::MAX_FRAME_SIZE,
                local.max_frame_size,
                MIN_MAX_FRAME_SIZE,
            ),
            (
                setting::MAX_HEADER_LIST_SIZE,
                local.max_header_list_size,
                u32::MAX,
            ),
        ] {
            if value != default {
                params[n] = (id, value);
                n += 1;
            }
        }
        frame::write_settings(&mut out, &params[..n]);
        let conn_window = local.initial_window_size.max(DEFAULT_WINDOW);
        if conn_window > DEFAULT_WINDOW {
            frame::write_window_update(&mut out, 0, conn_window - DEFAULT_WINDOW);
        }
        let list = local.max_header_list_size as usize;
        ServerConn {
            local,
            local_acked: false,
            preface_done: false,
            settings_seen: false,
            failed: None,
            decoder: Decoder::new(table),
            fields: FieldList::new(),
            info: HeadInfo::default(),
            block: Vec::new(),
            block_limit: list.saturating_mul(2).max(16 * 1024),
            pending: None,
            streams: Vec::new(),
            ids: Vec::new(),
            closed: ClosedRing {
                ids: [0; CLOSED_MEMORY],
                how: [Closed::Ended; CLOSED_MEMORY],
                next: 0,
            },
            highest: 0,
            goaway_last: None,
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_frame_size: MIN_MAX_FRAME_SIZE,
            conn_send: i64::from(DEFAULT_WINDOW),
            conn_recv: i64::from(conn_window),
            conn_unacked: 0,
            out,
            out_pos: 0,
            scratch: Vec::new(),
            queued_control: 0,
            reset_debt: 0,
            idle_frames: 0,
        }
    }

    // ---------------------------------------------------------------- receiving

    /// Consumes the client preface, then at most one frame of `input`: returns how many
    /// bytes were used (0 with [`Event::NeedMore`] when no whole frame is there) and what
    /// the frame meant. After an error every call returns it again.
    ///
    /// A frame is handled only once it is whole, so the read buffer must hold
    /// `Settings::max_frame_size` + 9 bytes; a longer frame is refused from its header.
    pub fn receive(&mut self, input: &[u8]) -> Result<(usize, Event), ConnError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let mut at = 0;
        if !self.preface_done {
            let n = input.len().min(PREFACE.len());
            if input[..n] != PREFACE[..n] {
                return Err(self.fail(protocol("invalid connection preface")));
            }
            if n < PREFACE.len() {
                return Ok((0, Event::NeedMore));
            }
            self.preface_done = true;
            at = PREFACE.len();
        }
        match self.frame(input, at) {
            // The preface alone: consumed, so NeedMore always means nothing was.
            Ok((0, Event::NeedMore)) if at > 0 => Ok((at, Event::Nothing)),
            Ok((used, event)) => Ok((at + used, event)),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The head of the last [`Event::Request`] or [`Event::Trailers`].
    pub fn head(&self) -> Head<'_> {
        Head {
            list: &self.fields,
            info: &self.info,
        }
    }

    fn fail(&mut self, e: ConnError) -> ConnError {
        if self.failed.is_none() {
            self.failed = Some(e);
            frame::write_goaway(&mut self.out, self.highest, e.code, e.reason.as_bytes());
        }
        e
    }

    fn frame(&mut self, input: &[u8], at: usize) -> Result<(usize, Event), ConnError> {
        let buf = input.get(at..).unwrap_or_default();
        let Some(h) = Header::parse(buf) else {
            return Ok((0, Event::NeedMore));
        };
        if h.len > self.local.max_frame_size {
            return Err(err(
                ErrorCode::FRAME_SIZE_ERROR,
                "frame larger than SETTINGS_MAX_FRAME_SIZE",
            ));
        }
        let total = HEADER_LEN + h.len as usize;
        let Some(payload) = buf.get(HEADER_LEN..total) else {
            return Ok((0, Event::NeedMore));
        };
        if !self.settings_seen {
            if h.kind != kind::SETTINGS || h.has(flag::ACK) {
                return Err(protocol("the preface is not followed by SETTINGS"));
            }
            self.settings_seen = true;
        }
        if let Some(p) = self.pending
            && (h.kind != kind::CONTINUATION || h.stream != p.stream)
        {
            return Err(protocol("header block interrupted"));
        }
        let event = match h.kind {
            kind::DATA => self.on_data(h, payload, at + HEADER_LEN)?,
            kind::HEADERS => self.on_headers(h, payload)?,
            kind::PRIORITY => self.on_priority(h, payload)?,
            kind::RST_STREAM => self.on_rst_stream(h, payload)?,
            kind::SETTINGS => self.on_settings(h, payload)?,
            kind::PUSH_PROMISE => return Err(protocol("PUSH_PROMISE from a client")),
            kind::PING => self.on_ping(h, payload)?,
            kind::GOAWAY => self.on_goaway(h, payload)?,
            kind::WINDOW_UPDATE => self.on_window_update(h, payload)?,
            kind::CONTINUATION => self.on_continuation(h, payload)?,
            // Unknown types are ignored (RFC 9113 §4.1), but count as frames doing nothing.
            _ => {
                self.idle_frame()?;
                Event::Nothing
            }
        };
        Ok((total, event))
    }

    fn idle_frame(&mut self) -> Result<(), ConnError> {
        self.idle_frames = self.idle_frames.saturating_add(1);
        if self.idle_frames > self.local.max_idle_frames {
            return Err(err(ErrorCode::ENHANCE_YOUR_CALM, "too many empty frames"));
        }
        Ok(())
    }

    fn find(&self, id: u32) -> Option<usize> {
        // Newest last: the stream a frame is for is most often a recent one.
        self.ids.iter().rposition(|&s| s == id)
    }

    fn remove(&mut self, i: usize) -> Stream {
        self.ids.swap_remove(i);
        self.streams.swap_remove(i)
    }

    /// A stream id above every one the client used, or one a client never uses (even).
    fn is_idle_stream(&self, id: u32) -> bool {
        id > self.highest || id.is_multiple_of(2)
    }

    fn local_stream_window(&self) -> i64 {
        if self.local_acked {
            i64::from(self.local.initial_window_size)
        } else {
            // Until the client has our SETTINGS it may assume the default.
            i64::from(self.local.initial_window_size.max(DEFAULT_WINDOW))
        }
    }

    fn conn_window_target(&self) -> i64 {
        i64::from(self.local.initial_window_size.max(DEFAULT_WINDOW))
    }

    fn queue_control(&mut self) -> Result<(), ConnError> {
        if self.queued_control >= self.local.max_queued_control {
            return Err(err(
                ErrorCode::ENHANCE_YOUR_CALM,
                "too many control frames left unread",
            ));
        }
        self.queued_control += 1;
        Ok(())
    }

    fn count_reset(&mut self) -> Result<(), ConnError> {
        self.reset_debt = self.reset_debt.saturating_add(1);
        if self.reset_debt > self.local.max_reset_debt {
            return Err(err(ErrorCode::ENHANCE_YOUR_CALM, "too many streams reset"));
        }
        Ok(())
    }

    /// A stream error (RFC 9113 §5.4.2): RST_STREAM queued, the stream forgotten.
    fn stream_error(&mut self, id: u32, code: ErrorCode) -> Result<Event, ConnError> {
        if let Some(i) = self.find(id) {
            self.remove(i);
        }
        self.closed.push(id, Closed::ByUs);
        self.count_reset()?;
        self.queue_control()?;
        frame::write_rst_stream(&mut self.out, id, code);
        Ok(Event::StreamReset {
            stream: id,
            code,
            remote: false,
        })
    }

    /// Forgets the stream at `i` if both sides ended it.
    fn maybe_close(&mut self, i: usize) {
        let s = self.streams[i];
        if s.local_ended && s.remote_ended {
            self.remove(i);
            self.closed.push(s.id, Closed::Ended);
            self.reset_debt = self.reset_debt.saturating_sub(1);
        }
    }

    fn on_data(&mut self, h: Header, payload: &[u8], base: usize) -> Result<Event, ConnError> {
        if h.stream == 0 {
            return Err(protocol("DATA on stream 0"));
        }
        let (start, end) = frame::unpad(h.flags, payload).map_err(|c| err(c, "invalid padding"))?;
        let flow = i64::from(h.len);
        if flow > self.conn_recv {
            return Err(err(
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA beyond the connection window",
            ));
        }
        self.conn_recv -= flow;
        let end_stream = h.has(flag::END_STREAM);
        let Some(i) = self.find(h.stream) else {
            self.credit_conn(h.len);
            if self.is_idle_stream(h.stream) {
                return Err(protocol("DATA on an idle stream"));
            }
            return match self.closed.find(h.stream) {
                Some(Closed::ByUs) => Ok(Event::Nothing),
                Some(Closed::Ended) => {
                    Err(err(ErrorCode::STREAM_CLOSED, "DATA after the stream ended"))
                }
                Some(Closed::ByPeer) | None => {
                    self.stream_error(h.stream, ErrorCode::STREAM_CLOSED)
                }
            };
        };
        let s = &mut self.streams[i];
        if s.remote_ended {
            self.credit_conn(h.len);
            return self.stream_error(h.stream, ErrorCode::STREAM_CLOSED);
        }
        if flow > s.recv_window {
            self.credit_conn(h.len);
            return self.stream_error(h.stream, ErrorCode::FLOW_CONTROL_ERROR);
        }
        s.recv_window -= flow;
        let len = (end - start) as u32;
        s.received = s.received.saturating_add(u64::from(len));
        let overflow = s
            .content_length
            .is_some_and(|cl| s.received > cl || (end_stream && s.received != cl));
        if end_stream {
            s.remote_ended = true;
        }
        // Padding is ours to release at once; the data is the caller's.
        let padding = h.len - len;
        if padding > 0 {
            self.credit_conn(padding);
            self.credit_stream(i, padding);
        }
        if overflow {
            self.credit_conn(len);
            return self.stream_error(h.stream, ErrorCode::PROTOCOL_ERROR);
        }
        if len == 0 && !end_stream {
            self.idle_frame()?;
            return Ok(Event::Nothing);
        }
        if len > 0 {
            self.idle_frames = 0;
        }
        if end_stream {
            self.maybe_close(i);
        }
        Ok(Event::Data {
            stream: h.stream,
            data: base + start..base + end,
            end_stream,
        })
    }

    fn on_headers(&mut self, h: Header, payload: &[u8]) -> Result<Event, ConnError> {
        if h.stream == 0 {
            return Err(protocol("HEADERS on stream 0"));
        }
        let (start, end) = frame::unpad(h.flags, payload).map_err(|c| err(c, "invalid padding"))?;
        let mut fragment = payload.get(start..end).unwrap_or_default();
        let mut self_dependent = false;
        if h.has(flag::PRIORITY) {
            let Some(rest) = fragment.get(5..) else {
                return Err(if h.has(flag::PADDED) {
                    protocol("padding leaves no room for the priority")
                } else {
                    err(
                        ErrorCode::FRAME_SIZE_ERROR,
                        "HEADERS too short for its priority",
                    )
                });
            };
            self_dependent = frame::priority_dependency(fragment) == h.stream;
            fragment = rest;
        }
        let end_stream = h.has(flag::END_STREAM);
        if h.has(flag::END_HEADERS) {
            return self.on_block(h.stream, end_stream, self_dependent, fragment);
        }
        self.block.clear();
        self.push_fragment(fragment)?;
        self.pending = Some(Pending {
            stream: h.stream,
            end_stream,
            self_dependent,
        });
        Ok(Event::Nothing)
    }

    fn push_fragment(&mut self, fragment: &[u8]) -> Result<(), ConnError> {
        if self.block.len() + fragment.len() > self.block_limit {
            return Err(err(ErrorCode::ENHANCE_YOUR_CALM, "header block too large"));
        }
        self.block.extend_from_slice(fragment);
        Ok(())
    }

    fn on_continuation(&mut self, h: Header, payload: &[u8]) -> Result<Event, ConnError> {
        // `frame` checked that it continues the pending block's stream.
        let Some(p) = self.pending else {
            return Err(protocol("CONTINUATION without a header block"));
        };
        let end_headers = h.has(flag::END_HEADERS);
        if payload.is_empty() && !end_headers {
            self.idle_frame()?;
        }
        self.push_fragment(payload)?;
        if !end_headers {
            return Ok(Event::Nothing);
        }
        self.pending = None;
        let block = std::mem::take(&mut self.block);
        let event = self.on_block(p.stream, p.end_stream, p.self_dependent, &block);
        self.block = block;
        event
    }

    /// A whole header block: decoded (always: the dynamic table must stay in step), then a
    /// new request, trailers, or something to ignore or refuse.
    fn on_block(
        &mut self,
        id: u32,
        end_stream: bool,
        self_dependent: bool,
        block: &[u8],
    ) -> Result<Event, ConnError> {
        let list_limit = self.local.max_header_list_size as usize;
        self.decoder
            .decode(block, &mut self.fields, list_limit)
            .map_err(|e| err(ErrorCode::COMPRESSION_ERROR, e.reason()))?;
        if let Some(i) = self.find(id) {
            return self.on_trailers(i, end_stream, self_dependent);
        }
        if id.is_multiple_of(2) {
            return Err(protocol("even stream id from a client"));
        }
        if id <= self.highest {
            return match self.closed.find(id) {
                Some(Closed::ByUs) => Ok(Event::Nothing),
                Some(Closed::ByPeer) => self.stream_error(id, ErrorCode::STREAM_CLOSED),
                Some(Closed::Ended) => Err(err(
                    ErrorCode::STREAM_CLOSED,
                    "HEADERS after the stream ended",
                )),
                None => Err(protocol("stream id not above the previous one")),
            };
        }
        self.highest = id;
        if self.goaway_last.is_some_and(|last| id > last) {
            // Past our GOAWAY: ignored, as it said.
            self.closed.push(id, Closed::ByUs);
            return Ok(Event::Nothing);
        }
        if self_dependent {
            return self.stream_error(id, ErrorCode::PROTOCOL_ERROR);
        }
        if self.streams.len() >= self.local.max_concurrent_streams as usize {
            return self.stream_error(id, ErrorCode::REFUSED_STREAM);
        }
        if self.fields.is_truncated() {
            return self.reject(id, end_stream, 431);
        }
        let info = match head::check_request(&self.fields) {
            Ok(info) => info,
            Err(_malformed) => return self.stream_error(id, ErrorCode::PROTOCOL_ERROR),
        };
        if end_stream && info.content_length.is_some_and(|cl| cl > 0) {
            return self.stream_error(id, ErrorCode::PROTOCOL_ERROR);
        }
        self.info = info;
        self.idle_frames = 0;
        self.ids.push(id);
        self.streams.push(Stream {
            id,
            send_window: i64::from(self.peer_initial_window),
            recv_window: self.local_stream_window(),
            unacked: 0,
            remote_ended: end_stream,
            local_ended: false,
            head_sent: false,
            content_length: info.content_length,
            received: 0,
        });
        Ok(Event::Request {
            stream: id,
            end_stream,
        })
    }

    fn on_trailers(
        &mut self,
        i: usize,
        end_stream: bool,
        self_dependent: bool,
    ) -> Result<Event, ConnError> {
        let s = self.streams[i];
        if s.remote_ended {
            return self.stream_error(s.id, ErrorCode::STREAM_CLOSED);
        }
        if !end_stream || self_dependent || self.fields.is_truncated() {
            return self.stream_error(s.id, ErrorCode::PROTOCOL_ERROR);
        }
        if s.content_length.is_some_and(|cl| cl != s.received) {
            return self.stream_error(s.id, ErrorCode::PROTOCOL_ERROR);
        }
        match head::check_trailers(&self.fields) {
            Ok(info) => self.info = info,
            Err(_malformed) => return self.stream_error(s.id, ErrorCode::PROTOCOL_ERROR),
        }
        self.streams[i].remote_ended = true;
        self.maybe_close(i);
        Ok(Event::Trailers { stream: s.id })
    }

    /// Answers a stream we will not serve with `status` and nothing else.
    fn reject(&mut self, id: u32, end_stream: bool, status: u16) -> Result<Event, ConnError> {
        self.closed.push(id, Closed::ByUs);
        self.count_reset()?;
        self.queue_control()?;
        let start = self.out.len();
        self.out.extend_from_slice(&[0; HEADER_LEN]);
        hpack::encode_status(&mut self.out, status);
        self.frame_block(id, start, true);
        if !end_stream {
            // The response is complete; the client need not send the rest (RFC 9113 §8.1).
            frame::write_rst_stream(&mut self.out, id, ErrorCode::NO_ERROR);
        }
        Ok(Event::Rejected { stream: id, status })
    }

    fn on_priority(&mut self, h: Header, payload: &[u8]) -> Result<Event, ConnError> {
        if h.stream == 0 {
            return Err(protocol("PRIORITY on stream 0"));
        }
        if payload.len() != 5 {
            return self.stream_error(h.stream, ErrorCode::FRAME_SIZE_ERROR);
        }
        if frame::priority_dependency(payload) == h.stream {
            return self.stream_error(h.stream, ErrorCode::PROTOCOL_ERROR);
        }
        // Priorities are not acted on (RFC 9113 §5.3.2 deprecates them).
        self.idle_frame()?;
        Ok(Event::Nothing)
    }

    fn on_rst_stream(&mut self, h: Header, payload: &[u8]) -> Result<Event, ConnError> {
        if h.stream == 0 {
            return Err(protocol("RST_STREAM on stream 0"));
        }
        let Ok(code) = <[u8; 4]>::try_from(payload) else {
            return Err(err(ErrorCode::FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes"));
        };
        let code = ErrorCode(u32::from_be_bytes(code));
        let Some(i) = self.find(h.stream) else {
            if self.is_idle_stream(h.stream) {
                return Err(protocol("RST_STREAM on an idle stream"));
            }
            return Ok(Event::Nothing);
        };
        let s = self.remove(i);
        self.closed.push(s.id, Closed::ByPeer);
        if !s.local_ended {
            self.count_reset()?;
        }
        Ok(Event::StreamReset {
            stream: s.id,
            code,
            remote: true,
        })
    }

    fn on_settings(&mut self, h: Header, payload: &[u8]) -> Result<Event, ConnError> {
        if h.stream != 0 {
            return Err(protocol("SETTINGS on a stream"));
        }
        if h.has(flag::ACK) {
            if !payload.is_empty() {
                return Err(err(
                    ErrorCode::FRAME_SIZE_ERROR,
                    "SETTINGS ACK with a payload",
                ));
            }
            if !self.local_acked {
                self.local_acked = true;
                let ours = i64::from(self.local.initial_window_size);
                let assumed = i64::from(self.local.initial_window_size.max(DEFAULT_WINDOW));
                for s in &mut self.streams {
                    s.recv_window += ours - assumed;
                }
                self.decoder
                    .set_limit(self.local.header_table_size as usize);
            }
            return Ok(Event::Nothing);
        }
        if !payload.len().is_multiple_of(6) {
            return Err(err(
                ErrorCode::FRAME_SIZE_ERROR,
                "SETTINGS not a multiple of 6 bytes",
            ));
        }
        let mut opened = false;
        for p in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([p[0], p[1]]);
            let value = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
            match id {
                setting::ENABLE_PUSH if value > 1 => {
                    return Err(protocol("SETTINGS_ENABLE_PUSH not 0 or 1"));
                }
                setting::INITIAL_WINDOW_SIZE => {
                    if value > MAX_WINDOW {
                        return Err(err(
                            ErrorCode::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                        ));
                    }
                    let delta = i64::from(value) - i64::from(self.peer_initial_window);
                    for s in &mut self.streams {
                        s.send_window += delta;
                        if s.send_window > i64::from(MAX_WINDOW) {
                            return Err(err(
                                ErrorCode::FLOW_CONTROL_ERROR,
                                "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window",
                            ));
                        }
                    }
                    self.peer_initial_window = value;
                    opened |= delta > 0;
                }
                setting::MAX_FRAME_SIZE => {
                    if !(MIN_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) {
                        return Err(protocol("SETTINGS_MAX_FRAME_SIZE out of range"));
                    }
                    self.peer_max_frame_size = value;
                }
                // HEADER_TABLE_SIZE: our encoder keeps no dynamic table. The rest concern
                // streams we never open, or are advisory; unknown ones are ignored.
                _ => {}
            }
        }
        self.queue_control()?;
        frame::write_settings_ack(&mut self.out);
        Ok(if opened && !self.streams.is_empty() {
            Event::WindowOpened { stream: 0 }
        } else {
            Event::Nothing
        })
    }

    fn on_ping(&mut self, h: Header, payload: &[u8]) -> Result<Event, ConnError> {
        if h.stream != 0 {
            return Err(protocol("PING on a stream"));
        }
        let Ok(data) = <&[u8; 8]>::try_from(payload) else {
            return Err(err(ErrorCode::FRAME_SIZE_ERROR, "PING not 8 bytes"));
        };
        if !h.has(flag::ACK) {
            self.queue_control()?;
            frame::write_ping(&mut self.out, true, data);
        }
        Ok(Event::Nothing)
    }

    fn on_goaway(&mut self, h: Header, payload: &[u8]) -> Result<Event, ConnError> {
        if h.stream != 0 {
            return Err(protocol("GOAWAY on a stream"));
        }
        let (Some(last), Some(code)) = (payload.get(..4), payload.get(4..8)) else {
            return Err(err(
                ErrorCode::FRAME_SIZE_ERROR,
                "GOAWAY shorter than 8 bytes",
            ));
        };
        let last_stream = frame::window_increment(last);
        let code = ErrorCode(u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
        Ok(Event::GoAway { last_stream, code })
    }

    fn on_window_update(&mut self, h: Header, payload: &[u8]) -> Result<Event, ConnError> {
        if payload.len() != 4 {
            return Err(err(
                ErrorCode::FRAME_SIZE_ERROR,
                "WINDOW_UPDATE not 4 bytes",
            ));
        }
        let inc = i64::from(frame::window_increment(payload));
        if h.stream == 0 {
            if inc == 0 {
                return Err(protocol("WINDOW_UPDATE of 0 on the connection"));
            }
            self.conn_send += inc;
            if self.conn_send > i64::from(MAX_WINDOW) {
                return Err(err(
                    ErrorCode::FLOW_CONTROL_ERROR,
                    "connection window above 2^31-1",
                ));
            }
            return Ok(Event::WindowOpened { stream: 0 });
        }
        let Some(i) = self.find(h.stream) else {
            if self.is_idle_stream(h.stream) {
                return Err(protocol("WINDOW_UPDATE on an idle stream"));
            }
            // Closed: it may have been in flight.
            return Ok(Event::Nothing);
        };
        if inc == 0 {
            return self.stream_error(h.stream, ErrorCode::PROTOCOL_ERROR);
        }
        let s = &mut self.streams[i];
        s.send_window += inc;
        if s.send_window > i64::from(MAX_WINDOW) {
            return self.stream_error(h.stream, ErrorCode::FLOW_CONTROL_ERROR);
        }
        Ok(if s.local_ended {
            Event::Nothing
        } else {
            Event::WindowOpened { stream: h.stream }
        })
    }

    // ---------------------------------------------------------------- flow control

    /// Grants the connection `n` more bytes once enough have been released.
    fn credit_conn(&mut self, n: u32) {
        self.conn_unacked = self.conn_unacked.saturating_add(n);
        let target = self.conn_window_target();
        if i64::from(self.conn_unacked) < target / 4 {
            return;
        }
        // Never grant past the window we advertised, whatever the caller releases.
        let grant = i64::from(self.conn_unacked).min(target - self.conn_recv);
        self.conn_unacked = 0;
        if grant > 0 {
            self.conn_recv += grant;
            frame::write_window_update(&mut self.out, 0, grant as u32);
        }
    }

    fn credit_stream(&mut self, i: usize, n: u32) {
        let target = i64::from(self.local.initial_window_size);
        let s = &mut self.streams[i];
        if s.remote_ended {
            return;
        }
        s.unacked = s.unacked.saturating_add(n);
        if i64::from(s.unacked) < (target / 4).max(1) {
            return;
        }
        let grant = i64::from(s.unacked).min(target - s.recv_window);
        s.unacked = 0;
        if grant > 0 {
            s.recv_window += grant;
            frame::write_window_update(&mut self.out, s.id, grant as u32);
        }
    }

    /// The caller consumed `n` bytes of `stream`'s request body (from [`Event::Data`]):
    /// WINDOW_UPDATEs for the stream and the connection are queued once enough is released,
    /// so the client keeps sending. Call it for data of streams since reset too.
    pub fn release(&mut self, stream: u32, n: usize) {
        let n = n.min(MAX_WINDOW as usize) as u32;
        self.credit_conn(n);
        if let Some(i) = self.find(stream) {
            self.credit_stream(i, n);
        }
    }

    // ---------------------------------------------------------------- sending

    /// Frames the header block written at `out[start + 9..]`, whose frame header is reserved
    /// at `out[start..start + 9]`: one HEADERS frame, or HEADERS and CONTINUATIONs when it is
    /// larger than the client's SETTINGS_MAX_FRAME_SIZE.
    fn frame_block(&mut self, stream: u32, start: usize, end_stream: bool) {
        let len = self.out.len() - start - HEADER_LEN;
        let max = self.peer_max_frame_size as usize;
        let end = if end_stream { flag::END_STREAM } else { 0 };
        if len <= max {
            let h = Header {
                len: len as u32,
                kind: kind::HEADERS,
                flags: flag::END_HEADERS | end,
                stream,
            };
            self.out[start..start + HEADER_LEN].copy_from_slice(&h.bytes());
            return;
        }
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&self.out[start + HEADER_LEN..]);
        self.out.truncate(start);
        let mut first = true;
        let mut chunks = self.scratch.chunks(max).peekable();
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            Header {
                len: chunk.len() as u32,
                kind: if first {
                    kind::HEADERS
                } else {
                    kind::CONTINUATION
                },
                flags: if first { end } else { 0 } | if last { flag::END_HEADERS } else { 0 },
                stream,
            }
            .write(&mut self.out);
            self.out.extend_from_slice(chunk);
            first = false;
        }
    }

    /// Queues a response head: `:status` and `fields` (names are lowercased;
    /// connection-specific fields are dropped). 1xx heads may precede the final one.
    /// Returns false, queuing nothing, when the stream cannot send a head (gone, ended, or
    /// its final head already sent).
    ///
    /// A response that ends before the request body has arrived leaves the stream open for
    /// the rest of the upload: [`send_reset`](Self::send_reset) with NO_ERROR asks the client
    /// to stop sending it (RFC 9113 §8.1).
    pub fn send_headers<'f, I>(
        &mut self,
        stream: u32,
        status: u16,
        fields: I,
        end_stream: bool,
    ) -> bool
    where
        I: IntoIterator<Item = (&'f [u8], &'f [u8])>,
    {
        let Some(i) = self.find(stream) else {
            return false;
        };
        let s = self.streams[i];
        let interim = (100..200).contains(&status);
        if s.local_ended || s.head_sent || (interim && end_stream) {
            return false;
        }
        let start = self.out.len();
        self.out.extend_from_slice(&[0; HEADER_LEN]);
        hpack::encode_status(&mut self.out, status);
        for (name, value) in fields {
            if !is_connection_specific(name) {
                hpack::encode_field(&mut self.out, name, value);
            }
        }
        self.frame_block(stream, start, end_stream);
        let s = &mut self.streams[i];
        s.head_sent |= !interim;
        if end_stream {
            s.local_ended = true;
            self.maybe_close(i);
        }
        true
    }

    /// Queues trailers, which end the stream. False when the stream cannot send them.
    pub fn send_trailers<'f, I>(&mut self, stream: u32, fields: I) -> bool
    where
        I: IntoIterator<Item = (&'f [u8], &'f [u8])>,
    {
        let Some(i) = self.find(stream) else {
            return false;
        };
        let s = self.streams[i];
        if s.local_ended || !s.head_sent {
            return false;
        }
        let start = self.out.len();
        self.out.extend_from_slice(&[0; HEADER_LEN]);
        for (name, value) in fields {
            if !is_connection_specific(name) {
                hpack::encode_field(&mut self.out, name, value);
            }
        }
        self.frame_block(stream, start, true);
        self.streams[i].local_ended = true;
        self.maybe_close(i);
        true
    }

    /// How many body bytes `stream` may send now (stream and connection windows).
    pub fn send_window(&self, stream: u32) -> usize {
        match self.find(stream) {
            Some(i) if !self.streams[i].local_ended => {
                self.streams[i].send_window.min(self.conn_send).max(0) as usize
            }
            _ => 0,
        }
    }

    /// Queues as much of `data` as the windows allow, in frames no larger than the client's
    /// SETTINGS_MAX_FRAME_SIZE, and returns how many bytes it took. `end_stream` applies
    /// only if all of `data` was taken (an empty `data` with `end_stream` always is). 0 when
    /// the stream is gone, ended, or has no head yet.
    pub fn send_data(&mut self, stream: u32, data: &[u8], end_stream: bool) -> usize {
        let Some(i) = self.find(stream) else {
            return 0;
        };
        let s = self.streams[i];
        if s.local_ended || !s.head_sent {
            return 0;
        }
        let window = s.send_window.min(self.conn_send).max(0) as usize;
        let n = data.len().min(window);
        let ending = end_stream && n == data.len();
        if n == 0 && !ending {
            return 0;
        }
        let max = self.peer_max_frame_size as usize;
        let mut rest = &data[..n];
        loop {
            let (chunk, more) = rest.split_at(rest.len().min(max));
            Header {
                len: chunk.len() as u32,
                kind: kind::DATA,
                flags: if ending && more.is_empty() {
                    flag::END_STREAM
                } else {
                    0
                },
                stream,
            }
            .write(&mut self.out);
            self.out.extend_from_slice(chunk);
            rest = more;
            if rest.is_empty() {
                break;
            }
        }
        let s = &mut self.streams[i];
        s.send_window -= n as i64;
        self.conn_send -= n as i64;
        if ending {
            s.local_ended = true;
            self.maybe_close(i);
        }
        n
    }

    /// Resets `stream` (RST_STREAM with `code`) and forgets it; nothing if it is gone.
    pub fn send_reset(&mut self, stream: u32, code: ErrorCode) {
        if let Some(i) = self.find(stream) {
            self.remove(i);
            self.closed.push(stream, Closed::ByUs);
            frame::write_rst_stream(&mut self.out, stream, code);
        }
    }

    /// Queues a GOAWAY naming the highest stream the client opened so far: those are still
    /// served, later ones ignored. With NO_ERROR this is a graceful close: wait for
    /// [`is_idle`](Self::is_idle), flush, close.
    pub fn send_goaway(&mut self, code: ErrorCode) {
        let last = self.highest;
        self.goaway_last = Some(self.goaway_last.map_or(last, |l| l.min(last)));
        frame::write_goaway(&mut self.out, last, code, b"");
    }

    // ---------------------------------------------------------------- output and state

    /// Bytes to write to the socket.
    pub fn output(&self) -> &[u8] {
        self.out.get(self.out_pos..).unwrap_or_default()
    }

    /// `n` bytes of [`output`](Self::output) were written.
    pub fn consume_output(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            self.queued_control = 0;
        } else if self.out_pos >= 64 * 1024 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
    }

    /// Frees the buffers an idle connection holds (they grow back on use): for connections
    /// kept open with nothing to do. Does nothing while a stream is open or output waits.
    pub fn shrink(&mut self) {
        if !self.is_idle() || !self.output().is_empty() {
            return;
        }
        self.out = Vec::new();
        self.out_pos = 0;
        self.block = Vec::new();
        self.scratch = Vec::new();
        self.fields = FieldList::new();
        self.info = HeadInfo::default();
        self.streams = Vec::new();
        self.ids = Vec::new();
    }

    /// Streams open (or half-closed) now.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// No stream is open: after a GOAWAY, the connection may close once the output is written.
    pub fn is_idle(&self) -> bool {
        self.streams.is_empty() && self.pending.is_none()
    }

    /// Whether the stream is open and its response not yet ended.
    pub fn can_send(&self, stream: u32) -> bool {
        self.find(stream)
            .is_some_and(|i| !self.streams[i].local_ended)
    }

    /// The client's SETTINGS_MAX_FRAME_SIZE (how large a DATA frame may be).
    pub fn peer_max_frame_size(&self) -> u32 {
        self.peer_max_frame_size
    }
}
