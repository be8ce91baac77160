//! The codec's own cost per request, for profiling (`valgrind --tool=callgrind`): a warm
//! `ServerConn` takes N GET requests as h2load's encoder sends them after the first (indexed
//! fields and one dynamic-table reference), and queues a response head of four fields and a
//! 100-byte body, the output drained each time.
//!
//! `cargo run --release -p fulcrum-h2 --example per_request -- 100000`

use std::time::Instant;

use fulcrum_h2::frame::{self, Header, PREFACE, flag, kind};
use fulcrum_h2::{Event, ServerConn, Settings};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let mut conn = ServerConn::new(Settings::default());
    let mut start = PREFACE.to_vec();
    frame::write_settings(&mut start, &[]);
    Header {
        len: 0,
        kind: kind::SETTINGS,
        flags: flag::ACK,
        stream: 0,
    }
    .write(&mut start);
    frame::write_window_update(&mut start, 0, (1 << 31) - 1 - 65_535);
    // The first request inserts :authority and user-agent; the others refer to them.
    let mut first = vec![0x82, 0x86, 0x84, 0x41, 9];
    first.extend_from_slice(b"127.0.0.1");
    first.extend_from_slice(&[0x7a, 21]);
    first.extend_from_slice(b"h2load nghttp2/1.52.0");
    let later = [0x82, 0x86, 0x84, 0xbf, 0xbe];
    let mut input = start.clone();
    let mut frame_for = |id: u32, block: &[u8]| {
        Header {
            len: block.len() as u32,
            kind: kind::HEADERS,
            flags: flag::END_HEADERS | flag::END_STREAM,
            stream: id,
        }
        .write(&mut input);
        input.extend_from_slice(block);
    };
    frame_for(1, &first);
    for i in 1..n {
        frame_for(2 * i + 1, &later);
    }
    let body = [b'b'; 100];
    let fields: [(&[u8], &[u8]); 4] = [
        (b"Content-Type", b"text/plain"),
        (b"Content-Length", b"100"),
        (b"Server", b"member"),
        (b"Date", b"Sun, 06 Dec 2026 17:00:00 GMT"),
    ];
    let t = Instant::now();
    let mut at = 0;
    let mut served = 0u32;
    let mut written = 0usize;
    loop {
        let (used, event) = conn.receive(&input[at..]).expect("valid input");
        at += used;
        match event {
            Event::NeedMore => break,
            Event::Request { stream, .. } => {
                let head = conn.head();
                std::hint::black_box((head.method(), head.path(), head.authority()));
                for f in head.fields() {
                    std::hint::black_box(f);
                }
                conn.send_headers(stream, 200, fields, false);
                conn.send_data(stream, &body, true);
                written += conn.output().len();
                let w = conn.output().len();
                conn.consume_output(w);
                served += 1;
            }
            _ => {}
        }
    }
    let dt = t.elapsed();
    println!(
        "{served} requests, {:.0} ns/request, {} output bytes/request",
        dt.as_nanos() as f64 / f64::from(served.max(1)),
        written / served.max(1) as usize
    );
}
