//! The access log: one record per HTTP request, TCP session and UDP flow, written off the request
//! path. A request fills an [`Entry`] (reused by its connection: no allocation in steady
//! state) and formats it into its worker's lane, a byte buffer only that worker and the
//! writer thread touch; the writer thread swaps each lane out every few milliseconds and
//! writes it in one call. A lane that reaches its cap drops records (counted) instead of
//! making traffic wait for a slow disk.

use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::snapshot::PoolRt;

/// How records are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// One line per record, in the spirit of HAProxy's `httplog`.
    Text,
}

/// Where and how the data plane writes its access log.
#[derive(Clone, Debug)]
pub struct AccessLogOptions {
    pub format: AccessLogFormat,
    /// A file, appended to (and opened anew by [`crate::DataPlane::reopen_access_log`],
    /// after logrotate moved it); None: standard output.
    pub path: Option<PathBuf>,
}

/// The names of [`Entry::timings`] in JSON records.
const TIMINGS: [&str; 4] = ["headers", "connect", "first_byte", "total"];

/// Bytes a lane holds before it drops records.
const LANE_CAP: usize = 4 << 20;
/// A lane's first capacity: what a busy worker writes between two flushes, so lanes
/// rarely grow.
const LANE_START: usize = 256 << 10;
/// How often the writer empties the lanes.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Why an exchange ended, as the record says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Termination {
    /// The answer (or the session) went through whole.
    Done,
    ClientAborted,
    /// The client sent a malformed (or too large) request or body.
    BadRequest,
    /// The request head did not arrive in time.
    RequestTimeout,
    /// No route matched, or the listener was being removed.
    NoRoute,
    /// No member could take the request.
    NoMember,
    MemberConnectFailed,
    MemberReset,
    MemberTimeout,
    /// The answer had begun when one side broke off.
    ResponseAborted,
    /// Refused by fulcrum itself (a method it does not serve).
    Refused,
    /// A tunnel (WebSocket, after a 101) that ended.
    TunnelClosed,
    /// A TCP session (or tunnel) where neither side sent anything for the idle timeout.
    IdleTimeout,
    /// A TCP session that broke (a reset, a failed write) on either side.
    ConnectionError,
}

impl Termination {
    /// Why no member answered: how the last one tried failed, or none could be tried.
    pub fn no_answer(last_error: Option<crate::stats::ErrorKind>) -> Termination {
        use crate::stats::ErrorKind;
        match last_error {
            None => Termination::NoMember,
            Some(ErrorKind::Connect) => Termination::MemberConnectFailed,
            Some(ErrorKind::Reset) => Termination::MemberReset,
            Some(ErrorKind::Timeout) => Termination::MemberTimeout,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Termination::Done => "done",
            Termination::ClientAborted => "client_aborted",
            Termination::BadRequest => "bad_request",
            Termination::RequestTimeout => "request_timeout",
            Termination::NoRoute => "no_route",
            Termination::NoMember => "no_member",
            Termination::MemberConnectFailed => "member_connect_failed",
            Termination::MemberReset => "member_reset",
            Termination::MemberTimeout => "member_timeout",
            Termination::ResponseAborted => "response_aborted",
            Termination::Refused => "refused",
            Termination::TunnelClosed => "tunnel_closed",
            Termination::IdleTimeout => "idle_timeout",
            Termination::ConnectionError => "connection_error",
        }
    }
}

/// The facts of one request (or TCP session), gathered as it goes. A connection keeps one
/// and resets it per request, so its text buffer is reused.
pub(crate) struct Entry {
    /// Whether this request is logged (the listener logs, and sampling chose it).
    pub active: bool,
    /// When the request's head was whole (the record's time).
    pub started: Instant,
    /// When the head began to arrive, if it took more than one read (else it came whole).
    pub head_began: Option<Instant>,
    /// Copies of the request's method, authority, path and request id.
    text: Vec<u8>,
    method: (usize, usize),
    authority: (usize, usize),
    path: (usize, usize),
    request_id: (usize, usize),
    pub protocol: &'static str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The pool and member index that served it (or last failed it).
    pub pool: Option<Arc<PoolRt>>,
    pub member: Option<usize>,
    pub attempts: u8,
    pub connect: Option<Duration>,
    pub first_byte: Option<Duration>,
    /// How long the exchange took, when the caller measured it already.
    pub total: Option<Duration>,
    pub sticky: bool,
    pub termination: Termination,
    /// A UDP flow's datagrams from the client and from the member (None: not a flow).
    pub packets: Option<(u64, u64)>,
    /// The request id goes to the member and back (the listener's `request_id`), whether
    /// or not the request is logged.
    pub send_id: bool,
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            active: false,
            started: Instant::now(),
            head_began: None,
            text: Vec::new(),
            method: (0, 0),
            authority: (0, 0),
            path: (0, 0),
            request_id: (0, 0),
            protocol: "",
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            pool: None,
            member: None,
            attempts: 0,
            connect: None,
            first_byte: None,
            total: None,
            sticky: false,
            termination: Termination::Done,
            packets: None,
            send_id: false,
        }
    }
}

