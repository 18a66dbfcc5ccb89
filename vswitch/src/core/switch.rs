//! The forwarding decision: one frame in, a verdict out.
//!
//! `Switch::decide` applies the ingress port's policy (its VLAN mode, allowed source MACs and
//! IPs, broadcast/multicast storm limit, learning limit), learns the source in the frame's
//! VLAN and picks the egress: the one port the destination was learned on in that VLAN, or
//! every other member port of the VLAN (flood) for broadcast, multicast and unknown unicast.
//! A frame never goes back out of its ingress port, and an isolated port only talks to
//! ports that are not isolated. `Switch::egress_edit` says how the frame's tags change on
//! the way out of each port.

use std::net::IpAddr;
use std::time::Duration;

use etherparse::{ArpPacketSlice, EtherType, Ipv4HeaderSlice, Ipv6HeaderSlice};
use vlan::{Edit, PortVlan, VlanDrop, VlanId, VlanSet};

use super::PortId;
use super::fdb::{Fdb, FdbStats, Learn};
use super::mac::MacAddr;
use super::time::Time;
use super::trace::{self, Observe, Quiet, Step, Steps};

/// Why a frame was not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than an Ethernet header (14 bytes).
    Runt,
    /// Source address is a group address or all zeros (IEEE 802 forbids both as sources).
    InvalidSource,
    /// The destination lives on the ingress port: the frame already reached its segment.
    SamePort,
    /// The ingress port does not exist (removed while frames were in flight).
    UnknownPort,
    /// Refused by the port's VLAN mode (tag on an access port, VLAN not carried, untagged
    /// on a trunk without native VLAN, tags cut short).
    Vlan(VlanDrop),
    /// Source MAC not in the port's `allowed_macs`.
    SpoofedMac,
    /// Source IP (or ARP sender) not in the port's `allowed_ips`.
    SpoofedIp,
    /// A new source MAC on a port at its `max_macs`.
    MacLimit,
    /// Broadcast/multicast over the port's `storm_limit`.
    Storm,
    /// Between two isolated ports.
    Isolated,
    /// The destination port is not a member of the frame's VLAN (a static entry elsewhere).
    NotMember,
}

impl DropReason {
    /// The ingress port's counter this drop raises (as `vfabric ctl stats` names it).
    pub fn counter(self) -> &'static str {
        match self {
            DropReason::Runt => "drop_runt",
            DropReason::InvalidSource => "drop_invalid_source",
            DropReason::SamePort => "drop_same_port",
            DropReason::UnknownPort => "none (the port does not exist)",
            DropReason::Vlan(VlanDrop::TaggedOnAccess) => "drop_vlan_tagged",
            DropReason::Vlan(VlanDrop::NotAllowed(_)) => "drop_vlan_not_allowed",
            DropReason::Vlan(VlanDrop::UntaggedOnTrunk) => "drop_vlan_untagged",
            DropReason::Vlan(VlanDrop::Malformed) => "drop_vlan_malformed",
            DropReason::SpoofedMac => "drop_spoofed_mac",
            DropReason::SpoofedIp => "drop_spoofed_ip",
            DropReason::MacLimit => "drop_mac_limit",
            DropReason::Storm => "drop_storm",
            DropReason::Isolated => "drop_isolated",
            DropReason::NotMember => "drop_not_member",
        }
    }
}

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver to exactly this port.
    Unicast(PortId),
    /// Deliver to every port of `Switch::flood_targets` for the frame's VLAN.
    Flood,
    /// Do not deliver; the reason was counted on the ingress port.
    Drop(DropReason),
}

/// A verdict with the VLAN the frame was classified into and how many bytes of tags at
/// offset 12 do not travel with it (for `Switch::egress_edit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub vlan: VlanId,
    pub strip: u8,
}

/// Per-port counters kept by the decision logic (the device keeps the byte/frame counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchPortStats {
    pub unicast: u64,
    pub flooded: u64,
    pub drop_runt: u64,
    pub drop_invalid_source: u64,
    pub drop_same_port: u64,
    /// Addresses that moved to this port from another one.
    pub mac_moves_in: u64,
    pub drop_vlan_tagged: u64,
    pub drop_vlan_not_allowed: u64,
    pub drop_vlan_untagged: u64,
    pub drop_vlan_malformed: u64,
    pub drop_spoofed_mac: u64,
    pub drop_spoofed_ip: u64,
    pub drop_mac_limit: u64,
    pub drop_storm: u64,
    pub drop_isolated: u64,
    pub drop_not_member: u64,
}

