//! Which address a connection comes from when it arrives through a reverse proxy or load
//! balancer the operator trusts (`trusted_proxies`): the address that proxy puts in
//! `X-Forwarded-For`, rather than the proxy's own. Every per-address limit (connections, failed
//! logins, registrations) counts that address. A connection from anywhere else is its TCP peer,
//! whatever headers it sends, since any client can write an `X-Forwarded-For`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// An address or a network (`10.0.0.0/8`, `fd00::/8`) whose connections are a proxy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNetwork {
    address: IpAddr,
    prefix_len: u8,
}

impl ProxyNetwork {
    /// Whether `ip` lies in this network (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix_len)).unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix_len)).unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for ProxyNetwork {
    type Err = String;

    fn from_str(text: &str) -> Result<ProxyNetwork, String> {
        let bad = || format!("{text:?} is not an IP address or network (such as 10.0.0.0/8)");
        let (address, prefix_len) = match text.trim().split_once('/') {
            Some((address, prefix_len)) => (address, Some(prefix_len)),
            None => (text.trim(), None),
        };
        let address = IpAddr::from_str(address).map_err(|_| bad())?.to_canonical();
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix_len {
            Some(prefix_len) => prefix_len.parse::<u8>().ok().filter(|len| *len <= bits).ok_or_else(bad)?,
            None => bits,
        };
        Ok(ProxyNetwork { address, prefix_len })
    }
}

impl fmt::Display for ProxyNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl<'de> serde::Deserialize<'de> for ProxyNetwork {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ProxyNetwork, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The client's address: `peer` itself unless it is a trusted proxy; then, reading the
/// `X-Forwarded-For` list from its right end (each proxy appends the address it was connected
/// from), the first address that is not a trusted proxy. An entry that is not an address ends
/// the walk at the last proxy read, so a garbled header counts against that proxy, not against
/// an address its sender chose.
pub(crate) fn client_address(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[ProxyNetwork]) -> IpAddr {
    let is_trusted = |ip: IpAddr| is_trusted(trusted, ip);
    let mut client = peer.to_canonical();
    if !is_trusted(client) {
        return client;
    }
    for entry in forwarded_for.unwrap_or_default().rsplit(',') {
        let Some(hop) = forwarded_address(entry.trim()) else { break };
        client = hop;
        if !is_trusted(hop) {
            break;
        }
    }
    client
}

/// Whether `ip` lies in one of the `trusted` networks.
pub(crate) fn is_trusted(trusted: &[ProxyNetwork], ip: IpAddr) -> bool {
    trusted.iter().any(|network| network.contains(ip))
}

/// One entry of `X-Forwarded-For`: an address, with or without a port (`[v6]:port` for IPv6).
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let ip =
        IpAddr::from_str(entry).or_else(|_| SocketAddr::from_str(entry).map(|socket| socket.ip())).ok()?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(text: &str) -> ProxyNetwork {
        text.parse().expect("a network")
    }

    fn networks(list: &[&str]) -> Vec<ProxyNetwork> {
        list.iter().map(|text| network(text)).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn networks_hold_the_addresses_under_their_prefix() {
        let private = network("10.0.0.0/8");
        assert!(private.contains(ip("10.200.1.2")));
        assert!(private.contains(ip("::ffff:10.1.1.1")), "IPv4-mapped");
        assert!(!private.contains(ip("11.0.0.1")));
        assert!(!private.contains(ip("fd00::1")));
        let one = network("192.168.1.7");
        assert!(one.contains(ip("192.168.1.7")) && !one.contains(ip("192.168.1.8")));
        let v6 = network("fd00::/8");
        assert!(v6.contains(ip("fd12:3456::1")) && !v6.contains(ip("fe80::1")));
        let everyone = network("0.0.0.0/0");
        assert!(everyone.contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "fd00::/129", "proxy.example", "10.0.0.0/", ""] {
            assert!(bad.parse::<ProxyNetwork>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_trusted_proxy_speaks_for_its_client_and_no_one_else_does() {
        let trusted = networks(&["10.0.0.0/8"]);
        let header = Some("198.51.100.7");
        assert_eq!(client_address(ip("10.0.0.2"), header, &trusted), ip("198.51.100.7"));
        assert_eq!(client_address(ip("203.0.113.9"), header, &trusted), ip("203.0.113.9"), "not a proxy");
        assert_eq!(client_address(ip("10.0.0.2"), None, &trusted), ip("10.0.0.2"), "no header");
        assert_eq!(client_address(ip("10.0.0.2"), header, &[]), ip("10.0.0.2"), "no proxy trusted");
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted = networks(&["10.0.0.0/8", "fd00::/8"]);
        // What the client wrote itself comes first and is not believed.
        let chain = Some("1.2.3.4, 198.51.100.7, 10.1.1.1");
        assert_eq!(client_address(ip("10.0.0.2"), chain, &trusted), ip("198.51.100.7"));
        let with_ports = Some("[2001:db8::5]:4711, 10.1.1.1:80");
        assert_eq!(client_address(ip("fd00::2"), with_ports, &trusted), ip("2001:db8::5"));
        let garbled = Some("198.51.100.7, not-an-address, 10.1.1.1");
        assert_eq!(client_address(ip("10.0.0.2"), garbled, &trusted), ip("10.1.1.1"), "the last proxy read");
    }
}