impl Entry {
    /// Starts a record for a request whose head was whole at `started` (it began to arrive
    /// at `head_began`, if that took more than one read). Reads no clock: on some virtual
    /// machines each read is a system call.
    pub fn begin(&mut self, protocol: &'static str, started: Instant, head_began: Option<Instant>) {
        self.active = true;
        self.started = started;
        self.head_began = head_began.map(|b| b.min(started));
        self.text.clear();
        self.method = (0, 0);
        self.authority = (0, 0);
        self.path = (0, 0);
        self.request_id = (0, 0);
        self.protocol = protocol;
        self.status = 0;
        self.bytes_in = 0;
        self.bytes_out = 0;
        self.pool = None;
        self.member = None;
        self.attempts = 0;
        self.connect = None;
        self.first_byte = None;
        self.total = None;
        self.sticky = false;
        self.termination = Termination::Done;
        self.packets = None;
    }

    fn keep(&mut self, bytes: &[u8]) -> (usize, usize) {
        let start = self.text.len();
        self.text.extend_from_slice(bytes);
        (start, self.text.len())
    }

    pub fn request(&mut self, method: &[u8], authority: Option<&[u8]>, path: &[u8]) {
        self.method = self.keep(method);
        self.authority = self.keep(authority.unwrap_or_default());
        self.path = self.keep(path);
    }

    /// Forgets the text of the previous request, when no record was begun for this one.
    pub fn clear_text(&mut self) {
        self.text.clear();
        self.method = (0, 0);
        self.authority = (0, 0);
        self.path = (0, 0);
        self.request_id = (0, 0);
    }

    /// The request's id: the client's `X-Request-Id` when it sent a usable one, else a new one.
    pub fn set_request_id(&mut self, from_client: Option<&[u8]>) {
        match from_client.filter(|id| usable_request_id(id)) {
            Some(id) => self.request_id = self.keep(id),
            None => {
                let id = new_request_id();
                self.request_id = self.keep(&id);
            }
        }
    }

    pub fn request_id(&self) -> &[u8] {
        &self.text[self.request_id.0..self.request_id.1]
    }

    fn slice(&self, range: (usize, usize)) -> Option<&[u8]> {
        (range.1 > range.0).then(|| &self.text[range.0..range.1])
    }

    fn member_rt(&self) -> Option<&crate::snapshot::MemberRt> {
        let (pool, idx) = self.pool.as_ref().zip(self.member)?;
        pool.members.get(idx)
    }

    /// Receiving the head, getting a member connection, the member's first byte, in all.
    fn timings(&self) -> [Option<Duration>; 4] {
        [
            Some(self.head_began.map_or(Duration::ZERO, |b| {
                self.started.saturating_duration_since(b)
            })),
            self.connect,
            self.first_byte,
            Some(self.total.unwrap_or_else(|| self.started.elapsed())),
        ]
    }

    /// The wall-clock time of `started`, from one reading of both clocks per process.
    fn started_wall(&self) -> SystemTime {
        static ANCHOR: std::sync::OnceLock<(Instant, SystemTime)> = std::sync::OnceLock::new();
        let (mono, wall) = *ANCHOR.get_or_init(|| (Instant::now(), SystemTime::now()));
        match self.started.checked_duration_since(mono) {
            Some(after) => wall + after,
            None => wall - mono.saturating_duration_since(self.started),
        }
    }

    /// The member that served (or last failed) the request.
    pub fn served_by(&mut self, pool: &Arc<PoolRt>, member: usize) {
        if self.pool.as_ref().is_none_or(|p| !Arc::ptr_eq(p, pool)) {
            self.pool = Some(pool.clone());
        }
        self.member = Some(member);
    }
}

