//! NAT ports: the subnet (no overlap with another NAT port's), gateway and DNS relay
//! addresses, the DHCP range and reservations, the DNS upstream (from /etc/resolv.conf when
//! not given), port forwards (each host port forwarded once), MTU, the IPv6 prefix.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use toml::Spanned;

use super::checks::{subnets_overlap, unicast_mac};
use super::error::Ctx;
use super::host::default_dns_upstream;
use super::parse::RawPort;
use super::parse::parse_cidr;

/// An IPv4 address of a NAT port's subnet, checked: inside it, not its network or
/// broadcast address.
pub(super) fn subnet_addr(
    cx: &mut Ctx<'_>,
    v: &Spanned<String>,
    field: &str,
    cfg: &nat::NatConfig,
) -> Option<std::net::Ipv4Addr> {
    match v.get_ref().trim().parse::<std::net::Ipv4Addr>() {
        Ok(a) if cfg.contains(a) && a != cfg.network && a != cfg.broadcast() => Some(a),
        Ok(a) => {
            cx.error(
                v.span(),
                field,
                format!(
                    "{a} is not a host address of the subnet {}/{}",
                    cfg.network, cfg.prefix
                ),
            );
            None
        }
        Err(_) => {
            cx.error(
                v.span(),
                field,
                format!("`{}` is not an IPv4 address", v.get_ref()),
            );
            None
        }
    }
}

/// The NAT keys of `p`.
pub(super) fn nat_port(
    cx: &mut Ctx<'_>,
    p: &RawPort,
    here: &str,
    host_names: &mut HashMap<String, String>,
    subnets: &mut Vec<(Ipv4Addr, u8, String)>,
) -> nat::NatConfig {
    let (network, prefix) = subnet(cx, p, here);
    let mut cfg = nat::NatConfig::for_subnet(network, prefix, default_dns_upstream());
    if let Some(sn) = &p.subnet {
        no_overlap(cx, sn, here, (network, prefix), subnets);
        subnets.push((network, prefix, p.name.get_ref().clone()));
    }
    addresses(cx, p, here, &mut cfg);
    if let Some(r) = &p.dhcp_range {
        dhcp_range(cx, r, here, &mut cfg);
    }
    reservations(cx, p, here, &mut cfg);
    if let Some(u) = &p.dns_upstream {
        dns_upstream(cx, u, here, &mut cfg);
    }
    forwards(cx, p, here, host_names, &mut cfg);
    cfg.restrict = p.restrict.as_ref().map(|r| *r.get_ref()).unwrap_or(false);
    if let Some(m) = &p.mtu {
        match *m.get_ref() {
            v @ 576..=65500 => cfg.mtu = v as u16,
            v => cx.error(
                m.span(),
                format!("{here}: mtu"),
                format!("{v}: must be 576-65500"),
            ),
        }
    }
    if let Some(v6) = &p.ipv6 {
        ipv6(cx, v6, here, &mut cfg);
    }
    cfg
}

/// `subnet`: an IPv4 network from /8 to /29 (10.0.2.0/24 stands in after an error).
fn subnet(cx: &mut Ctx<'_>, p: &RawPort, here: &str) -> (Ipv4Addr, u8) {
    match &p.subnet {
        Some(sn) => match parse_cidr(sn.get_ref()) {
            Some((std::net::IpAddr::V4(a), len)) if (8..=29).contains(&len) => {
                let mask = u32::MAX << (32 - u32::from(len));
                let net = Ipv4Addr::from(u32::from(a) & mask);
                if net != a {
                    cx.error(
                        sn.span(),
                        format!("{here}: subnet"),
                        format!("{a}/{len} has host bits set (the subnet is {net}/{len})"),
                    );
                }
                (net, len)
            }
            _ => {
                cx.error(
                    sn.span(),
                    format!("{here}: subnet"),
                    format!(
                        "`{}` is not an IPv4 subnet from /8 to /29 (like \"10.0.2.0/24\")",
                        sn.get_ref()
                    ),
                );
                (Ipv4Addr::new(10, 0, 2, 0), 24)
            }
        },
        None => {
            cx.error(
                p.name.span(),
                format!("{here}: subnet"),
                "missing (a nat port needs `subnet = \"10.0.2.0/24\"`)",
            );
            (Ipv4Addr::new(10, 0, 2, 0), 24)
        }
    }
}

