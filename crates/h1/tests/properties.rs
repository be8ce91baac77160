//! Property tests for the head parsers and the chunked scanner.
//!
//! Heads: `parse_request` / `parse_response` never panic (random bytes, mutated realistic
//! heads, small and large `max_head`), agree with httparse on where a head ends and on what
//! is incomplete or invalid, never read past a head, and keep every span inside it.
//! Chunked: any encoding of any chunk list is consumed exactly to its end however it is
//! split, its data comes back intact, arbitrary bytes never panic and give the same outcome
//! whatever the split, and the classic framing mutations are refused.
//!
//! `PROPTEST_CASES=n` raises every property's case count (the defaults keep the file fast in
//! debug builds).

use std::ops::Range;

use fulcrum_h1::{
    Body, ChunkError, Chunked, Error, Field, MAX_HEADERS, Method, Name, Request, Response, Span,
    Step, parse_request, parse_response,
};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseError;

/// The `max_head` a proxy would use.
const BIG: usize = 64 * 1024;

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        // Nothing written outside tests/: a failure prints its shrunk input instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ----------------------------------------------------------------------------------------
// The reference: httparse with room for every header.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reference {
    Complete { len: usize, headers: usize },
    Partial,
    Invalid,
}

fn reference(status: httparse::Result<usize>, headers: usize) -> Reference {
    match status {
        Ok(httparse::Status::Complete(len)) => Reference::Complete { len, headers },
        Ok(httparse::Status::Partial) => Reference::Partial,
        Err(_) => Reference::Invalid,
    }
}

/// A header line is at least 3 bytes (`a:\n`), so this many slots never run out.
fn slots(buf: &[u8]) -> Vec<httparse::Header<'static>> {
    vec![httparse::EMPTY_HEADER; buf.len() / 3 + 4]
}

fn reference_request(buf: &[u8]) -> Reference {
    let mut headers = slots(buf);
    let mut req = httparse::Request::new(&mut headers);
    let status = req.parse(buf);
    let count = req.headers.len();
    reference(status, count)
}

fn reference_response(buf: &[u8]) -> Reference {
    let mut headers = slots(buf);
    let mut resp = httparse::Response::new(&mut headers);
    let status = resp.parse(buf);
    let count = resp.headers.len();
    reference(status, count)
}

/// The reasons `parse_*` gives for what httparse refused; any other `Malformed` reason is a
/// semantic refusal of a head httparse accepted.
const SYNTAX_REASONS: [&str; 6] = [
    "invalid header name",
    "invalid header value",
    "invalid line ending",
    "invalid status",
    "invalid token",
    "invalid HTTP version",
];

// ----------------------------------------------------------------------------------------
// Checks shared by every head property.

fn within(span: Span, head_len: usize) -> bool {
    span.start <= span.end && span.end as usize <= head_len
}

fn check_fields(buf: &[u8], fields: &[Field], head_len: usize) -> Result<(), TestCaseError> {
    prop_assert!(fields.len() <= MAX_HEADERS);
    for f in fields {
        prop_assert!(
            within(f.name, head_len),
            "name {:?} outside {head_len}",
            f.name
        );
        prop_assert!(
            within(f.value, head_len),
            "value {:?} outside {head_len}",
            f.value
        );
        prop_assert!(!f.name.is_empty());
        prop_assert_eq!(f.kind, Name::classify(f.name.of(buf)), "field kind");
    }
    Ok(())
}

fn check_request_spans(r: &Request, buf: &[u8], fields: &[Field]) -> Result<(), TestCaseError> {
    let n = r.head_len;
    prop_assert!(n <= buf.len());
    prop_assert!(within(r.method_span, n), "method {:?}", r.method_span);
    prop_assert!(within(r.target, n), "target {:?}", r.target);
    for s in [r.authority, r.host, r.upgrade].into_iter().flatten() {
        prop_assert!(within(s, n), "span {s:?} outside {n}");
    }
    check_fields(buf, fields, n)
}

fn check_response_spans(r: &Response, buf: &[u8], fields: &[Field]) -> Result<(), TestCaseError> {
    let n = r.head_len;
    prop_assert!(n <= buf.len());
    prop_assert!(within(r.reason, n), "reason {:?}", r.reason);
    if let Some(s) = r.upgrade {
        prop_assert!(within(s, n), "upgrade {s:?} outside {n}");
    }
    check_fields(buf, fields, n)
}

