//! Request and response heads: parsed in place, classified, checked, framed.

use std::mem::MaybeUninit;

use crate::Span;

/// Headers per message, as HAProxy's `tune.http.maxhdr` (101): more is refused (431).
pub const MAX_HEADERS: usize = 100;
/// Options a `Connection` header may name (beyond close, keep-alive and upgrade).
const MAX_CONNECTION_OPTIONS: usize = 16;

/// The header names the proxy acts on; everything else is [`Name::Other`] and passes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    ProxyAuthorization,
    ProxyAuthenticate,
    Expect,
    XForwardedFor,
    XForwardedProto,
    Forwarded,
    Cookie,
    SetCookie,
    RetryAfter,
    XRequestId,
}

impl Name {
    /// Which known header `name` is (ASCII case-insensitive); by length first, so most
    /// names cost one comparison.
    pub fn classify(name: &[u8]) -> Name {
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        match name.len() {
            2 if is("te") => Name::Te,
            4 if is("host") => Name::Host,
            6 if is("cookie") => Name::Cookie,
            6 if is("expect") => Name::Expect,
            7 if is("upgrade") => Name::Upgrade,
            7 if is("trailer") => Name::Trailer,
            9 if is("forwarded") => Name::Forwarded,
            10 if is("connection") => Name::Connection,
            10 if is("keep-alive") => Name::KeepAlive,
            10 if is("set-cookie") => Name::SetCookie,
            11 if is("retry-after") => Name::RetryAfter,
            12 if is("x-request-id") => Name::XRequestId,
            14 if is("content-length") => Name::ContentLength,
            15 if is("x-forwarded-for") => Name::XForwardedFor,
            16 if is("proxy-connection") => Name::ProxyConnection,
            17 if is("transfer-encoding") => Name::TransferEncoding,
            17 if is("x-forwarded-proto") => Name::XForwardedProto,
            18 if is("proxy-authenticate") => Name::ProxyAuthenticate,
            19 if is("proxy-authorization") => Name::ProxyAuthorization,
            _ => Name::Other,
        }
    }

    /// Never forwarded as received: hop-by-hop headers (RFC 9110 §7.6.1), and the framing
    /// headers, which the proxy writes anew from the normalised framing.
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Name::ContentLength
                | Name::TransferEncoding
                | Name::Connection
                | Name::KeepAlive
                | Name::ProxyConnection
                | Name::Te
                | Name::Trailer
                | Name::Upgrade
                | Name::ProxyAuthorization
                | Name::ProxyAuthenticate
        )
    }
}

/// One header line of a parsed head.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: Span,
    pub value: Span,
    pub kind: Name,
    /// Not to be forwarded: hop-by-hop by name, a framing header, or named in `Connection`.
    pub hop: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Trace,
    Patch,
    Connect,
    Other,
}

impl Method {
    /// The method named `m` (case-sensitive, as RFC 9110 §9.1 says).
    pub fn of(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            "CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// May be sent again after a failure before any response byte (RFC 9110 §9.2.2).
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Options
                | Method::Trace
                | Method::Put
                | Method::Delete
        )
    }
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body.
    None,
    /// Exactly this many bytes (never 0: that is `None`).
    Length(u64),
    /// Chunked transfer coding; see [`crate::Chunked`].
    Chunked,
    /// Responses only: everything until the member closes.
    UntilClose,
}

/// A parsed request head; spans point into the buffer it was parsed from.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// Bytes of the head, final blank line included: the body (or the next request) follows.
    pub head_len: usize,
    pub method: Method,
    pub method_span: Span,
    /// The origin-form target (path and query), `*`, or the path and query of an
    /// absolute-form target (empty when it has none: send `/`).
    pub target: Span,
    /// The authority of an absolute-form (or CONNECT's authority-form) target.
    pub authority: Option<Span>,
    pub http10: bool,
    /// The `Host` header's value.
    pub host: Option<Span>,
    pub body: Body,
    /// The client lets the connection stay open after this exchange.
    pub keep_alive: bool,
    /// The `Upgrade` header's value, when `Connection` asks for an upgrade.
    pub upgrade: Option<Span>,
    pub expect_continue: bool,
}

/// A parsed response head.
#[derive(Clone, Copy, Debug)]
pub struct Response {
    pub head_len: usize,
    pub status: u16,
    /// The reason phrase as sent (may be empty).
    pub reason: Span,
    pub http10: bool,
    pub body: Body,
    /// A valid `Content-Length` that frames the message or, for HEAD and 304, describes
    /// the representation (re-sent as is).
    pub content_length: Option<u64>,
    /// The member lets the connection be reused after this response.
    pub keep_alive: bool,
    /// The `Upgrade` header's value on a 101.
    pub upgrade: Option<Span>,
}

