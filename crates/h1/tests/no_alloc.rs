//! Parsing never allocates: a counting global allocator watches `parse_request` and
//! `parse_response` with a field vector kept from an earlier parse (so its capacity is
//! there), and `Chunked::scan` / `Chunked::step`, on valid input, on every way of refusing
//! it, and on incomplete input.

use fulcrum_h1::{Chunked, MAX_HEADERS, Method, Step, parse_request, parse_response};

use fulcrum_testkit::{CountingAllocator, thread_allocations};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Allocations made by `f` on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = thread_allocations();
    let out = std::hint::black_box(f());
    (thread_allocations() - before, out)
}

const REQUESTS: [&[u8]; 14] = [
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\nhello world",
    b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n",
    b"GET http://Example.com/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, X-A, X-B\r\nUpgrade: websocket\r\nX-A: 1\r\nX-B: 2\r\n\r\n",
    // Incomplete, and refused for every kind of reason.
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Partial: ",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n",
    b"GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
];

const RESPONSES: [&[u8]; 8] = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.0 204\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nServer: x\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    b"HTTP/1.1 2x0 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
];

/// A head with all `MAX_HEADERS` fields, so the reused vector is at its largest.
fn full_head(start_line: &str) -> Vec<u8> {
    let mut raw = format!("{start_line}\r\nHost: x\r\n").into_bytes();
    for i in 1..MAX_HEADERS {
        raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw
}

/// Each head, and each of its prefixes, with small and large limits: what a proxy does as
/// bytes arrive.
fn inputs(heads: &[&[u8]], full: &[u8]) -> Vec<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    for head in heads.iter().copied().chain([full]) {
        for cut in [head.len(), head.len() / 2, 3] {
            for max in [64 * 1024, 32] {
                out.push((head[..cut.min(head.len())].to_vec(), max));
            }
        }
    }
    out
}

#[test]
fn parse_request_does_not_allocate() {
    let full = full_head("GET / HTTP/1.1");
    let inputs = inputs(&REQUESTS, &full);
    // A vector kept from earlier parses: the largest head has filled its capacity.
    let mut fields = Vec::new();
    for (buf, max) in &inputs {
        let _ = parse_request(buf, &mut fields, *max);
    }
    assert!(fields.capacity() >= MAX_HEADERS);
    let mut complete = 0;
    for (buf, max) in &inputs {
        let (made, got) = allocations(|| parse_request(buf, &mut fields, *max));
        assert_eq!(made, 0, "{:?}: {got:?}", buf.escape_ascii().to_string());
        complete += usize::from(matches!(got, Ok(Some(_))));
    }
    assert!(complete >= 8, "only {complete} complete heads");
}

#[test]
fn parse_response_does_not_allocate() {
    let full = full_head("HTTP/1.1 200 OK");
    let inputs = inputs(&RESPONSES, &full);
    let mut fields = Vec::new();
    for (buf, max) in &inputs {
        let _ = parse_response(buf, &mut fields, *max, Method::Get);
    }
    let mut complete = 0;
    for (buf, max) in &inputs {
        for method in [Method::Get, Method::Head] {
            let (made, got) = allocations(|| parse_response(buf, &mut fields, *max, method));
            assert_eq!(made, 0, "{:?}: {got:?}", buf.escape_ascii().to_string());
            complete += usize::from(matches!(got, Ok(Some(_))));
        }
    }
    assert!(complete >= 8, "only {complete} complete heads");
}

const BODIES: [&[u8]; 9] = [
    b"3\r\nabc\r\n10;ext=1;q=\"a b\"\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\nNEXT",
    b"0\r\n\r\n",
    b"ffffffffffffffff\r\nabc",
    b"3\r\nabc\r\n0\r\n",
    b"zz\r\n",
    b"3\nabc\n0\n\n",
    b"3\r\nabcde\r\n",
    b"11111111111111111\r\n",
    b"0\r\n folded\r\n\r\n",
];

#[test]
fn chunked_does_not_allocate() {
    let mut big = Vec::new();
    for size in [1usize, 0x7ff, 0x1000] {
        big.extend_from_slice(format!("{size:X}\r\n").as_bytes());
        big.resize(big.len() + size, b'x');
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b"0\r\n\r\n");
    let mut done = 0;
    for body in BODIES.iter().copied().chain([&big[..]]) {
        // Whole, and in pieces of every size up to 7 bytes.
        for piece in [body.len().max(1), 1, 2, 3, 7] {
            let (made, ended) = allocations(|| {
                let mut c = Chunked::default();
                for part in body.chunks(piece) {
                    if c.scan(part).is_err() {
                        break;
                    }
                }
                c.is_done()
            });
            assert_eq!(
                made,
                0,
                "scan {:?} by {piece}",
                body.escape_ascii().to_string()
            );
            done += usize::from(ended);

            let (made, _) = allocations(|| {
                let mut c = Chunked::default();
                let mut data = 0;
                'pieces: for part in body.chunks(piece) {
                    let mut at = 0;
                    while at < part.len() {
                        match c.step(&part[at..]) {
                            Ok(Step::Data(n) | Step::Framing(n)) => at += n,
                            Ok(Step::Done(_)) | Err(_) => break 'pieces,
                        }
                        data += 1;
                    }
                }
                data
            });
            assert_eq!(
                made,
                0,
                "step {:?} by {piece}",
                body.escape_ascii().to_string()
            );
        }
    }
    assert!(done >= 15, "only {done} bodies ended");
}

#[test]
fn the_counter_works() {
    let (made, _) = allocations(|| vec![1u8; 16]);
    assert!(made >= 1);
    // A field vector without the capacity does allocate: the reuse above is what matters.
    let (made, _) = allocations(|| {
        let mut fields = Vec::new();
        let _ = parse_request(REQUESTS[0], &mut fields, 1 << 16);
        fields
    });
    assert!(made >= 1);
}
