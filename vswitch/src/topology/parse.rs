//! The file's raw tables, as TOML gives them (every value with its span), and the small
//! value parsers the checks share (sizes, durations, rates, modes, CIDRs).
//!
//! Invariant: nothing here judges a value against other values; `deny_unknown_fields`
//! refuses unknown keys, and `PORT_KEYS` says which keys each port type takes.

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTopology {
    #[serde(default)]
    pub(super) switch: Vec<Spanned<RawSwitch>>,
    #[serde(default)]
    pub(super) disk: Vec<Spanned<RawDisk>>,
    pub(super) control: Option<Spanned<RawControl>>,
    pub(super) metrics: Option<Spanned<String>>,
    pub(super) socket_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) host: Vec<Spanned<RawHost>>,
    pub(super) mesh: Option<Spanned<RawMesh>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    pub(super) name: Spanned<String>,
    pub(super) address: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMesh {
    #[serde(rename = "type")]
    pub(super) kind: Option<Spanned<String>>,
    pub(super) port: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControl {
    pub(super) socket: Option<Spanned<String>>,
    pub(super) mode: Option<Spanned<String>>,
    pub(super) owner: Option<Spanned<String>>,
    pub(super) group: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDisk {
    pub(super) name: Spanned<String>,
    pub(super) host: Option<Spanned<String>>,
    pub(super) socket: Option<Spanned<String>>,
    pub(super) client: Option<Spanned<bool>>,
    pub(super) mode: Option<Spanned<String>>,
    pub(super) owner: Option<Spanned<String>>,
    pub(super) group: Option<Spanned<String>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) format: Option<Spanned<String>>,
    pub(super) readonly: Option<Spanned<bool>>,
    pub(super) queues: Option<Spanned<i64>>,
    pub(super) serial: Option<Spanned<String>>,
    pub(super) size: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSwitch {
    pub(super) name: Spanned<String>,
    pub(super) mac_aging: Option<Spanned<String>>,
    pub(super) busy_poll: Option<Spanned<bool>>,
    pub(super) poll_threads: Option<Spanned<i64>>,
    pub(super) vni: Option<Spanned<i64>>,
    pub(super) vni_map: Option<Spanned<std::collections::BTreeMap<String, Spanned<i64>>>>,
    #[serde(default)]
    pub(super) port: Vec<Spanned<RawPort>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPort {
    pub(super) name: Spanned<String>,
    #[serde(rename = "type")]
    pub(super) kind: Spanned<String>,
    pub(super) host: Option<Spanned<String>>,
    pub(super) socket: Option<Spanned<String>>,
    pub(super) client: Option<Spanned<bool>>,
    pub(super) mode: Option<Spanned<String>>,
    pub(super) owner: Option<Spanned<String>>,
    pub(super) group: Option<Spanned<String>>,
    pub(super) mac: Option<Spanned<String>>,
    pub(super) static_macs: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) queues: Option<Spanned<i64>>,
    pub(super) offloads: Option<Spanned<bool>>,
    pub(super) vlan: Option<Spanned<i64>>,
    pub(super) trunk: Option<Spanned<Vec<Spanned<VlanItem>>>>,
    pub(super) native_vlan: Option<Spanned<i64>>,
    pub(super) qinq: Option<Spanned<i64>>,
    pub(super) max_macs: Option<Spanned<i64>>,
    pub(super) allowed_macs: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) allowed_ips: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) storm_limit: Option<Spanned<String>>,
    pub(super) isolated: Option<Spanned<bool>>,
    // tap
    pub(super) ifname: Option<Spanned<String>>,
    pub(super) netns: Option<Spanned<String>>,
    pub(super) address: Option<Spanned<String>>,
    pub(super) bridge: Option<Spanned<String>>,
    pub(super) mtu: Option<Spanned<i64>>,
    pub(super) optional: Option<Spanned<bool>>,
    // vxlan
    pub(super) vni: Option<Spanned<i64>>,
    pub(super) local: Option<Spanned<String>>,
    pub(super) remote: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) port: Option<Spanned<i64>>,
    // nat
    pub(super) subnet: Option<Spanned<String>>,
    pub(super) gateway: Option<Spanned<String>>,
    pub(super) dns: Option<Spanned<String>>,
    pub(super) dhcp_range: Option<Spanned<String>>,
    pub(super) reservations: Option<Spanned<Vec<Spanned<RawReservation>>>>,
    pub(super) dns_upstream: Option<Spanned<String>>,
    pub(super) forward: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) restrict: Option<Spanned<bool>>,
    pub(super) ipv6: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReservation {
    pub(super) mac: Spanned<String>,
    pub(super) ip: Spanned<String>,
}