impl Response {
    /// 1xx other than 101: more heads follow on the same exchange.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Why a head was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Not valid HTTP/1.1, or ambiguous framing: 400 from a client, 502 from a member.
    Malformed(&'static str),
    /// The head does not fit the buffer (431).
    TooLarge,
    /// More than [`MAX_HEADERS`] fields (431).
    TooManyHeaders,
}

impl Error {
    /// The status to answer a client with.
    pub fn status(&self) -> u16 {
        match self {
            Error::Malformed(_) => 400,
            Error::TooLarge | Error::TooManyHeaders => 431,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Error::Malformed(why) => why,
            Error::TooLarge => "the request head is too large",
            Error::TooManyHeaders => "too many header fields",
        }
    }
}

fn syntax(e: httparse::Error) -> Error {
    Error::Malformed(match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => return Error::TooManyHeaders,
        httparse::Error::Version => "invalid HTTP version",
    })
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(s), Some(e)) => &v[s..=e],
        _ => &[],
    }
}

/// Comma-separated list elements with their spans (relative to `v`), OWS trimmed; empty
/// elements are skipped as RFC 9110 §5.6.1 asks.
fn elements(v: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut start = 0;
    v.split(|b| *b == b',').filter_map(move |raw| {
        let at = start;
        start += raw.len() + 1;
        let t = trim(raw);
        if t.is_empty() {
            return None;
        }
        let offset = at + (t.as_ptr() as usize - raw.as_ptr() as usize);
        Some((offset, t))
    })
}

/// What the framing-relevant headers said, gathered over one head.
#[derive(Default)]
struct Framing {
    content_length: Option<u64>,
    /// Transfer codings seen, and whether the last one is `chunked`.
    te_codings: u32,
    te_chunked_count: u32,
    te_last_chunked: bool,
    te_seen: bool,
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    options: [Span; MAX_CONNECTION_OPTIONS],
    option_count: usize,
    host: Option<Span>,
    upgrade_value: Option<Span>,
    expect_continue: bool,
}

impl Framing {
    fn content_length(&mut self, v: &[u8]) -> Result<(), Error> {
        let mut any = false;
        for (_, e) in elements(v) {
            any = true;
            if e.len() > 19 || !e.iter().all(u8::is_ascii_digit) {
                return Err(Error::Malformed("invalid Content-Length"));
            }
            let n = e.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            match self.content_length {
                Some(prev) if prev != n => {
                    return Err(Error::Malformed("conflicting Content-Length values"));
                }
                _ => self.content_length = Some(n),
            }
        }
        if !any {
            return Err(Error::Malformed("empty Content-Length"));
        }
        Ok(())
    }

    fn transfer_encoding(&mut self, v: &[u8]) {
        self.te_seen = true;
        for (_, coding) in elements(v) {
            self.te_codings += 1;
            // A coding may carry parameters (`gzip;q=1` is not valid here, but be exact).
            let chunked = coding.eq_ignore_ascii_case(b"chunked");
            self.te_chunked_count += u32::from(chunked);
            self.te_last_chunked = chunked;
        }
    }

    fn connection(&mut self, value: Span, v: &[u8]) -> Result<(), Error> {
        for (at, token) in elements(v) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else {
                if self.option_count == MAX_CONNECTION_OPTIONS {
                    return Err(Error::Malformed("too many Connection options"));
                }
                self.options[self.option_count] = value.sub(at, at + token.len());
                self.option_count += 1;
            }
        }
        Ok(())
    }

    /// One header: classified, checked, recorded.
    fn field(
        &mut self,
        buf: &[u8],
        h: &httparse::Header<'_>,
        request: bool,
    ) -> Result<Field, Error> {
        let kind = Name::classify(h.name.as_bytes());
        let name = Span::within(buf, h.name.as_bytes());
        let value = Span::within(buf, h.value);
        match kind {
            Name::Host if request => {
                if self.host.is_some() {
                    return Err(Error::Malformed("more than one Host header"));
                }
                if !h.value.iter().all(|&b| is_host_char(b)) {
                    return Err(Error::Malformed("invalid Host header"));
                }
                self.host = Some(value);
            }
            Name::ContentLength => self.content_length(h.value)?,
            Name::TransferEncoding => self.transfer_encoding(h.value),
            Name::Connection => self.connection(value, h.value)?,
            Name::Upgrade => self.upgrade_value = Some(value),
            Name::Expect if request => {
                self.expect_continue |= trim(h.value).eq_ignore_ascii_case(b"100-continue");
            }
            _ => {}
        }
        Ok(Field {
            name,
            value,
            kind,
            hop: kind.is_hop_by_hop(),
        })
    }

    /// Marks the fields that `Connection` named as hop-by-hop.
    fn mark_options(&self, buf: &[u8], fields: &mut [Field]) {
        if self.option_count == 0 {
            return;
        }
        let options = &self.options[..self.option_count];
        // `Connection: host` would strip what routing and the member need: Host stays.
        for f in fields.iter_mut().filter(|f| !f.hop && f.kind != Name::Host) {
            let name = f.name.of(buf);
            f.hop = options.iter().any(|o| o.of(buf).eq_ignore_ascii_case(name));
        }
    }
}

