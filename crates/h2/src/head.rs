//! Request heads and trailers checked against RFC 9113 §8.1–8.3, read in place from the
//! decoder's arena.

use crate::hpack::FieldList;

/// What a valid request head holds beyond its fields: where each pseudo-header is (indices
/// into the field list) and the framing it announces.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HeadInfo {
    method: Option<u32>,
    scheme: Option<u32>,
    authority: Option<u32>,
    path: Option<u32>,
    host: Option<u32>,
    /// Fields before this index are pseudo-headers.
    regular: u32,
    pub(crate) content_length: Option<u64>,
    pub(crate) connect: bool,
    trailers: bool,
}

/// A decoded request head or trailer section, valid until the next call to
/// [`ServerConn::receive`](crate::ServerConn::receive).
#[derive(Clone, Copy)]
pub struct Head<'a> {
    pub(crate) list: &'a FieldList,
    pub(crate) info: &'a HeadInfo,
}

impl<'a> Head<'a> {
    fn at(&self, i: Option<u32>) -> Option<&'a [u8]> {
        self.list.get(i? as usize).map(|(_, v)| v)
    }

    /// `:method` (a token; empty for trailers).
    pub fn method(&self) -> &'a [u8] {
        self.at(self.info.method).unwrap_or_default()
    }

    /// `:scheme` (absent for CONNECT and trailers).
    pub fn scheme(&self) -> Option<&'a [u8]> {
        self.at(self.info.scheme)
    }

    /// `:path`: starts with `/`, or is `*` for OPTIONS; visible ASCII only (absent for
    /// CONNECT and trailers).
    pub fn path(&self) -> Option<&'a [u8]> {
        self.at(self.info.path)
    }

    /// `:authority`, or, without it, the `Host` field (when both are present they are equal).
    pub fn authority(&self) -> Option<&'a [u8]> {
        self.at(self.info.authority).or(self.at(self.info.host))
    }

    /// The `content-length` the request announced; the DATA received is held to it.
    pub fn content_length(&self) -> Option<u64> {
        self.info.content_length
    }

    pub fn is_connect(&self) -> bool {
        self.info.connect
    }

    /// Whether this is a trailer section rather than a request head.
    pub fn is_trailers(&self) -> bool {
        self.info.trailers
    }

    /// Every regular field in order, `cookie` crumbs and `host` included; names are
    /// lowercase. An HTTP/1 request needs its cookie crumbs joined into one field with "; "
    /// (RFC 9113 §8.2.3): see [`Head::cookies`].
    pub fn fields(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let list = self.list;
        (self.info.regular as usize..list.len()).filter_map(move |i| list.get(i))
    }

    /// The value of the first regular field named `name` (lowercase).
    pub fn get(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.fields().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The values of the `cookie` fields (crumbs), in order.
    pub fn cookies(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields()
            .filter(|(n, _)| *n == b"cookie")
            .map(|(_, v)| v)
    }
}

/// Why a request head or trailer section is malformed (RFC 9113 §8.1.1): a stream error of
/// type PROTOCOL_ERROR.
pub(crate) type Malformed = &'static str;

fn index(i: usize) -> u32 {
    // A field list's ranges are u32 offsets: it never holds more fields than that.
    i.min(u32::MAX as usize) as u32
}

/// Checks a request head and records where its parts are.
pub(crate) fn check_request(list: &FieldList) -> Result<HeadInfo, Malformed> {
    let mut info = HeadInfo::default();
    let mut regular_seen = false;
    for (i, (name, value)) in list.iter().enumerate() {
        if let Some(pseudo) = name.strip_prefix(b":") {
            if regular_seen {
                return Err("pseudo-header field after a regular field");
            }
            info.regular = index(i + 1);
            let slot = match pseudo {
                b"method" => {
                    if value.is_empty() || !all(value, TCHAR) {
                        return Err("invalid :method");
                    }
                    &mut info.method
                }
                b"scheme" => {
                    if !is_scheme(value) {
                        return Err("invalid :scheme");
                    }
                    &mut info.scheme
                }
                b"authority" => {
                    if value.is_empty() || !all(value, HOST) {
                        return Err("invalid :authority");
                    }
                    &mut info.authority
                }
                b"path" => {
                    if value.is_empty() {
                        return Err("empty :path");
                    }
                    if !value.iter().all(|&b| (0x21..0x7f).contains(&b)) {
                        return Err("invalid :path");
                    }
                    &mut info.path
                }
                b"status" => return Err("response pseudo-header in a request"),
                _ => return Err("unknown pseudo-header field"),
            };
            if slot.is_some() {
                return Err("duplicate pseudo-header field");
            }
            *slot = Some(index(i));
            continue;
        }
        regular_seen = true;
        regular(name, value)?;
        match name {
            b"content-length" => {
                let n = content_length(value)?;
                if info.content_length.is_some_and(|prev| prev != n) {
                    return Err("conflicting content-length values");
                }
                info.content_length = Some(n);
            }
            b"host" => {
                if info.host.is_some() {
                    return Err("more than one host field");
                }
                if value.is_empty() || !all(value, HOST) {
                    return Err("invalid host field");
                }
                info.host = Some(index(i));
            }
            _ => {}
        }
    }
    let value = |i: Option<u32>| list.get(i? as usize).map(|(_, v)| v);
    let Some(method) = value(info.method) else {
        return Err("missing :method");
    };
    if method == b"CONNECT" {
        info.connect = true;
        if info.scheme.is_some() || info.path.is_some() {
            return Err("CONNECT with :scheme or :path");
        }
        if info.authority.is_none() {
            return Err("CONNECT without :authority");
        }
    } else {
        if info.scheme.is_none() {
            return Err("missing :scheme");
        }
        match value(info.path) {
            None => return Err("missing :path"),
            Some(b"*") if method != b"OPTIONS" => {
                return Err(":path * outside OPTIONS");
            }
            Some(p) if p != b"*" && !p.starts_with(b"/") => {
                return Err(":path not in origin form");
            }
            Some(_) => {}
        }
    }
    if let (Some(a), Some(h)) = (value(info.authority), value(info.host))
        && a != h
    {
        return Err("host field differs from :authority");
    }
    Ok(info)
}

