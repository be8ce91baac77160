//! `ServerConn` against hand-built frames: one test per rule of RFC 9113 (and the abuse
//! bounds), named for the rule.

#![allow(clippy::unwrap_used)] // test helpers may panic

use fulcrum_h2::frame::{self, Header, PREFACE, flag, kind, setting};
use fulcrum_h2::hpack::{self, Decoder, FieldList};
use fulcrum_h2::{ConnError, ErrorCode, Event, ServerConn, Settings};

// ------------------------------------------------------------------ a tiny client

fn frame_bytes(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Header {
        len: payload.len() as u32,
        kind,
        flags,
        stream,
    }
    .write(&mut out);
    out.extend_from_slice(payload);
    out
}

/// A header block of literals without indexing, names exactly as given.
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        out.push(0);
        hpack::write_integer(&mut out, 0, 7, n.len());
        out.extend_from_slice(n.as_bytes());
        hpack::write_integer(&mut out, 0, 7, v.len());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

const GET: [(&str, &str); 4] = [
    (":method", "GET"),
    (":scheme", "https"),
    (":authority", "example.com"),
    (":path", "/"),
];

fn post(len: usize) -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".into()),
        (":scheme", "https".into()),
        (":authority", "example.com".into()),
        (":path", "/up".into()),
        ("content-length", len.to_string()),
    ]
}

fn headers(stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
    let flags = flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 };
    frame_bytes(kind::HEADERS, flags, stream, &block(fields))
}

fn post_headers(stream: u32, len: usize) -> Vec<u8> {
    let f = post(len);
    let f: Vec<(&str, &str)> = f.iter().map(|(n, v)| (*n, v.as_str())).collect();
    headers(stream, &f, false)
}

fn data(stream: u32, body: &[u8], end_stream: bool) -> Vec<u8> {
    frame_bytes(
        kind::DATA,
        if end_stream { flag::END_STREAM } else { 0 },
        stream,
        body,
    )
}

fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::write_settings(&mut out, params);
    out
}

fn window_update(stream: u32, inc: u32) -> Vec<u8> {
    let mut out = Vec::new();
    frame::write_window_update(&mut out, stream, inc);
    out
}

fn rst(stream: u32, code: ErrorCode) -> Vec<u8> {
    let mut out = Vec::new();
    frame::write_rst_stream(&mut out, stream, code);
    out
}

/// What a frame fed in produced: events (data as bytes), or the connection error.
#[derive(Debug, PartialEq)]
enum Got {
    Ev(Event),
    Body(u32, Vec<u8>, bool),
    Err(ErrorCode),
}

struct Peer {
    conn: ServerConn,
    decoder: Decoder,
}

impl Peer {
    /// A connection past the preface and both SETTINGS exchanges, output drained.
    fn new() -> Peer {
        Peer::with(Settings::default())
    }

    fn with(s: Settings) -> Peer {
        let mut p = Peer {
            conn: ServerConn::new(s),
            decoder: Decoder::new(4096),
        };
        let mut start = PREFACE.to_vec();
        start.extend(settings(&[]));
        start.extend(frame_bytes(kind::SETTINGS, flag::ACK, 0, &[]));
        assert_eq!(
            p.feed(&start),
            [Got::Ev(Event::Nothing), Got::Ev(Event::Nothing)]
        );
        let out = p.frames();
        assert_eq!(out[0].0.kind, kind::SETTINGS);
        p
    }

    /// Feeds `bytes` (whole frames), collecting every event.
    fn feed(&mut self, mut bytes: &[u8]) -> Vec<Got> {
        let mut got = Vec::new();
        loop {
            match self.conn.receive(bytes) {
                Ok((_, Event::NeedMore)) => {
                    assert!(bytes.is_empty(), "left over: {bytes:?}");
                    return got;
                }
                Ok((
                    n,
                    Event::Data {
                        stream,
                        data,
                        end_stream,
                    },
                )) => {
                    got.push(Got::Body(stream, bytes[data].to_vec(), end_stream));
                    bytes = &bytes[n..];
                }
                Ok((n, e)) => {
                    got.push(Got::Ev(e));
                    bytes = &bytes[n..];
                }
                Err(e) => {
                    got.push(Got::Err(e.code));
                    return got;
                }
            }
        }
    }

    /// Feeds one frame and expects exactly one outcome.
    fn one(&mut self, bytes: &[u8]) -> Got {
        let mut got = self.feed(bytes);
        assert_eq!(got.len(), 1, "{got:?}");
        got.pop().unwrap()
    }

    /// The frames queued in the output (drained).
    fn frames(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut out = self.conn.output().to_vec();
        self.conn.consume_output(out.len());
        let mut frames = Vec::new();
        while let Some(h) = Header::parse(&out) {
            let end = 9 + h.len as usize;
            frames.push((h, out[9..end].to_vec()));
            out.drain(..end);
        }
        assert!(out.is_empty());
        frames
    }

    /// The RST_STREAM codes queued, by stream.
    fn resets(&mut self) -> Vec<(u32, ErrorCode)> {
        self.frames()
            .iter()
            .filter(|(h, _)| h.kind == kind::RST_STREAM)
            .map(|(h, p)| {
                (
                    h.stream,
                    ErrorCode(u32::from_be_bytes(p[..4].try_into().unwrap())),
                )
            })
            .collect()
    }

    /// The GOAWAY queued: (last stream, code).
    fn goaway(&mut self) -> Option<(u32, ErrorCode)> {
        self.frames()
            .iter()
            .find(|(h, _)| h.kind == kind::GOAWAY)
            .map(|(_, p)| {
                (
                    u32::from_be_bytes(p[..4].try_into().unwrap()),
                    ErrorCode(u32::from_be_bytes(p[4..8].try_into().unwrap())),
                )
            })
    }