/// reg-name, IP literal and port characters (RFC 3986 §3.2.2): anything else in `Host`
/// (spaces, commas, `@`, `/`) is refused before it reaches routing or a member.
fn is_host_char(b: u8) -> bool {
    HOST_CHARS[usize::from(b)]
}

const HOST_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'.' | b'-'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
            );
        b += 1;
    }
    t
};

/// Parses a request head at the start of `buf`. `Ok(None)`: incomplete, read more (up to
/// `max_head` bytes: beyond that the head is refused as too large). `fields` is cleared and
/// filled with the header lines; keep it across requests so parsing allocates nothing.
pub fn parse_request(
    buf: &[u8],
    fields: &mut Vec<Field>,
    max_head: usize,
) -> Result<Option<Request>, Error> {
    fields.clear();
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        Ok(httparse::Status::Complete(_)) => return Err(Error::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() >= max_head => return Err(Error::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(syntax(e)),
    };
    let (Some(method_str), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Error::Malformed("incomplete request line"));
    };
    let mut framing = Framing::default();
    for h in req.headers.iter() {
        fields.push(framing.field(buf, h, true)?);
    }
    framing.mark_options(buf, fields);

    let method = Method::of(method_str);
    let http10 = minor == 0;
    let path_span = Span::within(buf, path.as_bytes());
    let (target, authority) = request_target(method, path.as_bytes(), path_span)?;

    match (framing.host, authority) {
        (None, _) if !http10 => return Err(Error::Malformed("missing Host header")),
        (Some(host), Some(auth))
            if method != Method::Connect && !host.of(buf).eq_ignore_ascii_case(auth.of(buf)) =>
        {
            return Err(Error::Malformed(
                "the absolute-form target names another authority than Host",
            ));
        }
        _ => {}
    }

    let body = if framing.te_seen {
        if framing.content_length.is_some() {
            return Err(Error::Malformed(
                "Content-Length together with Transfer-Encoding",
            ));
        }
        if http10 {
            return Err(Error::Malformed("Transfer-Encoding in an HTTP/1.0 request"));
        }
        // Only `chunked`, once: any other coding would need the member to decode what the
        // proxy cannot check (RFC 9112 §6.3 item 4 allows refusing it).
        if framing.te_codings != 1 || framing.te_chunked_count != 1 {
            return Err(Error::Malformed(
                "Transfer-Encoding must be exactly chunked",
            ));
        }
        Body::Chunked
    } else {
        match framing.content_length {
            Some(0) | None => Body::None,
            Some(n) => Body::Length(n),
        }
    };
    let keep_alive = if http10 {
        framing.keep_alive && !framing.close
    } else {
        !framing.close
    };
    Ok(Some(Request {
        head_len,
        method,
        method_span: Span::within(buf, method_str.as_bytes()),
        target,
        authority,
        http10,
        host: framing.host,
        body,
        keep_alive,
        upgrade: framing.upgrade_value.filter(|_| framing.upgrade && !http10),
        expect_continue: framing.expect_continue && !http10 && body != Body::None,
    }))
}

