//! Which addresses are the public internet. Both doors out to the network (a workspace
//! command's routes, a plugin's outbound HTTP) refuse everything else unless the policy names
//! it: loopback, RFC 1918, link-local with the cloud metadata address 169.254.169.254, CGNAT,
//! documentation, benchmark and reserved ranges, multicast, and for IPv6 ULA, link-local, NAT64,
//! 6to4, Teredo and the IPv4-mapped and -compatible forms.

use std::net::IpAddr;
use std::sync::LazyLock;

use ipnet::IpNet;

/// Every range that is not the public internet. (A sandboxed command's slirp4netns network,
/// 10.0.2.0/24, keeps a more specific route of its own: see `workspace::netns`.)
pub const NOT_PUBLIC: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/96",
    "::1/128",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/32",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

static NOT_PUBLIC_NETS: LazyLock<Vec<IpNet>> =
    LazyLock::new(|| NOT_PUBLIC.iter().filter_map(|range| range.parse().ok()).collect());

/// Whether `ip` is on the public internet. An IPv4-mapped IPv6 address is judged as the IPv4
/// address it maps (it is in `::ffff:0:0/96` anyway, so refused either way).
pub fn is_public(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    !NOT_PUBLIC_NETS.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_parses() {
        assert_eq!(NOT_PUBLIC_NETS.len(), NOT_PUBLIC.len());
    }

    #[test]
    fn the_public_internet_is_public_and_nothing_else() {
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for not_public in [
            "127.0.0.1",
            "127.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "fd00::1",
            "fe80::1",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
            "2002:7f00:1::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(!is_public(not_public.parse().unwrap()), "{not_public}");
        }
    }
}