/// How our outcome must relate to httparse's (the same for requests and responses).
fn agree<T>(
    got: &Result<Option<T>, Error>,
    head_len: impl Fn(&T) -> usize,
    field_count: usize,
    reference: Reference,
    buf_len: usize,
    max_head: usize,
) -> Result<(), TestCaseError> {
    match got {
        Ok(Some(r)) => {
            let n = head_len(r);
            prop_assert_eq!(
                reference,
                Reference::Complete {
                    len: n,
                    headers: field_count
                },
                "we accepted a head of {} bytes",
                n
            );
            prop_assert!(n <= max_head);
        }
        Ok(None) => {
            prop_assert_eq!(reference, Reference::Partial);
            prop_assert!(buf_len < max_head, "incomplete at {buf_len} >= {max_head}");
        }
        Err(Error::TooLarge) => prop_assert!(
            matches!(reference, Reference::Complete { len, .. } if len > max_head)
                || (reference == Reference::Partial && buf_len >= max_head),
            "TooLarge but reference {reference:?}, {buf_len} bytes, max {max_head}"
        ),
        Err(Error::TooManyHeaders) => prop_assert!(
            !matches!(reference, Reference::Complete { headers, .. } if headers <= MAX_HEADERS),
            "TooManyHeaders but reference {reference:?}"
        ),
        Err(Error::Malformed(why)) => {
            if let Reference::Complete { headers, .. } = reference {
                prop_assert!(headers <= MAX_HEADERS);
                prop_assert!(
                    !SYNTAX_REASONS.contains(why),
                    "httparse accepted the head, we called it a syntax error: {why}"
                );
            } else {
                prop_assert_eq!(
                    reference,
                    Reference::Invalid,
                    "refused ({}) a partial head",
                    why
                );
            }
        }
    }
    // The converse directions.
    match reference {
        Reference::Invalid => prop_assert!(got.is_err(), "accepted what httparse rejects"),
        Reference::Partial if buf_len < max_head => prop_assert!(
            matches!(got, Ok(None) | Err(Error::TooManyHeaders)),
            "httparse says partial"
        ),
        Reference::Complete { len, headers } if len <= max_head && headers <= MAX_HEADERS => {
            prop_assert!(
                matches!(got, Ok(Some(_)) | Err(Error::Malformed(_))),
                "httparse says complete"
            );
        }
        _ => {}
    }
    Ok(())
}

/// What a parser said and the fields it filled, unless a check failed.
type Checked<T> = Result<(Result<Option<T>, Error>, Vec<Field>), TestCaseError>;

/// Parses a request with every check above; returns what `parse_request` said.
fn checked_request(buf: &[u8], max_head: usize) -> Checked<Request> {
    // A dirty, reused vector: parsing must clear it.
    let mut fields = vec![
        Field {
            name: Span { start: 9, end: 99 },
            value: Span::default(),
            kind: Name::Host,
            hop: true,
        };
        3
    ];
    let got = parse_request(buf, &mut fields, max_head);
    agree(
        &got,
        |r| r.head_len,
        fields.len(),
        reference_request(buf),
        buf.len(),
        max_head,
    )?;
    match &got {
        Ok(Some(r)) => check_request_spans(r, buf, &fields)?,
        Ok(None) => prop_assert!(fields.is_empty()),
        Err(_) => {}
    }
    Ok((got, fields))
}

fn checked_response(buf: &[u8], max_head: usize, method: Method) -> Checked<Response> {
    let mut fields = Vec::new();
    let got = parse_response(buf, &mut fields, max_head, method);
    agree(
        &got,
        |r| r.head_len,
        fields.len(),
        reference_response(buf),
        buf.len(),
        max_head,
    )?;
    match &got {
        Ok(Some(r)) => {
            check_response_spans(r, buf, &fields)?;
            if r.body == Body::UntilClose {
                prop_assert!(!r.keep_alive);
            }
        }
        Ok(None) => prop_assert!(fields.is_empty()),
        Err(_) => {}
    }
    Ok((got, fields))
}

// ----------------------------------------------------------------------------------------
// Valid heads, with what parsing them must give.

#[derive(Clone)]
struct RequestHead {
    bytes: Vec<u8>,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    method: Vec<u8>,
    target: Vec<u8>,
    authority: Option<Vec<u8>>,
    host: Option<Vec<u8>>,
    http10: bool,
    body: Body,
    keep_alive: bool,
}

#[derive(Clone)]
struct ResponseHead {
    bytes: Vec<u8>,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    status: u16,
    reason: Vec<u8>,
    http10: bool,
    method: Method,
    body: Body,
    keep_alive: bool,
}

/// Bytes as a readable string, for failure messages.
#[derive(PartialEq, Eq)]
struct Text<'a>(&'a [u8]);

impl std::fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

impl std::fmt::Debug for RequestHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestHead")
            .field("bytes", &Text(&self.bytes))
            .field("body", &self.body)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ResponseHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseHead")
            .field("bytes", &Text(&self.bytes))
            .field("method", &self.method)
            .field("body", &self.body)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

/// Extension header names: never one the parser acts on.
fn other_name() -> impl Strategy<Value = Vec<u8>> {
    "X-[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}".prop_map(String::into_bytes)
}

/// Field values as httparse returns them: no leading or trailing whitespace, obs-text allowed.
fn value() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        8 => 0x21u8..=0x7e,
        2 => Just(b' '),
        1 => Just(b'\t'),
        1 => 0x80u8..=0xff,
    ];
    proptest::collection::vec(byte, 0..40).prop_map(|v| {
        let ws = |b: &u8| *b == b' ' || *b == b'\t';
        let start = v.iter().position(|b| !ws(b)).unwrap_or(v.len());
        let end = v.iter().rposition(|b| !ws(b)).map_or(start, |e| e + 1);
        v[start..end].to_vec()
    })
}

fn others() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    proptest::collection::vec((other_name(), value()), 0..12)
}

