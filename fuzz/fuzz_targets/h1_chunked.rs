//! `fulcrum_h1::Chunked` on arbitrary bytes: every step makes progress within what it was
//! given, and feeding the body in pieces (the first byte picks their size) ends exactly
//! where feeding it whole does, with the same data.
#![no_main]

use fulcrum_h1::{ChunkError, Chunked, Step};

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The body ended after this many bytes.
    Done(usize),
    Refused(ChunkError),
    /// The input ended first.
    Incomplete,
}

/// Walks `body` giving the scanner at most `piece` bytes at a time: where it ends, and
/// the chunk data bytes seen.
fn walk(body: &[u8], piece: usize) -> (End, usize) {
    let mut scanner = Chunked::default();
    let (mut at, mut data) = (0, 0);
    while at < body.len() {
        let window = &body[at..at.saturating_add(piece).min(body.len())];
        match scanner.step(window) {
            Ok(Step::Framing(n)) => {
                assert!(
                    n > 0 && n <= window.len(),
                    "framing step {n} of {}",
                    window.len()
                );
                at += n;
            }
            Ok(Step::Data(n)) => {
                assert!(
                    n > 0 && n <= window.len(),
                    "data step {n} of {}",
                    window.len()
                );
                at += n;
                data += n;
            }
            Ok(Step::Done(n)) => {
                assert!(n <= window.len());
                assert!(scanner.is_done());
                assert_eq!(scanner.step(&[]), Ok(Step::Done(0)));
                return (End::Done(at + n), data);
            }
            Err(e) => return (End::Refused(e), data),
        }
    }
    (End::Incomplete, data)
}

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let Some((piece, body)) = input.split_first() else {
        return;
    };
    let whole = walk(body, usize::MAX);
    let pieces = walk(body, usize::from(*piece % 17) + 1);
    assert_eq!(whole, pieces);
});
