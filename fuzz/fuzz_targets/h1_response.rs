//! `fulcrum_h1::parse_response` on arbitrary bytes (the first byte picks the request's
//! method): never panics, and what it returns keeps the codec's promises.
#![no_main]

use fulcrum_h1::{Body, Method, Span, parse_response};

const MAX_HEAD: usize = 8 * 1024;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((m, buf)) = data.split_first() else {
        return;
    };
    let method = Method::of(match m % 5 {
        0 => "GET",
        1 => "HEAD",
        2 => "POST",
        3 => "CONNECT",
        _ => "OPTIONS",
    });
    let mut fields = Vec::new();
    match parse_response(buf, &mut fields, MAX_HEAD, method) {
        Ok(Some(resp)) => {
            assert!(resp.head_len <= buf.len() && resp.head_len <= MAX_HEAD);
            let inside = |s: Span| s.start <= s.end && s.end as usize <= resp.head_len;
            assert!(inside(resp.reason) && resp.upgrade.is_none_or(inside));
            for f in &fields {
                assert!(inside(f.name) && inside(f.value));
            }
            assert_ne!(resp.body, Body::Length(0));
            let mut again = Vec::new();
            let alone = parse_response(&buf[..resp.head_len], &mut again, MAX_HEAD, method);
            assert!(
                matches!(alone, Ok(Some(r)) if r.head_len == resp.head_len && r.body == resp.body)
            );
        }
        Ok(None) => assert!(buf.len() < MAX_HEAD, "a head past the limit is refused"),
        Err(_) => {}
    }
});
