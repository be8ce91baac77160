//! Picking a load balancer's address (its VIP) when none is given: the first free
//! address of the node's VIP ranges, within the load balancer's subnet when it has one.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::SubnetSpec;

/// Why no address could be picked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VipError {
    /// The subnet shares no address with the ranges this node may bind.
    OutsideRanges { subnet: IpNet, ranges: Vec<IpNet> },
    /// Every address that could be picked is taken.
    Exhausted { within: Vec<IpNet> },
}

impl std::fmt::Display for VipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VipError::OutsideRanges { subnet, ranges } => write!(
                f,
                "subnet {subnet} has no address in the VIP ranges this node can bind ({}); \
                 [proxy] vip_ranges must include it",
                list(ranges)
            ),
            VipError::Exhausted { within } => write!(
                f,
                "no free address left for a load balancer in {}",
                list(within)
            ),
        }
    }
}

impl std::error::Error for VipError {}

fn list(nets: &[IpNet]) -> String {
    if nets.is_empty() {
        return "none configured".into();
    }
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// True for the network and broadcast addresses of an IPv4 block that has them (/30 and
/// wider) and the subnet-router address of an IPv6 block (/126 and wider).
pub fn is_network_or_broadcast(net: &IpNet, addr: IpAddr) -> bool {
    match net {
        IpNet::V4(n) if n.prefix_len() <= 30 => {
            addr == IpAddr::V4(n.network()) || addr == IpAddr::V4(n.broadcast())
        }
        IpNet::V6(n) if n.prefix_len() <= 126 => addr == IpAddr::V6(n.network()),
        _ => false,
    }
}

/// The block two CIDRs share: the narrower one when one contains the other, else none
/// (CIDR blocks never partly overlap).
fn intersect(a: &IpNet, b: &IpNet) -> Option<IpNet> {
    if a.contains(b) {
        Some(*b)
    } else if b.contains(a) {
        Some(*a)
    } else {
        None
    }
}

/// The first address, range by range in order, that lies in `subnet` (when given), is no
/// network, broadcast or gateway address of the range or the subnet, and is not `used`.
/// Looks at no more than `used`'s size plus a few addresses per range, however wide.
pub fn allocate_vip(
    ranges: &[IpNet],
    subnet: Option<&SubnetSpec>,
    used: impl Fn(IpAddr) -> bool,
) -> Result<IpAddr, VipError> {
    let blocks: Vec<(IpNet, IpNet)> = ranges
        .iter()
        .filter_map(|r| match subnet {
            None => Some((*r, *r)),
            Some(s) => intersect(r, &s.cidr).map(|b| (*r, b)),
        })
        .collect();
    if blocks.is_empty()
        && let Some(s) = subnet
    {
        return Err(VipError::OutsideRanges {
            subnet: s.cidr,
            ranges: ranges.to_vec(),
        });
    }
    let reserved = |range: &IpNet, addr: IpAddr| {
        is_network_or_broadcast(range, addr)
            || subnet.is_some_and(|s| {
                is_network_or_broadcast(&s.cidr, addr) || s.gateway_ip == Some(addr)
            })
    };
    for (range, block) in &blocks {
        if let Some(addr) = block
            .hosts()
            .find(|a| !a.is_unspecified() && !reserved(range, *a) && !used(*a))
        {
            return Ok(addr);
        }
    }
    Err(VipError::Exhausted {
        within: blocks.into_iter().map(|(_, b)| b).collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn subnet(cidr: &str, gw: Option<&str>) -> SubnetSpec {
        SubnetSpec {
            name: String::new(),
            description: String::new(),
            cidr: cidr.parse().unwrap(),
            vpc_id: "v".into(),
            gateway_ip: gw.map(|g| g.parse().unwrap()),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn network_and_broadcast_addresses_only_where_a_block_has_them() {
        let v4: IpNet = "10.0.0.0/30".parse().unwrap();
        assert!(is_network_or_broadcast(&v4, ip("10.0.0.0")));
        assert!(is_network_or_broadcast(&v4, ip("10.0.0.3")));
        assert!(!is_network_or_broadcast(&v4, ip("10.0.0.1")));
        // A /31 and a /32 have no network or broadcast address: both are hosts.
        for (net, addr) in [
            ("10.0.0.0/31", "10.0.0.0"),
            ("10.0.0.1/31", "10.0.0.1"),
            ("10.0.0.5/32", "10.0.0.5"),
        ] {
            assert!(
                !is_network_or_broadcast(&net.parse().unwrap(), ip(addr)),
                "{net}"
            );
        }
        let v6: IpNet = "fd00::/126".parse().unwrap();
        assert!(is_network_or_broadcast(&v6, ip("fd00::")));
        assert!(!is_network_or_broadcast(&v6, ip("fd00::3")));
        assert!(!is_network_or_broadcast(
            &"fd00::/127".parse().unwrap(),
            ip("fd00::")
        ));
    }

    #[test]
    fn picks_the_first_free_host_skipping_reserved_and_used() {
        let loopback = nets(&["127.0.0.0/8"]);
        // (subnet, gateway, used, expected; None: every address is taken)
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            &'a [&'a str],
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            (None, None, &[], Some("127.0.0.1")),
            (None, None, &["127.0.0.1", "127.0.0.2"], Some("127.0.0.3")),
            (
                Some("127.0.0.0/24"),
                Some("127.0.0.1"),
                &[],
                Some("127.0.0.2"),
            ),
            (
                Some("127.1.2.0/24"),
                Some("127.1.2.1"),
                &["127.1.2.2"],
                Some("127.1.2.3"),
            ),
            // A /30 has two hosts: the gateway takes one, a load balancer the other.
            (
                Some("127.9.9.0/30"),
                Some("127.9.9.1"),
                &[],
                Some("127.9.9.2"),
            ),
            (
                Some("127.9.9.0/30"),
                Some("127.9.9.1"),
                &["127.9.9.2"],
                None,
            ),
            // A subnet wider than the range: only the range's addresses.
            (Some("0.0.0.0/0"), None, &[], Some("127.0.0.1")),
        ];
        for (sub, gw, used, want) in cases {
            let s = sub.map(|c| subnet(c, *gw));
            let used: HashSet<IpAddr> = used.iter().map(|u| ip(u)).collect();
            let got = allocate_vip(&loopback, s.as_ref(), |a| used.contains(&a));
            match want {
                Some(w) => assert_eq!(got, Ok(ip(w)), "{sub:?} {gw:?}"),
                None => assert!(
                    matches!(got, Err(VipError::Exhausted { .. })),
                    "{sub:?}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn a_subnet_outside_every_range_is_refused_by_name() {
        let e = allocate_vip(
            &nets(&["127.0.0.0/8"]),
            Some(&subnet("10.0.0.0/24", None)),
            |_| false,
        )
        .unwrap_err();
        assert!(matches!(e, VipError::OutsideRanges { .. }));
        let text = e.to_string();
        assert!(
            text.contains("10.0.0.0/24") && text.contains("127.0.0.0/8"),
            "{text}"
        );
    }

    #[test]
    fn ranges_are_tried_in_order_and_ipv6_works() {
        let r = nets(&["10.1.0.0/30", "fd00::/120"]);
        let used: HashSet<IpAddr> = [ip("10.1.0.1"), ip("10.1.0.2")].into();
        assert_eq!(
            allocate_vip(&r, None, |a| used.contains(&a)),
            Ok(ip("fd00::1"))
        );
        assert_eq!(
            allocate_vip(&r, Some(&subnet("fd00::/64", None)), |_| false),
            Ok(ip("fd00::1"))
        );
    }

    #[test]
    fn no_ranges_means_nothing_to_give() {
        assert!(matches!(
            allocate_vip(&[], None, |_| false),
            Err(VipError::Exhausted { .. })
        ));
    }
}