/// Whether to log this request of a listener that logs one in `one_in` (0: none).
pub(crate) fn sampled(one_in: u32) -> bool {
    thread_local! {
        static SEEN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    match one_in {
        0 => false,
        1 => true,
        n => SEEN.with(|seen| {
            let k = seen.get().wrapping_add(1);
            seen.set(k);
            k % n == 0
        }),
    }
}

/// A client's request id is passed on as it came when it is short, visible ASCII.
fn usable_request_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
}

/// A random (version 4) UUID, as Envoy and most tracing tools expect request ids to look.
fn new_request_id() -> [u8; 36] {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new(seed());
    }
    fn seed() -> u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish() | 1
    }
    // xorshift64*: fast, and ids need to be unique, not secret.
    let next = || {
        STATE.with(|s| {
            let mut x = s.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            s.set(x);
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        })
    };
    let hi = (next() & !0xF000) | 0x4000; // version 4
    let lo = (next() & !(0xC << 60)) | (0x8 << 60); // RFC 4122 variant
    let bits = (u128::from(hi) << 64) | u128::from(lo);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // 8-4-4-4-12 hex digits: a hyphen before bytes 4, 6, 8 and 10.
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in bits.to_be_bytes().into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xF)];
        at += 2;
    }
    out
}

/// Where records go: one lane per worker (and one for any other thread), emptied by the
/// writer thread.
pub(crate) struct Sink {
    format: AccessLogFormat,
    lanes: Box<[Mutex<Vec<u8>>]>,
    written: AtomicU64,
    dropped: AtomicU64,
    reopen: AtomicBool,
    stop: AtomicBool,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Sink {
    /// Opens the destination (so a bad path fails at start) and starts the writer thread.
    pub fn start(options: &AccessLogOptions, workers: usize) -> std::io::Result<Arc<Sink>> {
        let out = Output::open(options.path.clone())?;
        let sink = Arc::new(Sink {
            format: options.format,
            lanes: (0..=workers)
                .map(|_| Mutex::new(Vec::with_capacity(LANE_START)))
                .collect(),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            reopen: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            writer: Mutex::new(None),
        });
        let writer = sink.clone();
        let handle = std::thread::Builder::new()
            .name("fulcrum-log".into())
            .spawn(move || writer.run(out))?;
        *sink.writer.lock() = Some(handle);
        Ok(sink)
    }

    /// Records written, and dropped because the writer fell behind.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.written.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }

    /// Opens the file anew at the next flush (after logrotate moved it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Writes what is pending and stops the writer (waiting for it: at most one flush).
    pub fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let writer = self.writer.lock().take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }

    /// Formats one record into this worker's lane.
    pub fn emit(&self, entry: &Entry, listener: &str, client: SocketAddr) {
        let lane =
            crate::worker::current().map_or(self.lanes.len() - 1, |w| w.min(self.lanes.len() - 1));
        let mut buf = self.lanes[lane].lock();
        if buf.len() >= LANE_CAP {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.format {
            AccessLogFormat::Json => json_record(&mut buf, entry, listener, client),
            AccessLogFormat::Text => text_record(&mut buf, entry, listener, client),
        }
        self.written.fetch_add(1, Ordering::Relaxed);
    }

    fn run(self: Arc<Self>, mut out: Output) {
        let mut spare = Vec::with_capacity(LANE_START);
        let mut failing = false;
        loop {
            std::thread::sleep(FLUSH_EVERY);
            let stopping = self.stop.load(Ordering::Relaxed);
            if self.reopen.swap(false, Ordering::Relaxed) {
                match Output::open(out.path.clone()) {
                    Ok(fresh) => out = fresh,
                    Err(e) => tracing::error!(error = %e, "cannot reopen the access log"),
                }
            }
            for lane in &self.lanes {
                std::mem::swap(&mut *lane.lock(), &mut spare);
                if spare.is_empty() {
                    continue;
                }
                match out.write(&spare) {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::error!(error = %e, "cannot write the access log");
                    }
                    Err(_) => {}
                }
                spare.clear();
            }
            if stopping {
                return;
            }
        }
    }
}

struct Output {
    path: Option<PathBuf>,
    file: Option<File>,
}

impl Output {
    fn open(path: Option<PathBuf>) -> std::io::Result<Output> {
        let file = match &path {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?,
            ),
            None => None,
        };
        Ok(Output { path, file })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(bytes),
            None => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(bytes)?;
                stdout.flush()
            }
        }
    }
}

// ---- formats ----------------------------------------------------------------------------