/// Checks a trailer section: regular fields only.
pub(crate) fn check_trailers(list: &FieldList) -> Result<HeadInfo, Malformed> {
    for (name, value) in list.iter() {
        if name.first() == Some(&b':') {
            return Err("pseudo-header field in trailers");
        }
        regular(name, value)?;
    }
    Ok(HeadInfo {
        trailers: true,
        ..HeadInfo::default()
    })
}

/// A regular field's name and value (RFC 9113 §8.2.1, §8.2.2).
fn regular(name: &[u8], value: &[u8]) -> Result<(), Malformed> {
    if name.is_empty() || !all(name, LOWER_TCHAR) {
        return Err("invalid field name");
    }
    if !all(value, VALUE) {
        return Err("invalid field value");
    }
    if matches!(value.first(), Some(b' ' | b'\t')) || matches!(value.last(), Some(b' ' | b'\t')) {
        return Err("field value with leading or trailing whitespace");
    }
    match name {
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade" => {
            Err("connection-specific field")
        }
        b"te" if value != b"trailers" => Err("te other than trailers"),
        _ => Ok(()),
    }
}

fn content_length(v: &[u8]) -> Result<u64, Malformed> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err("invalid content-length");
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn is_scheme(v: &[u8]) -> bool {
    matches!(v.first(), Some(b) if b.is_ascii_alphabetic())
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Byte classes, one bit each, looked up in one table.
const TCHAR: u8 = 1;
const LOWER_TCHAR: u8 = 2;
const HOST: u8 = 4;
/// May appear in a field value: HTAB, SP, VCHAR, obs-text (RFC 9110 §5.5), not DEL.
const VALUE: u8 = 8;

const CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        // RFC 9110 §5.6.2 token characters.
        let tchar = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        // reg-name, IP literal and port characters (RFC 3986 §3.2.2), as `fulcrum-h1`
        // checks Host: no userinfo (`@`), spaces, commas or slashes.
        let host = b.is_ascii_alphanumeric()
            || matches!(
                b,
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
        let value = b == b'\t' || (b >= 0x20 && b != 0x7f);
        t[i] = if tchar { TCHAR } else { 0 }
            | if tchar && !b.is_ascii_uppercase() {
                LOWER_TCHAR
            } else {
                0
            }
            | if host { HOST } else { 0 }
            | if value { VALUE } else { 0 };
        i += 1;
    }
    t
};