/// No two NAT ports' subnets share an address.
fn no_overlap(
    cx: &mut Ctx<'_>,
    sn: &Spanned<String>,
    here: &str,
    (network, prefix): (Ipv4Addr, u8),
    subnets: &[(Ipv4Addr, u8, String)],
) {
    for (n, l, other) in subnets.iter() {
        if subnets_overlap((network, prefix), (*n, *l)) {
            cx.error(
                sn.span(),
                format!("{here}: subnet"),
                format!("{network}/{prefix} overlaps {n}/{l} of port \"{other}\""),
            );
        }
    }
}

/// `gateway` and `dns`: host addresses of the subnet, not the same one.
fn addresses(cx: &mut Ctx<'_>, p: &RawPort, here: &str, cfg: &mut nat::NatConfig) {
    if let Some(g) = &p.gateway
        && let Some(a) = subnet_addr(cx, g, &format!("{here}: gateway"), cfg)
    {
        cfg.gateway = a;
    }
    if let Some(d) = &p.dns
        && let Some(a) = subnet_addr(cx, d, &format!("{here}: dns"), cfg)
    {
        cfg.dns = a;
    }
    if cfg.gateway == cfg.dns {
        let span = p.gateway.as_ref().map_or(p.name.span(), |g| g.span());
        cx.error(
            span,
            format!("{here}: gateway"),
            format!("{} is the DNS relay's address", cfg.dns),
        );
    }
}

/// `dhcp_range`: low to high, inside the subnet, leaving out the gateway and the DNS relay.
fn dhcp_range(cx: &mut Ctx<'_>, r: &Spanned<String>, here: &str, cfg: &mut nat::NatConfig) {
    let parts = r.get_ref().split_once('-').map(|(a, b)| {
        (
            a.trim().parse::<Ipv4Addr>().ok(),
            b.trim().parse::<Ipv4Addr>().ok(),
        )
    });
    match parts {
        Some((Some(a), Some(b)))
            if cfg.contains(a)
                && cfg.contains(b)
                && u32::from(a) <= u32::from(b)
                && a != cfg.network
                && b != cfg.broadcast() =>
        {
            let inside = |x: Ipv4Addr| u32::from(a) <= u32::from(x) && u32::from(x) <= u32::from(b);
            if inside(cfg.gateway) || inside(cfg.dns) {
                cx.error(
                    r.span(),
                    format!("{here}: dhcp_range"),
                    format!(
                        "{a}-{b} includes the gateway {} or the DNS relay {}",
                        cfg.gateway, cfg.dns
                    ),
                );
            }
            cfg.dhcp_first = a;
            cfg.dhcp_last = b;
        }
        _ => cx.error(
            r.span(),
            format!("{here}: dhcp_range"),
            format!(
                "`{}` is not a range of host addresses of the subnet, low to high (like \"10.0.2.15-10.0.2.99\")",
                r.get_ref()
            ),
        ),
    }
}

