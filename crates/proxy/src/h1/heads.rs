//! The heads fulcrum writes: a client's request rewritten for a member, a member's response
//! rewritten for the client, and fulcrum's own error answers. Fields that pass through are
//! copied as byte ranges of the buffer they were read into; hop-by-hop and framing fields
//! are dropped and the framing is written anew from the codec's normalised view, so what
//! the next hop frames by is exactly what fulcrum framed by.

use fulcrum_h1::{Body, Field, Name, Request, Response, write_decimal, write_field};

use crate::exchange::ConnInfo;
use crate::snapshot::MemberRt;

/// The request head for `member`. `drop_expect`: fulcrum answers `100 Continue` itself.
/// `strip`: leading bytes of the path its route keeps from the member.
#[allow(clippy::too_many_arguments)]
pub(crate) fn request(
    out: &mut Vec<u8>,
    buf: &[u8],
    fields: &[Field],
    req: &Request,
    strip: usize,
    conn: &ConnInfo,
    member: &MemberRt,
    drop_expect: bool,
) {
    request_line(
        out,
        req.method_span.of(buf),
        req.target.of(buf),
        strip,
        member,
    );
    for f in fields.iter().filter(|f| !f.hop) {
        match f.kind {
            // Written anew below.
            Name::XForwardedFor | Name::XForwardedProto => continue,
            Name::Host if member.host_override.is_some() => continue,
            Name::Expect if drop_expect => continue,
            _ => {}
        }
        let name = f.name.of(buf);
        if replaced_by_credentials(member, name) {
            continue;
        }
        write_field(out, name, f.value.of(buf));
    }
    let host = req.host.or(req.authority).map(|h| h.of(buf));
    let prior_xff = fields
        .iter()
        .filter(|f| f.kind == Name::XForwardedFor)
        .map(|f| f.value.of(buf));
    let body = match req.body {
        Body::Length(n) => Some(Some(n)),
        Body::Chunked => Some(None),
        Body::None | Body::UntilClose => None,
    };
    proxy_fields(out, conn, member, host, prior_xff, body);
    if let Some(upgrade) = req.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        write_field(out, b"Upgrade", upgrade.of(buf));
    }
    out.extend_from_slice(b"\r\n");
}

/// Adds a field to a finished head (before its blank line).
pub(crate) fn append_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    if out.ends_with(b"\r\n\r\n") {
        out.truncate(out.len() - 2);
        write_field(out, name, value);
        out.extend_from_slice(b"\r\n");
    }
}

/// Whether the client's field `name` is replaced by the member's own credentials.
pub(crate) fn replaced_by_credentials(member: &MemberRt, name: &[u8]) -> bool {
    let u = &member.upstream;
    !u.headers.is_empty()
        && u.headers
            .iter()
            .any(|(n, _)| n.as_str().as_bytes().eq_ignore_ascii_case(name))
}