    fn decode(&mut self, block: &[u8]) -> Vec<(String, String)> {
        let mut list = FieldList::new();
        self.decoder.decode(block, &mut list, usize::MAX).unwrap();
        list.iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    fn request(&mut self, stream: u32, end_stream: bool) {
        assert_eq!(
            self.one(&headers(stream, &GET, end_stream)),
            Got::Ev(Event::Request { stream, end_stream })
        );
    }
}

fn conn_err(code: ErrorCode) -> Got {
    Got::Err(code)
}

fn reset_by_us(stream: u32, code: ErrorCode) -> Got {
    Got::Ev(Event::StreamReset {
        stream,
        code,
        remote: false,
    })
}

// ------------------------------------------------------------------ preface and settings

#[test]
fn server_settings_are_queued_at_once_with_the_connection_window_raised() {
    let mut conn = ServerConn::new(Settings::default());
    let out = conn.output().to_vec();
    let h = Header::parse(&out).unwrap();
    assert_eq!((h.kind, h.flags, h.stream), (kind::SETTINGS, 0, 0));
    let params: Vec<(u16, u32)> = out[9..9 + h.len as usize]
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    assert!(params.contains(&(setting::MAX_CONCURRENT_STREAMS, 256)));
    assert!(params.contains(&(setting::INITIAL_WINDOW_SIZE, 1 << 20)));
    let wu = Header::parse(&out[9 + h.len as usize..]).unwrap();
    assert_eq!((wu.kind, wu.stream), (kind::WINDOW_UPDATE, 0));
    let at = 18 + h.len as usize;
    assert_eq!(frame::window_increment(&out[at..]), (1 << 20) - 65_535);
    conn.consume_output(out.len());
    assert!(conn.output().is_empty());
}

#[test]
fn preface_arrives_in_pieces() {
    let mut conn = ServerConn::new(Settings::default());
    assert_eq!(conn.receive(&PREFACE[..10]), Ok((0, Event::NeedMore)));
    assert_eq!(conn.receive(PREFACE), Ok((24, Event::Nothing)));
    assert_eq!(conn.receive(&settings(&[])[..5]), Ok((0, Event::NeedMore)));
    let mut conn = ServerConn::new(Settings::default());
    let mut all = PREFACE.to_vec();
    all.extend(settings(&[]));
    assert_eq!(conn.receive(&all), Ok((all.len(), Event::Nothing)));
}

#[test]
fn invalid_preface_is_a_protocol_error() {
    let mut conn = ServerConn::new(Settings::default());
    let e = conn.receive(b"GET / HTTP/1.1\r\n").unwrap_err();
    assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
    // And stays an error.
    assert_eq!(conn.receive(PREFACE), Err(e));
}

#[test]
fn preface_must_be_followed_by_settings() {
    let mut conn = ServerConn::new(Settings::default());
    let mut all = PREFACE.to_vec();
    all.extend(headers(1, &GET, true));
    assert_eq!(
        conn.receive(&all).unwrap_err().code,
        ErrorCode::PROTOCOL_ERROR
    );
}

#[test]
fn settings_are_acknowledged() {
    let mut p = Peer::new();
    assert_eq!(
        p.one(&settings(&[(setting::MAX_FRAME_SIZE, 20_000)])),
        Got::Ev(Event::Nothing)
    );
    let f = p.frames();
    assert_eq!((f[0].0.kind, f[0].0.flags), (kind::SETTINGS, flag::ACK));
    assert_eq!(p.conn.peer_max_frame_size(), 20_000);
}

#[test]
fn settings_on_a_stream_is_a_protocol_error() {
    let mut p = Peer::new();
    assert_eq!(
        p.one(&frame_bytes(kind::SETTINGS, 0, 1, &[])),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
    assert_eq!(p.goaway(), Some((0, ErrorCode::PROTOCOL_ERROR)));
}

#[test]
fn settings_length_not_a_multiple_of_6_is_a_frame_size_error() {
    let mut p = Peer::new();
    assert_eq!(
        p.one(&frame_bytes(kind::SETTINGS, 0, 0, &[0; 5])),
        conn_err(ErrorCode::FRAME_SIZE_ERROR)
    );
}

#[test]
fn settings_ack_with_payload_is_a_frame_size_error() {
    let mut p = Peer::new();
    assert_eq!(
        p.one(&frame_bytes(kind::SETTINGS, flag::ACK, 0, &[0; 6])),
        conn_err(ErrorCode::FRAME_SIZE_ERROR)
    );
}

#[test]
fn settings_values_out_of_range_are_refused() {
    for (param, value, code) in [
        (setting::ENABLE_PUSH, 2, ErrorCode::PROTOCOL_ERROR),
        (
            setting::INITIAL_WINDOW_SIZE,
            1 << 31,
            ErrorCode::FLOW_CONTROL_ERROR,
        ),
        (setting::MAX_FRAME_SIZE, 16_383, ErrorCode::PROTOCOL_ERROR),
        (setting::MAX_FRAME_SIZE, 1 << 24, ErrorCode::PROTOCOL_ERROR),
    ] {
        let mut p = Peer::new();
        assert_eq!(
            p.one(&settings(&[(param, value)])),
            conn_err(code),
            "{param} = {value}"
        );
    }
    // Unknown settings are ignored.
    let mut p = Peer::new();
    assert_eq!(p.one(&settings(&[(0xff, 7)])), Got::Ev(Event::Nothing));
}

// ------------------------------------------------------------------ frame sizes

#[test]
fn frame_larger_than_max_frame_size_is_a_frame_size_error() {
    let mut p = Peer::new();
    assert_eq!(
        p.one(&data(1, &[0; 16_385], false)),
        conn_err(ErrorCode::FRAME_SIZE_ERROR)
    );
}

#[test]
fn incomplete_frames_need_more() {
    let mut p = Peer::new();
    let f = headers(1, &GET, true);
    for cut in [0, 5, 9, f.len() - 1] {
        assert_eq!(p.conn.receive(&f[..cut]), Ok((0, Event::NeedMore)));
    }
    assert_eq!(
        p.conn.receive(&f),
        Ok((
            f.len(),
            Event::Request {
                stream: 1,
                end_stream: true
            }
        ))
    );
}

#[test]
fn ping_is_acknowledged_with_its_payload() {
    let mut p = Peer::new();
    let mut ping = Vec::new();
    frame::write_ping(&mut ping, false, b"12345678");
    assert_eq!(p.one(&ping), Got::Ev(Event::Nothing));
    let f = p.frames();
    assert_eq!((f[0].0.kind, f[0].0.flags), (kind::PING, flag::ACK));
    assert_eq!(f[0].1, b"12345678");
    // An ACK is not answered.
    let mut ack = Vec::new();
    frame::write_ping(&mut ack, true, b"12345678");
    p.one(&ack);
    assert!(p.frames().is_empty());
}

#[test]
fn ping_of_wrong_length_is_a_frame_size_error_and_on_a_stream_a_protocol_error() {
    let mut p = Peer::new();
    assert_eq!(
        p.one(&frame_bytes(kind::PING, 0, 0, &[0; 7])),
        conn_err(ErrorCode::FRAME_SIZE_ERROR)
    );
    let mut p = Peer::new();
    assert_eq!(
        p.one(&frame_bytes(kind::PING, 0, 1, &[0; 8])),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
}

#[test]
fn goaway_rules() {
    let mut p = Peer::new();
    let mut g = Vec::new();
    frame::write_goaway(&mut g, 0, ErrorCode::NO_ERROR, b"bye");
    assert_eq!(
        p.one(&g),
        Got::Ev(Event::GoAway {
            last_stream: 0,
            code: ErrorCode::NO_ERROR
        })
    );
    let mut p = Peer::new();
    assert_eq!(
        p.one(&frame_bytes(kind::GOAWAY, 0, 0, &[0; 7])),
        conn_err(ErrorCode::FRAME_SIZE_ERROR)
    );
    let mut p = Peer::new();
    assert_eq!(
        p.one(&frame_bytes(kind::GOAWAY, 0, 1, &[0; 8])),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
}

#[test]
fn push_promise_from_a_client_is_a_protocol_error() {
    let mut p = Peer::new();
    p.request(1, false);
    assert_eq!(
        p.one(&frame_bytes(
            kind::PUSH_PROMISE,
            flag::END_HEADERS,
            1,
            &[0, 0, 0, 2]
        )),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
}

#[test]
fn unknown_frame_types_are_ignored() {
    let mut p = Peer::new();
    assert_eq!(
        p.one(&frame_bytes(0x42, 0xff, 3, b"whatever")),
        Got::Ev(Event::Nothing)
    );
    p.request(1, true);
}

#[test]
fn rst_stream_rules() {
    let mut p = Peer::new();
    assert_eq!(
        p.one(&frame_bytes(kind::RST_STREAM, 0, 0, &[0; 4])),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
    let mut p = Peer::new();
    p.request(1, false);
    assert_eq!(
        p.one(&frame_bytes(kind::RST_STREAM, 0, 1, &[0; 3])),
        conn_err(ErrorCode::FRAME_SIZE_ERROR)
    );
    // On an idle stream.
    let mut p = Peer::new();
    assert_eq!(
        p.one(&rst(1, ErrorCode::CANCEL)),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
}

#[test]
fn priority_rules() {
    let mut p = Peer::new();
    // On an idle stream: fine, and it does not open it.
    assert_eq!(
        p.one(&frame_bytes(kind::PRIORITY, 0, 3, &[0, 0, 0, 1, 16])),
        Got::Ev(Event::Nothing)
    );
    p.request(1, true);
    // Wrong length: stream error FRAME_SIZE_ERROR.
    assert_eq!(
        p.one(&frame_bytes(kind::PRIORITY, 0, 5, &[0; 4])),
        reset_by_us(5, ErrorCode::FRAME_SIZE_ERROR)
    );
    // Depending on itself: stream error PROTOCOL_ERROR.
    assert_eq!(
        p.one(&frame_bytes(kind::PRIORITY, 0, 7, &[0, 0, 0, 7, 16])),
        reset_by_us(7, ErrorCode::PROTOCOL_ERROR)
    );
    assert_eq!(
        p.one(&frame_bytes(kind::PRIORITY, 0, 0, &[0; 5])),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
}

// ------------------------------------------------------------------ HEADERS and CONTINUATION

#[test]
fn headers_with_padding_and_priority_are_read() {
    let mut p = Peer::new();
    let mut payload = vec![3]; // pad length
    payload.extend_from_slice(&[0x80, 0, 0, 0, 200]); // exclusive on 0, weight
    payload.extend(block(&GET));
    payload.extend_from_slice(&[0; 3]);
    let f = frame_bytes(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM | flag::PADDED | flag::PRIORITY,
        1,
        &payload,
    );
    assert_eq!(
        p.one(&f),
        Got::Ev(Event::Request {
            stream: 1,
            end_stream: true
        })
    );
    let h = p.conn.head();
    assert_eq!(h.method(), b"GET");
    assert_eq!(h.path(), Some(&b"/"[..]));
}

#[test]
fn headers_padding_beyond_the_payload_is_a_protocol_error() {
    let mut p = Peer::new();
    let f = frame_bytes(
        kind::HEADERS,
        flag::END_HEADERS | flag::PADDED,
        1,
        &[9, 0x82],
    );
    assert_eq!(p.one(&f), conn_err(ErrorCode::PROTOCOL_ERROR));
}

#[test]
fn headers_depending_on_itself_is_a_stream_error() {
    let mut p = Peer::new();
    let mut payload = vec![0, 0, 0, 1, 16];
    payload.extend(block(&GET));
    let f = frame_bytes(
        kind::HEADERS,
        flag::END_HEADERS | flag::PRIORITY | flag::END_STREAM,
        1,
        &payload,
    );
    assert_eq!(p.one(&f), reset_by_us(1, ErrorCode::PROTOCOL_ERROR));
}

#[test]
fn headers_on_stream_0_is_a_protocol_error() {
    let mut p = Peer::new();
    assert_eq!(
        p.one(&headers(0, &GET, true)),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
}

#[test]
fn continuation_completes_a_header_block() {
    let mut p = Peer::new();
    let b = block(&GET);
    let (a, rest) = b.split_at(5);
    let (m, z) = rest.split_at(7);
    let mut bytes = frame_bytes(kind::HEADERS, flag::END_STREAM, 1, a);
    bytes.extend(frame_bytes(kind::CONTINUATION, 0, 1, m));
    bytes.extend(frame_bytes(kind::CONTINUATION, flag::END_HEADERS, 1, z));
    assert_eq!(
        p.feed(&bytes),
        [
            Got::Ev(Event::Nothing),
            Got::Ev(Event::Nothing),
            Got::Ev(Event::Request {
                stream: 1,
                end_stream: true
            })
        ]
    );
    assert_eq!(p.conn.head().authority(), Some(&b"example.com"[..]));
}

#[test]
fn continuation_must_follow_on_the_same_stream_with_nothing_interleaved() {
    let b = block(&GET);
    // Another frame type in between.
    let mut p = Peer::new();
    let mut bytes = frame_bytes(kind::HEADERS, 0, 1, &b[..5]);
    let mut ping = Vec::new();
    frame::write_ping(&mut ping, false, &[0; 8]);
    bytes.extend(ping);
    assert_eq!(
        p.feed(&bytes),
        [Got::Ev(Event::Nothing), conn_err(ErrorCode::PROTOCOL_ERROR)]
    );
    // CONTINUATION on another stream.
    let mut p = Peer::new();
    let mut bytes = frame_bytes(kind::HEADERS, 0, 1, &b[..5]);
    bytes.extend(frame_bytes(
        kind::CONTINUATION,
        flag::END_HEADERS,
        3,
        &b[5..],
    ));
    assert_eq!(
        p.feed(&bytes),
        [Got::Ev(Event::Nothing), conn_err(ErrorCode::PROTOCOL_ERROR)]
    );
    // CONTINUATION with no header block open.
    let mut p = Peer::new();
    p.request(1, true);
    assert_eq!(
        p.one(&frame_bytes(kind::CONTINUATION, flag::END_HEADERS, 1, &[])),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
}

#[test]
fn continuation_flood_is_bounded() {
    // A block that never ends: refused once it passes the buffering bound, which is a
    // small multiple of the header list limit (here 2 x 16 KiB = 32 KiB).
    let mut p = Peer::with(Settings {
        max_header_list_size: 16 * 1024,
        ..Settings::default()
    });
    let mut got = p.feed(&frame_bytes(kind::HEADERS, 0, 1, &[0x82]));
    for _ in 0..100 {
        got = p.feed(&frame_bytes(kind::CONTINUATION, 0, 1, &[0x82; 1000]));
        if got != [Got::Ev(Event::Nothing)] {
            break;
        }
    }
    assert_eq!(got, [conn_err(ErrorCode::ENHANCE_YOUR_CALM)]);
    // Empty CONTINUATIONs are bounded too.
    let mut p = Peer::new();
    let mut got = p.feed(&frame_bytes(kind::HEADERS, 0, 1, &[0x82]));
    for _ in 0..1000 {
        got = p.feed(&frame_bytes(kind::CONTINUATION, 0, 1, &[]));
        if got != [Got::Ev(Event::Nothing)] {
            break;
        }
    }
    assert_eq!(got, [conn_err(ErrorCode::ENHANCE_YOUR_CALM)]);
}

#[test]
fn header_list_over_the_limit_is_answered_431() {
    let mut p = Peer::with(Settings {
        max_header_list_size: 1024,
        ..Settings::default()
    });
    let big = "x".repeat(2000);
    let mut f = GET.to_vec();
    f.push(("x-big", &big));
    assert_eq!(
        p.one(&headers(1, &f, true)),
        Got::Ev(Event::Rejected {
            stream: 1,
            status: 431
        })
    );
    let frames = p.frames();
    assert_eq!(frames[0].0.kind, kind::HEADERS);
    assert!(frames[0].0.has(flag::END_STREAM));
    assert_eq!(
        p.decode(&frames[0].1),
        [(":status".to_string(), "431".to_string())]
    );
    // The connection goes on, HPACK state intact.
    p.request(3, true);
}

#[test]
fn invalid_hpack_is_a_compression_error() {
    let mut p = Peer::new();
    assert_eq!(
        p.one(&frame_bytes(kind::HEADERS, flag::END_HEADERS, 1, &[0x80])),
        conn_err(ErrorCode::COMPRESSION_ERROR)
    );
}

#[test]
fn hpack_dynamic_table_carries_across_requests() {
    let mut p = Peer::new();
    // custom-key: custom-header with incremental indexing, then reused as index 62.
    let mut b = block(&GET);
    b.extend_from_slice(&[0x40, 10]);
    b.extend_from_slice(b"custom-key");
    b.push(13);
    b.extend_from_slice(b"custom-header");
    p.one(&frame_bytes(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &b,
    ));
    let mut b = block(&GET);
    b.push(0xbe);
    assert_eq!(
        p.one(&frame_bytes(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            3,
            &b
        )),
        Got::Ev(Event::Request {
            stream: 3,
            end_stream: true
        })
    );
    let fields: Vec<_> = p.conn.head().fields().collect();
    assert_eq!(fields, [(&b"custom-key"[..], &b"custom-header"[..])]);
}

// ------------------------------------------------------------------ stream states

#[test]
fn client_stream_ids_must_be_odd_and_increasing() {
    let mut p = Peer::new();
    assert_eq!(
        p.one(&headers(2, &GET, true)),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
    let mut p = Peer::new();
    p.request(5, true);
    assert_eq!(
        p.one(&headers(3, &GET, true)),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
}

#[test]
fn streams_over_the_concurrency_limit_are_refused() {
    let mut p = Peer::with(Settings {
        max_concurrent_streams: 2,
        ..Settings::default()
    });
    p.request(1, true);
    p.request(3, true);
    assert_eq!(
        p.one(&headers(5, &GET, true)),
        reset_by_us(5, ErrorCode::REFUSED_STREAM)
    );
    assert_eq!(p.resets(), [(5, ErrorCode::REFUSED_STREAM)]);
    // Finishing one makes room.
    assert!(p.conn.send_headers(1, 204, [], true));
    p.request(7, true);
}

#[test]
fn data_on_an_idle_stream_is_a_protocol_error() {
    let mut p = Peer::new();
    assert_eq!(
        p.one(&data(1, b"x", false)),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
    let mut p = Peer::new();
    assert_eq!(
        p.one(&data(0, b"x", false)),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
}

#[test]
fn window_update_on_an_idle_stream_is_a_protocol_error() {
    let mut p = Peer::new();
    assert_eq!(
        p.one(&window_update(3, 1)),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
}

#[test]
fn half_closed_remote_refuses_data_with_stream_closed() {
    let mut p = Peer::new();
    p.request(1, true);
    assert_eq!(
        p.one(&data(1, b"x", false)),
        reset_by_us(1, ErrorCode::STREAM_CLOSED)
    );
    assert_eq!(p.resets(), [(1, ErrorCode::STREAM_CLOSED)]);
}

#[test]
fn half_closed_remote_refuses_headers_with_stream_closed() {
    let mut p = Peer::new();
    p.request(1, true);
    assert_eq!(
        p.one(&headers(1, &[("x", "y")], true)),
        reset_by_us(1, ErrorCode::STREAM_CLOSED)
    );
}

#[test]
fn frames_after_both_sides_ended_are_stream_closed_connection_errors() {
    let mut p = Peer::new();
    p.request(1, true);
    assert!(p.conn.send_headers(1, 200, [], true));
    assert_eq!(p.conn.open_streams(), 0);
    // WINDOW_UPDATE, RST_STREAM and PRIORITY are fine on a closed stream.
    assert_eq!(p.one(&window_update(1, 10)), Got::Ev(Event::Nothing));
    assert_eq!(p.one(&rst(1, ErrorCode::CANCEL)), Got::Ev(Event::Nothing));
    assert_eq!(
        p.one(&data(1, b"x", false)),
        conn_err(ErrorCode::STREAM_CLOSED)
    );
    let mut p = Peer::new();
    p.request(1, true);
    assert!(p.conn.send_headers(1, 200, [], true));
    assert_eq!(
        p.one(&headers(1, &GET, true)),
        conn_err(ErrorCode::STREAM_CLOSED)
    );
}

#[test]
fn frames_after_the_client_reset_are_stream_closed_stream_errors() {
    let mut p = Peer::new();
    p.request(1, false);
    assert_eq!(
        p.one(&rst(1, ErrorCode::CANCEL)),
        Got::Ev(Event::StreamReset {
            stream: 1,
            code: ErrorCode::CANCEL,
            remote: true
        })
    );
    assert_eq!(
        p.one(&data(1, b"x", false)),
        reset_by_us(1, ErrorCode::STREAM_CLOSED)
    );
    // Having reset it ourselves now, later frames are ignored.
    assert_eq!(p.one(&data(1, b"x", false)), Got::Ev(Event::Nothing));
    assert_eq!(p.resets(), [(1, ErrorCode::STREAM_CLOSED)]);
}

#[test]
fn frames_after_we_reset_are_ignored_but_counted_for_the_connection_window() {
    let mut p = Peer::new();
    p.feed(&post_headers(1, 100_000));
    p.conn.send_reset(1, ErrorCode::CANCEL);
    assert_eq!(p.resets(), [(1, ErrorCode::CANCEL)]);
    // 300 KiB arrive after our reset: ignored, and the connection window is given back.
    for _ in 0..20 {
        assert_eq!(
            p.one(&data(1, &[0; 16_000], false)),
            Got::Ev(Event::Nothing)
        );
    }
    assert_eq!(
        p.one(&headers(1, &[("x", "1")], true)),
        Got::Ev(Event::Nothing)
    );
    let updates: u32 = p
        .frames()
        .iter()
        .filter(|(h, _)| h.kind == kind::WINDOW_UPDATE && h.stream == 0)
        .map(|(_, b)| frame::window_increment(b))
        .sum();
    assert!(updates >= 256 * 1024, "{updates}");
}

#[test]
fn headers_on_a_skipped_stream_id_is_a_protocol_error() {
    let mut p = Peer::new();
    p.request(5, true);
    assert!(p.conn.send_headers(5, 200, [], true));
    // Stream 3 was never opened: it is closed, and reopening it is not allowed.
    assert_eq!(
        p.one(&headers(3, &GET, true)),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
}

#[test]
fn a_stream_closes_when_both_sides_ended() {
    let mut p = Peer::new();
    p.feed(&post_headers(1, 3));
    assert!(p.conn.send_headers(1, 200, [], false));
    assert_eq!(p.conn.send_data(1, b"ok", true), 2);
    assert_eq!(p.conn.open_streams(), 1);
    assert_eq!(
        p.one(&data(1, b"abc", true)),
        Got::Body(1, b"abc".to_vec(), true)
    );
    assert_eq!(p.conn.open_streams(), 0);
    assert!(p.conn.is_idle());
}

// ------------------------------------------------------------------ requests

#[test]
fn malformed_requests_are_stream_errors() {
    for fields in [
        vec![
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            ("Upper", "x"),
        ],
        vec![
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            ("connection", "close"),
        ],
        vec![
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            ("te", "gzip"),
        ],
        vec![
            (":method", "GET"),
            (":scheme", "https"),
            ("x", "y"),
            (":path", "/"),
        ],
        vec![
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            (":foo", "x"),
        ],
        vec![
            (":method", "GET"),
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
        ],
        vec![
            (":status", "200"),
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
        ],
        vec![(":scheme", "https"), (":path", "/")],
        vec![(":method", "GET"), (":scheme", "https"), (":path", "")],
        vec![(":method", "GET"), (":path", "/")],
        vec![
            (":method", "CONNECT"),
            (":authority", "a:1"),
            (":path", "/"),
        ],
        vec![
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            ("x", "a\r\nb"),
        ],
    ] {
        let mut p = Peer::new();
        assert_eq!(
            p.one(&headers(1, &fields, true)),
            reset_by_us(1, ErrorCode::PROTOCOL_ERROR),
            "{fields:?}"
        );
        assert_eq!(p.resets(), [(1, ErrorCode::PROTOCOL_ERROR)]);
        // The connection stays usable.
        p.request(3, true);
    }
}

#[test]
fn cookie_crumbs_are_readable() {
    let mut p = Peer::new();
    let mut f = GET.to_vec();
    f.extend([("cookie", "a=1"), ("accept", "*/*"), ("cookie", "b=2")]);
    p.one(&headers(1, &f, true));
    let h = p.conn.head();
    assert_eq!(h.cookies().collect::<Vec<_>>(), [&b"a=1"[..], b"b=2"]);
}

#[test]
fn content_length_is_checked_against_the_data() {
    // More than announced.
    let mut p = Peer::new();
    p.feed(&post_headers(1, 3));
    assert_eq!(
        p.one(&data(1, b"abcd", false)),
        reset_by_us(1, ErrorCode::PROTOCOL_ERROR)
    );
    // Less than announced at END_STREAM.
    let mut p = Peer::new();
    p.feed(&post_headers(1, 3));
    assert_eq!(
        p.one(&data(1, b"ab", true)),
        reset_by_us(1, ErrorCode::PROTOCOL_ERROR)
    );
    // Exactly, in two frames.
    let mut p = Peer::new();
    p.feed(&post_headers(1, 3));
    assert_eq!(
        p.one(&data(1, b"ab", false)),
        Got::Body(1, b"ab".to_vec(), false)
    );
    assert_eq!(
        p.one(&data(1, b"c", true)),
        Got::Body(1, b"c".to_vec(), true)
    );
    // Announced but ended with the head.
    let mut p = Peer::new();
    let f = post(3);
    let f: Vec<(&str, &str)> = f.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(
        p.one(&headers(1, &f, true)),
        reset_by_us(1, ErrorCode::PROTOCOL_ERROR)
    );
}

#[test]
fn data_padding_is_excluded() {
    let mut p = Peer::new();
    p.request(1, false);
    let mut payload = vec![4];
    payload.extend_from_slice(b"body");
    payload.extend_from_slice(&[0; 4]);
    let f = frame_bytes(kind::DATA, flag::PADDED | flag::END_STREAM, 1, &payload);
    assert_eq!(p.one(&f), Got::Body(1, b"body".to_vec(), true));
}

#[test]
fn trailers_end_the_stream_and_carry_no_pseudo_headers() {
    let mut p = Peer::new();
    p.request(1, false);
    p.one(&data(1, b"abc", false));
    assert_eq!(
        p.one(&headers(1, &[("x-sum", "6")], true)),
        Got::Ev(Event::Trailers { stream: 1 })
    );
    let h = p.conn.head();
    assert!(h.is_trailers());
    assert_eq!(h.fields().collect::<Vec<_>>(), [(&b"x-sum"[..], &b"6"[..])]);
    // Without END_STREAM.
    let mut p = Peer::new();
    p.request(1, false);
    assert_eq!(
        p.one(&headers(1, &[("x-sum", "6")], false)),
        reset_by_us(1, ErrorCode::PROTOCOL_ERROR)
    );
    // With a pseudo-header.
    let mut p = Peer::new();
    p.request(1, false);
    assert_eq!(
        p.one(&headers(1, &[(":path", "/")], true)),
        reset_by_us(1, ErrorCode::PROTOCOL_ERROR)
    );
}

// ------------------------------------------------------------------ flow control

#[test]
fn data_beyond_the_stream_window_is_a_flow_control_error() {
    let mut p = Peer::with(Settings {
        initial_window_size: 20_000,
        ..Settings::default()
    });
    p.request(1, false);
    p.one(&data(1, &[0; 16_000], false));
    assert_eq!(
        p.one(&data(1, &[0; 5_000], false)),
        reset_by_us(1, ErrorCode::FLOW_CONTROL_ERROR)
    );
}

#[test]
fn data_beyond_the_connection_window_is_a_flow_control_error() {
    let mut p = Peer::with(Settings {
        initial_window_size: 65_535,
        max_frame_size: 65_535,
        ..Settings::default()
    });
    p.request(1, false);
    p.request(3, false);
    p.one(&data(1, &[0; 40_000], false));
    assert_eq!(
        p.one(&data(3, &[0; 30_000], false)),
        conn_err(ErrorCode::FLOW_CONTROL_ERROR)
    );
}

#[test]
fn released_data_reopens_the_windows() {
    let mut p = Peer::with(Settings {
        initial_window_size: 65_535,
        ..Settings::default()
    });
    p.request(1, false);
    for _ in 0..4 {
        p.one(&data(1, &[0; 16_000], false));
    }
    p.conn.release(1, 64_000);
    let ups: Vec<(u32, u32)> = p
        .frames()
        .iter()
        .filter(|(h, _)| h.kind == kind::WINDOW_UPDATE)
        .map(|(h, b)| (h.stream, frame::window_increment(b)))
        .collect();
    assert!(ups.contains(&(0, 64_000)), "{ups:?}");
    assert!(ups.contains(&(1, 64_000)), "{ups:?}");
    // Now another 64,000 fit.
    for _ in 0..4 {
        assert!(matches!(
            p.one(&data(1, &[0; 16_000], false)),
            Got::Body(..)
        ));
    }
    // Releasing more than was received never grants past the advertised window.
    p.conn.release(1, 10_000_000);
    for (h, b) in p.frames() {
        assert!(frame::window_increment(&b) <= 65_535, "{h:?}");
    }
}

#[test]
fn window_update_of_zero_is_a_protocol_error() {
    let mut p = Peer::new();
    p.request(1, false);
    assert_eq!(
        p.one(&window_update(1, 0)),
        reset_by_us(1, ErrorCode::PROTOCOL_ERROR)
    );
    assert_eq!(
        p.one(&window_update(0, 0)),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
}

#[test]
fn window_update_past_2_31_is_a_flow_control_error() {
    let mut p = Peer::new();
    p.request(1, false);
    assert_eq!(
        p.one(&window_update(1, 1 << 30)),
        Got::Ev(Event::WindowOpened { stream: 1 })
    );
    assert_eq!(
        p.one(&window_update(1, 1 << 30)),
        reset_by_us(1, ErrorCode::FLOW_CONTROL_ERROR)
    );
    assert_eq!(
        p.one(&window_update(0, (1 << 31) - 65_535)),
        conn_err(ErrorCode::FLOW_CONTROL_ERROR)
    );
    let mut p = Peer::new();
    assert_eq!(
        p.one(&window_update(0, 1 << 30)),
        Got::Ev(Event::WindowOpened { stream: 0 })
    );
}

#[test]
fn window_update_frame_of_wrong_length_is_a_frame_size_error() {
    let mut p = Peer::new();
    assert_eq!(
        p.one(&frame_bytes(kind::WINDOW_UPDATE, 0, 0, &[0; 3])),
        conn_err(ErrorCode::FRAME_SIZE_ERROR)
    );
}

#[test]
fn send_data_respects_stream_and_connection_windows_and_frame_size() {
    let mut p = Peer::new();
    p.request(1, true);
    assert_eq!(p.conn.send_data(1, b"early", false), 0, "no head yet");
    assert!(
        p.conn
            .send_headers(1, 200, [(&b"Content-Type"[..], &b"text/plain"[..])], false)
    );
    assert_eq!(p.conn.send_window(1), 65_535);
    let body = vec![7u8; 100_000];
    assert_eq!(p.conn.send_data(1, &body, true), 65_535);
    let frames = p.frames();
    let datas: Vec<_> = frames
        .iter()
        .filter(|(h, _)| h.kind == kind::DATA)
        .collect();
    assert_eq!(datas.len(), 4);
    assert!(
        datas
            .iter()
            .all(|(h, _)| h.len <= 16_384 && !h.has(flag::END_STREAM))
    );
    assert_eq!(
        p.decode(&frames[0].1),
        [
            (":status".into(), "200".into()),
            ("content-type".into(), "text/plain".into())
        ]
    );
    assert_eq!(p.conn.send_data(1, &body[65_535..], true), 0);
    // The stream window opens, the connection's does not yet.
    assert_eq!(
        p.one(&window_update(1, 100_000)),
        Got::Ev(Event::WindowOpened { stream: 1 })
    );
    assert_eq!(p.conn.send_window(1), 0);
    assert_eq!(
        p.one(&window_update(0, 50_000)),
        Got::Ev(Event::WindowOpened { stream: 0 })
    );
    assert_eq!(p.conn.send_data(1, &body[65_535..], true), 34_465);
    let last = p.frames().pop().unwrap();
    assert!(last.0.has(flag::END_STREAM));
    assert_eq!(p.conn.open_streams(), 0);
}

#[test]
fn initial_window_size_changes_apply_to_open_streams_and_may_go_negative() {
    let mut p = Peer::new();
    p.request(1, true);
    assert!(p.conn.send_headers(1, 200, [], false));
    assert_eq!(p.conn.send_data(1, &[0; 30_000], false), 30_000);
    // 65,535 -> 10,000: the stream is now 20,000 in debt.
    p.one(&settings(&[(setting::INITIAL_WINDOW_SIZE, 10_000)]));
    assert_eq!(p.conn.send_window(1), 0);
    p.one(&window_update(1, 20_000));
    assert_eq!(p.conn.send_window(1), 0);
    p.one(&window_update(1, 5_000));
    assert_eq!(p.conn.send_window(1), 5_000);
    // Raised: the stream gains the difference, and the caller is told.
    assert_eq!(
        p.one(&settings(&[(setting::INITIAL_WINDOW_SIZE, 40_000)])),
        Got::Ev(Event::WindowOpened { stream: 0 })
    );
    assert_eq!(p.conn.send_window(1), 35_000);
    // Past 2^31-1 for an open stream: FLOW_CONTROL_ERROR.
    assert_eq!(
        p.one(&settings(&[(setting::INITIAL_WINDOW_SIZE, (1 << 31) - 1)])),
        Got::Ev(Event::WindowOpened { stream: 0 })
    );
    p.one(&window_update(1, 100));
    let mut q = Peer::new();
    q.request(1, true);
    q.one(&window_update(1, 1 << 30));
    assert_eq!(
        q.one(&settings(&[(setting::INITIAL_WINDOW_SIZE, 1 << 30)])),
        conn_err(ErrorCode::FLOW_CONTROL_ERROR)
    );
}

// ------------------------------------------------------------------ sending

#[test]
fn response_heads_larger_than_a_frame_use_continuation() {
    let mut p = Peer::new();
    p.request(1, true);
    let big = vec![b'v'; 40_000];
    assert!(
        p.conn
            .send_headers(1, 200, [(&b"x-big"[..], &big[..])], true)
    );
    let frames = p.frames();
    assert_eq!(
        frames
            .iter()
            .map(|(h, _)| (h.kind, h.flags))
            .collect::<Vec<_>>(),
        [
            (kind::HEADERS, flag::END_STREAM),
            (kind::CONTINUATION, 0),
            (kind::CONTINUATION, flag::END_HEADERS)
        ]
    );
    let block: Vec<u8> = frames.iter().flat_map(|(_, b)| b.clone()).collect();
    let fields = p.decode(&block);
    assert_eq!(fields[1].1.len(), 40_000);
}

#[test]
fn connection_specific_fields_are_not_sent() {
    let mut p = Peer::new();
    p.request(1, true);
    let fields: [(&[u8], &[u8]); 4] = [
        (b"Connection", b"keep-alive"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-Kept", b"1"),
    ];
    assert!(p.conn.send_headers(1, 404, fields, true));
    let f = p.frames();
    assert_eq!(
        p.decode(&f[0].1),
        [
            (":status".into(), "404".into()),
            ("x-kept".into(), "1".into())
        ]
    );
}

#[test]
fn interim_heads_precede_the_final_one() {
    let mut p = Peer::new();
    p.request(1, false);
    assert!(p.conn.send_headers(1, 100, [], false));
    assert!(
        !p.conn.send_headers(1, 103, [], true),
        "1xx cannot end a stream"
    );
    assert!(p.conn.send_headers(1, 200, [], false));
    assert!(!p.conn.send_headers(1, 200, [], false), "one final head");
    assert!(p.conn.send_trailers(1, [(&b"x-t"[..], &b"1"[..])]));
    let f = p.frames();
    assert_eq!(p.decode(&f[0].1), [(":status".into(), "100".into())]);
    assert!(f[2].0.has(flag::END_STREAM));
    assert_eq!(p.decode(&f[2].1), [("x-t".into(), "1".into())]);
}

#[test]
fn goaway_is_graceful_and_later_streams_are_ignored() {
    let mut p = Peer::new();
    p.request(1, false);
    p.conn.send_goaway(ErrorCode::NO_ERROR);
    assert_eq!(p.goaway(), Some((1, ErrorCode::NO_ERROR)));
    // A stream opened after it is ignored; the open one is still served.
    assert_eq!(p.one(&headers(3, &GET, true)), Got::Ev(Event::Nothing));
    assert_eq!(
        p.one(&data(1, b"x", true)),
        Got::Body(1, b"x".to_vec(), true)
    );
    assert!(!p.conn.is_idle());
    assert!(p.conn.send_headers(1, 200, [], true));
    assert!(p.conn.is_idle());
}

#[test]
fn connection_errors_queue_a_goaway_with_the_highest_stream() {
    let mut p = Peer::new();
    p.request(1, true);
    p.request(3, true);
    p.frames();
    assert_eq!(
        p.one(&data(0, b"", false)),
        conn_err(ErrorCode::PROTOCOL_ERROR)
    );
    assert_eq!(p.goaway(), Some((3, ErrorCode::PROTOCOL_ERROR)));
}

// ------------------------------------------------------------------ abuse bounds

#[test]
fn rapid_reset_is_answered_with_enhance_your_calm() {
    let mut p = Peer::new();
    let mut id = 1;
    let mut last = Got::Ev(Event::Nothing);
    for _ in 0..1000 {
        p.one(&headers(id, &GET, false));
        last = p.one(&rst(id, ErrorCode::CANCEL));
        p.frames();
        if matches!(last, Got::Err(_)) {
            break;
        }
        id += 2;
    }
    assert_eq!(last, conn_err(ErrorCode::ENHANCE_YOUR_CALM));
    assert!(id < 600, "stopped only at stream {id}");
}

#[test]
fn resets_balanced_by_completed_requests_are_tolerated() {
    let mut p = Peer::new();
    let mut id = 1;
    for _ in 0..2000 {
        p.request(id, true);
        assert!(p.conn.send_headers(id, 200, [], true));
        id += 2;
        p.one(&headers(id, &GET, false));
        assert!(matches!(
            p.one(&rst(id, ErrorCode::CANCEL)),
            Got::Ev(Event::StreamReset { .. })
        ));
        id += 2;
        p.frames();
    }
}

#[test]
fn ping_flood_with_unread_output_is_bounded() {
    let mut p = Peer::new();
    let mut ping = Vec::new();
    frame::write_ping(&mut ping, false, &[0; 8]);
    let mut last = Got::Ev(Event::Nothing);
    for _ in 0..5000 {
        last = p.one(&ping);
        if last != Got::Ev(Event::Nothing) {
            break;
        }
    }
    assert_eq!(last, conn_err(ErrorCode::ENHANCE_YOUR_CALM));
    // With the output drained as it goes, pings are answered indefinitely.
    let mut p = Peer::new();
    for _ in 0..5000 {
        assert_eq!(p.one(&ping), Got::Ev(Event::Nothing));
        p.conn.consume_output(p.conn.output().len());
    }
}

#[test]
fn settings_flood_with_unread_output_is_bounded() {
    let mut p = Peer::new();
    let s = settings(&[]);
    let mut last = Got::Ev(Event::Nothing);
    for _ in 0..5000 {
        last = p.one(&s);
        if last != Got::Ev(Event::Nothing) {
            break;
        }
    }
    assert_eq!(last, conn_err(ErrorCode::ENHANCE_YOUR_CALM));
}

#[test]
fn empty_frame_flood_is_bounded() {
    let mut p = Peer::new();
    p.request(1, false);
    let mut last = Got::Ev(Event::Nothing);
    for _ in 0..5000 {
        last = p.one(&data(1, b"", false));
        if last != Got::Ev(Event::Nothing) {
            break;
        }
    }
    assert_eq!(last, conn_err(ErrorCode::ENHANCE_YOUR_CALM));
}

#[test]
fn no_input_panics() {
    // A cheap fuzz: random-ish frames after a valid start never panic.
    let mut seed = 0x1234_5678_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let mut p = Peer::new();
        p.request(1, false);
        for _ in 0..20 {
            let len = (next() % 40) as usize;
            let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let k = (next() % 11) as u8;
            let flags = next() as u8;
            let stream = (next() % 6) as u32;
            let f = frame_bytes(k, flags, stream, &payload);
            if let Err(ConnError { .. }) = p.conn.receive(&f) {
                break;
            }
            let _ = p.conn.send_data(1, b"x", false);
            p.conn.consume_output(p.conn.output().len());
        }
    }
}

#[test]
fn an_idle_connection_can_free_its_buffers_and_go_on() {
    let mut p = Peer::new();
    p.request(1, true);
    p.conn.shrink();
    assert_eq!(p.conn.open_streams(), 1, "not idle: nothing freed");
    assert!(p.conn.send_headers(1, 200, [], true));
    p.frames();
    p.conn.shrink();
    // HPACK state and stream ids survive.
    p.request(3, true);
    assert_eq!(p.conn.head().method(), b"GET");
    assert_eq!(
        p.one(&headers(1, &GET, true)),
        conn_err(ErrorCode::STREAM_CLOSED)
    );
}

// ------------------------------------------------------------------ more corners (h2spec's list)

#[test]
fn unknown_frame_inside_a_header_block_is_a_protocol_error() {
    let mut p = Peer::new();
    let b = block(&GET);
    let mut bytes = frame_bytes(kind::HEADERS, flag::END_STREAM, 1, &b[..4]);
    bytes.extend(frame_bytes(0x42, 0, 0, b"x"));
    assert_eq!(
        p.feed(&bytes),
        [Got::Ev(Event::Nothing), conn_err(ErrorCode::PROTOCOL_ERROR)]
    );
}

#[test]
fn continuation_on_stream_0_is_a_protocol_error() {
    let mut p = Peer::new();
    let b = block(&GET);
    let mut bytes = frame_bytes(kind::HEADERS, flag::END_STREAM, 1, &b[..4]);
    bytes.extend(frame_bytes(
        kind::CONTINUATION,
        flag::END_HEADERS,
        0,
        &b[4..],
    ));
    assert_eq!(
        p.feed(&bytes),
        [Got::Ev(Event::Nothing), conn_err(ErrorCode::PROTOCOL_ERROR)]
    );
}

#[test]
fn continuation_after_a_closed_header_block_is_a_protocol_error() {
    let mut p = Peer::new();
    let mut bytes = headers(1, &GET, false);
    bytes.extend(frame_bytes(
        kind::CONTINUATION,
        flag::END_HEADERS,
        1,
        &[0x82],
    ));
    assert_eq!(
        p.feed(&bytes),
        [
            Got::Ev(Event::Request {
                stream: 1,
                end_stream: false
            }),
            conn_err(ErrorCode::PROTOCOL_ERROR)
        ]
    );
}

#[test]
fn a_data_frame_of_exactly_the_max_frame_size_is_accepted() {
    let mut p = Peer::new();
    p.request(1, false);
    assert_eq!(
        p.one(&data(1, &[1; 16_384], true)),
        Got::Body(1, vec![1; 16_384], true)
    );
}

#[test]
fn a_headers_frame_larger_than_the_max_frame_size_is_a_frame_size_error() {
    let mut p = Peer::new();
    let big = "v".repeat(17_000);
    let mut f = GET.to_vec();
    f.push(("x-big", &big));
    assert_eq!(
        p.one(&headers(1, &f, true)),
        conn_err(ErrorCode::FRAME_SIZE_ERROR)
    );
}

#[test]
fn settings_values_apply_in_order() {
    let mut p = Peer::new();
    assert_eq!(
        p.one(&settings(&[
            (setting::INITIAL_WINDOW_SIZE, 100),
            (setting::INITIAL_WINDOW_SIZE, 1)
        ])),
        Got::Ev(Event::Nothing)
    );
    p.request(1, true);
    assert!(p.conn.send_headers(1, 200, [], false));
    assert_eq!(p.conn.send_data(1, b"abc", true), 1);
}

#[test]
fn a_window_made_zero_by_settings_reopens_with_settings() {
    let mut p = Peer::new();
    p.one(&settings(&[(setting::INITIAL_WINDOW_SIZE, 0)]));
    p.request(1, true);
    assert!(p.conn.send_headers(1, 200, [], false));
    assert_eq!(p.conn.send_data(1, b"abc", true), 0);
    assert_eq!(
        p.one(&settings(&[(setting::INITIAL_WINDOW_SIZE, 1)])),
        Got::Ev(Event::WindowOpened { stream: 0 })
    );
    assert_eq!(p.conn.send_data(1, b"abc", true), 1);
}

#[test]
fn the_reserved_bit_of_the_stream_id_is_ignored() {
    let mut p = Peer::new();
    let mut f = headers(1, &GET, true);
    f[5] |= 0x80;
    assert_eq!(
        p.one(&f),
        Got::Ev(Event::Request {
            stream: 1,
            end_stream: true
        })
    );
}

#[test]
fn unused_flags_are_ignored() {
    let mut p = Peer::new();
    let f = frame_bytes(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM | 0x10 | 0x40 | 0x80,
        1,
        &block(&GET),
    );
    assert_eq!(
        p.one(&f),
        Got::Ev(Event::Request {
            stream: 1,
            end_stream: true
        })
    );
    let mut ping = frame_bytes(kind::PING, 0xfe, 0, &[0; 8]);
    ping.extend(window_update(0, 1));
    assert_eq!(
        p.feed(&ping),
        [
            Got::Ev(Event::Nothing),
            Got::Ev(Event::WindowOpened { stream: 0 })
        ]
    );
}

#[test]
fn a_request_refused_for_size_without_end_stream_is_also_reset_with_no_error() {
    let mut p = Peer::with(Settings {
        max_header_list_size: 1024,
        ..Settings::default()
    });
    let big = "x".repeat(2000);
    let mut f = GET.to_vec();
    f.push(("x-big", &big));
    assert_eq!(
        p.one(&headers(1, &f, false)),
        Got::Ev(Event::Rejected {
            stream: 1,
            status: 431
        })
    );
    assert_eq!(p.resets(), [(1, ErrorCode::NO_ERROR)]);
    // The rest of its body is ignored.
    assert_eq!(p.one(&data(1, b"abc", true)), Got::Ev(Event::Nothing));
}

#[test]
fn a_stream_may_send_only_after_its_head_and_never_after_its_end() {
    let mut p = Peer::new();
    p.request(1, true);
    assert_eq!(p.conn.send_window(1), 65_535);
    assert!(p.conn.can_send(1));
    assert!(p.conn.send_headers(1, 200, [], true));
    assert!(!p.conn.can_send(1));
    assert_eq!(p.conn.send_window(1), 0);
    assert_eq!(p.conn.send_data(1, b"x", true), 0);
    assert!(!p.conn.send_trailers(1, []));
    assert!(!p.conn.send_headers(99, 200, [], true), "unknown stream");
}

#[test]
fn a_lowered_header_table_size_must_be_acknowledged_by_a_size_update() {
    let small = Settings {
        header_table_size: 1024,
        ..Settings::default()
    };
    // Peer::with acknowledged our SETTINGS: the next block must open with an update.
    let mut p = Peer::with(small);
    assert_eq!(
        p.one(&headers(1, &GET, true)),
        conn_err(ErrorCode::COMPRESSION_ERROR)
    );
    let mut p = Peer::with(small);
    let mut b = Vec::new();
    hpack::write_integer(&mut b, 0x20, 5, 1024);
    b.extend(block(&GET));
    assert_eq!(
        p.one(&frame_bytes(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &b
        )),
        Got::Ev(Event::Request {
            stream: 1,
            end_stream: true
        })
    );
    p.request(3, true);
}