impl RawPort {
    /// The type-specific keys present, with their spans.
    pub(super) fn specific_keys(&self) -> Vec<(&'static str, Range<usize>)> {
        fn sp<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
            v.as_ref().map(|s| s.span())
        }
        [
            ("socket", sp(&self.socket)),
            ("client", sp(&self.client)),
            ("mode", sp(&self.mode)),
            ("owner", sp(&self.owner)),
            ("group", sp(&self.group)),
            ("mac", sp(&self.mac)),
            ("queues", sp(&self.queues)),
            ("offloads", sp(&self.offloads)),
            ("ifname", sp(&self.ifname)),
            ("netns", sp(&self.netns)),
            ("address", sp(&self.address)),
            ("bridge", sp(&self.bridge)),
            ("mtu", sp(&self.mtu)),
            ("optional", sp(&self.optional)),
            ("vni", sp(&self.vni)),
            ("local", sp(&self.local)),
            ("remote", sp(&self.remote)),
            ("port", sp(&self.port)),
            ("subnet", sp(&self.subnet)),
            ("gateway", sp(&self.gateway)),
            ("dns", sp(&self.dns)),
            ("dhcp_range", sp(&self.dhcp_range)),
            ("reservations", sp(&self.reservations)),
            ("dns_upstream", sp(&self.dns_upstream)),
            ("forward", sp(&self.forward)),
            ("restrict", sp(&self.restrict)),
            ("ipv6", sp(&self.ipv6)),
        ]
        .into_iter()
        .filter_map(|(k, s)| Some((k, s?)))
        .collect()
    }
}

/// The keys each port type takes besides `name`, `type`, the VLAN and security keys and
/// `static_macs`.
pub(super) const PORT_KEYS: &[(&str, &[&str])] = &[
    (
        "vhost-user-net",
        &[
            "socket", "client", "mode", "owner", "group", "mac", "queues", "offloads",
        ],
    ),
    (
        "tap",
        &[
            "ifname", "netns", "address", "bridge", "mtu", "queues", "optional",
        ],
    ),
    ("vxlan", &["vni", "local", "remote", "group", "port"]),
    ("geneve", &["vni", "local", "remote", "group", "port"]),
    (
        "nat",
        &[
            "subnet",
            "gateway",
            "dns",
            "dhcp_range",
            "reservations",
            "dns_upstream",
            "forward",
            "restrict",
            "mtu",
            "ipv6",
        ],
    ),
];

/// One entry of `trunk`: a VLAN id or a range "100-199".
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum VlanItem {
    Id(i64),
    Range(String),
}

/// Parses a size like `512`, `64K`, `10M`, `2G`, `1T` (binary units, optional `iB`/`B`).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim().trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// Parses a duration like `300s`, `5m`, `1h`, `1500ms` or `2d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" | "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// Parses a rate like `1000pps` (or a bare number).
pub fn parse_pps(s: &str) -> Option<u32> {
    let n = s.trim().trim_end_matches("pps").trim();
    n.parse().ok().filter(|&n: &u32| n > 0)
}

/// "10.8.0.254/24" or "fd00::1/64".
pub fn parse_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (a, l) = s.trim().split_once('/')?;
    let addr: std::net::IpAddr = a.parse().ok()?;
    let len: u8 = l.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

/// Parses an octal socket mode like "0660" (owner read/write required).
pub(super) fn parse_mode(s: &str) -> Option<u32> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|&m| m <= 0o777 && m & 0o600 == 0o600)
}
