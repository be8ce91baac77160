//! QUIC packet headers as a load balancer sees them, and the QUIC-LB plaintext connection-ID
//! format. Pure: bytes in, borrowed slices out; no I/O, no clock, no allocation, and no input
//! makes it panic (a fuzz target feeds it arbitrary bytes).
//!
//! What is read, and what is deliberately not:
//! - Only bit 0x80 of the first byte is version-independent (RFC 8999 §5): set, a long
//!   header; clear, a short one. The 0x40 "fixed bit" is never tested (RFC 9287 lets
//!   endpoints grease it, and quinn does by default).
//! - A long header carries its version, then both connection IDs with their lengths, so
//!   they are readable for every version (RFC 8999 §5.1). The packet type (bits 0x30) is
//!   interpreted for QUIC v1 (RFC 9000 §17.2) and v2 (RFC 9369 §3.2, which renumbers it);
//!   version 0 is a Version Negotiation packet. Unknown versions still parse, with
//!   [`LongType::Unknown`].
//! - A short header's DCID length is not on the wire: the caller says how many bytes it
//!   wants (QUIC-LB's self-describing first octet makes that the prefix the load balancer
//!   needs), and gets at most what the datagram holds.
//! - Only the first packet of a datagram is read: coalesced packets share its DCID
//!   (RFC 9000 §12.2).
//!
//! QUIC-LB (draft-ietf-quic-load-balancers-21 §5.2, plaintext): the first octet's bits 7–5
//! are the config ID (0b111 marks an unroutable CID), bits 4–0 the length self-description
//! (or random); the server ID follows in bytes `1..=server_id_len`, then the nonce.

/// QUIC version 1 (RFC 9000).
pub const QUIC_V1: u32 = 0x0000_0001;
/// QUIC version 2 (RFC 9369).
pub const QUIC_V2: u32 = 0x6b33_43cf;

/// The longest connection ID QUIC v1 and v2 allow (RFC 9000 §17.2). The invariants allow up
/// to 255 bytes for other versions, and those parse too.
pub const MAX_CID_LEN_V1: usize = 20;

/// The QUIC-LB config ID that marks a connection ID as unroutable.
pub const UNROUTABLE_CONFIG_ID: u8 = 0b111;

/// A long-header packet's type, as far as its version defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongType {
    Initial,
    ZeroRtt,
    Handshake,
    Retry,
    /// Version 0: the server lists the versions it supports.
    VersionNegotiation,
    /// A version this parser does not know: routed by its CIDs all the same.
    Unknown,
}

impl LongType {
    /// Whether the DCID is still the one the client chose (it has not heard from a server
    /// yet, or is retrying after a Retry): Initial and 0-RTT packets.
    pub fn client_chosen_dcid(self) -> bool {
        matches!(self, LongType::Initial | LongType::ZeroRtt)
    }
}

/// The first packet of a datagram, as much as a load balancer needs of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header<'a> {
    Long {
        version: u32,
        kind: LongType,
        dcid: &'a [u8],
        scid: &'a [u8],
    },
    /// `dcid` holds at most the number of bytes the caller asked for (fewer when the
    /// datagram is shorter).
    Short { dcid: &'a [u8] },
}

impl<'a> Header<'a> {
    /// The destination connection ID.
    pub fn dcid(&self) -> &'a [u8] {
        match *self {
            Header::Long { dcid, .. } | Header::Short { dcid } => dcid,
        }
    }
}

/// Why a datagram is not a QUIC packet a load balancer can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// No bytes at all.
    Empty,
    /// A long header cut short before the end of its connection IDs.
    Truncated,
    /// A v1 or v2 long header with a connection ID longer than 20 bytes (RFC 9000 §17.2:
    /// such packets are dropped).
    CidTooLong,
}

/// Parses the first packet's header of `datagram`; for a short header, up to
/// `short_dcid_len` bytes of DCID are returned.
pub fn parse(datagram: &[u8], short_dcid_len: usize) -> Result<Header<'_>, Malformed> {
    let (&first, rest) = datagram.split_first().ok_or(Malformed::Empty)?;
    if first & 0x80 == 0 {
        let n = short_dcid_len.min(rest.len());
        return Ok(Header::Short { dcid: &rest[..n] });
    }
    let (version, rest) = split(rest, 4).ok_or(Malformed::Truncated)?;
    let version = u32::from_be_bytes([version[0], version[1], version[2], version[3]]);
    let (dcid, rest) = cid(rest)?;
    let (scid, _) = cid(rest)?;
    let kind = long_type(version, first);
    if matches!(version, QUIC_V1 | QUIC_V2)
        && (dcid.len() > MAX_CID_LEN_V1 || scid.len() > MAX_CID_LEN_V1)
    {
        return Err(Malformed::CidTooLong);
    }
    Ok(Header::Long {
        version,
        kind,
        dcid,
        scid,
    })
}

fn split(b: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (b.len() >= n).then(|| b.split_at(n))
}