fn all(v: &[u8], class: u8) -> bool {
    v.iter().all(|&b| CLASSES[usize::from(b)] & class != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(fields: &[(&str, &str)]) -> FieldList {
        let mut l = FieldList::new();
        for (n, v) in fields {
            l.push(n.as_bytes(), v.as_bytes());
        }
        l
    }

    const GET: [(&str, &str); 4] = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "example.com"),
        (":path", "/a?b"),
    ];

    fn with(extra: &[(&str, &str)]) -> FieldList {
        let mut f = GET.to_vec();
        f.extend_from_slice(extra);
        list(&f)
    }

    #[test]
    fn a_valid_request_is_read_in_place() {
        let l = with(&[
            ("cookie", "a=1"),
            ("accept", "*/*"),
            ("cookie", "b=2"),
            ("content-length", "5"),
        ]);
        let info = check_request(&l).unwrap();
        let h = Head {
            list: &l,
            info: &info,
        };
        assert_eq!(h.method(), b"GET");
        assert_eq!(h.scheme(), Some(&b"https"[..]));
        assert_eq!(h.authority(), Some(&b"example.com"[..]));
        assert_eq!(h.path(), Some(&b"/a?b"[..]));
        assert_eq!(h.content_length(), Some(5));
        assert_eq!(h.fields().count(), 4);
        assert_eq!(h.cookies().collect::<Vec<_>>(), [&b"a=1"[..], b"b=2"]);
    }

    fn refused(l: FieldList, why: &str) {
        assert_eq!(check_request(&l).err(), Some(why));
    }

    #[test]
    fn uppercase_field_names_are_malformed() {
        refused(with(&[("Accept", "x")]), "invalid field name");
    }

    #[test]
    fn connection_specific_fields_are_malformed() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ] {
            refused(with(&[(name, "x")]), "connection-specific field");
        }
    }

    #[test]
    fn te_other_than_trailers_is_malformed() {
        check_request(&with(&[("te", "trailers")])).unwrap();
        refused(with(&[("te", "gzip")]), "te other than trailers");
    }

    #[test]
    fn pseudo_headers_after_regular_fields_are_malformed() {
        refused(
            list(&[
                (":method", "GET"),
                (":scheme", "https"),
                ("accept", "x"),
                (":path", "/"),
            ]),
            "pseudo-header field after a regular field",
        );
    }

    #[test]
    fn unknown_duplicate_and_response_pseudo_headers_are_malformed() {
        refused(
            with(&[(":protocol", "websocket")]),
            "unknown pseudo-header field",
        );
        refused(
            list(&[(":method", "GET"), (":method", "GET")]),
            "duplicate pseudo-header field",
        );
        refused(
            list(&[(":status", "200"), (":method", "GET")]),
            "response pseudo-header in a request",
        );
    }

    #[test]
    fn required_pseudo_headers_are_checked() {
        refused(list(&GET[1..]), "missing :method");
        refused(list(&[GET[0], GET[2], GET[3]]), "missing :scheme");
        refused(list(&GET[..3]), "missing :path");
        refused(
            list(&[(":method", "GET"), (":scheme", "https"), (":path", "")]),
            "empty :path",
        );
        refused(
            list(&[(":method", "GET"), (":scheme", "https"), (":path", "*")]),
            ":path * outside OPTIONS",
        );
        check_request(&list(&[
            (":method", "OPTIONS"),
            (":scheme", "https"),
            (":path", "*"),
        ]))
        .unwrap();
        refused(
            list(&[(":method", "GET"), (":scheme", "https"), (":path", "a b")]),
            "invalid :path",
        );
    }

    #[test]
    fn connect_takes_only_authority() {
        let l = list(&[(":method", "CONNECT"), (":authority", "example.com:443")]);
        let info = check_request(&l).unwrap();
        assert!(info.connect);
        refused(
            list(&[(":method", "CONNECT")]),
            "CONNECT without :authority",
        );
        refused(
            list(&[
                (":method", "CONNECT"),
                (":authority", "a:1"),
                (":path", "/"),
            ]),
            "CONNECT with :scheme or :path",
        );
    }

    #[test]
    fn host_is_checked_against_authority() {
        refused(
            with(&[("host", "other.com")]),
            "host field differs from :authority",
        );
        check_request(&with(&[("host", "example.com")])).unwrap();
        refused(
            with(&[("host", "example.com"), ("host", "example.com")]),
            "more than one host field",
        );
        refused(
            list(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "u@h"),
                (":path", "/"),
            ]),
            "invalid :authority",
        );
    }

    #[test]
    fn field_values_with_control_characters_or_edges_of_whitespace_are_malformed() {
        for v in ["a\rb", "a\nb", "a\0b", " a", "a\t", "\x7f"] {
            assert!(check_request(&with(&[("x", v)])).is_err(), "{v:?}");
        }
        check_request(&with(&[("x", "a\tb c")])).unwrap();
    }

    #[test]
    fn content_length_must_be_digits_and_agree() {
        refused(with(&[("content-length", "1,2")]), "invalid content-length");
        refused(with(&[("content-length", "+1")]), "invalid content-length");
        refused(
            with(&[("content-length", "1"), ("content-length", "2")]),
            "conflicting content-length values",
        );
        check_request(&with(&[("content-length", "3"), ("content-length", "3")])).unwrap();
    }

    #[test]
    fn trailers_carry_no_pseudo_headers() {
        check_trailers(&list(&[("x-sum", "1")])).unwrap();
        assert_eq!(
            check_trailers(&list(&[(":path", "/")])).err(),
            Some("pseudo-header field in trailers")
        );
        assert!(check_trailers(&list(&[("Upper", "1")])).is_err());
    }
}