/// Splits a request target into what is sent on (path and query) and an authority.
fn request_target(method: Method, path: &[u8], span: Span) -> Result<(Span, Option<Span>), Error> {
    if method == Method::Connect {
        return Ok((span, Some(span)));
    }
    if path.first() == Some(&b'/') {
        return Ok((span, None));
    }
    if path == b"*" {
        return if method == Method::Options {
            Ok((span, None))
        } else {
            Err(Error::Malformed("`*` is a target for OPTIONS only"))
        };
    }
    let scheme_len = if starts_with_ignore_case(path, b"http://") {
        7
    } else if starts_with_ignore_case(path, b"https://") {
        8
    } else {
        return Err(Error::Malformed("invalid request target"));
    };
    let rest = &path[scheme_len..];
    let auth_len = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..auth_len];
    if authority.is_empty() || authority.contains(&b'@') {
        return Err(Error::Malformed("invalid authority in the request target"));
    }
    if rest.get(auth_len).is_some_and(|b| *b != b'/') {
        return Err(Error::Malformed("an absolute-form target needs a path"));
    }
    let auth = span.sub(scheme_len, scheme_len + auth_len);
    let target = span.sub(scheme_len + auth_len, path.len());
    Ok((target, Some(auth)))
}

/// The reason phrase of the status line that starts `buf` (after any empty lines):
/// httparse checked the line, and with single spaces it is `HTTP/1.x NNN <reason>`. Taken
/// from the buffer itself, as sent (httparse hands back no slice for obs-text reasons).
fn reason_phrase(buf: &[u8]) -> Span {
    let start = buf
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(0);
    let line = &buf[start..];
    let end = start
        + line
            .iter()
            .position(|b| matches!(b, b'\r' | b'\n'))
            .unwrap_or(line.len());
    let from = (start + 13).min(end);
    Span {
        start: from as u32,
        end: end as u32,
    }
}