/// `Connection` values, with (close, keep-alive) as the parser must read them.
const CONNECTION: [(&str, bool, bool); 6] = [
    ("close", true, false),
    ("Keep-Alive", false, true),
    ("keep-alive, X-Hop", false, true),
    (", Close ,", true, false),
    ("upgrade", false, false),
    ("X-A, x-b", false, false),
];

fn keep_alive(http10: bool, connection: Option<usize>) -> bool {
    let (close, keep) = connection.map_or((false, false), |i| (CONNECTION[i].1, CONNECTION[i].2));
    if http10 { keep && !close } else { !close }
}

fn random_case(s: &[u8], mask: u64) -> Vec<u8> {
    s.iter()
        .enumerate()
        .map(|(i, b)| {
            if mask >> (i % 64) & 1 == 1 {
                b.to_ascii_uppercase()
            } else {
                b.to_ascii_lowercase()
            }
        })
        .collect()
}

fn head_bytes(leading: usize, start_line: &[u8], fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"\r\n".repeat(leading);
    out.extend_from_slice(start_line);
    out.extend_from_slice(b"\r\n");
    for (name, value) in fields {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[derive(Clone, Debug)]
enum Target {
    Origin(String),
    /// Scheme, authority, path (possibly empty).
    Absolute(&'static str, String, String),
}

fn target() -> impl Strategy<Value = Target> {
    let path = "/[A-Za-z0-9._~!$&'()*+,;=:@/%-]{0,30}(\\?[A-Za-z0-9._~!$&'()*+,;=:@/?%-]{0,20})?";
    prop_oneof![
        3 => path.prop_map(Target::Origin),
        1 => (
            select(vec!["http://", "https://", "HTTP://"]),
            "[a-z0-9][a-z0-9.-]{0,15}(:[0-9]{1,5})?",
            proptest::option::of(path).prop_map(Option::unwrap_or_default),
        )
            .prop_map(|(s, a, p)| Target::Absolute(s, a, p)),
    ]
}

/// Fields in an order drawn from `seed` (a plain shuffle, so the fields still shrink).
fn shuffled<T>(mut v: Vec<T>, seed: u64) -> Vec<T> {
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

fn request() -> impl Strategy<Value = RequestHead> {
    (
        prop_oneof![
            4 => select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"])
                .prop_map(String::from),
            1 => "X[A-Z]{0,8}",
        ],
        target(),
        any::<bool>(),
        (
            "[a-z0-9][a-z0-9.-]{0,15}(:[0-9]{1,5})?",
            any::<u64>(),
            any::<bool>(),
        ),
        (0..5usize, 0u64..10_000_000, any::<u64>()),
        proptest::option::of(0..CONNECTION.len()),
        others(),
        (0..3usize, any::<u64>()),
    )
        .prop_map(
            |(method, target, http10, host, framing, connection, others, (leading, order))| {
                let (host_text, host_case, host_present) = host;
                let (kind, length, case) = framing;
                let (target_bytes, expected_target, authority, host_value) = match target {
                    Target::Origin(p) => (
                        p.clone().into_bytes(),
                        p.into_bytes(),
                        None,
                        host_text.into_bytes(),
                    ),
                    Target::Absolute(scheme, auth, path) => (
                        format!("{scheme}{auth}{path}").into_bytes(),
                        path.into_bytes(),
                        Some(auth.clone().into_bytes()),
                        random_case(auth.as_bytes(), host_case),
                    ),
                };
                let mut fields = others;
                // HTTP/1.1 needs Host; HTTP/1.0 may go without.
                let host = (!http10 || host_present).then_some(host_value);
                if let Some(h) = &host {
                    fields.push((random_case(b"host", case), h.clone()));
                }
                let mut body = Body::None;
                let cl = |n: u64| {
                    (
                        random_case(b"content-length", case >> 8),
                        n.to_string().into_bytes(),
                    )
                };
                match kind {
                    1 => fields.push(cl(length)),
                    2 => {
                        fields.push(cl(length));
                        fields.push(cl(length));
                    }
                    3 if !http10 => {
                        fields.push((
                            random_case(b"transfer-encoding", case >> 16),
                            random_case(b"chunked", case >> 40),
                        ));
                        body = Body::Chunked;
                    }
                    _ => {}
                }
                if matches!(kind, 1 | 2) && length > 0 {
                    body = Body::Length(length);
                }
                if let Some(i) = connection {
                    fields.push((b"Connection".to_vec(), CONNECTION[i].0.as_bytes().to_vec()));
                }
                let fields = shuffled(fields, order);
                let method = method.into_bytes();
                let mut line = method.clone();
                line.push(b' ');
                line.extend_from_slice(&target_bytes);
                line.extend_from_slice(if http10 { b" HTTP/1.0" } else { b" HTTP/1.1" });
                RequestHead {
                    bytes: head_bytes(leading, &line, &fields),
                    fields,
                    method,
                    target: expected_target,
                    authority,
                    host,
                    http10,
                    body,
                    keep_alive: keep_alive(http10, connection),
                }
            },
        )
}

const RESPONSE_METHODS: [Method; 6] = [
    Method::Get,
    Method::Head,
    Method::Post,
    Method::Put,
    Method::Delete,
    Method::Other,
];

/// Response reasons, absent or empty sometimes. Without obs-text: see
/// `response_reason_is_as_sent` for that.
fn reason() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::weighted(0.9, "[ \t!-~]{0,20}".prop_map(String::into_bytes))
}

fn response() -> impl Strategy<Value = ResponseHead> {
    (
        any::<bool>(),
        prop_oneof![3 => select(vec![100u16, 101, 103, 200, 204, 206, 301, 304, 404, 500]), 1 => 0u16..1000],
        reason(),
        select(RESPONSE_METHODS.to_vec()),
        (0..8usize, 0u64..10_000_000, any::<u64>()),
        proptest::option::of(0..CONNECTION.len()),
        others(),
        (0..2usize, any::<u64>()),
    )
        .prop_map(
            |(http10, status, reason, method, framing, connection, others, (leading, order))| {
                let (kind, length, case) = framing;
                let mut fields = others;
                let cl = (random_case(b"content-length", case), length.to_string().into_bytes());
                let te = |v: &[u8]| (random_case(b"transfer-encoding", case >> 16), random_case(v, case >> 32));
                // (Transfer-Encoding present, it ends in a single chunked, Content-Length)
                let (te_seen, chunked, length) = match kind {
                    1 => {
                        fields.push(cl);
                        (false, false, Some(length))
                    }
                    2 => {
                        fields.push(cl.clone());
                        fields.push(cl);
                        (false, false, Some(length))
                    }
                    3 => {
                        fields.push(te(b"chunked"));
                        (true, true, None)
                    }
                    4 => {
                        fields.push(te(b"gzip, chunked"));
                        (true, true, None)
                    }
                    5 => {
                        fields.push(te(b"chunked, gzip"));
                        (true, false, None)
                    }
                    6 => {
                        fields.push(te(b"chunked"));
                        fields.push(cl);
                        (true, true, Some(length))
                    }
                    _ => (false, false, None),
                };
                if let Some(i) = connection {
                    fields.push((b"Connection".to_vec(), CONNECTION[i].0.as_bytes().to_vec()));
                }
                let fields = shuffled(fields, order);
                let bodiless = (100..200).contains(&status)
                    || status == 204
                    || status == 304
                    || method == Method::Head;
                let mut keep_alive = keep_alive(http10, connection);
                let body = if bodiless {
                    Body::None
                } else if te_seen {
                    if length.is_some() {
                        keep_alive = false;
                    }
                    if chunked { Body::Chunked } else { Body::UntilClose }
                } else {
                    match length {
                        Some(0) => Body::None,
                        Some(n) => Body::Length(n),
                        None => Body::UntilClose,
                    }
                };
                if body == Body::UntilClose {
                    keep_alive = false;
                }
                let mut line = if http10 { b"HTTP/1.0 ".to_vec() } else { b"HTTP/1.1 ".to_vec() };
                line.extend_from_slice(format!("{status:03}").as_bytes());
                if let Some(r) = &reason {
                    line.push(b' ');
                    line.extend_from_slice(r);
                }
                ResponseHead {
                    bytes: head_bytes(leading, &line, &fields),
                    fields,
                    status,
                    reason: reason.unwrap_or_default(),
                    http10,
                    method,
                    body,
                    keep_alive,
                }
            },
        )
}

// ----------------------------------------------------------------------------------------
// A fixed corpus of realistic heads, and mutations of them.

const REQUESTS: [&[u8]; 12] = [
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET /a/b?c=d&e HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nContent-Type: text/plain\r\nExpect: 100-continue\r\n\r\n",
    b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n",
    b"GET http://Example.com/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: X-Secret, close\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nCookie: a=b; c=d\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n\r\n",
    b"\r\nDELETE /r HTTP/1.1\r\nHost: [::1]:80\r\nContent-Length: 0\r\nTE: trailers\r\n\r\n",
    b"GET / HTTP/1.1\nHost: x\nX-Empty:\n\n",
];

const RESPONSES: [&[u8]; 9] = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 99\r\n\r\n",
    b"HTTP/1.1 404\r\nSet-Cookie: a=b; Path=/\r\nSet-Cookie: c=d\r\nRetry-After: 5\r\n\r\n",
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 1, 1\r\nConnection: close\r\n\r\n",
];

#[derive(Clone, Debug)]
enum Mutation {
    Replace(Index, u8),
    Insert(Index, u8),
    Delete(Index),
}

/// Bytes that matter to a head parser, and sometimes any byte.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        1 => any::<u8>(),
        3 => select(b"\r\n \t:;,/?#@*0123456789aAfFzZHTP.-\x00\x7f\x80\xff".to_vec()),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match *m {
            Mutation::Replace(i, b) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] = b;
            }
            Mutation::Insert(i, b) => {
                let at = i.index(bytes.len() + 1);
                bytes.insert(at, b);
            }
            Mutation::Delete(i) if !bytes.is_empty() => {
                bytes.remove(i.index(bytes.len()));
            }
            _ => {}
        }
    }
    bytes
}