/// The request line for `member`: method, target (absolute-form through a plain forward
/// proxy; without the first `strip` bytes of the path, which its route keeps; with the
/// member's base path and credential query), HTTP/1.1.
pub(crate) fn request_line(
    out: &mut Vec<u8>,
    method: &[u8],
    client_target: &[u8],
    strip: usize,
    member: &MemberRt,
) {
    let u = &member.upstream;
    out.clear();
    out.extend_from_slice(method);
    out.push(b' ');
    if u.proxy.is_some() && u.tls.is_none() {
        // Plain HTTP through a forward proxy: absolute-form.
        out.extend_from_slice(b"http://");
        out.extend_from_slice(member.authority.as_bytes());
    }
    target(out, client_target, strip, &u.base_path, &u.query);
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

/// The fields the proxy adds after the client's own: Host when the client sent none or the
/// member is sent its own,
/// `X-Forwarded-For` (earlier proxies' values, then this client), `X-Forwarded-Proto`,
/// `Forwarded`, the member's credentials, a forward proxy's credentials, and the framing
/// (`body`: Some(Some(n)) a length, Some(None) chunked, None no body).
pub(crate) fn proxy_fields<'a>(
    out: &mut Vec<u8>,
    conn: &ConnInfo,
    member: &MemberRt,
    host: Option<&[u8]>,
    prior_xff: impl Iterator<Item = &'a [u8]>,
    body: Option<Option<u64>>,
) {
    let u = &member.upstream;
    match (&member.host_override, host) {
        (Some(own), _) => write_field(out, b"Host", own.as_bytes()),
        (None, None) => write_field(out, b"Host", member.authority.as_bytes()),
        (None, Some(_)) => {}
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    for v in prior_xff {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(conn.client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    write_field(out, b"X-Forwarded-Proto", conn.proto().as_bytes());
    out.extend_from_slice(b"Forwarded: ");
    out.extend_from_slice(conn.forwarded.as_bytes());
    if let Some(h) = host {
        out.extend_from_slice(b";host=\"");
        out.extend_from_slice(h);
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
    for (name, values) in &u.headers {
        for v in values {
            write_field(out, name.as_str().as_bytes(), v.as_bytes());
        }
    }
    let plain_proxy = u.proxy.as_ref().filter(|_| u.tls.is_none());
    if let Some(auth) = plain_proxy.and_then(|p| p.authorization.as_ref()) {
        write_field(out, b"Proxy-Authorization", auth.as_bytes());
    }
    match body {
        Some(Some(n)) => {
            out.extend_from_slice(b"Content-Length: ");
            write_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Some(None) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        None => {}
    }
}

/// The target sent on: the member's base path before the client's path (less its first
/// `strip` bytes, a route's prefix), the member's credential query parameters after the
/// client's.
fn target(out: &mut Vec<u8>, client: &[u8], strip: usize, base_path: &str, extra_query: &str) {
    if strip == 0 && base_path.is_empty() && extra_query.is_empty() {
        out.extend_from_slice(if client.is_empty() { b"/" } else { client });
        return;
    }
    let (path, query) = match client.iter().position(|b| *b == b'?') {
        Some(q) => (&client[..q], &client[q + 1..]),
        None => (client, &b""[..]),
    };
    let path = path.get(strip..).unwrap_or_default();
    out.extend_from_slice(base_path.as_bytes());
    out.extend_from_slice(if path.is_empty() { b"/" } else { path });
    if !query.is_empty() || !extra_query.is_empty() {
        out.push(b'?');
        out.extend_from_slice(query);
        if !query.is_empty() && !extra_query.is_empty() {
            out.push(b'&');
        }
        out.extend_from_slice(extra_query.as_bytes());
    }
}

/// How the client gets the response body.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientFraming {
    /// As the member framed it (length, chunked, or none).
    AsIs,
    /// Chunked from the member, decoded for an HTTP/1.0 client and ended by closing.
    Decoded,
    /// Ended by closing the connection.
    Close,
}

/// The response head for the client.
pub(crate) struct ResponseHead<'a> {
    pub framing: ClientFraming,
    /// Close the client connection after this response.
    pub close: bool,
    pub client_http10: bool,
    /// A persistence cookie to add.
    pub set_cookie: Option<&'a str>,
}

pub(crate) fn response(
    out: &mut Vec<u8>,
    buf: &[u8],
    fields: &[Field],
    resp: &Response,
    head: &ResponseHead<'_>,
) {
    out.clear();
    status_line(out, resp.status, resp.reason.of(buf));
    for f in fields.iter().filter(|f| !f.hop) {
        write_field(out, f.name.of(buf), f.value.of(buf));
    }
    if resp.body == Body::Chunked {
        if head.framing == ClientFraming::AsIs {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
    } else if let Some(n) = resp.content_length {
        out.extend_from_slice(b"Content-Length: ");
        write_decimal(out, n);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(cookie) = head.set_cookie {
        write_field(out, b"Set-Cookie", cookie.as_bytes());
    }
    if let Some(upgrade) = resp.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        write_field(out, b"Upgrade", upgrade.of(buf));
    } else if head.close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if head.client_http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// An interim (1xx) response, relayed as the member sent it.
pub(crate) fn interim(out: &mut Vec<u8>, buf: &[u8], fields: &[Field], resp: &Response) {
    out.clear();
    status_line(out, resp.status, resp.reason.of(buf));
    for f in fields.iter().filter(|f| !f.hop) {
        write_field(out, f.name.of(buf), f.value.of(buf));
    }
    out.extend_from_slice(b"\r\n");
}

fn status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    write_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

fn canonical_reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// fulcrum's own answer: `<status> <reason>: <detail>` as plain text.
pub(crate) fn error(out: &mut Vec<u8>, status: u16, detail: &str, close: bool, head_only: bool) {
    let reason = canonical_reason(status);
    out.clear();
    status_line(out, status, reason.as_bytes());
    out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: ");
    // "503 Service Unavailable: <detail>\n"
    let body_len = 3 + 1 + reason.len() + 2 + detail.len() + 1;
    write_decimal(out, body_len as u64);
    out.extend_from_slice(if close {
        b"\r\nConnection: close\r\n\r\n".as_slice()
    } else {
        b"\r\n\r\n".as_slice()
    });
    if !head_only {
        write_decimal(out, u64::from(status));
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(detail.as_bytes());
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = |client: &str, base: &str, q: &str| {
            let mut out = Vec::new();
            target(&mut out, client.as_bytes(), 0, base, q);
            String::from_utf8(out).unwrap_or_default()
        };
        assert_eq!(t("/a?b=1", "", ""), "/a?b=1");
        assert_eq!(t("", "", ""), "/");
        assert_eq!(t("/a?b=1", "/base", "k=v"), "/base/a?b=1&k=v");
        assert_eq!(t("/a", "/base", ""), "/base/a");
        assert_eq!(t("/a", "", "k=v"), "/a?k=v");
        assert_eq!(t("", "/base", ""), "/base/");
    }

    #[test]
    fn stripped_targets_keep_what_follows_the_prefix() {
        let t = |client: &str, strip: usize, base: &str, q: &str| {
            let mut out = Vec::new();
            target(&mut out, client.as_bytes(), strip, base, q);
            String::from_utf8(out).unwrap_or_default()
        };
        // An API at /orders: the member gets its base path and what follows /orders.
        assert_eq!(t("/orders/1?x=2", 7, "", ""), "/1?x=2");
        assert_eq!(t("/orders/1?x=2", 7, "/api", "k=v"), "/api/1?x=2&k=v");
        assert_eq!(t("/orders", 7, "", ""), "/");
        assert_eq!(t("/orders?x=2", 7, "/api", ""), "/api/?x=2");
        assert_eq!(t("/orders/", 7, "/api", ""), "/api/");
    }

    #[test]
    fn error_bodies_match_their_length() {
        let mut out = Vec::new();
        error(&mut out, 503, "no member is available", true, false);
        let text = String::from_utf8(out).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{text}"
        );
        assert_eq!(body, "503 Service Unavailable: no member is available\n");
    }
}
