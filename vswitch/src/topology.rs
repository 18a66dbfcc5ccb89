//! The topology file: parsing, validation, and the validated model the daemon runs.
//!
//! Every error names the file, line and column, and the field:
//! `lab.toml:12:10: switch "lab" port "vm1": socket: ...`. `parse` collects every semantic
//! error it finds rather than stopping at the first, so `vfabric check` shows them all.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::core::{MacAddr, PortPolicy};

/// Queue pairs a vhost-user-net port offers when the topology does not say.
pub const DEFAULT_QUEUES: u16 = 8;

/// One problem in a topology file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Where in the topology, e.g. `switch "lab" port "vm1": socket`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.field,
            self.message
        )
    }
}

/// All the problems found in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The validated topology.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    pub switches: Vec<SwitchConfig>,
    pub disks: Vec<DiskConfig>,
    pub control: ControlConfig,
    /// Address of the Prometheus endpoint (`metrics = "127.0.0.1:9100"`).
    pub metrics: Option<std::net::SocketAddr>,
}

/// The control socket (`vfabric ctl`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlConfig {
    /// Explicit path; `None`: the default for the topology file (see `control::default_socket`).
    pub socket: Option<PathBuf>,
    /// Mode (0600 unless set), owner and group of the socket file; members of the group may
    /// use it.
    pub perms: SocketPerms,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: None,
            perms: SocketPerms {
                mode: Some(0o600),
                owner: None,
                group: None,
            },
        }
    }
}

/// Image formats a disk may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    /// Detected from the image's first bytes (qcow2 magic, else raw).
    Auto,
    Raw,
    Qcow2,
    /// No image: I/O completes without storage (benchmarks); needs `size`.
    Null,
}

/// A virtio-blk disk served over vhost-user.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskConfig {
    pub name: String,
    pub socket: PathBuf,
    /// false: vfabric listens and the VMM connects; true: vfabric dials the VMM.
    pub client: bool,
    /// The image (absolute; relative paths are relative to the file).
    pub path: PathBuf,
    pub format: DiskFormat,
    pub readonly: bool,
    /// Request queues offered (one worker thread and one I/O ring each).
    pub queues: u16,
    /// GET_ID answer (at most 20 bytes); the disk's name by default.
    pub serial: String,
    /// Size of a null disk, bytes.
    pub size: u64,
    pub perms: SocketPerms,
}

/// One switch.
#[derive(Clone, Debug, PartialEq)]
pub struct SwitchConfig {
    pub name: String,
    pub mac_aging: Duration,
    /// A poll thread per switch drains the guests' TX rings without waiting for kicks (lower
    /// latency and higher packet rates for one busy CPU); it sleeps after 1 ms without work.
    pub busy_poll: bool,
    pub ports: Vec<PortConfig>,
}

/// One port of a switch.
#[derive(Clone, Debug, PartialEq)]
pub struct PortConfig {
    pub name: String,
    pub kind: PortKind,
    /// Addresses pinned to this port in the forwarding table.
    pub static_macs: Vec<MacAddr>,
    /// VLAN mode and port security.
    pub policy: PortPolicy,
}

/// What a port connects to.
#[derive(Clone, Debug, PartialEq)]
pub enum PortKind {
    /// A VM's virtio-net device over vhost-user.
    VhostUserNet(VhostUserNet),
    /// A TAP device: the segment reaches the host kernel or a container's namespace.
    Tap(TapConfig),
    /// A VXLAN tunnel endpoint (RFC 7348): the segment reaches other hosts.
    Vxlan(VxlanConfig),
    /// A NAT gateway: DHCP, DNS relay, outbound and inbound NAT through host sockets.
    Nat(nat::NatConfig),
}

impl PortKind {
    /// The `type` key's value.
    pub fn type_name(&self) -> &'static str {
        match self {
            PortKind::VhostUserNet(_) => "vhost-user-net",
            PortKind::Tap(_) => "tap",
            PortKind::Vxlan(_) => "vxlan",
            PortKind::Nat(_) => "nat",
        }
    }
}

/// A TAP port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapConfig {
    /// The interface name (at most 15 bytes).
    pub ifname: String,
    /// Create the TAP inside this existing network namespace (`/run/netns/NAME`).
    pub netns: Option<String>,
    /// An address given to the TAP (in its namespace): address and prefix length.
    pub address: Option<(std::net::IpAddr, u8)>,
    /// Enslave the TAP to this existing Linux bridge (in its namespace).
    pub bridge: Option<String>,
    pub mtu: Option<u32>,
    /// Queues of the multi-queue TAP (one reader thread each).
    pub queues: u16,
    /// When the TAP cannot be created (no CAP_NET_ADMIN, no namespace...), run without it
    /// (its link stays down) instead of refusing to start.
    pub optional: bool,
}

/// A VXLAN port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanConfig {
    /// The 24-bit VXLAN network identifier.
    pub vni: u32,
    /// The local address the UDP socket binds.
    pub local: std::net::IpAddr,
    /// Static remote VTEPs: broadcast, unknown unicast and multicast go to all of them.
    pub remote: Vec<std::net::IpAddr>,
    /// UDP port (4789, the IANA port, unless set); the same on both ends.
    pub port: u16,
}

/// Ownership and permissions given to a listening socket file (unset: the process's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketPerms {
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