fn max_head() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(BIG),
        select(vec![0usize, 1, 8, 16, 32, 64]),
        0usize..400,
    ]
}

fn request_like() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        select(REQUESTS.to_vec()).prop_map(<[u8]>::to_vec),
        request().prop_map(|h| h.bytes),
    ]
}

fn response_like() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        select(RESPONSES.to_vec()).prop_map(<[u8]>::to_vec),
        response().prop_map(|h| h.bytes),
    ]
}

// ----------------------------------------------------------------------------------------
// 1 and 2: no panics, and agreement with httparse, on random and mutated input.

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn random_bytes_never_panic_and_agree_with_httparse(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600),
            proptest::collection::vec(interesting_byte(), 0..600),
        ],
        max_head in max_head(),
        method in select(RESPONSE_METHODS.to_vec()),
    ) {
        let _ = checked_request(&bytes, max_head)?;
        let _ = checked_response(&bytes, max_head, method)?;
    }

    #[test]
    fn mutated_requests_never_panic_and_agree_with_httparse(
        head in request_like(),
        mutations in proptest::collection::vec(mutation(), 1..5),
        tail in proptest::collection::vec(any::<u8>(), 0..16),
        max_head in max_head(),
    ) {
        let mut bytes = mutate(head, &mutations);
        bytes.extend_from_slice(&tail);
        let _ = checked_request(&bytes, max_head)?;
    }

    #[test]
    fn mutated_responses_never_panic_and_agree_with_httparse(
        head in response_like(),
        mutations in proptest::collection::vec(mutation(), 1..5),
        tail in proptest::collection::vec(any::<u8>(), 0..16),
        max_head in max_head(),
        method in select(RESPONSE_METHODS.to_vec()),
    ) {
        let mut bytes = mutate(head, &mutations);
        bytes.extend_from_slice(&tail);
        let _ = checked_response(&bytes, max_head, method)?;
    }

    /// A head that has not fully arrived asks for more, never an error, as long as it is
    /// shorter than `max_head`; at `max_head` bytes it is too large.
    #[test]
    fn every_prefix_of_a_valid_head_is_incomplete(
        req in request_like(),
        resp in response_like(),
        cuts in proptest::collection::vec(any::<Index>(), 1..8),
        method in select(RESPONSE_METHODS.to_vec()),
    ) {
        for cut in &cuts {
            let prefix = &req[..cut.index(req.len())];
            prop_assert_eq!(reference_request(prefix), Reference::Partial);
            let (got, _) = checked_request(prefix, BIG)?;
            prop_assert!(matches!(got, Ok(None)), "{:?}: {:?}", String::from_utf8_lossy(prefix), got);
            let (got, _) = checked_request(prefix, prefix.len())?;
            prop_assert_eq!(got.map(|_| ()), Err(Error::TooLarge));

            let prefix = &resp[..cut.index(resp.len())];
            prop_assert_eq!(reference_response(prefix), Reference::Partial);
            let (got, _) = checked_response(prefix, BIG, method)?;
            prop_assert!(matches!(got, Ok(None)), "{:?}: {:?}", String::from_utf8_lossy(prefix), got);
            let (got, _) = checked_response(prefix, prefix.len(), method)?;
            prop_assert_eq!(got.map(|_| ()), Err(Error::TooLarge));
        }
    }
}