/// A length-prefixed connection ID.
fn cid(b: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    let (&len, rest) = b.split_first().ok_or(Malformed::Truncated)?;
    split(rest, usize::from(len)).ok_or(Malformed::Truncated)
}

fn long_type(version: u32, first: u8) -> LongType {
    let bits = (first >> 4) & 0b11;
    match (version, bits) {
        (0, _) => LongType::VersionNegotiation,
        (QUIC_V1, 0) | (QUIC_V2, 1) => LongType::Initial,
        (QUIC_V1, 1) | (QUIC_V2, 2) => LongType::ZeroRtt,
        (QUIC_V1, 2) | (QUIC_V2, 3) => LongType::Handshake,
        (QUIC_V1, 3) | (QUIC_V2, 0) => LongType::Retry,
        _ => LongType::Unknown,
    }
}

/// A pool's QUIC-LB plaintext configuration: which connection IDs carry a server ID, and
/// where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaintextConfig {
    /// The config ID (0–6) the servers write in bits 7–5 of the first octet.
    pub config_id: u8,
    /// Bytes of server ID after the first octet (1–15).
    pub server_id_len: usize,
    /// Bytes of nonce after the server ID (4–18): a shorter CID is not routable.
    pub nonce_len: usize,
}

impl PlaintextConfig {
    /// The shortest connection ID this configuration routes.
    pub fn cid_len(&self) -> usize {
        1 + self.server_id_len + self.nonce_len
    }