/// A vhost-user-net port.
#[derive(Clone, Debug, PartialEq)]
pub struct VhostUserNet {
    /// The unix socket (absolute; relative paths in the file are relative to the file).
    pub socket: PathBuf,
    /// false: vfabric listens and the VMM connects; true: the VMM listens, vfabric dials.
    pub client: bool,
    /// MAC offered in the device's config space.
    pub mac: Option<MacAddr>,
    /// Queue pairs offered to the VMM.
    pub queues: u16,
    /// Offer checksum/TCP segmentation offloads to the guest (default true).
    pub offloads: bool,
    pub perms: SocketPerms,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    #[serde(default)]
    switch: Vec<Spanned<RawSwitch>>,
    #[serde(default)]
    disk: Vec<Spanned<RawDisk>>,
    control: Option<Spanned<RawControl>>,
    metrics: Option<Spanned<String>>,
    socket_dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    name: Spanned<String>,
    socket: Option<Spanned<String>>,
    client: Option<Spanned<bool>>,
    mode: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    readonly: Option<Spanned<bool>>,
    queues: Option<Spanned<i64>>,
    serial: Option<Spanned<String>>,
    size: Option<Spanned<String>>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwitch {
    name: Spanned<String>,
    mac_aging: Option<Spanned<String>>,
    busy_poll: Option<Spanned<bool>>,
    #[serde(default)]
    port: Vec<Spanned<RawPort>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    socket: Option<Spanned<String>>,
    client: Option<Spanned<bool>>,
    mode: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    mac: Option<Spanned<String>>,
    static_macs: Option<Spanned<Vec<Spanned<String>>>>,
    queues: Option<Spanned<i64>>,
    offloads: Option<Spanned<bool>>,
    vlan: Option<Spanned<i64>>,
    trunk: Option<Spanned<Vec<Spanned<VlanItem>>>>,
    native_vlan: Option<Spanned<i64>>,
    qinq: Option<Spanned<i64>>,
    max_macs: Option<Spanned<i64>>,
    allowed_macs: Option<Spanned<Vec<Spanned<String>>>>,
    allowed_ips: Option<Spanned<Vec<Spanned<String>>>>,
    storm_limit: Option<Spanned<String>>,
    isolated: Option<Spanned<bool>>,
    // tap
    ifname: Option<Spanned<String>>,
    netns: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    bridge: Option<Spanned<String>>,
    mtu: Option<Spanned<i64>>,
    optional: Option<Spanned<bool>>,
    // vxlan
    vni: Option<Spanned<i64>>,
    local: Option<Spanned<String>>,
    remote: Option<Spanned<Vec<Spanned<String>>>>,
    port: Option<Spanned<i64>>,
    // nat
    subnet: Option<Spanned<String>>,
    gateway: Option<Spanned<String>>,
    dns: Option<Spanned<String>>,
    dhcp_range: Option<Spanned<String>>,
    reservations: Option<Spanned<Vec<Spanned<RawReservation>>>>,
    dns_upstream: Option<Spanned<String>>,
    forward: Option<Spanned<Vec<Spanned<String>>>>,
    restrict: Option<Spanned<bool>>,
    ipv6: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReservation {
    mac: Spanned<String>,
    ip: Spanned<String>,
}

impl RawPort {
    /// The type-specific keys present, with their spans.
    fn specific_keys(&self) -> Vec<(&'static str, Range<usize>)> {
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
const PORT_KEYS: &[(&str, &[&str])] = &[
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
    ("vxlan", &["vni", "local", "remote", "port"]),
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
enum VlanItem {
    Id(i64),
    Range(String),
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

struct Ctx<'a> {
    file: &'a Path,
    src: &'a str,
    errors: Vec<ConfigError>,
    /// Also check that the files the topology names (images) exist and can be read.
    check_files: bool,
}

impl Ctx<'_> {
    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.src[..offset.min(self.src.len())];
        let line = before.matches('\n').count() + 1;
        let col = before
            .rfind('\n')
            .map_or(before.len(), |nl| before.len() - nl - 1)
            + 1;
        (line, col)
    }

    fn error(&mut self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let (line, column) = self.position(span.start);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Reads and validates a topology file.
pub fn load(path: &Path) -> Result<Topology, ConfigErrors> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            field: "file".into(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse_checked(path, &src, true)
}

/// Validates topology text; `file` names it in errors and anchors relative socket paths.
pub fn parse(file: &Path, src: &str) -> Result<Topology, ConfigErrors> {
    parse_checked(file, src, false)
}

/// `parse`; with `check_files`, images that are missing or unreadable are errors too (what
/// `load`, and so `vfabric check` and `run`, do).
pub fn parse_checked(file: &Path, src: &str, check_files: bool) -> Result<Topology, ConfigErrors> {
    let mut cx = Ctx {
        file,
        src,
        errors: Vec::new(),
        check_files,
    };
    let raw: RawTopology = match toml::from_str(src) {
        Ok(r) => r,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let msg = e.message().trim().to_string();
            cx.error(span, "parse", msg);
            return Err(ConfigErrors(cx.errors));
        }
    };
    let base = file.parent().unwrap_or(Path::new("."));
    // Relative socket paths live in `socket_dir` (itself relative to the file), else next to
    // the file.
    let sock_base_buf = match &raw.socket_dir {
        Some(d) if !d.get_ref().is_empty() => base.join(d.get_ref()),
        Some(d) => {
            cx.error(d.span(), "socket_dir", "empty path");
            base.to_path_buf()
        }
        None => base.to_path_buf(),
    };
    let sock_base = sock_base_buf.as_path();
    let mut switches = Vec::new();
    let mut switch_names: HashMap<String, usize> = HashMap::new();
    let mut port_names: HashMap<String, String> = HashMap::new();
    let mut sockets: HashMap<PathBuf, String> = HashMap::new();
    // TAP interfaces (by namespace and name) and VXLAN endpoints (by address and port), each
    // with the port that claims it.
    let mut host_names: HashMap<String, String> = HashMap::new();
    // NAT subnets, with the port that has each.
    let mut subnets: Vec<(std::net::Ipv4Addr, u8, String)> = Vec::new();
    if raw.switch.is_empty() && raw.disk.is_empty() {
        cx.error(
            0..0,
            "switch",
            "the topology has no [[switch]] and no [[disk]]",
        );
    }
    for sw in raw.switch {
        let sw = sw.into_inner();
        let name = sw.name.get_ref().clone();
        let here = format!("switch \"{name}\"");
        check_name(&mut cx, &sw.name, &here);
        if switch_names.insert(name.clone(), 0).is_some() {
            cx.error(
                sw.name.span(),
                format!("{here}: name"),
                "duplicate switch name",
            );
        }
        let mac_aging = match &sw.mac_aging {
            None => crate::core::fdb::DEFAULT_AGING,
            Some(s) => match parse_duration(s.get_ref()) {
                Some(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(86_400 * 7) => d,
                _ => {
                    cx.error(
                        s.span(),
                        format!("{here}: mac_aging"),
                        format!(
                            "`{}` is not a duration between 1s and 7d (like \"300s\", \"5m\")",
                            s.get_ref()
                        ),
                    );
                    crate::core::fdb::DEFAULT_AGING
                }
            },
        };
        let mut ports = Vec::new();
        let mut static_seen: HashMap<MacAddr, String> = HashMap::new();
        for p in sw.port {
            let p = p.into_inner();
            let pname = p.name.get_ref().clone();
            let here = format!("switch \"{name}\" port \"{pname}\"");
            check_name(&mut cx, &p.name, &here);
            if let Some(other) = port_names.insert(pname.clone(), name.clone()) {
                cx.error(
                    p.name.span(),
                    format!("{here}: name"),
                    format!("duplicate port name (also on switch \"{other}\")"),
                );
            }
            let type_name = p.kind.get_ref().as_str();
            let Some((_, keys)) = PORT_KEYS.iter().find(|(t, _)| *t == type_name) else {
                cx.error(
                    p.kind.span(),
                    format!("{here}: type"),
                    format!(
                        "unknown port type `{type_name}` (supported: vhost-user-net, tap, vxlan, nat)"
                    ),
                );
                continue;
            };
            for (key, span) in p.specific_keys() {
                if !keys.contains(&key) {
                    cx.error(
                        span,
                        format!("{here}: {key}"),
                        format!(
                            "not a key of a {type_name} port (its own keys: {})",
                            keys.join(", ")
                        ),
                    );
                }
            }
            let mut static_macs = Vec::new();
            for m in p.static_macs.iter().flat_map(|l| l.get_ref().iter()) {
                if let Some(mac) = unicast_mac(&mut cx, m, &format!("{here}: static_macs")) {
                    if let Some(other) = static_seen.insert(mac, pname.clone()) {
                        cx.error(
                            m.span(),
                            format!("{here}: static_macs"),
                            format!("{mac} is already static on port \"{other}\""),
                        );
                    }
                    static_macs.push(mac);
                }
            }
            let policy = port_policy(&mut cx, &p, &here);
            let kind = match type_name {
                "tap" => PortKind::Tap(tap_port(&mut cx, &p, &here, &mut host_names)),
                "vxlan" => PortKind::Vxlan(vxlan_port(&mut cx, &p, &here, &mut host_names)),
                "nat" => PortKind::Nat(nat_port(&mut cx, &p, &here, &mut host_names, &mut subnets)),
                _ => PortKind::VhostUserNet(vhost_port(
                    &mut cx,
                    &p,
                    &here,
                    sock_base,
                    &pname,
                    &mut sockets,
                )),
            };
            ports.push(PortConfig {
                policy,
                name: pname,
                kind,
                static_macs,
            });
        }
        switches.push(SwitchConfig {
            name,
            mac_aging,
            busy_poll: sw.busy_poll.map(|b| *b.get_ref()).unwrap_or(false),
            ports,
        });
    }
    let disks = parse_disks(
        &mut cx,
        base,
        sock_base,
        raw.disk,
        &mut port_names,
        &mut sockets,
    );
    let mut control = ControlConfig::default();
    if let Some(c) = raw.control {
        let c = c.into_inner();
        if let Some(sock) = &c.socket {
            let path = sock_base.join(sock.get_ref());
            if sock.get_ref().is_empty() {
                cx.error(sock.span(), "control: socket", "empty socket path");
            } else if let Some(other) = sockets.get(&path) {
                cx.error(
                    sock.span(),
                    "control: socket",
                    format!("{} is already the socket of \"{other}\"", path.display()),
                );
            }
            control.socket = Some(path);
        }
        let perms = socket_perms(&mut cx, &c.mode, &c.owner, &c.group, false, "control");
        control.perms = SocketPerms {
            mode: perms.mode.or(control.perms.mode),
            ..perms
        };
    }
    let metrics = raw
        .metrics
        .as_ref()
        .and_then(|m| match m.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                cx.error(
                    m.span(),
                    "metrics",
                    format!(
                        "`{}` is not an address:port like \"127.0.0.1:9100\"",
                        m.get_ref()
                    ),
                );
                None
            }
        });
    if cx.errors.is_empty() {
        Ok(Topology {
            switches,
            disks,
            control,
            metrics,
        })
    } else {
        Err(ConfigErrors(cx.errors))
    }
}

/// A port for `vfabric ctl port add`: `keys` are `KEY=VALUE` with the topology file's keys
/// and syntax (strings may be left unquoted), checked as in a file, and against `topo`, the
/// running topology read from `file` (names, sockets, TAP names, VXLAN endpoints, static
/// addresses must stay unique).
pub fn port_from_keys(
    file: &Path,
    topo: &Topology,
    switch: &str,
    name: &str,
    keys: &[&str],
) -> Result<PortConfig, String> {
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut text = format!(
        "[[switch]]\nname = {}\n[[switch.port]]\nname = {}\n",
        quote(switch),
        quote(name)
    );
    for kv in keys {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("`{kv}`: expected KEY=VALUE (like type=vhost-user-net)"))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{kv}`: `{k}` is not a key"));
        }
        // Numbers, booleans, arrays and quoted strings as written; anything else a string.
        let raw = v.parse::<i64>().is_ok()
            || v == "true"
            || v == "false"
            || v.starts_with('[')
            || v.starts_with('"');
        text += &format!("{k} = {}\n", if raw { v.to_string() } else { quote(v) });
    }
    let parsed = parse_checked(file, &text, true).map_err(|e| {
        e.0.iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let port = parsed
        .switches
        .into_iter()
        .next()
        .and_then(|s| s.ports.into_iter().next())
        .ok_or("no port")?;
    let here = format!("switch \"{switch}\" port \"{name}\"");
    let all_ports = || topo.switches.iter().flat_map(|s| s.ports.iter());
    if all_ports().any(|p| p.name == name) || topo.disks.iter().any(|d| d.name == name) {
        return Err(format!("{here}: name: a port or disk of that name exists"));
    }
    match &port.kind {
        PortKind::VhostUserNet(v) => {
            let taken = all_ports().find_map(|p| match &p.kind {
                PortKind::VhostUserNet(o) if o.socket == v.socket => Some(p.name.clone()),
                _ => None,
            });
            let taken = taken
                .or_else(|| {
                    topo.disks
                        .iter()
                        .find(|d| d.socket == v.socket)
                        .map(|d| d.name.clone())
                })
                .or_else(|| {
                    (topo.control.socket.as_ref() == Some(&v.socket)).then(|| "control".into())
                });
            if let Some(other) = taken {
                return Err(format!(
                    "{here}: socket: {} is already the socket of \"{other}\"",
                    v.socket.display()
                ));
            }
        }
        PortKind::Tap(t) => {
            if let Some(other) = all_ports().find(|p| {
                matches!(&p.kind, PortKind::Tap(o) if o.ifname == t.ifname && o.netns == t.netns)
            }) {
                return Err(format!(
                    "{here}: ifname: {} is already the TAP of port \"{}\"",
                    t.ifname, other.name
                ));
            }
        }
        PortKind::Nat(n) => {
            for other in all_ports() {
                if let PortKind::Nat(o) = &other.kind {
                    if subnets_overlap((n.network, n.prefix), (o.network, o.prefix)) {
                        return Err(format!(
                            "{here}: subnet: {}/{} overlaps {}/{} of port \"{}\"",
                            n.network, n.prefix, o.network, o.prefix, other.name
                        ));
                    }
                    if let Some(f) = n.forwards.iter().find(|f| {
                        o.forwards
                            .iter()
                            .any(|g| g.host == f.host && g.proto == f.proto)
                    }) {
                        return Err(format!(
                            "{here}: forward: {} is already forwarded by port \"{}\"",
                            f.host, other.name
                        ));
                    }
                }
            }
        }
        PortKind::Vxlan(x) => {
            if let Some(other) = all_ports().find(
                |p| matches!(&p.kind, PortKind::Vxlan(o) if o.local == x.local && o.port == x.port),
            ) {
                return Err(format!(
                    "{here}: local: {} port {} is already the endpoint of port \"{}\"",
                    x.local, x.port, other.name
                ));
            }
        }
    }
    if let Some(sw) = topo.switches.iter().find(|s| s.name == switch) {
        for m in &port.static_macs {
            if let Some(other) = sw.ports.iter().find(|p| p.static_macs.contains(m)) {
                return Err(format!(
                    "{here}: static_macs: {m} is already static on port \"{}\"",
                    other.name
                ));
            }
        }
    }
    Ok(port)
}

fn parse_disks(
    cx: &mut Ctx<'_>,
    base: &Path,
    sock_base: &Path,
    raw: Vec<Spanned<RawDisk>>,
    names: &mut HashMap<String, String>,
    sockets: &mut HashMap<PathBuf, String>,
) -> Vec<DiskConfig> {
    let mut disks = Vec::new();
    let mut images: HashMap<PathBuf, String> = HashMap::new();
    for d in raw {
        let d = d.into_inner();
        let name = d.name.get_ref().clone();
        let here = format!("disk \"{name}\"");
        check_name(cx, &d.name, &here);
        if names.insert(name.clone(), "disk".into()).is_some() {
            cx.error(
                d.name.span(),
                format!("{here}: name"),
                "duplicate name (ports and disks share one namespace)",
            );
        }
        let socket = match &d.socket {
            Some(s) if !s.get_ref().is_empty() => {
                let path = sock_base.join(s.get_ref());
                if let Some(other) = sockets.insert(path.clone(), name.clone()) {
                    cx.error(
                        s.span(),
                        format!("{here}: socket"),
                        format!("{} is already the socket of \"{other}\"", path.display()),
                    );
                }
                path
            }
            Some(s) => {
                cx.error(s.span(), format!("{here}: socket"), "empty socket path");
                PathBuf::new()
            }
            None => {
                cx.error(
                    d.name.span(),
                    format!("{here}: socket"),
                    "missing (a disk needs `socket = \"/path/to.sock\"`)",
                );
                PathBuf::new()
            }
        };
        let format = match d.format.as_ref().map(|f| f.get_ref().as_str()) {
            None | Some("auto") => DiskFormat::Auto,
            Some("raw") => DiskFormat::Raw,
            Some("qcow2") => DiskFormat::Qcow2,
            Some("null") => DiskFormat::Null,
            Some(other) => {
                let span = d.format.as_ref().map(|f| f.span()).unwrap_or(0..0);
                cx.error(
                    span,
                    format!("{here}: format"),
                    format!("unknown format `{other}` (raw, qcow2, null, or auto)"),
                );
                DiskFormat::Auto
            }
        };
        let path = match (&d.path, format) {
            (Some(p), _) if !p.get_ref().is_empty() => {
                let path = base.join(p.get_ref());
                if cx.check_files
                    && let Err(e) = std::fs::File::open(&path)
                {
                    cx.error(
                        p.span(),
                        format!("{here}: path"),
                        format!("{}: {e}", path.display()),
                    );
                }
                if let Some(other) = images.insert(path.clone(), name.clone()) {
                    cx.error(
                        p.span(),
                        format!("{here}: path"),
                        format!(
                            "{} is already the image of disk \"{other}\"",
                            path.display()
                        ),
                    );
                }
                path
            }
            (_, DiskFormat::Null) => PathBuf::new(),
            (Some(p), _) => {
                cx.error(p.span(), format!("{here}: path"), "empty image path");
                PathBuf::new()
            }
            (None, _) => {
                cx.error(
                    d.name.span(),
                    format!("{here}: path"),
                    "missing (a disk needs `path = \"/path/to/image\"`, raw or qcow2)",
                );
                PathBuf::new()
            }
        };
        let size = match (&d.size, format) {
            (Some(sz), DiskFormat::Null) => match parse_size(sz.get_ref()) {
                Some(n) if n >= 512 && n % 512 == 0 => n,
                _ => {
                    cx.error(
                        sz.span(),
                        format!("{here}: size"),
                        format!(
                            "`{}` is not a size in whole sectors (like \"1G\")",
                            sz.get_ref()
                        ),
                    );
                    0
                }
            },
            (Some(sz), _) => {
                cx.error(
                    sz.span(),
                    format!("{here}: size"),
                    "only a null disk has a size (an image's size is its own)",
                );
                0
            }
            (None, DiskFormat::Null) => {
                cx.error(
                    d.name.span(),
                    format!("{here}: size"),
                    "a null disk needs `size`",
                );
                0
            }
            (None, _) => 0,
        };
        let max = vhost_backends::blk::device::MAX_QUEUES;
        let queues = match &d.queues {
            None => 1,
            Some(q) if (1..=i64::from(max)).contains(q.get_ref()) => *q.get_ref() as u16,
            Some(q) => {
                cx.error(
                    q.span(),
                    format!("{here}: queues"),
                    format!("{} queues: must be 1-{max}", q.get_ref()),
                );
                1
            }
        };
        let serial = match &d.serial {
            None => name.clone(),
            Some(s) if s.get_ref().len() <= 20 && s.get_ref().is_ascii() => s.get_ref().clone(),
            Some(s) => {
                cx.error(
                    s.span(),
                    format!("{here}: serial"),
                    "a serial is at most 20 ASCII characters",
                );
                String::new()
            }
        };
        let client = d.client.map(|c| *c.get_ref()).unwrap_or(false);
        let perms = socket_perms(cx, &d.mode, &d.owner, &d.group, client, &here);
        disks.push(DiskConfig {
            perms,
            name,
            socket,
            client,
            path,
            format,
            readonly: d.readonly.map(|r| *r.get_ref()).unwrap_or(false),
            queues,
            serial,
            size,
        });
    }
    disks
}

