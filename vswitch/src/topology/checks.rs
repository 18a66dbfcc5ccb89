//! Checks that span the file: names (their syntax and uniqueness), unicast MACs, unique
//! sockets, overlapping subnets, and the registry of what must stay unique (`Taken`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::error::Ctx;
use crate::core::MacAddr;

/// Names are 1-32 characters of a-z, A-Z, 0-9, '-', '_' and '.'.
pub(super) fn check_name(cx: &mut Ctx<'_>, name: &Spanned<String>, here: &str) {
    let s = name.get_ref();
    let ok = (1..=32).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        cx.error(
            name.span(),
            format!("{here}: name"),
            "names are 1-32 characters of a-z, A-Z, 0-9, '-', '_' and '.'",
        );
    }
}

pub(super) fn unicast_mac(cx: &mut Ctx<'_>, m: &Spanned<String>, field: &str) -> Option<MacAddr> {
    match m.get_ref().parse::<MacAddr>() {
        Ok(mac) if mac.is_valid_source() => Some(mac),
        Ok(mac) => {
            cx.error(
                m.span(),
                field,
                format!("{mac} is a group or zero address; a port's address must be unicast"),
            );
            None
        }
        Err(e) => {
            cx.error(m.span(), field, e.to_string());
            None
        }
    }
}

/// Whether two IPv4 subnets (network, prefix length) share an address.
pub(super) fn subnets_overlap(a: (std::net::Ipv4Addr, u8), b: (std::net::Ipv4Addr, u8)) -> bool {
    let range = |(net, len): (std::net::Ipv4Addr, u8)| {
        let start = u64::from(u32::from(net));
        (start, start + (1u64 << (32 - u32::from(len))))
    };
    let ((a0, a1), (b0, b1)) = (range(a), range(b));
    a0 < b1 && b0 < a1
}

/// What must be unique across the file, each with who has it: switch names; port and disk
/// names (one namespace); socket paths (ports, disks, the control socket); host resources
/// (TAP names per namespace, VXLAN endpoints, NAT port forwards); NAT subnets.
///
/// With `[[host]]` tables, sockets, host resources and subnets are unique per host: `enter`
/// switches to a host's registry (names and switches stay one namespace for the file).
#[derive(Default)]
pub(super) struct Taken {
    pub(super) switches: HashSet<String>,
    pub(super) names: HashMap<String, String>,
    pub(super) sockets: HashMap<PathBuf, String>,
    pub(super) host: HashMap<String, String>,
    pub(super) subnets: Vec<(std::net::Ipv4Addr, u8, String)>,
    /// The host whose registry is in the fields above ("" for none), and the others'.
    current: String,
    others: HashMap<String, HostTaken>,
}

/// What is unique per host.
#[derive(Default)]
struct HostTaken {
    sockets: HashMap<PathBuf, String>,
    host: HashMap<String, String>,
    subnets: Vec<(std::net::Ipv4Addr, u8, String)>,
}

impl Taken {
    /// Makes `host`'s registry (`None`: the one of a topology without hosts) the current one.
    pub(super) fn enter(&mut self, host: Option<&str>) {
        let host = host.unwrap_or("");
        if self.current == host {
            return;
        }
        let mine = HostTaken {
            sockets: std::mem::take(&mut self.sockets),
            host: std::mem::take(&mut self.host),
            subnets: std::mem::take(&mut self.subnets),
        };
        self.others.insert(std::mem::take(&mut self.current), mine);
        let next = self.others.remove(host).unwrap_or_default();
        (self.sockets, self.host, self.subnets) = (next.sockets, next.host, next.subnets);
        self.current = host.to_string();
    }

    /// Every host's sockets, merged (what the control socket, the same on every host, must
    /// not be).
    pub(super) fn all_sockets(&self) -> HashMap<PathBuf, String> {
        let mut all = self.sockets.clone();
        for o in self.others.values() {
            all.extend(o.sockets.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        all
    }
}

/// A `socket` key: required (`missing` says how to write it), relative to `sock_base`, and
/// unique: the port or disk `name` takes it, and a second claim is an error naming the first
/// owner (`of`: how to call it, "port " or "").
#[allow(clippy::too_many_arguments)]
pub(super) fn unique_socket(
    cx: &mut Ctx<'_>,
    socket: &Option<Spanned<String>>,
    name: &Spanned<String>,
    here: &str,
    sock_base: &Path,
    sockets: &mut HashMap<PathBuf, String>,
    of: &str,
    missing: &str,
) -> PathBuf {
    match socket {
        Some(s) if !s.get_ref().is_empty() => {
            let path = sock_base.join(s.get_ref());
            if let Some(other) = sockets.insert(path.clone(), name.get_ref().clone()) {
                cx.error(
                    s.span(),
                    format!("{here}: socket"),
                    format!(
                        "{} is already the socket of {of}\"{other}\"",
                        path.display()
                    ),
                );
            }
            path
        }
        Some(s) => {
            cx.error(s.span(), format!("{here}: socket"), "empty socket path");
            PathBuf::new()
        }
        None => {
            cx.error(name.span(), format!("{here}: socket"), missing);
            PathBuf::new()
        }
    }
}
