//! `fulcrum_h1::parse_request` on arbitrary bytes: never panics, and what it returns keeps
//! the codec's promises (spans inside the head, a head that parses the same on its own,
//! no `Length(0)`, incomplete only below the limit).
#![no_main]

use fulcrum_h1::{Body, Span, parse_request};

const MAX_HEAD: usize = 8 * 1024;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut fields = Vec::new();
    match parse_request(data, &mut fields, MAX_HEAD) {
        Ok(Some(req)) => {
            assert!(req.head_len <= data.len() && req.head_len <= MAX_HEAD);
            let inside = |s: Span| s.start <= s.end && s.end as usize <= req.head_len;
            assert!(inside(req.method_span) && inside(req.target));
            assert!(req.authority.is_none_or(inside));
            assert!(req.host.is_none_or(inside) && req.upgrade.is_none_or(inside));
            for f in &fields {
                assert!(inside(f.name) && inside(f.value));
            }
            assert_ne!(req.body, Body::Length(0));
            assert_ne!(
                req.body,
                Body::UntilClose,
                "a request is never framed by close"
            );
            // The head alone is the same head: its end does not depend on what follows.
            let mut again = Vec::new();
            let alone = parse_request(&data[..req.head_len], &mut again, MAX_HEAD);
            assert!(
                matches!(alone, Ok(Some(r)) if r.head_len == req.head_len && r.body == req.body)
            );
            assert_eq!(again.len(), fields.len());
        }
        Ok(None) => assert!(data.len() < MAX_HEAD, "a head past the limit is refused"),
        Err(e) => assert!(matches!(e.status(), 400 | 431)),
    }
});