/// Parses an octal socket mode like "0660" (owner read/write required).
fn parse_mode(s: &str) -> Option<u32> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|&m| m <= 0o777 && m & 0o600 == 0o600)
}

/// The vhost-user-net keys of `p`.
fn vhost_port(
    cx: &mut Ctx<'_>,
    p: &RawPort,
    here: &str,
    sock_base: &Path,
    pname: &str,
    sockets: &mut HashMap<PathBuf, String>,
) -> VhostUserNet {
    let socket = match &p.socket {
        Some(s) if !s.get_ref().is_empty() => {
            let path = sock_base.join(s.get_ref());
            if let Some(other) = sockets.insert(path.clone(), pname.to_string()) {
                cx.error(
                    s.span(),
                    format!("{here}: socket"),
                    format!(
                        "{} is already the socket of port \"{other}\"",
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
            cx.error(
                p.name.span(),
                format!("{here}: socket"),
                "missing (a vhost-user-net port needs `socket = \"/path/to.sock\"`)",
            );
            PathBuf::new()
        }
    };
    let mac = p
        .mac
        .as_ref()
        .and_then(|m| unicast_mac(cx, m, &format!("{here}: mac")));
    let queues = queue_count(cx, p, here, DEFAULT_QUEUES, "queue pairs");
    let client = p.client.as_ref().map(|c| *c.get_ref()).unwrap_or(false);
    let perms = socket_perms(cx, &p.mode, &p.owner, &p.group, client, here);
    VhostUserNet {
        socket,
        client,
        perms,
        mac,
        queues,
        offloads: p.offloads.as_ref().map(|o| *o.get_ref()).unwrap_or(true),
    }
}

/// `queues`: 1 to MAX_QUEUE_PAIRS, `default` when absent.
fn queue_count(cx: &mut Ctx<'_>, p: &RawPort, here: &str, default: u16, noun: &str) -> u16 {
    match &p.queues {
        None => default,
        Some(q) if (1..=i64::from(vhost_backends::net::MAX_QUEUE_PAIRS)).contains(q.get_ref()) => {
            *q.get_ref() as u16
        }
        Some(q) => {
            cx.error(
                q.span(),
                format!("{here}: queues"),
                format!(
                    "{} {noun}: must be 1-{}",
                    q.get_ref(),
                    vhost_backends::net::MAX_QUEUE_PAIRS
                ),
            );
            1
        }
    }
}

/// A network interface name the kernel accepts: 1-15 bytes, no '/', ':' or white space.
fn valid_ifname(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// The TAP keys of `p`.
fn tap_port(
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
        } else if cx.check_files && !Path::new("/run/netns").join(&name).exists() {
            cx.error(
                n.span(),
                format!("{here}: netns"),
                format!(
                    "no network namespace `{name}` (/run/netns/{name} does not exist; create it with `ip netns add {name}`)"
                ),
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

/// `ip netns` names: no '/', not empty, not `.`/`..`.
fn check_netns_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s != "." && s != ".." && !s.contains('/')
}

/// "10.8.0.254/24" or "fd00::1/64".
pub fn parse_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (a, l) = s.trim().split_once('/')?;
    let addr: std::net::IpAddr = a.parse().ok()?;
    let len: u8 = l.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

/// An IPv4 address of a NAT port's subnet, checked: inside it, not its network or
/// broadcast address.
fn subnet_addr(
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

/// Whether two IPv4 subnets (network, prefix length) share an address.
fn subnets_overlap(a: (std::net::Ipv4Addr, u8), b: (std::net::Ipv4Addr, u8)) -> bool {
    let range = |(net, len): (std::net::Ipv4Addr, u8)| {
        let start = u64::from(u32::from(net));
        (start, start + (1u64 << (32 - u32::from(len))))
    };
    let ((a0, a1), (b0, b1)) = (range(a), range(b));
    a0 < b1 && b0 < a1
}

/// The NAT keys of `p`.
fn nat_port(
    cx: &mut Ctx<'_>,
    p: &RawPort,
    here: &str,
    host_names: &mut HashMap<String, String>,
    subnets: &mut Vec<(std::net::Ipv4Addr, u8, String)>,
) -> nat::NatConfig {
    use std::net::Ipv4Addr;
    let pname = p.name.get_ref().clone();
    let upstream_default = std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|t| nat::config::resolv_conf_upstream(&t))
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 53)));
    let (network, prefix) = match &p.subnet {
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
    };
    let mut cfg = nat::NatConfig::for_subnet(network, prefix, upstream_default);
    if let Some(sn) = &p.subnet {
        for (n, l, other) in subnets.iter() {
            if subnets_overlap((network, prefix), (*n, *l)) {
                cx.error(
                    sn.span(),
                    format!("{here}: subnet"),
                    format!("{network}/{prefix} overlaps {n}/{l} of port \"{other}\""),
                );
            }
        }
        subnets.push((network, prefix, pname.clone()));
    }
    if let Some(g) = &p.gateway
        && let Some(a) = subnet_addr(cx, g, &format!("{here}: gateway"), &cfg)
    {
        cfg.gateway = a;
    }
    if let Some(d) = &p.dns
        && let Some(a) = subnet_addr(cx, d, &format!("{here}: dns"), &cfg)
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
    if let Some(r) = &p.dhcp_range {
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
    for r in p.reservations.iter().flat_map(|l| l.get_ref().iter()) {
        let r = r.get_ref();
        let field = format!("{here}: reservations");
        let mac = unicast_mac(cx, &r.mac, &field);
        let ip = subnet_addr(cx, &r.ip, &field, &cfg);
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
    if let Some(u) = &p.dns_upstream {
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
    cfg
}

/// The VXLAN keys of `p`.
fn vxlan_port(
    cx: &mut Ctx<'_>,
    p: &RawPort,
    here: &str,
    host_names: &mut HashMap<String, String>,
) -> VxlanConfig {
    let vni = match &p.vni {
        Some(v) if (0..1 << 24).contains(v.get_ref()) => *v.get_ref() as u32,
        Some(v) => {
            cx.error(
                v.span(),
                format!("{here}: vni"),
                format!("{}: a VNI is 0-16777215", v.get_ref()),
            );
            0
        }
        None => {
            cx.error(
                p.name.span(),
                format!("{here}: vni"),
                "missing (a vxlan port needs `vni = 100`)",
            );
            0
        }
    };
    let unspecified = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    let local = match &p.local {
        Some(l) => match l.get_ref().parse::<std::net::IpAddr>() {
            Ok(a) if !a.is_unspecified() && !a.is_multicast() => a,
            _ => {
                cx.error(
                    l.span(),
                    format!("{here}: local"),
                    format!(
                        "`{}` is not a unicast address of this host (like \"192.0.2.1\")",
                        l.get_ref()
                    ),
                );
                unspecified
            }
        },
        None => {
            cx.error(
                p.name.span(),
                format!("{here}: local"),
                "missing (a vxlan port needs `local = \"192.0.2.1\"`, the address its UDP socket binds)",
            );
            unspecified
        }
    };
    let port = match &p.port {
        None => 4789,
        Some(v) if (1..=65535).contains(v.get_ref()) => *v.get_ref() as u16,
        Some(v) => {
            cx.error(
                v.span(),
                format!("{here}: port"),
                format!("{}: a UDP port is 1-65535", v.get_ref()),
            );
            4789
        }
    };
    if !local.is_unspecified() {
        let key = format!("vxlan {}", std::net::SocketAddr::new(local, port));
        if let Some(other) = host_names.insert(key, p.name.get_ref().clone()) {
            let span = p.local.as_ref().map(|l| l.span()).unwrap_or(0..0);
            cx.error(
                span,
                format!("{here}: local"),
                format!(
                    "{local} port {port} is already the endpoint of port \"{other}\" (one VXLAN port per local address and UDP port)"
                ),
            );
        }
    }
    let mut remote = Vec::new();
    match &p.remote {
        None => cx.error(
            p.name.span(),
            format!("{here}: remote"),
            "missing (a vxlan port needs `remote = [\"192.0.2.2\"]`, its peer VTEPs)",
        ),
        Some(list) if list.get_ref().is_empty() => cx.error(
            list.span(),
            format!("{here}: remote"),
            "empty: name at least one peer VTEP",
        ),
        Some(list) => {
            for r in list.get_ref() {
                match r.get_ref().parse::<std::net::IpAddr>() {
                    Ok(a) if a.is_unspecified() || a.is_multicast() => cx.error(
                        r.span(),
                        format!("{here}: remote"),
                        format!("{a} is not a unicast address"),
                    ),
                    Ok(a) if a.is_ipv4() != local.is_ipv4() => cx.error(
                        r.span(),
                        format!("{here}: remote"),
                        format!("{a} is not of the same family as local {local}"),
                    ),
                    Ok(a) if a == local => cx.error(
                        r.span(),
                        format!("{here}: remote"),
                        format!("{a} is the local address"),
                    ),
                    Ok(a) if remote.contains(&a) => cx.error(
                        r.span(),
                        format!("{here}: remote"),
                        format!("{a} is listed twice"),
                    ),
                    Ok(a) => remote.push(a),
                    Err(_) => cx.error(
                        r.span(),
                        format!("{here}: remote"),
                        format!("`{}` is not an IP address", r.get_ref()),
                    ),
                }
            }
        }
    }
    VxlanConfig {
        vni,
        local,
        remote,
        port,
    }
}

fn socket_perms(
    cx: &mut Ctx<'_>,
    mode: &Option<Spanned<String>>,
    owner: &Option<Spanned<String>>,
    group: &Option<Spanned<String>>,
    client: bool,
    here: &str,
) -> SocketPerms {
    let mut p = SocketPerms::default();
    for (key, v) in [("mode", mode), ("owner", owner), ("group", group)] {
        if let (Some(v), true) = (v, client) {
            cx.error(
                v.span(),
                format!("{here}: {key}"),
                "only a socket vfabric listens on has an owner, group and mode (not with `client = true`)",
            );
        }
    }
    if let Some(m) = mode {
        match parse_mode(m.get_ref()) {
            Some(bits) => p.mode = Some(bits),
            None => cx.error(
                m.span(),
                format!("{here}: mode"),
                format!(
                    "`{}` is not an octal mode with owner read/write (like \"0660\")",
                    m.get_ref()
                ),
            ),
        }
    }
    p.owner = owner.as_ref().map(|o| o.get_ref().clone());
    p.group = group.as_ref().map(|g| g.get_ref().clone());
    p
}

fn vlan_id(cx: &mut Ctx<'_>, v: &Spanned<i64>, field: &str) -> Option<vlan::VlanId> {
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

/// Parses a rate like `1000pps` (or a bare number).
pub fn parse_pps(s: &str) -> Option<u32> {
    let n = s.trim().trim_end_matches("pps").trim();
    n.parse().ok().filter(|&n: &u32| n > 0)
}

fn port_policy(cx: &mut Ctx<'_>, p: &RawPort, here: &str) -> PortPolicy {
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

/// Names are 1-32 characters of a-z, A-Z, 0-9, '-', '_' and '.'.
fn check_name(cx: &mut Ctx<'_>, name: &Spanned<String>, here: &str) {
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

fn unicast_mac(cx: &mut Ctx<'_>, m: &Spanned<String>, field: &str) -> Option<MacAddr> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(src: &str) -> Vec<String> {
        match parse(Path::new("/etc/t.toml"), src) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    const GOOD: &str = r#"
[[switch]]
name = "lab"
mac_aging = "5m"

[[switch.port]]
name = "vm1"
type = "vhost-user-net"
socket = "/run/vfabric/vm1.sock"
mac = "52:54:00:00:00:01"
static_macs = ["52:54:00:00:00:01"]

[[switch.port]]
name = "vm2"
type = "vhost-user-net"
socket = "vm2.sock"
client = true
queues = 2
"#;

    #[test]
    fn a_good_file() {
        let t = parse(Path::new("/etc/vf/t.toml"), GOOD).unwrap();
        let sw = &t.switches[0];
        assert_eq!(sw.name, "lab");
        assert_eq!(sw.mac_aging, Duration::from_secs(300));
        let PortKind::VhostUserNet(p1) = &sw.ports[0].kind else {
            panic!("port 0 is vhost-user-net")
        };
        assert_eq!(p1.socket, PathBuf::from("/run/vfabric/vm1.sock"));
        assert_eq!(p1.mac, Some("52:54:00:00:00:01".parse().unwrap()));
        assert_eq!((p1.client, p1.queues), (false, DEFAULT_QUEUES));
        let PortKind::VhostUserNet(p2) = &sw.ports[1].kind else {
            panic!("port 1 is vhost-user-net")
        };
        assert_eq!(
            p2.socket,
            PathBuf::from("/etc/vf/vm2.sock"),
            "relative to the file"
        );
        assert_eq!((p2.client, p2.queues), (true, 2));
    }

    #[test]
    fn tap_and_vxlan_ports() {
        let src = r#"
[[switch]]
name = "lab"
[[switch.port]]
name = "host"
type = "tap"
ifname = "vf-host0"
address = "10.8.0.254/24"
bridge = "br0"
mtu = 9000
queues = 2
vlan = 10
[[switch.port]]
name = "dc2"
type = "vxlan"
vni = 100
local = "192.0.2.1"
remote = ["192.0.2.2", "192.0.2.3"]
"#;
        let t = parse(Path::new("/t.toml"), src).unwrap();
        let sw = &t.switches[0];
        assert_eq!(
            sw.ports[0].kind,
            PortKind::Tap(TapConfig {
                ifname: "vf-host0".into(),
                netns: None,
                address: Some(("10.8.0.254".parse().unwrap(), 24)),
                bridge: Some("br0".into()),
                mtu: Some(9000),
                queues: 2,
                optional: false,
            })
        );
        assert_eq!(
            sw.ports[0].policy.vlan,
            vlan::PortVlan::Access(vlan::VlanId::new(10).unwrap())
        );
        assert_eq!(
            sw.ports[1].kind,
            PortKind::Vxlan(VxlanConfig {
                vni: 100,
                local: "192.0.2.1".parse().unwrap(),
                remote: vec!["192.0.2.2".parse().unwrap(), "192.0.2.3".parse().unwrap()],
                port: 4789,
            })
        );
    }

    #[test]
    fn tap_and_vxlan_errors() {
        let head = "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\n";
        let table: &[(&str, &str)] = &[
            (
                "type = \"tap\"\nifname = \"t0\"\nsocket = \"a.sock\"\n",
                "/t.toml:7:10: switch \"s\" port \"p\": socket: not a key of a tap port",
            ),
            (
                "type = \"tap\"\n",
                "/t.toml:4:8: switch \"s\" port \"p\": ifname: missing",
            ),
            (
                "type = \"tap\"\nifname = \"much-too-long-name\"\n",
                "/t.toml:6:10: switch \"s\" port \"p\": ifname: `much-too-long-name` is not an interface name",
            ),
            (
                "type = \"tap\"\nifname = \"t0\"\naddress = \"10.0.0.1\"\n",
                "/t.toml:7:11: switch \"s\" port \"p\": address: `10.0.0.1` is not an address with a prefix length",
            ),
            (
                "type = \"tap\"\nifname = \"t0\"\nmtu = 20\n",
                "/t.toml:7:7: switch \"s\" port \"p\": mtu: 20: must be 68-65535",
            ),
            (
                "type = \"vxlan\"\nvni = 16777216\nlocal = \"192.0.2.1\"\nremote = [\"192.0.2.2\"]\n",
                "/t.toml:6:7: switch \"s\" port \"p\": vni: 16777216: a VNI is 0-16777215",
            ),
            (
                "type = \"vxlan\"\nvni = 1\nlocal = \"192.0.2.1\"\nremote = [\"2001:db8::1\"]\n",
                "/t.toml:8:11: switch \"s\" port \"p\": remote: 2001:db8::1 is not of the same family",
            ),
            (
                "type = \"vxlan\"\nvni = 1\nlocal = \"192.0.2.1\"\nremote = []\n",
                "/t.toml:8:10: switch \"s\" port \"p\": remote: empty",
            ),
            (
                "type = \"vxlan\"\nvni = 1\nremote = [\"192.0.2.2\"]\n",
                "/t.toml:4:8: switch \"s\" port \"p\": local: missing",
            ),
            (
                "type = \"vhost-user-net\"\nsocket = \"a.sock\"\nvni = 3\n",
                "/t.toml:7:7: switch \"s\" port \"p\": vni: not a key of a vhost-user-net port",
            ),
        ];
        for (body, want) in table {
            let src = format!("{head}{body}");
            let err = parse(Path::new("/t.toml"), &src).unwrap_err().to_string();
            assert!(err.starts_with(want), "{src}\n got: {err}\nwant: {want}");
        }
        // Two VXLAN ports cannot share an endpoint; two TAPs cannot share a name.
        let src = "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"a\"\ntype = \"vxlan\"\nvni = 1\nlocal = \"192.0.2.1\"\nremote = [\"192.0.2.2\"]\n[[switch.port]]\nname = \"b\"\ntype = \"vxlan\"\nvni = 2\nlocal = \"192.0.2.1\"\nremote = [\"192.0.2.3\"]\n[[switch.port]]\nname = \"c\"\ntype = \"tap\"\nifname = \"t0\"\n[[switch.port]]\nname = \"d\"\ntype = \"tap\"\nifname = \"t0\"\n";
        let err = parse(Path::new("/t.toml"), src).unwrap_err().to_string();
        assert!(
            err.contains(
                "port \"b\": local: 192.0.2.1 port 4789 is already the endpoint of port \"a\""
            ),
            "{err}"
        );
        assert!(
            err.contains("port \"d\": ifname: t0 is already the TAP of port \"c\""),
            "{err}"
        );
    }

    #[test]
    fn nat_ports() {
        let src = "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"up\"\ntype = \"nat\"\nsubnet = \"10.0.2.0/24\"\ngateway = \"10.0.2.1\"\ndns = \"10.0.2.53\"\ndhcp_range = \"10.0.2.100-10.0.2.110\"\nreservations = [{ mac = \"52:54:00:00:00:01\", ip = \"10.0.2.10\" }]\nforward = [\"tcp:127.0.0.1:2222-10.0.2.10:22\"]\ndns_upstream = \"127.0.0.1\"\nrestrict = true\nipv6 = \"fd00:2::/64\"\n";
        let t = parse(Path::new("/t.toml"), src).unwrap();
        let PortKind::Nat(n) = &t.switches[0].ports[0].kind else {
            panic!("not nat")
        };
        assert_eq!(n.gateway, std::net::Ipv4Addr::new(10, 0, 2, 1));
        assert_eq!(n.dns, std::net::Ipv4Addr::new(10, 0, 2, 53));
        assert_eq!(n.dhcp_first, std::net::Ipv4Addr::new(10, 0, 2, 100));
        assert_eq!(n.reservations.len(), 1);
        assert_eq!(n.forwards.len(), 1);
        assert_eq!(n.dns_upstream, "127.0.0.1:53".parse().unwrap());
        assert!(n.restrict);
        assert_eq!(n.gateway6(), Some("fd00:2::2".parse().unwrap()));
        let head = "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\ntype = \"nat\"\n";
        for (body, want) in [
            (
                "subnet = \"10.0.2.1/24\"\n",
                "/t.toml:6:10: switch \"s\" port \"p\": subnet: 10.0.2.1/24 has host bits set",
            ),
            (
                "subnet = \"10.0.2.0/24\"\ndhcp_range = \"10.0.2.1-10.0.2.9\"\n",
                "/t.toml:7:14: switch \"s\" port \"p\": dhcp_range: 10.0.2.1-10.0.2.9 includes the gateway",
            ),
            (
                "subnet = \"10.0.2.0/24\"\ngateway = \"10.0.3.1\"\n",
                "/t.toml:7:11: switch \"s\" port \"p\": gateway: 10.0.3.1 is not a host address of the subnet",
            ),
            (
                "subnet = \"10.0.2.0/24\"\nforward = [\"tcp:127.0.0.1:1-10.9.9.9:2\"]\n",
                "/t.toml:7:12: switch \"s\" port \"p\": forward: 10.9.9.9:2 is not an address of the subnet",
            ),
            (
                "subnet = \"10.0.2.0/24\"\nipv6 = \"fd00::/48\"\n",
                "/t.toml:7:8: switch \"s\" port \"p\": ipv6: fd00::/48: SLAAC needs a /64 prefix",
            ),
            ("", "/t.toml:4:8: switch \"s\" port \"p\": subnet: missing"),
        ] {
            let src = format!("{head}{body}");
            let err = parse(Path::new("/t.toml"), &src).unwrap_err().to_string();
            assert!(err.starts_with(want), "{src}\n got: {err}\nwant: {want}");
        }
        // Two NAT ports with overlapping subnets.
        let src = "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"a\"\ntype = \"nat\"\nsubnet = \"10.0.0.0/16\"\n[[switch.port]]\nname = \"b\"\ntype = \"nat\"\nsubnet = \"10.0.2.0/24\"\n";
        let err = parse(Path::new("/t.toml"), src).unwrap_err().to_string();
        assert!(
            err.contains("port \"b\": subnet: 10.0.2.0/24 overlaps 10.0.0.0/16 of port \"a\""),
            "{err}"
        );
    }

    #[test]
    fn errors_name_file_line_column_and_field() {
        let table: &[(&str, &str)] = &[
            // unknown key
            (
                "[[switch]]\nname = \"s\"\nflavour = 1\n",
                "/etc/t.toml:3:1: parse: unknown field `flavour`",
            ),
            // bad type
            (
                "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\ntype = \"hub\"\n",
                "/etc/t.toml:5:8: switch \"s\" port \"p\": type: unknown port type `hub`",
            ),
            // missing socket
            (
                "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\ntype = \"vhost-user-net\"\n",
                "/etc/t.toml:4:8: switch \"s\" port \"p\": socket: missing",
            ),
            // bad mac
            (
                "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\ntype = \"vhost-user-net\"\nsocket = \"/a\"\nmac = \"01:00:5e:00:00:01\"\n",
                "/etc/t.toml:7:7: switch \"s\" port \"p\": mac: 01:00:5e:00:00:01 is a group",
            ),
            // bad aging
            (
                "[[switch]]\nname = \"s\"\nmac_aging = \"soon\"\n",
                "/etc/t.toml:3:13: switch \"s\": mac_aging: `soon` is not a duration",
            ),
            // queues
            (
                "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\ntype = \"vhost-user-net\"\nsocket = \"/a\"\nqueues = 0\n",
                "/etc/t.toml:7:10: switch \"s\" port \"p\": queues: 0 queue pairs",
            ),
            // wrong value type
            (
                "[[switch]]\nname = 5\n",
                "/etc/t.toml:2:8: parse: invalid type: integer `5`, expected a string",
            ),
            // empty
            (
                "",
                "/etc/t.toml:1:1: switch: the topology has no [[switch]]",
            ),
        ];
        for (src, want) in table {
            let got = errors(src);
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "want {want:?}\n got {got:?}"
            );
        }
    }

    #[test]
    fn all_semantic_errors_are_reported_together() {
        let src = r#"
[[switch]]
name = "a"
[[switch.port]]
name = "p"
type = "vhost-user-net"
socket = "/x.sock"
[[switch]]
name = "a"
[[switch.port]]
name = "p"
type = "vhost-user-net"
socket = "/x.sock"
static_macs = ["zz"]
"#;
        let got = errors(src);
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(got[0].contains("9:8: switch \"a\": name: duplicate switch name"));
        assert!(got[1].contains("11:8: switch \"a\" port \"p\": name: duplicate port name"));
        assert!(got[3].contains(
            "13:10: switch \"a\" port \"p\": socket: /x.sock is already the socket of port \"p\""
        ));
        assert!(
            got[2]
                .contains("14:16: switch \"a\" port \"p\": static_macs: `zz` is not a MAC address")
        );
    }

    #[test]
    fn vlan_and_security_keys() {
        let src = r#"
[[switch]]
name = "s"
[[switch.port]]
name = "a"
type = "vhost-user-net"
socket = "a.sock"
vlan = 10
max_macs = 16
allowed_macs = ["52:54:00:00:00:01"]
allowed_ips = ["10.0.0.5", "fd00::5"]
storm_limit = "1000pps"
isolated = true
[[switch.port]]
name = "t"
type = "vhost-user-net"
socket = "t.sock"
trunk = [10, 20, "100-199"]
native_vlan = 1
[[switch.port]]
name = "q"
type = "vhost-user-net"
socket = "q.sock"
qinq = 300
"#;
        let t = parse(Path::new("/etc/t.toml"), src).unwrap();
        let p = &t.switches[0].ports;
        let a = &p[0].policy;
        assert_eq!(
            a.vlan,
            vlan::PortVlan::Access(vlan::VlanId::new(10).unwrap())
        );
        assert_eq!(
            (a.max_macs, a.storm_pps, a.isolated),
            (Some(16), Some(1000), true)
        );
        assert_eq!(a.allowed_ips.as_ref().unwrap().len(), 2);
        let vlan::PortVlan::Trunk { allowed, native } = &p[1].policy.vlan else {
            panic!("{:?}", p[1].policy.vlan)
        };
        assert_eq!((allowed.len(), native.map(|n| n.get())), (102, Some(1)));
        assert_eq!(p[2].policy.vlan.service_vlan().map(|v| v.get()), Some(300));
        let port = |extra: &str| {
            format!(
                "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\ntype = \"vhost-user-net\"\nsocket = \"p.sock\"\n{extra}\n"
            )
        };
        let table: &[(&str, &str)] = &[
            (
                "vlan = 4095",
                "/etc/t.toml:7:8: switch \"s\" port \"p\": vlan: 4095 is not a VLAN id (1-4094)",
            ),
            (
                "vlan = 10\ntrunk = [20]",
                "switch \"s\" port \"p\": vlan: a port is either an access port",
            ),
            (
                "native_vlan = 5",
                "/etc/t.toml:7:15: switch \"s\" port \"p\": native_vlan: only a trunk",
            ),
            (
                "trunk = [\"30-20\"]",
                "/etc/t.toml:7:10: switch \"s\" port \"p\": trunk:",
            ),
            (
                "trunk = [0]",
                "/etc/t.toml:7:10: switch \"s\" port \"p\": trunk: 0 is not a VLAN id",
            ),
            (
                "trunk = []",
                "/etc/t.toml:7:9: switch \"s\" port \"p\": trunk: a trunk carries at least one VLAN",
            ),
            (
                "max_macs = 0",
                "/etc/t.toml:7:12: switch \"s\" port \"p\": max_macs: 0: must be 1-1000000",
            ),
            (
                "allowed_ips = [\"10.0.0\"]",
                "/etc/t.toml:7:16: switch \"s\" port \"p\": allowed_ips: `10.0.0` is not an IPv4 or IPv6 address",
            ),
            (
                "allowed_macs = [\"ff:ff:ff:ff:ff:ff\"]",
                "/etc/t.toml:7:17: switch \"s\" port \"p\": allowed_macs:",
            ),
            (
                "storm_limit = \"fast\"",
                "/etc/t.toml:7:15: switch \"s\" port \"p\": storm_limit: `fast` is not a rate",
            ),
        ];
        for (extra, want) in table {
            let src = port(extra);
            let got = errors(&src);
            assert!(
                got.iter().any(|e| e.contains(want)),
                "{extra}\nwant {want}\ngot {got:?}"
            );
        }
    }

    #[test]
    fn disks() {
        let src = r#"
[[disk]]
name = "vm1-root"
socket = "/run/vfabric/vm1-disk.sock"
path = "images/vm1.qcow2"
queues = 4
serial = "root1"

[[disk]]
name = "scratch"
socket = "s.sock"
format = "null"
size = "2G"
readonly = true
client = true
"#;
        let t = parse(Path::new("/etc/vf/t.toml"), src).unwrap();
        assert!(t.switches.is_empty());
        let d = &t.disks[0];
        assert_eq!(d.path, PathBuf::from("/etc/vf/images/vm1.qcow2"));
        assert_eq!(
            (d.format, d.queues, d.readonly, d.client),
            (DiskFormat::Auto, 4, false, false)
        );
        assert_eq!(d.serial, "root1");
        let n = &t.disks[1];
        assert_eq!(
            (n.format, n.size, n.readonly, n.client),
            (DiskFormat::Null, 2 << 30, true, true)
        );
        assert_eq!(n.serial, "scratch");
        assert_eq!(n.socket, PathBuf::from("/etc/vf/s.sock"));
        let table: &[(&str, &str)] = &[
            (
                "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\n",
                "/etc/t.toml:2:8: disk \"d\": path: missing",
            ),
            (
                "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\npath = \"x\"\nformat = \"vmdk\"\n",
                "/etc/t.toml:5:10: disk \"d\": format: unknown format `vmdk`",
            ),
            (
                "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\npath = \"x\"\nqueues = 0\n",
                "/etc/t.toml:5:10: disk \"d\": queues: 0 queues: must be 1-16",
            ),
            (
                "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\nformat = \"null\"\nsize = \"1000\"\n",
                "/etc/t.toml:5:8: disk \"d\": size: `1000` is not a size in whole sectors",
            ),
            (
                "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\npath = \"x\"\nsize = \"1G\"\n",
                "/etc/t.toml:5:8: disk \"d\": size: only a null disk has a size",
            ),
            (
                "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\npath = \"x\"\nserial = \"0123456789abcdefghijk\"\n",
                "/etc/t.toml:5:10: disk \"d\": serial: a serial is at most 20 ASCII characters",
            ),
            (
                "[[disk]]\nname = \"d\"\nsocket = \"a.sock\"\npath = \"x\"\n[[disk]]\nname = \"e\"\nsocket = \"b.sock\"\npath = \"x\"\n",
                "/etc/t.toml:8:8: disk \"e\": path: /etc/x is already the image of disk \"d\"",
            ),
            (
                "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\ntype = \"vhost-user-net\"\nsocket = \"a.sock\"\n[[disk]]\nname = \"d\"\nsocket = \"a.sock\"\npath = \"x\"\n",
                "/etc/t.toml:9:10: disk \"d\": socket: /etc/a.sock is already the socket of \"p\"",
            ),
            (
                "[[disk]]\nname = \"d\"\nsocket = \"a.sock\"\npath = \"x\"\nbogus = 1\n",
                "/etc/t.toml:5:1: parse: unknown field `bogus`",
            ),
        ];
        for (src, want) in table {
            let got = errors(src);
            assert!(
                got.iter().any(|e| e.starts_with(want)),
                "{src}\nwant {want}\ngot {got:?}"
            );
        }
        for (s, n) in [
            ("512", 512),
            ("64K", 65536),
            ("10M", 10 << 20),
            ("2GiB", 2 << 30),
            ("1T", 1 << 40),
        ] {
            assert_eq!(parse_size(s), Some(n), "{s}");
        }
        for s in ["", "G", "1.5G", "1X", "-1"] {
            assert_eq!(parse_size(s), None, "{s}");
        }
    }

    #[test]
    fn durations() {
        for (s, ms) in [
            ("300s", 300_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("250ms", 250),
            ("2d", 172_800_000),
        ] {
            assert_eq!(parse_duration(s), Some(Duration::from_millis(ms)), "{s}");
        }
        for s in ["", "s", "10", "10x", "-1s", "1.5s"] {
            assert_eq!(parse_duration(s), None, "{s}");
        }
    }
}
