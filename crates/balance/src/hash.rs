//! Stable, fast, non-cryptographic hashes for consistent hashing.
//!
//! Why not `std::hash::DefaultHasher`: its algorithm is unspecified and may change with any Rust
//! release, while every fulcrum instance, and both versions during a rolling upgrade, must send a
//! client to the same member. These functions are part of that contract: changing one remaps
//! every client (a test pins their values).
//!
//! They are not keyed, so a client who can choose its address can choose its member; with
//! source-IP affinity that is the case whatever the hash.

use std::net::{IpAddr, Ipv4Addr};

/// SplitMix64's finalizer: a bijection on `u64` with full avalanche. Used to spread keys and
/// client hashes over tables.
#[inline]
pub const fn mix64(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of a byte string, e.g. a member id, for [`Candidate::key`](crate::Candidate::key).
/// FNV-1a, then [`mix64`] because FNV alone avalanches poorly on short inputs.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let h = bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    mix64(h)
}

/// Hash of a client address, for source-IP consistent hashing.
///
/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as seen on a dual-stack socket) hashes like
/// the IPv4 address itself, so a client keeps its member whichever socket it arrived on.
pub fn hash_ip(addr: IpAddr) -> u64 {
    match addr {
        IpAddr::V4(a) => hash_v4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => hash_v4(v4),
            None => {
                const V6_TAG: u64 = 0x6666_0000_0000_0006;
                let bits = u128::from(a);
                let high = (bits >> 64) as u64;
                let low = bits as u64;
                mix64(mix64(high ^ V6_TAG) ^ low)
            }
        },
    }
}

fn hash_v4(addr: Ipv4Addr) -> u64 {
    const V4_TAG: u64 = 4 << 32;
    mix64(u64::from(u32::from(addr)) | V4_TAG)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn mapped_v6_hashes_like_v4() {
        let v4 = Ipv4Addr::new(192, 0, 2, 7);
        assert_eq!(
            hash_ip(IpAddr::V4(v4)),
            hash_ip(IpAddr::V6(v4.to_ipv6_mapped()))
        );
        assert_ne!(
            hash_ip(IpAddr::V4(v4)),
            hash_ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8)))
        );
    }

    #[test]
    fn v6_hash_uses_both_halves() {
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let c: Ipv6Addr = "2001:db9::1".parse().unwrap();
        let (ha, hb, hc) = (
            hash_ip(IpAddr::V6(a)),
            hash_ip(IpAddr::V6(b)),
            hash_ip(IpAddr::V6(c)),
        );
        assert_ne!(ha, hb);
        assert_ne!(ha, hc);
    }

    /// The values are a compatibility contract: if this test fails, every client of every
    /// SOURCE_IP pool moves on upgrade. Change the expected values only on purpose.
    #[test]
    fn hashes_are_pinned() {
        eprintln!(
            "PIN {:#018x} {:#018x} {:#018x} {:#018x} {:#018x}",
            mix64(1),
            hash_bytes(b""),
            hash_bytes(b"member-1"),
            hash_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))),
            hash_ip("2001:db8::1".parse().unwrap())
        );
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), PINNED[0]);
        assert_eq!(hash_bytes(b""), PINNED[1]);
        assert_eq!(hash_bytes(b"member-1"), PINNED[2]);
        assert_eq!(
            hash_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))),
            PINNED[3]
        );
        assert_eq!(hash_ip("2001:db8::1".parse().unwrap()), PINNED[4]);
    }

    const PINNED: [u64; 5] = [
        0x5692_161d_100b_05e5,
        0xf52a_15e9_a9b5_e89b,
        0x36ad_226c_7f51_81a0,
        0xfe8d_d6ed_ed31_648d,
        0x6d92_321f_e8ef_8243,
    ];
}
