//! TAP ports: the interface name (unique per namespace), its namespace (which must exist
//! when files are checked), address, bridge, MTU, queues.

use std::collections::HashMap;

use super::TapConfig;
use super::error::Ctx;
use super::host::netns_exists;
use super::parse::RawPort;
use super::parse::parse_cidr;
use super::vm::queue_count;

/// A network interface name the kernel accepts: 1-15 bytes, no '/', ':' or white space.
pub(super) fn valid_ifname(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// The TAP keys of `p`.
pub(super) fn tap_port(
    cx: &mut Ctx<'_>,
    p: &RawPort,
    here: &str,
    host_names: &mut HashMap<String, String>,
) -> TapConfig {
    let netns = p.netns.as_ref().map(|n| {
        let name = n.get_ref().clone();
        if !check_netns_name(&name) {
            cx.error(
                n.span(),
                format!("{here}: netns"),
                format!("`{name}` is not a network namespace name"),
            );
        } else if cx.check_files && !netns_exists(&name) {
            cx.error(
                n.span(),
                format!("{here}: netns"),
                if name.starts_with('/') {
                    format!("no network namespace file `{name}`")
                } else {
                    format!(
                        "no network namespace `{name}` (/run/netns/{name} does not exist; create it with `ip netns add {name}`)"
                    )
                },
            );
        }
        name
    });
    let ifname = match &p.ifname {
        Some(n) if valid_ifname(n.get_ref()) => {
            let key = format!("tap {} {}", netns.as_deref().unwrap_or(""), n.get_ref());
            if let Some(other) = host_names.insert(key, p.name.get_ref().clone()) {
                cx.error(
                    n.span(),
                    format!("{here}: ifname"),
                    format!("{} is already the TAP of port \"{other}\"", n.get_ref()),
                );
            }
            n.get_ref().clone()
        }
        Some(n) => {
            cx.error(
                n.span(),
                format!("{here}: ifname"),
                format!(
                    "`{}` is not an interface name (1-15 bytes, no '/', ':' or spaces)",
                    n.get_ref()
                ),
            );
            String::new()
        }
        None => {
            cx.error(
                p.name.span(),
                format!("{here}: ifname"),
                "missing (a tap port needs `ifname = \"vf-tap0\"`)",
            );
            String::new()
        }
    };
    let address = p
        .address
        .as_ref()
        .and_then(|a| match parse_cidr(a.get_ref()) {
            Some(c) => Some(c),
            None => {
                cx.error(
                    a.span(),
                    format!("{here}: address"),
                    format!(
                        "`{}` is not an address with a prefix length (like \"10.8.0.254/24\")",
                        a.get_ref()
                    ),
                );
                None
            }
        });
    let bridge = p.bridge.as_ref().map(|b| {
        if !valid_ifname(b.get_ref()) {
            cx.error(
                b.span(),
                format!("{here}: bridge"),
                format!("`{}` is not an interface name", b.get_ref()),
            );
        }
        b.get_ref().clone()
    });
    let mtu = p.mtu.as_ref().and_then(|m| match *m.get_ref() {
        v @ 68..=65535 => Some(v as u32),
        v => {
            cx.error(
                m.span(),
                format!("{here}: mtu"),
                format!("{v}: must be 68-65535"),
            );
            None
        }
    });
    TapConfig {
        ifname,
        netns,
        address,
        bridge,
        mtu,
        queues: queue_count(cx, p, here, 1, "queues"),
        optional: p.optional.as_ref().map(|o| *o.get_ref()).unwrap_or(false),
    }
}

/// `ip netns` names (no '/', not empty, not `.`/`..`), or the absolute path of a namespace
/// file (`/proc/PID/ns/net`, a container runtime's bind mount: what CNI passes).
pub(super) fn check_netns_name(s: &str) -> bool {
    if s.starts_with('/') {
        return s.len() <= 4096 && !s.contains('\0');
    }
    !s.is_empty() && s.len() <= 255 && s != "." && s != ".." && !s.contains('/')
}