/// `reservations`: each MAC and address once, never the gateway's or the DNS relay's.
fn reservations(cx: &mut Ctx<'_>, p: &RawPort, here: &str, cfg: &mut nat::NatConfig) {
    for r in p.reservations.iter().flat_map(|l| l.get_ref().iter()) {
        let r = r.get_ref();
        let field = format!("{here}: reservations");
        let mac = unicast_mac(cx, &r.mac, &field);
        let ip = subnet_addr(cx, &r.ip, &field, cfg);
        if let (Some(mac), Some(ip)) = (mac, ip) {
            if ip == cfg.gateway || ip == cfg.dns {
                cx.error(
                    r.ip.span(),
                    field,
                    format!("{ip} is the gateway's or the DNS relay's"),
                );
            } else if cfg
                .reservations
                .iter()
                .any(|(m, i)| *m == mac.0 || *i == ip)
            {
                cx.error(
                    r.mac.span(),
                    field,
                    format!("{mac} or {ip} is reserved twice"),
                );
            } else {
                cfg.reservations.push((mac.0, ip));
            }
        }
    }
}

/// `dns_upstream`: an address, with port 53 unless given.
fn dns_upstream(cx: &mut Ctx<'_>, u: &Spanned<String>, here: &str, cfg: &mut nat::NatConfig) {
    let t = u.get_ref().trim();
    let parsed = t.parse::<std::net::SocketAddr>().ok().or_else(|| {
        t.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| std::net::SocketAddr::new(ip, 53))
    });
    match parsed {
        Some(a) => cfg.dns_upstream = a,
        None => cx.error(
            u.span(),
            format!("{here}: dns_upstream"),
            format!("`{t}` is not an address[:port] like \"127.0.0.1:53\""),
        ),
    }
}

/// `forward`: host ports forwarded to guest addresses of the subnet, each host port once.
fn forwards(
    cx: &mut Ctx<'_>,
    p: &RawPort,
    here: &str,
    host_names: &mut HashMap<String, String>,
    cfg: &mut nat::NatConfig,
) {
    let pname = p.name.get_ref();
    for f in p.forward.iter().flat_map(|l| l.get_ref().iter()) {
        let field = format!("{here}: forward");
        match nat::Forward::parse(f.get_ref()) {
            Some(fw) => {
                let guest_ok = match fw.guest {
                    std::net::SocketAddr::V4(g) => cfg.contains(*g.ip()),
                    _ => false,
                };
                if !guest_ok {
                    cx.error(
                        f.span(),
                        field,
                        format!("{} is not an address of the subnet", fw.guest),
                    );
                    continue;
                }
                let key = format!("forward {:?} {}", fw.proto, fw.host);
                if let Some(other) = host_names.insert(key, pname.clone()) {
                    cx.error(
                        f.span(),
                        field,
                        format!("{} is already forwarded by port \"{other}\"", fw.host),
                    );
                    continue;
                }
                cfg.forwards.push(fw);
            }
            None => cx.error(
                f.span(),
                field,
                format!(
                    "`{}` is not PROTO:HOST_ADDR:PORT-GUEST_ADDR:PORT (like \"tcp:127.0.0.1:2222-10.0.2.15:22\")",
                    f.get_ref()
                ),
            ),
        }
    }
}

/// `ipv6`: a /64 prefix without host bits, for router advertisements.
fn ipv6(cx: &mut Ctx<'_>, v6: &Spanned<String>, here: &str, cfg: &mut nat::NatConfig) {
    match parse_cidr(v6.get_ref()) {
        Some((std::net::IpAddr::V6(a), len)) if (16..=64).contains(&len) => {
            let mask = u128::MAX << (128 - u32::from(len));
            let net = std::net::Ipv6Addr::from(u128::from(a) & mask);
            if net != a {
                cx.error(
                    v6.span(),
                    format!("{here}: ipv6"),
                    format!("{a}/{len} has host bits set (the prefix is {net}/{len})"),
                );
            } else if len != 64 {
                cx.error(
                    v6.span(),
                    format!("{here}: ipv6"),
                    format!("{a}/{len}: SLAAC needs a /64 prefix"),
                );
            }
            cfg.ipv6 = Some((net, len));
        }
        _ => cx.error(
            v6.span(),
            format!("{here}: ipv6"),
            format!(
                "`{}` is not an IPv6 prefix like \"fd00:2::/64\"",
                v6.get_ref()
            ),
        ),
    }
}