// ----------------------------------------------------------------------------------------
// 3: valid heads followed by anything: the head ends where it ends, and reads as written.

/// Fields as readable `name: value` lines, for comparing with what was written.
fn lines<'a>(fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<String> {
    fields
        .map(|(n, v)| format!("{}: {}", n.escape_ascii(), v.escape_ascii()))
        .collect()
}

fn parsed(buf: &[u8], fields: &[Field]) -> Vec<String> {
    lines(fields.iter().map(|f| (f.name.of(buf), f.value.of(buf))))
}

fn written(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
    lines(fields.iter().map(|(n, v)| (&n[..], &v[..])))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn valid_request_then_anything(
        head in request(),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut buf = head.bytes.clone();
        buf.extend_from_slice(&tail);
        let (got, fields) = checked_request(&buf, BIG)?;
        let r = match got {
            Ok(Some(r)) => r,
            other => return Err(TestCaseError::fail(format!(
                "{:?} refused: {other:?}", String::from_utf8_lossy(&head.bytes)))),
        };
        prop_assert_eq!(r.head_len, head.bytes.len());
        prop_assert_eq!(parsed(&buf, &fields), written(&head.fields));
        prop_assert_eq!(r.method_span.of(&buf), &head.method[..]);
        prop_assert_eq!(r.target.of(&buf), &head.target[..]);
        prop_assert_eq!(r.authority.map(|a| a.of(&buf).to_vec()), head.authority.clone());
        prop_assert_eq!(r.host.map(|h| h.of(&buf).to_vec()), head.host.clone());
        prop_assert_eq!(r.http10, head.http10);
        prop_assert_eq!(r.body, head.body);
        prop_assert_eq!(r.keep_alive, head.keep_alive);

        // Exactly `head_len` bytes is enough, one fewer is too large.
        let (got, _) = checked_request(&buf, head.bytes.len())?;
        prop_assert!(matches!(got, Ok(Some(_))));
        let (got, _) = checked_request(&buf, head.bytes.len() - 1)?;
        prop_assert_eq!(got.map(|_| ()), Err(Error::TooLarge));
    }

    #[test]
    fn valid_response_then_anything(
        head in response(),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut buf = head.bytes.clone();
        buf.extend_from_slice(&tail);
        let (got, fields) = checked_response(&buf, BIG, head.method)?;
        let r = match got {
            Ok(Some(r)) => r,
            other => return Err(TestCaseError::fail(format!(
                "{:?} refused: {other:?}", String::from_utf8_lossy(&head.bytes)))),
        };
        prop_assert_eq!(r.head_len, head.bytes.len());
        prop_assert_eq!(parsed(&buf, &fields), written(&head.fields));
        prop_assert_eq!(r.status, head.status);
        prop_assert_eq!(r.reason.of(&buf), &head.reason[..]);
        prop_assert_eq!(r.http10, head.http10);
        prop_assert_eq!(r.body, head.body);
        prop_assert_eq!(r.keep_alive, head.keep_alive);

        let (got, _) = checked_response(&buf, head.bytes.len(), head.method)?;
        prop_assert!(matches!(got, Ok(Some(_))));
        let (got, _) = checked_response(&buf, head.bytes.len() - 1, head.method)?;
        prop_assert_eq!(got.map(|_| ()), Err(Error::TooLarge));
    }

    /// `Response::reason` is documented as "the reason phrase as sent"; a reason may carry
    /// obs-text (RFC 9112 §4: `reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )`).
    #[test]
    fn response_reason_is_as_sent(
        status in 100u16..600,
        reason in proptest::collection::vec(
            prop_oneof![3 => 0x20u8..=0x7e, 1 => Just(b'\t'), 1 => 0x80u8..=0xff], 0..12),
    ) {
        let mut head = format!("HTTP/1.1 {status} ").into_bytes();
        head.extend_from_slice(&reason);
        head.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        let (got, _) = checked_response(&head, BIG, Method::Get)?;
        let r = got.ok().flatten().ok_or_else(|| TestCaseError::fail("refused"))?;
        prop_assert_eq!(
            Text(r.reason.of(&head)),
            Text(&reason),
            "head {:?}",
            Text(&head)
        );
    }
}