fn json_record(out: &mut Vec<u8>, e: &Entry, listener: &str, client: SocketAddr) {
    out.extend_from_slice(b"{\"time\":\"");
    rfc3339(out, e.started_wall());
    out.extend_from_slice(b"\",\"listener\":");
    json_str(out, listener.as_bytes());
    out.extend_from_slice(b",\"client\":\"");
    let _ = write!(out, "{client}");
    out.push(b'"');
    let field = |out: &mut Vec<u8>, name: &[u8], value: Option<&[u8]>| {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name);
        out.extend_from_slice(b"\":");
        match value {
            Some(v) => json_str(out, v),
            None => out.extend_from_slice(b"null"),
        }
    };
    field(out, b"request_id", e.slice(e.request_id));
    field(out, b"method", e.slice(e.method));
    field(out, b"authority", e.slice(e.authority));
    field(out, b"path", e.slice(e.path));
    field(out, b"protocol", Some(e.protocol.as_bytes()));
    out.extend_from_slice(b",\"status\":");
    if e.status == 0 {
        out.extend_from_slice(b"null");
    } else {
        fulcrum_h1::write_decimal(out, u64::from(e.status));
    }
    out.extend_from_slice(b",\"bytes_in\":");
    fulcrum_h1::write_decimal(out, e.bytes_in);
    out.extend_from_slice(b",\"bytes_out\":");
    fulcrum_h1::write_decimal(out, e.bytes_out);
    if let Some((from_client, from_member)) = e.packets {
        out.extend_from_slice(b",\"packets_in\":");
        fulcrum_h1::write_decimal(out, from_client);
        out.extend_from_slice(b",\"packets_out\":");
        fulcrum_h1::write_decimal(out, from_member);
    }
    let member = e.member_rt();
    field(
        out,
        b"pool",
        e.pool.as_ref().map(|p| p.id.as_str().as_bytes()),
    );
    field(out, b"member", member.map(|m| m.id.as_str().as_bytes()));
    field(
        out,
        b"member_address",
        member.map(|m| m.authority.as_bytes()),
    );
    out.extend_from_slice(b",\"attempts\":");
    fulcrum_h1::write_decimal(out, u64::from(e.attempts));
    out.extend_from_slice(if e.sticky {
        b",\"sticky\":true"
    } else {
        b",\"sticky\":false"
    });
    field(out, b"termination", Some(e.termination.as_str().as_bytes()));
    out.extend_from_slice(b",\"timings_ms\":{");
    for (i, (name, t)) in TIMINGS.iter().zip(e.timings()).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        millis(out, t);
    }
    out.extend_from_slice(b"}}\n");
}

/// `client [date] listener pool/member Th/Tc/Tr/Tt status bytes_in bytes_out attempts
/// sticky termination request_id "METHOD path PROTOCOL" "authority"`, `-` where nothing.
fn text_record(out: &mut Vec<u8>, e: &Entry, listener: &str, client: SocketAddr) {
    let _ = write!(out, "{client} [");
    rfc3339(out, e.started_wall());
    out.extend_from_slice(b"] ");
    out.extend_from_slice(listener.as_bytes());
    out.push(b' ');
    let member = e.member_rt();
    match &e.pool {
        Some(p) => out.extend_from_slice(p.id.as_str().as_bytes()),
        None => out.push(b'-'),
    }
    out.push(b'/');
    match member {
        Some(m) => out.extend_from_slice(m.authority.as_bytes()),
        None => out.push(b'-'),
    }
    out.push(b' ');
    for (i, t) in e.timings().into_iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        match t {
            Some(_) => millis(out, t),
            None => out.push(b'-'),
        }
    }
    out.push(b' ');
    if e.status == 0 {
        out.push(b'-');
    } else {
        fulcrum_h1::write_decimal(out, u64::from(e.status));
    }
    out.push(b' ');
    fulcrum_h1::write_decimal(out, e.bytes_in);
    out.push(b' ');
    fulcrum_h1::write_decimal(out, e.bytes_out);
    out.push(b' ');
    fulcrum_h1::write_decimal(out, u64::from(e.attempts));
    out.extend_from_slice(if e.sticky { b" + " } else { b" - " });
    out.extend_from_slice(e.termination.as_str().as_bytes());
    out.push(b' ');
    text_or_dash(out, e.slice(e.request_id));
    out.extend_from_slice(b" \"");
    if let Some(method) = e.slice(e.method) {
        text(out, method);
        out.push(b' ');
        text(out, e.slice(e.path).unwrap_or_default());
        out.push(b' ');
    }
    out.extend_from_slice(e.protocol.as_bytes());
    if let Some((from_client, from_member)) = e.packets {
        out.extend_from_slice(b" packets ");
        fulcrum_h1::write_decimal(out, from_client);
        out.push(b'/');
        fulcrum_h1::write_decimal(out, from_member);
    }
    out.extend_from_slice(b"\" \"");
    text(out, e.slice(e.authority).unwrap_or_default());
    out.extend_from_slice(b"\"\n");
}