impl SwitchPortStats {
    /// Every counter, named.
    pub fn fields(&self) -> [(&'static str, u64); 16] {
        [
            ("switch_unicast", self.unicast),
            ("switch_flooded", self.flooded),
            ("drop_runt", self.drop_runt),
            ("drop_invalid_source", self.drop_invalid_source),
            ("drop_same_port", self.drop_same_port),
            ("mac_moves_in", self.mac_moves_in),
            ("drop_vlan_tagged", self.drop_vlan_tagged),
            ("drop_vlan_not_allowed", self.drop_vlan_not_allowed),
            ("drop_vlan_untagged", self.drop_vlan_untagged),
            ("drop_vlan_malformed", self.drop_vlan_malformed),
            ("drop_spoofed_mac", self.drop_spoofed_mac),
            ("drop_spoofed_ip", self.drop_spoofed_ip),
            ("drop_mac_limit", self.drop_mac_limit),
            ("drop_storm", self.drop_storm),
            ("drop_isolated", self.drop_isolated),
            ("drop_not_member", self.drop_not_member),
        ]
    }

    fn count(&mut self, r: DropReason) {
        let c = match r {
            DropReason::Runt => &mut self.drop_runt,
            DropReason::InvalidSource => &mut self.drop_invalid_source,
            DropReason::SamePort => &mut self.drop_same_port,
            DropReason::UnknownPort => return,
            DropReason::Vlan(VlanDrop::TaggedOnAccess) => &mut self.drop_vlan_tagged,
            DropReason::Vlan(VlanDrop::NotAllowed(_)) => &mut self.drop_vlan_not_allowed,
            DropReason::Vlan(VlanDrop::UntaggedOnTrunk) => &mut self.drop_vlan_untagged,
            DropReason::Vlan(VlanDrop::Malformed) => &mut self.drop_vlan_malformed,
            DropReason::SpoofedMac => &mut self.drop_spoofed_mac,
            DropReason::SpoofedIp => &mut self.drop_spoofed_ip,
            DropReason::MacLimit => &mut self.drop_mac_limit,
            DropReason::Storm => &mut self.drop_storm,
            DropReason::Isolated => &mut self.drop_isolated,
            DropReason::NotMember => &mut self.drop_not_member,
        };
        *c += 1;
    }
}

/// A port's policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPolicy {
    pub vlan: PortVlan,
    /// At most this many learned source MACs; frames from further new MACs are dropped.
    pub max_macs: Option<usize>,
    /// Only these source MACs may enter.
    pub allowed_macs: Option<Vec<MacAddr>>,
    /// Only these source IPs (IPv4 source, ARP sender, IPv6 source) may enter; the
    /// unspecified address (DHCP, duplicate address detection) and IPv6 link-local addresses
    /// (neighbour discovery) are always allowed.
    pub allowed_ips: Option<Vec<IpAddr>>,
    /// Broadcast + multicast frames per second from this port (bursts of one second).
    pub storm_pps: Option<u32>,
    /// Talks only to ports that are not isolated.
    pub isolated: bool,
}

impl Default for PortPolicy {
    /// No restriction: a trunk of every VLAN whose untagged frames are in VLAN 1 (tags pass
    /// through between such ports), as a port without VLAN settings is in Open vSwitch.
    fn default() -> Self {
        let mut all = VlanSet::new();
        if let (Ok(a), Ok(b)) = (VlanId::new(1), VlanId::new(4094)) {
            all.insert_range(a, b);
        }
        PortPolicy {
            vlan: PortVlan::Trunk {
                allowed: Box::new(all),
                native: Some(VlanId::DEFAULT),
            },
            max_macs: None,
            allowed_macs: None,
            allowed_ips: None,
            storm_pps: None,
            isolated: false,
        }
    }
}

impl PortPolicy {
    /// Whether every frame needs the full checks (no decision reuse within a batch).
    fn checks_each_frame(&self) -> bool {
        self.allowed_ips.is_some() || self.storm_pps.is_some()
    }
}

/// A token bucket in milli-frames, refilled with time.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    tokens_milli: u64,
    last: Time,
}

