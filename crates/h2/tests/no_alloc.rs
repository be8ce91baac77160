//! A steady-state request allocates nothing: a counting global allocator watches a warm
//! `ServerConn` take a request head (HPACK with dynamic-table inserts, evictions and
//! references, and Huffman strings), a request body, and queue a response head and a small
//! body, with the output drained as a socket would.

#![allow(clippy::unwrap_used)] // test helpers may panic

use fulcrum_h2::frame::{self, Header, PREFACE, flag, kind};
use fulcrum_h2::hpack;
use fulcrum_h2::{Event, ServerConn, Settings};
use fulcrum_testkit::{CountingAllocator, thread_allocations};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn frame_bytes(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    Header {
        len: payload.len() as u32,
        kind,
        flags,
        stream,
    }
    .write(out);
    out.extend_from_slice(payload);
}

/// A request block as a browser's encoder might send it: indexed static fields, a
/// Huffman-coded :authority (RFC 7541 C.4.1's), a reference to the newest dynamic entry, and
/// a new entry inserted (so the table fills, evicts and wraps).
fn request_block(n: u32, post: bool) -> Vec<u8> {
    let mut b = vec![if post { 0x83 } else { 0x82 }, 0x87, 0x84, 0x01, 0x8c];
    b.extend_from_slice(&[
        0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
    ]);
    if n > 0 {
        b.push(0xbe);
    }
    let value = format!("value-{n:08}");
    b.extend_from_slice(&[0x40, 10]);
    b.extend_from_slice(b"custom-key");
    hpack::write_integer(&mut b, 0, 7, value.len());
    b.extend_from_slice(value.as_bytes());
    if post {
        // content-length: 64 (literal without indexing, static name 28).
        b.extend_from_slice(&[0x0f, 0x0d, 2, b'6', b'4']);
    }
    b
}

/// The bytes a client sends for request `n` on stream `id`.
fn request(n: u32, id: u32) -> Vec<u8> {
    let post = n % 2 == 1;
    let mut out = Vec::new();
    let flags = flag::END_HEADERS | if post { 0 } else { flag::END_STREAM };
    frame_bytes(&mut out, kind::HEADERS, flags, id, &request_block(n, post));
    if post {
        frame_bytes(&mut out, kind::DATA, flag::END_STREAM, id, &[b'x'; 64]);
    }
    out
}

/// Runs one exchange: feeds `input`, answers the request; returns the events seen.
fn exchange(conn: &mut ServerConn, input: &[u8], body: &[u8]) -> usize {
    let mut at = 0;
    let mut events = 0;
    loop {
        let (used, event) = conn.receive(&input[at..]).unwrap();
        at += used;
        match event {
            Event::NeedMore => break,
            Event::Request { stream, end_stream } => {
                events += 1;
                let head = conn.head();
                let mut n = head.method().len() + head.path().unwrap().len();
                n += head.authority().unwrap().len();
                n += head.fields().map(|(a, b)| a.len() + b.len()).sum::<usize>();
                std::hint::black_box(n);
                if end_stream {
                    respond(conn, stream, body);
                }
            }
            Event::Data {
                stream,
                data,
                end_stream,
            } => {
                events += 1;
                conn.release(stream, data.len());
                if end_stream {
                    respond(conn, stream, body);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let n = conn.output().len();
    conn.consume_output(n);
    events
}

fn respond(conn: &mut ServerConn, stream: u32, body: &[u8]) {
    let fields: [(&[u8], &[u8]); 4] = [
        (b"Content-Type", b"text/plain"),
        (b"Content-Length", b"100"),
        (b"Server", b"member"),
        (b"X-Request-Id", b"0123456789abcdef"),
    ];
    assert!(conn.send_headers(stream, 200, fields, false));
    assert_eq!(conn.send_data(stream, body, true), body.len());
}

#[test]
fn a_steady_state_request_does_not_allocate() {
    let mut conn = ServerConn::new(Settings::default());
    let mut start = PREFACE.to_vec();
    frame::write_settings(&mut start, &[]);
    frame_bytes(&mut start, kind::SETTINGS, flag::ACK, 0, &[]);
    frame::write_window_update(&mut start, 0, (1 << 31) - 1 - 65_535);
    let mut at = 0;
    while at < start.len() {
        let (used, _) = conn.receive(&start[at..]).unwrap();
        at += used;
    }
    let n = conn.output().len();
    conn.consume_output(n);

    let body = [b'b'; 100];
    // All input built before counting.
    let inputs: Vec<Vec<u8>> = (0..2000u32).map(|n| request(n, 2 * n + 1)).collect();
    let (warm, measured) = inputs.split_at(500);
    for input in warm {
        assert!(exchange(&mut conn, input, &body) >= 1);
    }
    // The counter sees allocations on this thread.
    let before = thread_allocations();
    std::hint::black_box(vec![0u8; 16]);
    assert_eq!(thread_allocations() - before, 1);

    let before = thread_allocations();
    let mut events = 0;
    for input in measured {
        events += exchange(&mut conn, input, &body);
    }
    let made = thread_allocations() - before;
    assert_eq!(
        made,
        0,
        "{made} allocations over {} requests",
        measured.len()
    );
    assert_eq!(events, 1500 + 750);
    assert!(conn.is_idle());
}
