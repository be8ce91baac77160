//! Properties over arbitrary input: the codec never panics, never reports a range outside
//! its input, and sees the same events whichever way the bytes are cut.

#![allow(clippy::unwrap_used)] // test helpers may panic

use fulcrum_h2::frame::{self, Header, PREFACE, flag, kind};
use fulcrum_h2::hpack::{self, Decoder, FieldList};
use fulcrum_h2::{Event, ServerConn, Settings};
use proptest::prelude::*;

fn started() -> (ServerConn, Vec<u8>) {
    let mut start = PREFACE.to_vec();
    frame::write_settings(&mut start, &[]);
    (ServerConn::new(Settings::default()), start)
}

/// Feeds `input` in pieces cut at `cuts`, as a socket would deliver it, keeping unconsumed
/// bytes; returns the events (data as bytes) up to the first error.
fn drive(conn: &mut ServerConn, input: &[u8], cuts: &[usize]) -> Vec<String> {
    let mut events = Vec::new();
    let mut buf = Vec::new();
    let mut fed = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.push(input.len());
    cuts.sort_unstable();
    for cut in cuts {
        if cut < fed {
            continue;
        }
        buf.extend_from_slice(&input[fed..cut]);
        fed = cut;
        let mut at = 0;
        loop {
            match conn.receive(&buf[at..]) {
                Ok((used, event)) => {
                    assert!(used <= buf.len() - at);
                    if let Event::Data {
                        stream,
                        data,
                        end_stream,
                    } = &event
                    {
                        let bytes = buf[at..].get(data.clone()).expect("range inside the input");
                        events.push(format!("data {stream} {bytes:?} {end_stream}"));
                        conn.release(*stream, bytes.len());
                    } else if event == Event::NeedMore {
                        assert_eq!(used, 0);
                        break;
                    } else {
                        if let Event::Request { stream, .. } = event {
                            let h = conn.head();
                            events.push(format!("head {:?} {:?}", h.method(), h.fields().count()));
                            conn.send_headers(stream, 200, [], false);
                            conn.send_data(stream, b"ok", true);
                        }
                        // `Nothing` says no more than that a frame was used; the preface
                        // read alone makes one more.
                        if event != Event::Nothing {
                            events.push(format!("{event:?}"));
                        }
                    }
                    at += used;
                }
                Err(e) => {
                    events.push(format!("error {:?}", e.code));
                    return events;
                }
            }
        }
        buf.drain(..at);
        let n = conn.output().len();
        conn.consume_output(n);
    }
    events
}

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

/// A plausible frame: mostly valid types, flags and small stream ids, arbitrary payloads,
/// and now and then a real request head.
fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            0u8..12,
            any::<u8>(),
            0u32..8,
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(k, f, s, p)| frame_bytes(k, f, s, &p)),
        (0u32..6, any::<bool>()).prop_map(|(s, end)| {
            let mut b = vec![0x82, 0x87, 0x84, 0x01, 0x01, b'a'];
            hpack::encode_field(&mut b, b"x-a", b"1");
            let flags = flag::END_HEADERS | if end { flag::END_STREAM } else { 0 };
            frame_bytes(kind::HEADERS, flags, 2 * s + 1, &b)
        }),
        (
            0u32..6,
            proptest::collection::vec(any::<u8>(), 0..30),
            any::<bool>()
        )
            .prop_map(|(s, p, end)| frame_bytes(
                kind::DATA,
                if end { flag::END_STREAM } else { 0 },
                2 * s + 1,
                &p
            )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (mut conn, mut input) = started();
        input.extend_from_slice(&bytes);
        drive(&mut conn, &input, &[]);
    }

    #[test]
    fn arbitrary_frames_never_panic_and_cutting_changes_nothing(
        frames in proptest::collection::vec(any_frame(), 0..30),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let (mut whole, mut input) = started();
        for f in &frames {
            input.extend_from_slice(f);
        }
        let expected = drive(&mut whole, &input, &[]);
        let (mut cut, _) = started();
        prop_assert_eq!(drive(&mut cut, &input, &cuts), expected);
    }

    #[test]
    fn arbitrary_header_blocks_never_panic(block in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut d = Decoder::new(256);
        let mut out = FieldList::new();
        let _ = d.decode(&block, &mut out, 1024);
        prop_assert!(d.table_size() <= 256);
        // The table still answers afterwards.
        let _ = d.decode(&[0xbe], &mut out, 1024);
    }

    #[test]
    fn encoded_responses_decode_to_what_was_sent(
        status in 100u16..1000,
        fields in proptest::collection::vec(("[a-zA-Z][a-zA-Z0-9-]{0,20}", "[ -~]{0,40}"), 0..10),
    ) {
        let mut block = Vec::new();
        hpack::encode_status(&mut block, status);
        for (n, v) in &fields {
            hpack::encode_field(&mut block, n.as_bytes(), v.as_bytes());
        }
        let mut d = Decoder::new(4096);
        let mut out = FieldList::new();
        d.decode(&block, &mut out, usize::MAX).unwrap();
        let got: Vec<(Vec<u8>, Vec<u8>)> = out.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
        prop_assert_eq!(&got[0], &(b":status".to_vec(), status.to_string().into_bytes()));
        for (i, (n, v)) in fields.iter().enumerate() {
            prop_assert_eq!(&got[i + 1], &(n.to_ascii_lowercase().into_bytes(), v.as_bytes().to_vec()));
        }
        prop_assert_eq!(d.table_size(), 0);
    }
}