/// Every byte-by-byte prefix of the corpus: incomplete until the last byte.
#[test]
fn corpus_prefixes_are_incomplete() {
    for raw in REQUESTS {
        for cut in 0..raw.len() {
            let got = parse_request(&raw[..cut], &mut Vec::new(), BIG);
            assert!(matches!(got, Ok(None)), "{cut} of {raw:?}: {got:?}");
        }
        let got = parse_request(raw, &mut Vec::new(), BIG);
        assert!(
            matches!(got, Ok(Some(r)) if r.head_len == raw.len()),
            "{raw:?}: {got:?}"
        );
    }
    for raw in RESPONSES {
        for cut in 0..raw.len() {
            let got = parse_response(&raw[..cut], &mut Vec::new(), BIG, Method::Get);
            assert!(matches!(got, Ok(None)), "{cut} of {raw:?}: {got:?}");
        }
        let got = parse_response(raw, &mut Vec::new(), BIG, Method::Get);
        assert!(
            matches!(got, Ok(Some(r)) if r.head_len == raw.len()),
            "{raw:?}: {got:?}"
        );
    }
}

/// `MAX_HEADERS` fields pass, one more is refused, whatever httparse could hold.
#[test]
fn header_count_limit() {
    for total in MAX_HEADERS - 2..=MAX_HEADERS + 2 {
        let mut raw = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 1..total {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let mut fields = Vec::new();
        let got = parse_request(&raw, &mut fields, BIG);
        if total <= MAX_HEADERS {
            assert!(matches!(got, Ok(Some(_))), "{total}: {got:?}");
            assert_eq!(fields.len(), total);
        } else {
            assert_eq!(got.map(|_| ()), Err(Error::TooManyHeaders), "{total}");
        }
        assert!(
            matches!(reference_request(&raw), Reference::Complete { headers, .. } if headers == total)
        );
    }
}

// ----------------------------------------------------------------------------------------
// 4 and 5: chunked bodies.

#[derive(Clone, Debug)]
struct ChunkSpec {
    size: usize,
    /// Which hex digits are upper case.
    upper: u16,
    leading_zeros: usize,
    extensions: Vec<String>,
    seed: u64,
}

#[derive(Clone, Debug)]
struct BodySpec {
    chunks: Vec<ChunkSpec>,
    last_zeros: usize,
    last_extensions: Vec<String>,
    trailers: Vec<(String, String)>,
}

/// An encoded body and where its parts are.
#[derive(Clone, Debug)]
struct Encoded {
    bytes: Vec<u8>,
    payload: Vec<u8>,
    /// Positions of the hex digits of every size line (the last chunk's included).
    digits: Vec<usize>,
    /// Positions of the CR of every framing CRLF.
    crlfs: Vec<usize>,
    /// Where each chunk's data is.
    data: Vec<Range<usize>>,
}

fn extension() -> impl Strategy<Value = String> {
    prop_oneof![
        ";[a-z]{1,4}",
        ";[a-z]{1,4}=[A-Za-z0-9]{1,4}",
        ";[a-z]{1,4}=\"[a-z ]{0,5}\"",
    ]
}

fn body_spec(chunks: Range<usize>) -> impl Strategy<Value = BodySpec> {
    let chunk = (
        1usize..5000,
        any::<u16>(),
        0usize..3,
        proptest::collection::vec(extension(), 0..3),
        any::<u64>(),
    )
        .prop_map(|(size, upper, leading_zeros, extensions, seed)| ChunkSpec {
            size,
            upper,
            leading_zeros,
            extensions,
            seed,
        });
    (
        proptest::collection::vec(chunk, chunks),
        0usize..3,
        proptest::collection::vec(extension(), 0..2),
        proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,10}", "[ -~]{0,20}"), 0..3),
    )
        .prop_map(|(chunks, last_zeros, last_extensions, trailers)| BodySpec {
            chunks,
            last_zeros,
            last_extensions,
            trailers,
        })
}