fn text_or_dash(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => text(out, v),
        None => out.push(b'-'),
    }
}

/// Text-format values: printable ASCII as is (but `"` and `\`), everything else `\xHH`,
/// so a record stays one line whatever the client sent.
fn text(out: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        if b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ' {
            out.push(b);
        } else {
            hex_escape(out, b"\\x", b);
        }
    }
}

fn hex_escape(out: &mut Vec<u8>, prefix: &[u8], b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(prefix);
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 0xF)]);
}

/// A JSON string of bytes a client sent: valid UTF-8 as is (escaped as JSON needs), any
/// byte that is not part of valid UTF-8 as U+FFFD.
fn json_str(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'"');
    let mut rest = v;
    loop {
        let (valid, invalid) = match std::str::from_utf8(rest) {
            Ok(all) => (all.as_bytes(), None),
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                let skip = e.error_len().unwrap_or(after.len());
                (valid, Some(&after[skip..]))
            }
        };
        for &b in valid {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                0..0x20 | 0x7f => hex_escape(out, b"\\u00", b),
                _ => out.push(b),
            }
        }
        match invalid {
            Some(after) => {
                out.extend_from_slice("\u{FFFD}".as_bytes());
                rest = after;
            }
            None => break,
        }
    }
    out.push(b'"');
}

/// Milliseconds with microsecond precision (`0.742`), or `null`.
fn millis(out: &mut Vec<u8>, d: Option<Duration>) {
    let Some(d) = d else {
        out.extend_from_slice(b"null");
        return;
    };
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    fulcrum_h1::write_decimal(out, micros / 1000);
    out.push(b'.');
    let frac = micros % 1000;
    out.push(b'0' + (frac / 100) as u8);
    out.push(b'0' + (frac / 10 % 10) as u8);
    out.push(b'0' + (frac % 10) as u8);
}

/// `2026-12-06T08:40:01.123Z`.
fn rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    let secs = ms / 1000;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let two = |out: &mut Vec<u8>, v: u64| {
        out.push(b'0' + (v / 10 % 10) as u8);
        out.push(b'0' + (v % 10) as u8);
    };
    fulcrum_h1::write_decimal(out, u64::try_from(year).unwrap_or(0));
    out.push(b'-');
    two(out, month);
    out.push(b'-');
    two(out, day);
    out.push(b'T');
    two(out, rem / 3600);
    out.push(b':');
    two(out, rem / 60 % 60);
    out.push(b':');
    two(out, rem % 60);
    out.push(b'.');
    let frac = ms % 1000;
    out.push(b'0' + (frac / 100) as u8);
    two(out, frac % 100);
    out.push(b'Z');
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// well-known algorithm, written from its description).
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_793), (2026, 12, 6));
        let mut out = Vec::new();
        rfc3339(
            &mut out,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_546_401_123),
        );
        assert_eq!(out, b"2026-12-06T08:40:01.123Z");
    }

    #[test]
    fn request_ids_are_v4_uuids_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let s = std::str::from_utf8(&a).unwrap_or_default();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4", "{s}");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert!(usable_request_id(&a));
        assert!(!usable_request_id(b"has space"));
        assert!(!usable_request_id(&[b'x'; 129]));
    }

    #[test]
    fn json_strings_escape_what_json_needs_and_replace_invalid_utf8() {
        let mut out = Vec::new();
        json_str(&mut out, b"a\"b\\c\nd\x01\xffe\xc3\xa9");
        assert_eq!(
            String::from_utf8(out).unwrap_or_default(),
            "\"a\\\"b\\\\c\\u000ad\\u0001\u{FFFD}e\u{e9}\""
        );
        let mut out = Vec::new();
        text(&mut out, b"/a b\"\n");
        assert_eq!(out, b"/a b\\x22\\x0a");
    }

    #[test]
    fn millis_keep_microseconds() {
        let mut out = Vec::new();
        millis(&mut out, Some(Duration::from_micros(1_742)));
        millis(&mut out, None);
        millis(&mut out, Some(Duration::from_micros(5)));
        assert_eq!(out, b"1.742null0.005");
    }
}
