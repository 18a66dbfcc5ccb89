//! The VLAN and port-security keys every port kind takes: access (`vlan`), trunk
//! (`trunk`, `native_vlan`), QinQ (`qinq`), `max_macs`, `allowed_macs`, `allowed_ips`,
//! `storm_limit`, `isolated`, into the core's `PortPolicy`.
//!
//! Invariant: a port has at most one VLAN mode; a trunk carries at least one VLAN.

use toml::Spanned;

use super::checks::unicast_mac;
use super::error::Ctx;
use super::parse::RawPort;
use super::parse::{VlanItem, parse_pps};
use crate::core::PortPolicy;

pub(super) fn vlan_id(cx: &mut Ctx<'_>, v: &Spanned<i64>, field: &str) -> Option<vlan::VlanId> {
    match u32::try_from(*v.get_ref())
        .ok()
        .and_then(|n| vlan::VlanId::new(n).ok())
    {
        Some(id) => Some(id),
        None => {
            cx.error(
                v.span(),
                field,
                format!("{} is not a VLAN id (1-4094)", v.get_ref()),
            );
            None
        }
    }
}

pub(super) fn port_policy(cx: &mut Ctx<'_>, p: &RawPort, here: &str) -> PortPolicy {
    let mut pol = PortPolicy::default();
    let modes = [p.vlan.is_some(), p.trunk.is_some(), p.qinq.is_some()];
    if modes.iter().filter(|&&m| m).count() > 1 {
        let span = p.name.span();
        cx.error(
            span,
            format!("{here}: vlan"),
            "a port is either an access port (`vlan`), a trunk (`trunk`) or a QinQ tunnel (`qinq`)",
        );
    }
    if let Some(n) = &p.native_vlan
        && p.trunk.is_none()
    {
        cx.error(
            n.span(),
            format!("{here}: native_vlan"),
            "only a trunk (`trunk = [...]`) has a native VLAN",
        );
    }
    if let Some(v) = &p.vlan
        && let Some(id) = vlan_id(cx, v, &format!("{here}: vlan"))
    {
        pol.vlan = vlan::PortVlan::Access(id);
    } else if let Some(q) = &p.qinq
        && let Some(id) = vlan_id(cx, q, &format!("{here}: qinq"))
    {
        pol.vlan = vlan::PortVlan::Tunnel { svlan: id };
    } else if let Some(t) = &p.trunk {
        let mut set = vlan::VlanSet::new();
        for item in t.get_ref() {
            match item.get_ref() {
                VlanItem::Id(n) => {
                    let sp = Spanned::new(item.span(), *n);
                    if let Some(id) = vlan_id(cx, &sp, &format!("{here}: trunk")) {
                        set.insert(id);
                    }
                }
                VlanItem::Range(r) => match vlan::VlanSet::parse_range(r) {
                    Ok((a, b)) => set.insert_range(a, b),
                    Err(e) => cx.error(item.span(), format!("{here}: trunk"), e.0),
                },
            }
        }
        let native = p
            .native_vlan
            .as_ref()
            .and_then(|n| vlan_id(cx, n, &format!("{here}: native_vlan")));
        if set.is_empty() && native.is_none() {
            cx.error(
                t.span(),
                format!("{here}: trunk"),
                "a trunk carries at least one VLAN",
            );
        }
        pol.vlan = vlan::PortVlan::Trunk {
            allowed: Box::new(set),
            native,
        };
    }
    if let Some(m) = &p.max_macs {
        match usize::try_from(*m.get_ref()) {
            Ok(n) if (1..=1_000_000).contains(&n) => pol.max_macs = Some(n),
            _ => cx.error(
                m.span(),
                format!("{here}: max_macs"),
                format!("{}: must be 1-1000000", m.get_ref()),
            ),
        }
    }
    if let Some(list) = &p.allowed_macs {
        let mut macs = Vec::new();
        for m in list.get_ref() {
            if let Some(mac) = unicast_mac(cx, m, &format!("{here}: allowed_macs")) {
                macs.push(mac);
            }
        }
        pol.allowed_macs = Some(macs);
    }
    if let Some(list) = &p.allowed_ips {
        let mut ips = Vec::new();
        for ip in list.get_ref() {
            match ip.get_ref().parse::<std::net::IpAddr>() {
                Ok(a) => ips.push(a),
                Err(_) => cx.error(
                    ip.span(),
                    format!("{here}: allowed_ips"),
                    format!("`{}` is not an IPv4 or IPv6 address", ip.get_ref()),
                ),
            }
        }
        pol.allowed_ips = Some(ips);
    }
    if let Some(s) = &p.storm_limit {
        match parse_pps(s.get_ref()) {
            Some(n) => pol.storm_pps = Some(n),
            None => cx.error(
                s.span(),
                format!("{here}: storm_limit"),
                format!("`{}` is not a rate like \"1000pps\"", s.get_ref()),
            ),
        }
    }
    pol.isolated = p.isolated.as_ref().is_some_and(|i| *i.get_ref());
    pol
}