impl Bucket {
    fn take(&mut self, now: Time, pps: u32) -> bool {
        let cap = u64::from(pps.max(1)) * 1000;
        let elapsed = now.since(self.last).as_millis() as u64;
        self.last = now;
        self.tokens_milli = (self.tokens_milli + elapsed * u64::from(pps)).min(cap);
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct PortSlot {
    name: String,
    stats: SwitchPortStats,
    policy: PortPolicy,
    storm: Bucket,
}

/// A decision to drop, for `r`, in `vlan`.
fn dropped(r: DropReason, vlan: VlanId) -> Decision {
    Decision {
        verdict: Verdict::Drop(r),
        vlan,
        strip: 0,
    }
}

/// Why the destination port refused a frame, in words.
fn egress_refusal(r: DropReason, vlan: VlanId) -> String {
    match r {
        DropReason::SamePort => "the destination is on the ingress port itself".to_string(),
        DropReason::Isolated => "both ports are isolated: they may not talk".to_string(),
        _ => format!(
            "the destination port is not a member of VLAN {}",
            vlan.get()
        ),
    }
}

/// One learning switch: its ports and its forwarding database.
#[derive(Debug)]
pub struct Switch {
    name: String,
    fdb: Fdb,
    ports: Vec<Option<PortSlot>>,
    /// VLANs that are some tunnel port's service VLAN (carried with S-tags on trunks).
    service: VlanSet,
    /// Bumped by changes of ports and policies (and any use of `fdb_mut`); with the FDB's
    /// own version it says when cached decisions (`FlowCache`) went stale.
    version: u64,
}

/// The source address a frame claims at the IP level, if any: IPv4 source, ARP sender
/// (with the ARP sender MAC), IPv6 source. `l3` is the offset of the network header.
fn ip_claim(frame: &[u8], ether_type: u16, l3: usize) -> Option<(IpAddr, Option<MacAddr>)> {
    let body = frame.get(l3..)?;
    match EtherType(ether_type) {
        EtherType::IPV4 => {
            let h = Ipv4HeaderSlice::from_slice(body).ok()?;
            Some((IpAddr::V4(h.source_addr()), None))
        }
        EtherType::IPV6 => {
            let h = Ipv6HeaderSlice::from_slice(body).ok()?;
            Some((IpAddr::V6(h.source_addr()), None))
        }
        EtherType::ARP => {
            let a = ArpPacketSlice::from_slice(body).ok()?;
            let spa: [u8; 4] = a.sender_protocol_addr().try_into().ok()?;
            let sha = MacAddr::from_slice(a.sender_hw_addr());
            Some((IpAddr::from(spa), sha))
        }
        _ => None,
    }
}

fn ip_always_allowed(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_unicast_link_local(),
    }
}

impl Switch {
    /// A switch without ports whose learned addresses age out after `aging`.
    pub fn new(name: impl Into<String>, aging: Duration, max_entries: usize) -> Switch {
        Switch {
            name: name.into(),
            fdb: Fdb::new(aging, max_entries),
            ports: Vec::new(),
            service: VlanSet::new(),
            version: 0,
        }
    }

    /// The switch's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a port without restrictions and returns its number (the lowest free one).
    pub fn add_port(&mut self, name: impl Into<String>) -> PortId {
        self.add_port_with(name, PortPolicy::default())
    }

    /// Adds a port with `policy` and returns its number (the lowest free one).
    pub fn add_port_with(&mut self, name: impl Into<String>, policy: PortPolicy) -> PortId {
        let slot = Some(PortSlot {
            name: name.into(),
            stats: SwitchPortStats::default(),
            policy,
            storm: Bucket::default(),
        });
        let id = match self.ports.iter().position(Option::is_none) {
            Some(i) => {
                self.ports[i] = slot;
                PortId(i as u32)
            }
            None => {
                self.ports.push(slot);
                PortId((self.ports.len() - 1) as u32)
            }
        };
        self.refresh_service();
        id
    }

    /// Changes so far that can alter a decision: ports, policies, forwarding entries.
    pub fn version(&self) -> u64 {
        self.version + self.fdb.version()
    }

    fn refresh_service(&mut self) {
        // Every change of ports or policies ends here.
        self.version += 1;
        let mut s = VlanSet::new();
        for p in self.ports.iter().flatten() {
            if let Some(v) = p.policy.vlan.service_vlan() {
                s.insert(v);
            }
        }
        self.service = s;
    }

