//! What a NAT port is told: its subnet and the addresses in it, the DHCP pool, the DNS
//! upstream, port forwards and limits. Plain data, validated by the topology parser.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// A port forward: connections or datagrams to `host` on the host are relayed to `guest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    pub proto: Proto,
    pub host: SocketAddr,
    pub guest: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Forward {
    /// Parses `tcp:127.0.0.1:2222-10.0.2.15:22` (or `udp:...`).
    pub fn parse(s: &str) -> Option<Forward> {
        let (proto, rest) = s.split_once(':')?;
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return None,
        };
        let (host, guest) = rest.split_once('-')?;
        Some(Forward {
            proto,
            host: host.parse().ok()?,
            guest: guest.parse().ok()?,
        })
    }
}

/// The gateway's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// The subnet's network address and prefix length.
    pub network: Ipv4Addr,
    pub prefix: u8,
    /// The gateway (router option, ARP, host loopback alias): `.2` by default.
    pub gateway: Ipv4Addr,
    /// The DNS relay's address: `.3` by default.
    pub dns: Ipv4Addr,
    /// First and last address handed out by DHCP.
    pub dhcp_first: Ipv4Addr,
    pub dhcp_last: Ipv4Addr,
    /// Fixed addresses by MAC.
    pub reservations: Vec<([u8; 6], Ipv4Addr)>,
    /// Where DNS queries to `dns` go.
    pub dns_upstream: SocketAddr,
    pub forwards: Vec<Forward>,
    /// Only the host's loopback (through the gateway address) and forwards: no connection
    /// leaves for any other address.
    pub restrict: bool,
    /// MTU announced by DHCP.
    pub mtu: u16,
    pub lease: Duration,
    /// Bound on TCP + UDP flows, and per guest address.
    pub max_flows: usize,
    pub max_flows_per_guest: usize,
    /// How long an idle UDP flow is kept.
    pub udp_timeout: Duration,
    /// An IPv6 prefix for the segment (router advertisements with SLAAC): prefix and length.
    pub ipv6: Option<(Ipv6Addr, u8)>,
}

impl NatConfig {
    /// QEMU user networking's layout for `network/prefix`: gateway .2, DNS .3, DHCP from
    /// .15 to .99 (or the end of a smaller subnet).
    pub fn for_subnet(network: Ipv4Addr, prefix: u8, dns_upstream: SocketAddr) -> NatConfig {
        let n = u32::from(network);
        let size = if prefix >= 32 {
            1
        } else {
            1u64 << (32 - prefix)
        } as u32;
        let last_host = n.wrapping_add(size.saturating_sub(2));
        NatConfig {
            network,
            prefix,
            gateway: Ipv4Addr::from(n + 2),
            dns: Ipv4Addr::from(n + 3),
            dhcp_first: Ipv4Addr::from(n + 15),
            dhcp_last: Ipv4Addr::from((n + 99).min(last_host)),
            reservations: Vec::new(),
            dns_upstream,
            forwards: Vec::new(),
            restrict: false,
            mtu: 1500,
            lease: Duration::from_secs(86400),
            max_flows: 4096,
            max_flows_per_guest: 1024,
            udp_timeout: Duration::from_secs(60),
            ipv6: None,
        }
    }

    /// The gateway's IPv6 address (`::2` of the prefix), also the host's `::1`.
    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        self.ipv6.map(|(p, _)| Ipv6Addr::from(u128::from(p) | 2))
    }

    /// The DNS relay's IPv6 address (`::3` of the prefix).
    pub fn dns6(&self) -> Option<Ipv6Addr> {
        self.ipv6.map(|(p, _)| Ipv6Addr::from(u128::from(p) | 3))
    }

    /// The router's link-local address (the source of its advertisements).
    pub fn gateway_ll(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2)
    }

    /// Whether `ip` is in the IPv6 prefix or link-local.
    pub fn contains6(&self, ip: Ipv6Addr) -> bool {
        let ll = ip.segments()[0] & 0xffc0 == 0xfe80;
        ll || self.ipv6.is_some_and(|(p, len)| {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(p)
        })
    }

    /// The subnet mask.
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix))
                .unwrap_or(0),
        )
    }

    /// Whether `ip` is inside the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.mask()) == u32::from(self.network)
    }

    /// The subnet's broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !u32::from(self.mask()))
    }

    /// The gateway's MAC: locally administered, derived from its address (like QEMU's
    /// 52:55:0a:00:02:02 for 10.0.2.2).
    pub fn gateway_mac(&self) -> [u8; 6] {
        let o = self.gateway.octets();
        [0x52, 0x55, o[0], o[1], o[2], o[3]]
    }
}

/// The first nameserver of a resolv.conf text, on port 53.
pub fn resolv_conf_upstream(text: &str) -> Option<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_layout() {
        let c = NatConfig::for_subnet(
            Ipv4Addr::new(10, 0, 2, 0),
            24,
            "127.0.0.1:53".parse().unwrap(),
        );
        assert_eq!(c.gateway, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(c.dns, Ipv4Addr::new(10, 0, 2, 3));
        assert_eq!(
            (c.dhcp_first, c.dhcp_last),
            (Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::new(10, 0, 2, 99))
        );
        assert_eq!(c.mask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 0, 2, 255));
        assert!(c.contains(Ipv4Addr::new(10, 0, 2, 77)));
        assert!(!c.contains(Ipv4Addr::new(10, 0, 3, 1)));
        assert_eq!(c.gateway_mac(), [0x52, 0x55, 10, 0, 2, 2]);
        let small = NatConfig::for_subnet(
            Ipv4Addr::new(192, 168, 9, 0),
            26,
            "127.0.0.1:53".parse().unwrap(),
        );
        assert_eq!(small.dhcp_last, Ipv4Addr::new(192, 168, 9, 62));
    }

    #[test]
    fn forwards_and_resolv_conf() {
        assert_eq!(
            Forward::parse("tcp:127.0.0.1:2222-10.0.2.15:22"),
            Some(Forward {
                proto: Proto::Tcp,
                host: "127.0.0.1:2222".parse().unwrap(),
                guest: "10.0.2.15:22".parse().unwrap(),
            })
        );
        assert_eq!(Forward::parse("sctp:1.2.3.4:1-10.0.2.15:2"), None);
        assert_eq!(Forward::parse("udp:127.0.0.1:53"), None);
        assert_eq!(
            resolv_conf_upstream("# x\nsearch lan\nnameserver 127.0.0.53\nnameserver 1.1.1.1\n"),
            Some("127.0.0.53:53".parse().unwrap())
        );
        assert_eq!(resolv_conf_upstream("search lan\n"), None);
    }
}