/// Payload bytes: every value, CR and LF included.
fn fill(seed: u64, n: usize) -> impl Iterator<Item = u8> {
    let mut x = seed | 1;
    (0..n).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 24) as u8
    })
}

fn size_line(out: &mut Encoded, size: usize, upper: u16, zeros: usize, extensions: &[String]) {
    let hex = format!("{size:x}");
    for _ in 0..zeros {
        out.digits.push(out.bytes.len());
        out.bytes.push(b'0');
    }
    for (i, d) in hex.bytes().enumerate() {
        out.digits.push(out.bytes.len());
        out.bytes.push(if upper >> i & 1 == 1 {
            d.to_ascii_uppercase()
        } else {
            d
        });
    }
    for e in extensions {
        out.bytes.extend_from_slice(e.as_bytes());
    }
    crlf(out);
}

fn crlf(out: &mut Encoded) {
    out.crlfs.push(out.bytes.len());
    out.bytes.extend_from_slice(b"\r\n");
}

fn encode(spec: &BodySpec) -> Encoded {
    let mut out = Encoded {
        bytes: Vec::new(),
        payload: Vec::new(),
        digits: Vec::new(),
        crlfs: Vec::new(),
        data: Vec::new(),
    };
    for c in &spec.chunks {
        size_line(&mut out, c.size, c.upper, c.leading_zeros, &c.extensions);
        let start = out.bytes.len();
        out.bytes.extend(fill(c.seed, c.size));
        out.payload.extend_from_slice(&out.bytes[start..]);
        out.data.push(start..out.bytes.len());
        crlf(&mut out);
    }
    size_line(&mut out, 0, 0, spec.last_zeros, &spec.last_extensions);
    for (name, value) in &spec.trailers {
        out.bytes
            .extend_from_slice(format!("{name}: {value}").as_bytes());
        crlf(&mut out);
    }
    crlf(&mut out);
    out
}

/// A walk's result (or the first error), unless a check on the way failed.
type Outcome<T> = Result<Result<T, ChunkError>, TestCaseError>;

/// Sorted, deduplicated cut points in `0..=len`.
fn cuts(points: &[Index], len: usize) -> Vec<usize> {
    let mut at: Vec<usize> = points.iter().map(|i| i.index(len + 1)).collect();
    at.push(0);
    at.push(len);
    at.sort_unstable();
    at.dedup();
    at
}