    /// Replaces a port's policy. When its VLAN mode changes, the addresses learned on it are
    /// forgotten (they may belong to VLANs the port no longer carries). Returns whether the
    /// port exists.
    pub fn set_policy(&mut self, port: PortId, policy: PortPolicy) -> bool {
        let Some(Some(slot)) = self.ports.get_mut(port.index()) else {
            return false;
        };
        let vlan_changed = slot.policy.vlan != policy.vlan;
        slot.policy = policy;
        slot.storm = Bucket::default();
        if vlan_changed {
            self.fdb.flush_port(port);
        }
        self.refresh_service();
        true
    }

    /// A port's policy.
    pub fn policy(&self, port: PortId) -> Option<&PortPolicy> {
        Some(&self.ports.get(port.index())?.as_ref()?.policy)
    }

    /// Removes a port and every forwarding entry pointing at it.
    pub fn remove_port(&mut self, port: PortId) {
        if let Some(slot) = self.ports.get_mut(port.index()) {
            *slot = None;
            self.fdb.remove_port(port);
        }
        self.refresh_service();
    }

    /// The port's link went down (its VM disconnected): forget what was learned there, so
    /// traffic to those addresses floods until they show up again, possibly elsewhere.
    pub fn port_down(&mut self, port: PortId) -> usize {
        self.version += 1;
        self.fdb.flush_port(port)
    }

    /// Whether decisions for frames from `port` may be cached (`FlowCache`): not when the
    /// port checks each frame (IP source guard, storm control).
    pub fn caches_decisions(&self, port: PortId) -> bool {
        self.policy(port)
            .is_some_and(|p| !PortPolicy::checks_each_frame(p))
    }

    /// The name of a port, if it exists.
    pub fn port_name(&self, port: PortId) -> Option<&str> {
        self.ports
            .get(port.index())?
            .as_ref()
            .map(|p| p.name.as_str())
    }

    /// The ports that exist, in number order.
    pub fn ports(&self) -> impl Iterator<Item = PortId> + '_ {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_some())
            .map(|(i, _)| PortId(i as u32))
    }

    /// Decision counters of a port.
    pub fn port_stats(&self, port: PortId) -> Option<SwitchPortStats> {
        Some(self.ports.get(port.index())?.as_ref()?.stats)
    }

    /// The forwarding database.
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// The forwarding database, for static entries, flushes and aging sweeps.
    pub fn fdb_mut(&mut self) -> &mut Fdb {
        self.version += 1;
        &mut self.fdb
    }

    /// Lifetime counters of the forwarding database.
    pub fn fdb_stats(&self) -> FdbStats {
        self.fdb.stats()
    }

    /// Adds a static entry: frames to `mac` in `vlan` always go to `port`.
    pub fn add_static(&mut self, now: Time, vlan: VlanId, mac: MacAddr, port: PortId) {
        self.fdb.add_static(now, vlan, mac, port);
    }

    /// Decides where a frame that arrived on `in_port` at `now` goes, and learns its source.
    ///
    /// `frame` is the start of the Ethernet frame, at least its 14-byte header (a copy taken
    /// out of guest memory: the decision must never be re-read from memory the guest can
    /// still change).
    pub fn forward(&mut self, now: Time, in_port: PortId, frame: &[u8]) -> Verdict {
        self.decide(now, in_port, frame).verdict
    }

    /// `forward`, with the frame's VLAN and the tag bytes it sheds.
    pub fn decide(&mut self, now: Time, in_port: PortId, frame: &[u8]) -> Decision {
        self.decide_observed(now, in_port, frame, &mut Quiet)
    }

    /// The decision `decide` would make for `frame` on `in_port` at `now`, with every check
    /// it makes on the way, without acting: nothing is learned, counted or spent (the same
    /// code as `decide`, observed).
    pub fn trace(&mut self, now: Time, in_port: PortId, frame: &[u8]) -> (Decision, Vec<Step>) {
        let mut steps = Steps::default();
        let d = self.decide_observed(now, in_port, frame, &mut steps);
        (d, steps.0)
    }

