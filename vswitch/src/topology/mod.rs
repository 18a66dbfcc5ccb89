//! The topology file: parsed, validated, and turned into the model the daemon runs.
//!
//! This file holds the validated model (`Topology` and what it is made of) and the public
//! face of the module. `file.rs` reads a file: `parse.rs` gives its raw tables with spans;
//! the kind files (`vm.rs`, `tap.rs`, `vxlan.rs`, `nat.rs`, `disk.rs`) and `vlan_keys.rs`
//! check each key and build the validated values; `checks.rs` holds what spans the file
//! (names, unique sockets, subnets); `error.rs` the errors; `host.rs` the only questions
//! asked of the host (an image opens, a namespace exists, the default DNS upstream).
//! `keys.rs` checks a port added at run time (`ctl port add`) against the running topology.
//!
//! Invariants: a `Topology` exists only when the whole file is valid; every error names the
//! file, line, column and field (`lab.toml:12:10: switch "lab" port "vm1": socket: ...`),
//! and parsing collects every error it finds rather than stopping at the first, so
//! `vfabric check` shows them all. Nothing here knows that a fabric exists.

use std::path::PathBuf;
use std::time::Duration;

use crate::core::{MacAddr, PortPolicy};

mod checks;
mod disk;
mod error;
mod file;
mod host;
mod hosts;
mod keys;
mod localize;
mod nat;
mod parse;
mod tap;
mod vlan_keys;
mod vm;
mod vxlan;

pub use error::{ConfigError, ConfigErrors};
pub use file::{load, load_for, parse, parse_checked};
pub use hosts::derived_vni;
pub use keys::port_from_keys;
pub use localize::{choose_host, local_addresses, localize, mesh_port_name};
pub use parse::{parse_cidr, parse_duration, parse_pps, parse_size};

/// Queue pairs a vhost-user-net port offers when the topology does not say.
pub const DEFAULT_QUEUES: u16 = 8;

/// The validated topology.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    pub switches: Vec<SwitchConfig>,
    pub disks: Vec<DiskConfig>,
    pub control: ControlConfig,
    /// Address of the Prometheus endpoint (`metrics = "127.0.0.1:9100"`).
    pub metrics: Option<std::net::SocketAddr>,
    /// The machines of a lab that spans several (`[[host]]`); empty for one machine.
    pub hosts: Hosts,
}

/// A topology across machines: its hosts, where each port and disk runs, the overlay that
/// joins a switch's hosts, and each switch's VNIs. `localize` narrows a topology to one host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hosts {
    /// `[[host]]`, in file order.
    pub list: Vec<HostConfig>,
    /// The encapsulation and UDP port of the meshes (`[mesh]`).
    pub mesh: MeshConfig,
    /// Port or disk name -> the host that serves it (every one, when there are hosts).
    pub placement: std::collections::BTreeMap<String, String>,
    /// Switch name -> its VNI and per-VLAN VNIs.
    pub vnis: std::collections::BTreeMap<String, SwitchVni>,
    /// The host this topology was narrowed to by `localize` (`None`: the whole file).
    pub local: Option<String>,
}

impl Hosts {
    /// The host with this underlay address.
    pub fn by_address(&self, ip: std::net::IpAddr) -> Option<&HostConfig> {
        self.list.iter().find(|h| h.address == ip)
    }
}

/// One `[[host]]`: a machine running vfabric for its share of the topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    pub name: String,
    /// Its underlay address: the meshes' tunnels start and end there.
    pub address: std::net::IpAddr,
}

/// `[mesh]`: how the switches that span hosts are joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    pub encap: Encap,
    pub port: u16,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            encap: Encap::Vxlan,
            port: Encap::Vxlan.default_port(),
        }
    }
}

/// A switch's identifiers on the overlay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwitchVni {
    /// Frames of VLANs not in `vlans` (untagged, or carried tagged) travel with this VNI.
    pub vni: u32,
    /// VLAN -> its own VNI (`vni_map`): such frames travel untagged under that VNI.
    pub vlans: Vec<(u16, u32)>,
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
    /// Busy-poll threads of the switch (1 unless `poll_threads` says more): TX ring pair
    /// `q` of port number `p` is drained by thread `(p + q) % poll_threads`.
    pub poll_threads: u16,
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
    Nat(::nat::NatConfig),
}

impl PortKind {
    /// The `type` key's value.
    pub fn type_name(&self) -> &'static str {
        match self {
            PortKind::VhostUserNet(_) => "vhost-user-net",
            PortKind::Tap(_) => "tap",
            PortKind::Vxlan(v) => v.encap.type_name(),
            PortKind::Nat(_) => "nat",
        }
    }
}

/// A TAP port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapConfig {
    /// The interface name (at most 15 bytes).
    pub ifname: String,
    /// Create the TAP inside this existing network namespace (`/run/netns/NAME`, or the
    /// absolute path of a namespace file).
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
    /// The encapsulation: VXLAN (`type = "vxlan"`) or GENEVE (`type = "geneve"`), with the
    /// same keys.
    pub encap: Encap,
    /// The 24-bit VXLAN network identifier (GENEVE's VNI).
    pub vni: u32,
    /// The local address the UDP socket binds.
    pub local: std::net::IpAddr,
    /// Static remote VTEPs: broadcast, unknown unicast and multicast go to all of them.
    pub remote: Vec<std::net::IpAddr>,
    /// A multicast underlay group (IPv4): broadcast, unknown unicast and multicast go to it
    /// (besides any static remote), the port listens on it, and VTEPs are learned from
    /// whoever sends (as the Linux vxlan device's `group`).
    pub group: Option<std::net::IpAddr>,
    /// UDP port (4789, the IANA port, unless set); the same on both ends.
    pub port: u16,
    /// VLAN -> VNI: frames of these VLANs leave untagged under their own VNI, and such
    /// datagrams come back tagged (a mesh's `vni_map`); empty for a port of the file.
    pub vlan_vnis: Vec<(u16, u32)>,
}

/// A tunnel port's encapsulation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encap {
    /// VXLAN (RFC 7348), UDP port 4789 by default.
    #[default]
    Vxlan,
    /// GENEVE (RFC 8926, the overlay OVN uses), UDP port 6081 by default.
    Geneve,
}

impl Encap {
    /// The `type` key's value.
    pub fn type_name(self) -> &'static str {
        match self {
            Encap::Vxlan => "vxlan",
            Encap::Geneve => "geneve",
        }
    }

    /// The IANA UDP port.
    pub fn default_port(self) -> u16 {
        match self {
            Encap::Vxlan => 4789,
            Encap::Geneve => 6081,
        }
    }
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

#[cfg(test)]
mod hosts_tests;
#[cfg(test)]
mod tests;