fn starts_with_ignore_case(v: &[u8], prefix: &[u8]) -> bool {
    v.len() >= prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Parses a member's response head to a request made with `method`. Same contract as
/// [`parse_request`]; a malformed head is the member's fault (502).
pub fn parse_response(
    buf: &[u8],
    fields: &mut Vec<Field>,
    max_head: usize,
    method: Method,
) -> Result<Option<Response>, Error> {
    fields.clear();
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        Ok(httparse::Status::Complete(_)) => return Err(Error::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() >= max_head => return Err(Error::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(syntax(e)),
    };
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(Error::Malformed("incomplete status line"));
    };
    let reason = reason_phrase(buf);
    let mut framing = Framing::default();
    for h in resp.headers.iter() {
        fields.push(framing.field(buf, h, false)?);
    }
    framing.mark_options(buf, fields);
    let http10 = minor == 0;
    let mut keep_alive = if http10 {
        framing.keep_alive && !framing.close
    } else {
        !framing.close
    };
    let bodiless =
        (100..200).contains(&status) || status == 204 || status == 304 || method == Method::Head;
    let body = if bodiless {
        Body::None
    } else if framing.te_seen {
        // Transfer-Encoding wins over Content-Length, and such a connection is not reused
        // (RFC 9112 §6.3 item 3).
        if framing.content_length.is_some() {
            keep_alive = false;
        }
        if framing.te_last_chunked && framing.te_chunked_count == 1 {
            Body::Chunked
        } else {
            Body::UntilClose
        }
    } else {
        match framing.content_length {
            Some(0) => Body::None,
            Some(n) => Body::Length(n),
            None => Body::UntilClose,
        }
    };
    if body == Body::UntilClose {
        keep_alive = false;
    }
    Ok(Some(Response {
        head_len,
        status,
        reason,
        http10,
        body,
        content_length: framing.content_length.filter(|_| !framing.te_seen),
        keep_alive,
        upgrade: framing
            .upgrade_value
            .filter(|_| status == 101 && framing.upgrade),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> Result<Option<Request>, Error> {
        parse_request(raw.as_bytes(), &mut Vec::new(), 64 * 1024)
    }

    fn ok(raw: &str) -> Request {
        match req(raw) {
            Ok(Some(r)) => r,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    fn bad(raw: &str) -> &'static str {
        match req(raw) {
            Err(Error::Malformed(why)) => why,
            other => panic!("{raw:?} should be refused: {other:?}"),
        }
    }

    #[test]
    fn a_simple_get() {
        let raw = "GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\nNEXT";
        let r = ok(raw);
        assert_eq!(r.head_len, raw.len() - 4);
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.target.of(raw.as_bytes()), b"/a?b=1");
        assert_eq!(r.host.map(|h| h.of(raw.as_bytes())), Some(&b"x"[..]));
        assert_eq!(r.body, Body::None);
        assert!(r.keep_alive);
    }

    #[test]
    fn incomplete_heads_ask_for_more_until_the_limit() {
        assert!(matches!(req("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None)));
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
        assert!(matches!(
            parse_request(long.as_bytes(), &mut Vec::new(), 64),
            Err(Error::TooLarge)
        ));
    }

    #[test]
    fn framing() {
        let r = ok("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(r.body, Body::Length(5));
        let r = ok("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(r.body, Body::Length(5));
        let r = ok("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(r.body, Body::Chunked);
        let r = ok("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.body, Body::None);
    }

    #[test]
    fn smuggling_vectors_are_refused() {
        for raw in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a@b/ HTTP/1.1\r\nHost: a@b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET x HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            bad(raw);
        }
    }

    #[test]
    fn syntax_errors_from_the_tokeniser() {
        for raw in [
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nBad Name: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        ] {
            assert!(matches!(req(raw), Err(Error::Malformed(_))), "{raw:?}");
        }
    }

    #[test]
    fn too_many_headers() {
        let mut raw = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..MAX_HEADERS {
            raw.push_str(&format!("X-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(req(&raw).unwrap_err(), Error::TooManyHeaders);
    }

    #[test]
    fn absolute_form_keeps_the_path() {
        let raw = "GET http://A.example:80/p?q HTTP/1.1\r\nHost: a.example:80\r\n\r\n";
        let r = ok(raw);
        assert_eq!(r.target.of(raw.as_bytes()), b"/p?q");
        assert_eq!(
            r.authority.map(|a| a.of(raw.as_bytes())),
            Some(&b"A.example:80"[..])
        );
        let raw = "GET http://a HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(ok(raw).target.is_empty());
    }

    #[test]
    fn connection_options_are_hop_by_hop() {
        let raw = "GET / HTTP/1.1\r\nHost: x\r\nConnection: X-Secret, close\r\nx-secret: 1\r\nX-Kept: 2\r\nKeep-Alive: 5\r\n\r\n";
        let mut fields = Vec::new();
        let r = parse_request(raw.as_bytes(), &mut fields, 1 << 16)
            .unwrap()
            .unwrap();
        assert!(!r.keep_alive);
        let forwarded: Vec<&[u8]> = fields
            .iter()
            .filter(|f| !f.hop)
            .map(|f| f.name.of(raw.as_bytes()))
            .collect();
        assert_eq!(forwarded, [&b"Host"[..], b"X-Kept"]);
    }

    #[test]
    fn http10_keep_alive_and_upgrade() {
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        let raw = "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let r = ok(raw);
        assert_eq!(
            r.upgrade.map(|u| u.of(raw.as_bytes())),
            Some(&b"websocket"[..])
        );
        assert!(
            ok("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
                .upgrade
                .is_none()
        );
    }

    #[test]
    fn expect_continue_only_with_a_body() {
        assert!(
            ok("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
                .expect_continue
        );
        assert!(!ok("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }

    fn resp(raw: &str, method: Method) -> Response {
        match parse_response(raw.as_bytes(), &mut Vec::new(), 1 << 16, method) {
            Ok(Some(r)) => r,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn response_framing() {
        let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", Method::Get);
        assert_eq!((r.body, r.keep_alive), (Body::Length(3), true));
        let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", Method::Head);
        assert_eq!((r.body, r.content_length), (Body::None, Some(3)));
        let r = resp("HTTP/1.1 200 OK\r\n\r\n", Method::Get);
        assert_eq!((r.body, r.keep_alive), (Body::UntilClose, false));
        let r = resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::Get,
        );
        assert_eq!(
            (r.body, r.keep_alive, r.content_length),
            (Body::Chunked, false, None)
        );
        let r = resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            Method::Get,
        );
        assert_eq!(r.body, Body::UntilClose);
        let r = resp("HTTP/1.1 204 No Content\r\n\r\n", Method::Get);
        assert_eq!((r.body, r.keep_alive), (Body::None, true));
        let r = resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", Method::Get);
        assert!(!r.keep_alive);
        let raw =
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert!(resp(raw, Method::Get).upgrade.is_some());
        assert!(resp("HTTP/1.1 100 Continue\r\n\r\n", Method::Post).is_interim());
        let raw = "HTTP/1.1 404 Not Found\r\n\r\n";
        assert_eq!(
            resp(raw, Method::Get).reason.of(raw.as_bytes()),
            b"Not Found"
        );
    }

    #[test]
    fn conflicting_response_lengths_are_refused() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert!(parse_response(raw.as_bytes(), &mut Vec::new(), 1 << 16, Method::Get).is_err());
    }
}