    /// The server ID encoded in `cid`, when it is a routable CID of this configuration:
    /// long enough, and its config ID is this one (never 0b111).
    pub fn server_id<'a>(&self, cid: &'a [u8]) -> Option<&'a [u8]> {
        let &first = cid.first()?;
        if first >> 5 != self.config_id
            || first >> 5 == UNROUTABLE_CONFIG_ID
            || cid.len() < self.cid_len()
        {
            return None;
        }
        cid.get(1..1 + self.server_id_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long-header packet: first byte, version, DCID, SCID, then `tail`.
    fn long(first: u8, version: u32, dcid: &[u8], scid: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut p = vec![first];
        p.extend_from_slice(&version.to_be_bytes());
        p.push(dcid.len() as u8);
        p.extend_from_slice(dcid);
        p.push(scid.len() as u8);
        p.extend_from_slice(scid);
        p.extend_from_slice(tail);
        p
    }

    /// A long header's fields: version, type, DCID, SCID.
    type Long<'a> = (u32, LongType, &'a [u8], &'a [u8]);

    fn check(datagram: &[u8], expect: Result<Long<'_>, Malformed>) {
        let got = parse(datagram, 8).map(|h| match h {
            Header::Long {
                version,
                kind,
                dcid,
                scid,
            } => (version, kind, dcid, scid),
            Header::Short { .. } => panic!("short header for {datagram:02x?}"),
        });
        assert_eq!(got, expect, "{datagram:02x?}");
    }

    #[test]
    fn long_header_types_of_v1_and_v2() {
        let (d, s) = (&[1u8, 2, 3, 4, 5, 6, 7, 8][..], &[9u8, 10][..]);
        // v1: 0x30 bits 0 Initial, 1 0-RTT, 2 Handshake, 3 Retry; the low bits are protected.
        for (first, kind) in [
            (0xc3, LongType::Initial),
            (0xd0, LongType::ZeroRtt),
            (0xef, LongType::Handshake),
            (0xf5, LongType::Retry),
            // The fixed bit greased (RFC 9287): still read.
            (0x80, LongType::Initial),
        ] {
            check(
                &long(first, QUIC_V1, d, s, &[0; 30]),
                Ok((QUIC_V1, kind, d, s)),
            );
        }
        // v2 renumbers: 0 Retry, 1 Initial, 2 0-RTT, 3 Handshake.
        for (first, kind) in [
            (0xc0, LongType::Retry),
            (0xd0, LongType::Initial),
            (0xe0, LongType::ZeroRtt),
            (0xf0, LongType::Handshake),
        ] {
            check(&long(first, QUIC_V2, d, s, &[]), Ok((QUIC_V2, kind, d, s)));
        }
        assert!(LongType::Initial.client_chosen_dcid());
        assert!(LongType::ZeroRtt.client_chosen_dcid());
        assert!(!LongType::Handshake.client_chosen_dcid());
        assert!(!LongType::Retry.client_chosen_dcid());
    }

    #[test]
    fn version_negotiation_and_unknown_versions_are_routable() {
        // Version negotiation: version 0, the CIDs echoed swapped, then versions.
        check(
            &long(0xff, 0, b"cli", b"server-cid", &QUIC_V1.to_be_bytes()),
            Ok((0, LongType::VersionNegotiation, b"cli", b"server-cid")),
        );
        // An unknown version may carry CIDs up to 255 bytes.
        let big = [7u8; 200];
        check(
            &long(0xc0, 0x1a2a_3a4a, &big, &[], &[]),
            Ok((0x1a2a_3a4a, LongType::Unknown, &big[..], &[][..])),
        );
        // Empty CIDs are fine.
        check(
            &long(0xc0, QUIC_V1, &[], &[], &[]),
            Ok((QUIC_V1, LongType::Initial, &[][..], &[][..])),
        );
    }

    #[test]
    fn malformed_long_headers() {
        assert_eq!(parse(&[], 8), Err(Malformed::Empty));
        let good = long(0xc0, QUIC_V1, &[1; 8], &[2; 4], &[]);
        // Every cut before the end of the SCID is truncated.
        for n in 1..good.len() {
            assert_eq!(
                parse(&good[..n], 8),
                Err(Malformed::Truncated),
                "cut at {n}"
            );
        }
        assert!(parse(&good, 8).is_ok());
        // A v1 DCID or SCID of 21 bytes is refused; at 20 it is fine.
        check(
            &long(0xc0, QUIC_V1, &[1; 21], &[], &[]),
            Err(Malformed::CidTooLong),
        );
        check(
            &long(0xc0, QUIC_V2, &[], &[1; 21], &[]),
            Err(Malformed::CidTooLong),
        );
        check(
            &long(0xc0, QUIC_V1, &[1; 20], &[], &[]),
            Ok((QUIC_V1, LongType::Initial, &[1; 20][..], &[][..])),
        );
        check(
            &long(0xc0, QUIC_V2, &[], &[1; 20], &[]),
            Ok((QUIC_V2, LongType::Retry, &[][..], &[1; 20][..])),
        );
        // A DCID length past the end of the datagram.
        assert_eq!(
            parse(&[0xc0, 0, 0, 0, 1, 255, 1, 2, 3], 8),
            Err(Malformed::Truncated)
        );
    }

    #[test]
    fn short_headers_give_at_most_the_asked_prefix() {
        let p = [0x41, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(
            parse(&p, 8),
            Ok(Header::Short {
                dcid: &[1, 2, 3, 4, 5, 6, 7, 8]
            })
        );
        // The fixed bit greased: still a short header.
        assert_eq!(parse(&[0x01, 1, 2], 8), Ok(Header::Short { dcid: &[1, 2] }));
        assert_eq!(parse(&[0x40], 8), Ok(Header::Short { dcid: &[] }));
        assert_eq!(parse(&p, 0).map(|h| h.dcid().len()), Ok(0));
    }

    #[test]
    fn plaintext_server_ids() {
        let cfg = PlaintextConfig {
            config_id: 0,
            server_id_len: 3,
            nonce_len: 4,
        };
        assert_eq!(cfg.cid_len(), 8);
        // The draft's first plaintext vector: cr 0, sid c4605e, nonce 4504cc4f.
        let cid = [0x07, 0xc4, 0x60, 0x5e, 0x45, 0x04, 0xcc, 0x4f];
        assert_eq!(cfg.server_id(&cid), Some(&[0xc4, 0x60, 0x5e][..]));
        // Longer CIDs (servers may append bytes) are fine; the length bits are not checked
        // (they may be random).
        let mut long_cid = cid.to_vec();
        long_cid.extend_from_slice(&[0xaa; 5]);
        long_cid[0] = 0x1f;
        assert_eq!(cfg.server_id(&long_cid), Some(&[0xc4, 0x60, 0x5e][..]));
        // Too short for server ID + nonce.
        assert_eq!(cfg.server_id(&cid[..7]), None);
        assert_eq!(cfg.server_id(&[]), None);
        // Another config ID, or the unroutable one.
        assert_eq!(cfg.server_id(&[0x27, 0xc4, 0x60, 0x5e, 1, 2, 3, 4]), None);
        assert_eq!(cfg.server_id(&[0xe7, 0xc4, 0x60, 0x5e, 1, 2, 3, 4]), None);
        let cfg2 = PlaintextConfig {
            config_id: 2,
            server_id_len: 1,
            nonce_len: 4,
        };
        assert_eq!(cfg2.server_id(&[0x40, 9, 1, 2, 3, 4]), Some(&[9][..]));
        assert_eq!(cfg2.server_id(&[0x00, 9, 1, 2, 3, 4]), None);
        // Config ID 7 can never be configured into a match.
        let cfg7 = PlaintextConfig {
            config_id: 7,
            ..cfg2
        };
        assert_eq!(cfg7.server_id(&[0xe0, 9, 1, 2, 3, 4]), None);
    }

    #[test]
    fn server_id_of_a_parsed_short_header() {
        let cfg = PlaintextConfig {
            config_id: 1,
            server_id_len: 2,
            nonce_len: 4,
        };
        let datagram = [0x43, 0x20, 0xab, 0xcd, 1, 2, 3, 4, 0xff, 0xff];
        let h = parse(&datagram, cfg.cid_len()).unwrap();
        assert_eq!(cfg.server_id(h.dcid()), Some(&[0xab, 0xcd][..]));
        // Cut inside the nonce: not routable, no panic.
        let h = parse(&datagram[..6], cfg.cid_len()).unwrap();
        assert_eq!(cfg.server_id(h.dcid()), None);
    }
}