    /// The decision, acting on it (`O::LIVE`: learning, storm budget, counters) or not, and
    /// reporting each check to `o`.
    fn decide_observed<O: Observe>(
        &mut self,
        now: Time,
        in_port: PortId,
        frame: &[u8],
        o: &mut O,
    ) -> Decision {
        let Some(Some(slot)) = self.ports.get_mut(in_port.index()) else {
            o.step(|| trace::refused("port", format!("no port {} on this switch", in_port.0)));
            return dropped(DropReason::UnknownPort, VlanId::DEFAULT);
        };
        let (Some(dst), Some(src), true) = (
            MacAddr::from_slice(frame),
            frame.get(6..).and_then(MacAddr::from_slice),
            frame.len() >= 14,
        ) else {
            o.step(|| {
                let n = frame.len();
                trace::refused(
                    "header",
                    format!("{n} bytes: shorter than an Ethernet header"),
                )
            });
            return slot.refuse::<O>(DropReason::Runt, VlanId::DEFAULT);
        };
        o.step(|| trace::ok("header", format!("{src} > {dst}, {} bytes", frame.len())));
        let (vlan, strip) = match slot.classify(frame, o) {
            Ok(v) => v,
            Err(d) => return d,
        };
        if let Err(d) = slot.police(now, frame, src, dst, vlan, o) {
            return d;
        }
        let (isolated, max_macs) = (slot.policy.isolated, slot.policy.max_macs);
        let learned = if O::LIVE {
            self.fdb.learn_limited(now, vlan, src, in_port, max_macs)
        } else {
            self.fdb.would_learn(now, vlan, src, in_port, max_macs)
        };
        o.step(|| self.learn_step(learned, src, vlan, max_macs));
        let Some(Some(slot)) = self.ports.get_mut(in_port.index()) else {
            return dropped(DropReason::UnknownPort, vlan);
        };
        match learned {
            Learn::InvalidSource => return slot.refuse::<O>(DropReason::InvalidSource, vlan),
            Learn::PortLimit => return slot.refuse::<O>(DropReason::MacLimit, vlan),
            Learn::Moved { .. } if O::LIVE => slot.stats.mac_moves_in += 1,
            _ => {}
        }
        let decided = |verdict| Decision {
            verdict,
            vlan,
            strip,
        };
        if dst.is_multicast() {
            o.step(|| {
                let what = if dst.is_broadcast() {
                    "broadcast"
                } else {
                    "multicast"
                };
                trace::ok("destination", format!("{dst} is {what}: flooded"))
            });
            if O::LIVE {
                slot.stats.flooded += 1;
            }
            return decided(Verdict::Flood);
        }
        // A trace did not learn the source: a frame to its own source address finds the
        // entry forwarding would just have made.
        let own = matches!(learned, Learn::New | Learn::Refreshed | Learn::Moved { .. });
        let found = if !O::LIVE && dst == src && own {
            Some(in_port)
        } else {
            self.fdb.lookup(now, vlan, dst)
        };
        let Some(p) = found else {
            o.step(|| {
                let v = vlan.get();
                trace::ok(
                    "destination",
                    format!("FDB miss: {dst} unknown in VLAN {v}: flooded"),
                )
            });
            if O::LIVE {
                slot.stats.flooded += 1;
            }
            return decided(Verdict::Flood);
        };
        o.step(|| self.hit_step(now, dst, vlan, p));
        let target = self.ports.get(p.index()).and_then(Option::as_ref);
        let reason = match target {
            _ if p == in_port => Some(DropReason::SamePort),
            Some(t) if isolated && t.policy.isolated => Some(DropReason::Isolated),
            Some(t) if !t.policy.vlan.is_member(vlan) => Some(DropReason::NotMember),
            _ => None,
        };
        if let Some(r) = reason {
            o.step(|| trace::refused("egress", egress_refusal(r, vlan)));
        }
        let Some(Some(slot)) = self.ports.get_mut(in_port.index()) else {
            return dropped(DropReason::UnknownPort, vlan);
        };
        match reason {
            Some(r) => slot.refuse::<O>(r, vlan),
            None => {
                if O::LIVE {
                    slot.stats.unicast += 1;
                }
                decided(Verdict::Unicast(p))
            }
        }
    }

