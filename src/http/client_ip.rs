//! The client's IP for limits and bans (docs/PROTOCOL.md section 8): the peer
//! address, unless the peer is a trusted reverse proxy, in which case the
//! rightmost `X-Forwarded-For` address that is not itself a trusted proxy,
//! or else `X-Real-IP`. From any other peer these headers are ignored, so a
//! client cannot pick its own identity.
//!
//! Pure; never panics on peer input. The IP is used as a limiter key only
//! and never logged or echoed.

use super::head::RequestHead;
use std::net::IpAddr;

/// An address range such as `10.0.0.0/8` or `::1/128`; a bare address is
/// its own /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR range (like 10.0.0.0/8)");
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let network = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = len.unwrap_or(max);
        if prefix_len > max {
            return Err(bad());
        }
        Ok(Cidr {
            network,
            prefix_len,
        })
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of IPv4
/// clients) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn trusted(proxies: &[Cidr], ip: IpAddr) -> bool {
    proxies.iter().any(|c| c.contains(ip))
}

/// The client's IP for a request that arrived from `peer`.
pub fn client_ip(peer: IpAddr, head: &RequestHead, proxies: &[Cidr]) -> IpAddr {
    if proxies.is_empty() || !trusted(proxies, peer) {
        return peer;
    }
    // Every X-Forwarded-For header, as one list, read from the right.
    let mut forwarded: Vec<&[u8]> = Vec::new();
    for value in head.headers_named("x-forwarded-for") {
        forwarded.extend(value.split(|&b| b == b','));
    }
    if !forwarded.is_empty() {
        let mut leftmost = None;
        for item in forwarded.iter().rev() {
            let Some(ip) = parse_forwarded_ip(item) else {
                // Garbage where a client address should be: do not guess.
                return peer;
            };
            if !trusted(proxies, ip) {
                return canonical(ip);
            }
            leftmost = Some(ip);
        }
        // Every hop is a trusted proxy: the first one is the client.
        return leftmost.map_or(peer, canonical);
    }
    head.header("x-real-ip")
        .and_then(parse_forwarded_ip)
        .map_or(peer, canonical)
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_forwarded_ip(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw).ok()?.trim_matches([' ', '\t']);
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        RequestHead::new("GET", "/", 1, &headers)
    }

    fn proxies(list: &str) -> Vec<Cidr> {
        list.split(',').map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_ranges_match_their_members_only() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:5::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let h = head(&[("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "5.6.7.8")]);
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &[]), ip("9.9.9.9"));
        assert_eq!(
            client_ip(ip("9.9.9.9"), &h, &proxies("10.0.0.1")),
            ip("9.9.9.9")
        );
    }

    #[test]
    fn the_rightmost_untrusted_forwarded_address_is_the_client() {
        let p = proxies("10.0.0.0/8");
        let h = head(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &p), ip("1.2.3.4"));
        let split = head(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "1.2.3.4:5555"),
        ]);
        assert_eq!(client_ip(ip("10.0.0.1"), &split, &p), ip("1.2.3.4"));
        let all_trusted = head(&[("x-forwarded-for", "10.9.9.9, 10.0.0.7")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &all_trusted, &p), ip("10.9.9.9"));
        let v6 = head(&[("x-forwarded-for", "[2001:db8::5]:443")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &v6, &p), ip("2001:db8::5"));
    }

    #[test]
    fn real_ip_is_used_without_forwarded_for_and_garbage_falls_back_to_the_peer() {
        let p = proxies("127.0.0.1");
        let h = head(&[("x-real-ip", "1.2.3.4")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &p), ip("1.2.3.4"));
        let junk = head(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &junk, &p), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("127.0.0.1"), &head(&[]), &p), ip("127.0.0.1"));
    }
}