/// What feeding `input` in pieces gives: bytes consumed and whether the body ended, or the
/// first error. Checks on the way that `scan` consumes a whole piece unless the body ends
/// in it, ends exactly when it should never earlier, and consumes nothing once done.
fn scan_pieces(input: &[u8], cuts: &[usize]) -> Outcome<(usize, bool)> {
    let mut c = Chunked::default();
    let mut consumed = 0;
    for w in cuts.windows(2) {
        let piece = &input[w[0]..w[1]];
        let was_done = c.is_done();
        match c.scan(piece) {
            Ok((n, done)) => {
                prop_assert!(n <= piece.len());
                prop_assert_eq!(done, c.is_done());
                if was_done {
                    prop_assert_eq!((n, done), (0, true), "consumed after the end");
                } else if !done {
                    prop_assert_eq!(n, piece.len(), "stopped early without ending");
                }
                consumed += n;
            }
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok((consumed, c.is_done())))
}

/// The same with `step`: also returns the data bytes, and checks every step makes progress.
fn step_pieces(input: &[u8], cuts: &[usize]) -> Outcome<(usize, bool, Vec<u8>)> {
    let mut c = Chunked::default();
    let mut consumed = 0;
    let mut data = Vec::new();
    for w in cuts.windows(2) {
        let piece = &input[w[0]..w[1]];
        let mut at = 0;
        while at < piece.len() {
            let rest = &piece[at..];
            if c.is_done() {
                prop_assert_eq!(c.step(rest), Ok(Step::Done(0)));
                prop_assert_eq!(c.clone().scan(rest), Ok((0, true)));
                break;
            }
            match c.step(rest) {
                Ok(Step::Data(n)) => {
                    prop_assert!((1..=rest.len()).contains(&n), "data {n} of {}", rest.len());
                    data.extend_from_slice(&rest[..n]);
                    at += n;
                }
                Ok(Step::Framing(n)) => {
                    prop_assert!(
                        (1..=rest.len()).contains(&n),
                        "framing {n} of {}",
                        rest.len()
                    );
                    prop_assert!(!c.is_done());
                    at += n;
                }
                Ok(Step::Done(n)) => {
                    prop_assert!((1..=rest.len()).contains(&n), "done {n} of {}", rest.len());
                    prop_assert!(c.is_done());
                    at += n;
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        consumed += at;
    }
    Ok(Ok((consumed, c.is_done(), data)))
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn chunked_bodies_end_exactly_whatever_the_split(
        spec in body_spec(0..6),
        junk in proptest::collection::vec(any::<u8>(), 0..64),
        points in proptest::collection::vec(any::<Index>(), 0..10),
    ) {
        let body = encode(&spec);
        let len = body.bytes.len();
        let mut input = body.bytes.clone();
        input.extend_from_slice(&junk);

        prop_assert_eq!(Chunked::default().scan(&input), Ok((len, true)));
        let cuts = cuts(&points, input.len());
        prop_assert_eq!(scan_pieces(&input, &cuts)?, Ok((len, true)));
        let (consumed, done, data) = step_pieces(&input, &cuts)?
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!((consumed, done), (len, true));
        prop_assert!(data == body.payload, "data differs");

        // Never done before the last byte of the body.
        for cut in cuts.iter().filter(|&&c| c < len) {
            prop_assert_eq!(Chunked::default().scan(&input[..*cut]), Ok((*cut, false)));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_do_not_depend_on_the_split(
        input in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(
                select(b"0123456789abcdefABCDEFxX;=\" \t\r\n:\x00\x7f\x80".to_vec()), 0..300),
            (body_spec(0..3), proptest::collection::vec(mutation(), 1..4),
             proptest::collection::vec(any::<u8>(), 0..16))
                .prop_map(|(spec, m, junk)| {
                    let mut v = mutate(encode(&spec).bytes, &m);
                    v.extend_from_slice(&junk);
                    v
                }),
        ],
        points in proptest::collection::vec(any::<Index>(), 0..10),
    ) {
        let whole = Chunked::default().scan(&input);
        if let Ok((n, done)) = whole {
            prop_assert!(n <= input.len());
            prop_assert!(done || n == input.len());
        }
        let cuts = cuts(&points, input.len());
        prop_assert_eq!(scan_pieces(&input, &cuts)?, whole);
        let stepped = step_pieces(&input, &cuts)?.map(|(n, done, _)| (n, done));
        prop_assert_eq!(stepped, whole);
    }
}

#[derive(Clone, Debug)]
enum BodyMutation {
    /// A hex digit of a size line becomes this byte: neither hex nor `;` (a `;` after the
    /// first digit legitimately starts an extension, which makes a different, valid size).
    SizeDigit(Index, u8),
    CrlfToLf(Index),
    /// One more byte in a chunk's data, at a position in it.
    Lengthen(Index, Index, u8),
    /// One byte fewer.
    Shorten(Index, Index),
}

fn body_mutation() -> impl Strategy<Value = BodyMutation> {
    let not_hex = any::<u8>().prop_filter("not a hex digit or `;`", |b| {
        !b.is_ascii_hexdigit() && *b != b';'
    });
    prop_oneof![
        (any::<Index>(), not_hex).prop_map(|(i, b)| BodyMutation::SizeDigit(i, b)),
        any::<Index>().prop_map(BodyMutation::CrlfToLf),
        (any::<Index>(), any::<Index>(), any::<u8>())
            .prop_map(|(c, i, b)| BodyMutation::Lengthen(c, i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(c, i)| BodyMutation::Shorten(c, i)),
    ]
}

fn mutate_body(body: &Encoded, m: &BodyMutation) -> Vec<u8> {
    let mut bytes = body.bytes.clone();
    match *m {
        BodyMutation::SizeDigit(i, b) => bytes[body.digits[i.index(body.digits.len())]] = b,
        BodyMutation::CrlfToLf(i) => {
            bytes.remove(body.crlfs[i.index(body.crlfs.len())]);
        }
        BodyMutation::Lengthen(c, i, b) => {
            let data = &body.data[c.index(body.data.len())];
            bytes.insert(data.start + i.index(data.len() + 1), b);
        }
        BodyMutation::Shorten(c, i) => {
            let data = &body.data[c.index(body.data.len())];
            bytes.remove(data.start + i.index(data.len()));
        }
    }
    bytes
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn framing_mutations_are_refused(
        spec in body_spec(1..5),
        m in body_mutation(),
        junk in proptest::collection::vec(any::<u8>(), 0..32),
        points in proptest::collection::vec(any::<Index>(), 0..6),
    ) {
        let body = encode(&spec);
        let mut input = mutate_body(&body, &m);
        input.extend_from_slice(&junk);
        let whole = Chunked::default().scan(&input);
        prop_assert!(whole.is_err(), "{:?} accepted: {:?}", m, whole);
        let cuts = cuts(&points, input.len());
        prop_assert!(scan_pieces(&input, &cuts)?.is_err());
    }
}