    /// The learning step's report.
    fn learn_step(&self, learned: Learn, src: MacAddr, vlan: VlanId, max: Option<usize>) -> Step {
        let v = vlan.get();
        let (pass, text) = match learned {
            Learn::InvalidSource => (false, format!("{src} is a group or zero address")),
            Learn::PortLimit => (
                false,
                format!(
                    "{src} is new here and the port already has its max_macs ({})",
                    max.unwrap_or(0)
                ),
            ),
            Learn::New => (true, format!("{src} would be learned in VLAN {v} here")),
            Learn::Refreshed => (true, format!("{src} is known here in VLAN {v}: refreshed")),
            Learn::Moved { from } => {
                let from = self.port_name(from).unwrap_or("?");
                (
                    true,
                    format!("{src} would move here from {from} (VLAN {v})"),
                )
            }
            Learn::Static => (true, format!("{src} has a static entry: not learned")),
            Learn::TableFull => (true, format!("{src} not learned: the FDB is full")),
        };
        Step {
            step: "learn",
            pass,
            text,
        }
    }

    /// The report of an FDB hit: where, and how old the entry is.
    fn hit_step(&self, now: Time, dst: MacAddr, vlan: VlanId, p: PortId) -> Step {
        let how = match self.fdb.get(now, vlan, dst) {
            Some(e) if e.is_static => "static entry".to_string(),
            Some(e) => format!("learned {} s ago", now.since(e.last_seen).as_secs()),
            None => "learned from this very frame".to_string(),
        };
        let to = self.port_name(p).unwrap_or("?");
        let v = vlan.get();
        trace::ok(
            "destination",
            format!("FDB hit: {dst} in VLAN {v} is on {to} ({how})"),
        )
    }

    /// Decides a batch of frames that arrived together on `in_port` at `now`, handing one
    /// decision per frame to `out`. Same result as calling `decide` for each frame, but a
    /// run of frames with the same addresses and tag bytes (a bulk flow) costs one learn and
    /// one lookup (unless the port checks every frame's IP source or storm budget).
    pub fn forward_batch<'f>(
        &mut self,
        now: Time,
        in_port: PortId,
        frames: impl IntoIterator<Item = &'f [u8]>,
        mut out: impl FnMut(Decision),
    ) {
        const KEY: usize = 16;
        let per_frame = self
            .policy(in_port)
            .is_some_and(PortPolicy::checks_each_frame);
        // (dst, src, tag bytes) of the previous frame, and its decision, if it was learned
        // and forwarded without a change (moves and table-full are re-evaluated per frame).
        let mut last: Option<([u8; KEY], Decision)> = None;
        for f in frames {
            if let (Some(key), Some((k, d))) = (f.get(..KEY), last)
                && key == k
            {
                if let Some(Some(slot)) = self.ports.get_mut(in_port.index()) {
                    match d.verdict {
                        Verdict::Unicast(_) => slot.stats.unicast += 1,
                        Verdict::Flood => slot.stats.flooded += 1,
                        Verdict::Drop(_) => {}
                    }
                }
                out(d);
                continue;
            }
            let before = self.fdb.stats();
            let d = self.decide(now, in_port, f);
            let after = self.fdb.stats();
            let quiet = after.moves == before.moves && after.table_full == before.table_full;
            last = match (f.get(..KEY), d.verdict) {
                (Some(k), Verdict::Unicast(_) | Verdict::Flood) if quiet && !per_frame => {
                    k.try_into().ok().map(|k| (k, d))
                }
                _ => None,
            };
            out(d);
        }
    }

    /// The ports a flooded frame of `vlan` from `in_port` goes to: every other member port
    /// of the VLAN (and, from an isolated port, none of the isolated ones).
    pub fn flood_targets(
        &self,
        in_port: PortId,
        vlan: VlanId,
    ) -> impl Iterator<Item = PortId> + '_ {
        let isolated = self.policy(in_port).is_some_and(|p| p.isolated);
        self.ports().filter(move |&p| {
            p != in_port
                && self
                    .policy(p)
                    .is_some_and(|pol| pol.vlan.is_member(vlan) && !(isolated && pol.isolated))
        })
    }

    /// How a frame decided as `d` changes on its way out of `port` (`None`: the port is not
    /// in the frame's VLAN).
    pub fn egress_edit(&self, port: PortId, d: &Decision) -> Option<Edit> {
        let pol = self.policy(port)?;
        let egress = pol.vlan.egress(d.vlan, self.service.contains(d.vlan));
        vlan::port::edit(usize::from(d.strip), egress)
    }
}

#[path = "switch_policy.rs"]
mod policy;

#[cfg(test)]
#[path = "switch_tests.rs"]
mod tests;
