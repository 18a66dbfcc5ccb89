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

/// One learning switch: its ports and its forwarding database.
#[derive(Debug)]
pub struct Switch {
    name: String,
    fdb: Fdb,
    ports: Vec<Option<PortSlot>>,
    /// VLANs that are some tunnel port's service VLAN (carried with S-tags on trunks).
    service: VlanSet,
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

    fn refresh_service(&mut self) {
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
        self.fdb.flush_port(port)
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
        let drop = |r, vlan| Decision {
            verdict: Verdict::Drop(r),
            vlan,
            strip: 0,
        };
        let Some(Some(slot)) = self.ports.get_mut(in_port.index()) else {
            return drop(DropReason::UnknownPort, VlanId::DEFAULT);
        };
        let (Some(dst), Some(src), true) = (
            MacAddr::from_slice(frame),
            frame.get(6..).and_then(MacAddr::from_slice),
            frame.len() >= 14,
        ) else {
            slot.stats.count(DropReason::Runt);
            return drop(DropReason::Runt, VlanId::DEFAULT);
        };
        let policy = &slot.policy;
        let (vlan, strip) = match policy.vlan.ingress(frame) {
            vlan::Ingress::Accept { vlan, strip } => (vlan, strip as u8),
            vlan::Ingress::Drop(r) => {
                slot.stats.count(DropReason::Vlan(r));
                return drop(DropReason::Vlan(r), VlanId::DEFAULT);
            }
        };
        let refuse = |slot: &mut PortSlot, r| {
            slot.stats.count(r);
            drop(r, vlan)
        };
        if let Some(allowed) = &policy.allowed_macs
            && !allowed.contains(&src)
        {
            return refuse(slot, DropReason::SpoofedMac);
        }
        if let Some(allowed) = &policy.allowed_ips {
            // The network header follows all tags (whatever the VLAN mode keeps).
            let tags = vlan::Tags::of(frame).map_or(0, |t| {
                usize::from(t.outer.is_some()) + usize::from(t.inner.is_some())
            });
            let at = 12 + 4 * tags;
            let et = frame
                .get(at..at + 2)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            if let Some((ip, sha)) = ip_claim(frame, et, at + 2) {
                let ip_ok = ip_always_allowed(ip) || allowed.contains(&ip);
                let sha_ok = match (sha, &policy.allowed_macs) {
                    (Some(sha), Some(macs)) => macs.contains(&sha),
                    (Some(sha), None) => sha == src,
                    (None, _) => true,
                };
                if !ip_ok || !sha_ok {
                    return refuse(slot, DropReason::SpoofedIp);
                }
            }
        }
        if dst.is_multicast()
            && let Some(pps) = policy.storm_pps
            && !slot.storm.take(now, pps)
        {
            return refuse(slot, DropReason::Storm);
        }
        let isolated = policy.isolated;
        match self
            .fdb
            .learn_limited(now, vlan, src, in_port, policy.max_macs)
        {
            Learn::InvalidSource => return refuse(slot, DropReason::InvalidSource),
            Learn::PortLimit => return refuse(slot, DropReason::MacLimit),
            Learn::Moved { .. } => slot.stats.mac_moves_in += 1,
            Learn::New | Learn::Refreshed | Learn::Static | Learn::TableFull => {}
        }
        let decided = |verdict| Decision {
            verdict,
            vlan,
            strip,
        };
        if dst.is_multicast() {
            slot.stats.flooded += 1;
            return decided(Verdict::Flood);
        }
        match self.fdb.lookup(now, vlan, dst) {
            Some(p) if p == in_port => refuse(slot, DropReason::SamePort),
            Some(p) => {
                let target = self.ports.get(p.index()).and_then(Option::as_ref);
                let reason = match target {
                    Some(t) if isolated && t.policy.isolated => Some(DropReason::Isolated),
                    Some(t) if !t.policy.vlan.is_member(vlan) => Some(DropReason::NotMember),
                    _ => None,
                };
                let Some(Some(slot)) = self.ports.get_mut(in_port.index()) else {
                    return drop(DropReason::UnknownPort, vlan);
                };
                match reason {
                    Some(r) => refuse(slot, r),
                    None => {
                        slot.stats.unicast += 1;
                        decided(Verdict::Unicast(p))
                    }
                }
            }
            None => {
                if let Some(Some(slot)) = self.ports.get_mut(in_port.index()) {
                    slot.stats.flooded += 1;
                }
                decided(Verdict::Flood)
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0u8; 46]);
        f
    }

    /// A switch with `n` ports named p0..p(n-1).
    fn switch(n: u32) -> Switch {
        let mut s = Switch::new("t", Duration::from_secs(300), 1 << 20);
        for i in 0..n {
            assert_eq!(s.add_port(format!("p{i}")), PortId(i));
        }
        s
    }

    fn secs(s: u64) -> Time {
        Time(s * 1000)
    }

    #[test]
    fn table_of_decisions() {
        let mut s = switch(3);
        let (p0, p1, p2) = (PortId(0), PortId(1), PortId(2));
        // (time s, ingress, dst, src, verdict)
        let steps: Vec<(u64, PortId, MacAddr, MacAddr, Verdict)> = vec![
            // Unknown unicast floods; the source is learned.
            (0, p0, mac(2), mac(1), Verdict::Flood),
            // The reply goes straight back to the learned port.
            (1, p1, mac(1), mac(2), Verdict::Unicast(p0)),
            (2, p0, mac(2), mac(1), Verdict::Unicast(p1)),
            // Broadcast and multicast flood even when "known".
            (3, p0, MacAddr::BROADCAST, mac(1), Verdict::Flood),
            (
                3,
                p0,
                MacAddr([0x01, 0, 0x5e, 0, 0, 0xfb]),
                mac(1),
                Verdict::Flood,
            ),
            // A frame to an address on its own ingress port is not sent back.
            (4, p0, mac(1), mac(9), Verdict::Drop(DropReason::SamePort)),
            // mac(1) moves to p2: traffic follows.
            (5, p2, mac(2), mac(1), Verdict::Unicast(p1)),
            (6, p1, mac(1), mac(2), Verdict::Unicast(p2)),
            // A group source is dropped and not learned.
            (
                7,
                p1,
                mac(1),
                MacAddr::BROADCAST,
                Verdict::Drop(DropReason::InvalidSource),
            ),
            // 300 s of silence from mac(2) (last seen at 6 s): it ages out and floods again.
            (306, p2, mac(2), mac(1), Verdict::Flood),
        ];
        for (t, port, dst, src, want) in steps {
            assert_eq!(
                s.forward(secs(t), port, &frame(dst, src)),
                want,
                "at {t}s from {port:?}"
            );
        }
        assert_eq!(s.fdb_stats().moves, 1);
        let st0 = s.port_stats(p0).unwrap();
        assert_eq!((st0.flooded, st0.unicast, st0.drop_same_port), (3, 1, 1));
        assert_eq!(s.port_stats(p1).unwrap().drop_invalid_source, 1);
        assert_eq!(s.port_stats(p2).unwrap().mac_moves_in, 1);
    }

    #[test]
    fn batches_decide_like_single_frames() {
        // The same sequence decided frame by frame and as one batch: same verdicts, same
        // counters, same table.
        let seq: Vec<(MacAddr, MacAddr)> = vec![
            (mac(2), mac(1)),
            (mac(2), mac(1)),
            (MacAddr::BROADCAST, mac(1)),
            (MacAddr::BROADCAST, mac(1)),
            (mac(1), mac(1)),
            (mac(1), mac(1)),
            (mac(3), MacAddr([1, 0, 0, 0, 0, 1])),
            (mac(3), MacAddr([1, 0, 0, 0, 0, 1])),
            (mac(3), mac(1)),
        ];
        let frames: Vec<Vec<u8>> = seq.iter().map(|&(d, s)| frame(d, s)).collect();
        let mut a = switch(3);
        let mut b = switch(3);
        for s in [&mut a, &mut b] {
            s.forward(secs(0), PortId(2), &frame(mac(9), mac(3)));
        }
        let one: Vec<Decision> = frames
            .iter()
            .map(|f| a.decide(secs(1), PortId(0), f))
            .collect();
        let mut batch = Vec::new();
        b.forward_batch(
            secs(1),
            PortId(0),
            frames.iter().map(|f| f.as_slice()),
            |v| batch.push(v),
        );
        assert_eq!(one, batch);
        assert_eq!(a.port_stats(PortId(0)), b.port_stats(PortId(0)));
        assert_eq!(a.fdb_stats(), b.fdb_stats());
        assert_eq!(a.fdb().len(), b.fdb().len());
    }

    #[test]
    fn flood_never_includes_the_ingress_port() {
        let s = switch(4);
        let t: Vec<_> = s.flood_targets(PortId(2), VlanId::DEFAULT).collect();
        assert_eq!(t, vec![PortId(0), PortId(1), PortId(3)]);
    }

    #[test]
    fn static_entry_wins_over_learning() {
        let mut s = switch(3);
        s.add_static(secs(0), VlanId::DEFAULT, mac(7), PortId(2));
        // mac(7) shows up as a source on p0: not learned there.
        assert_eq!(
            s.forward(secs(1), PortId(0), &frame(mac(1), mac(7))),
            Verdict::Flood
        );
        assert_eq!(
            s.forward(secs(2), PortId(1), &frame(mac(7), mac(1))),
            Verdict::Unicast(PortId(2))
        );
        // Still there long after the aging time.
        assert_eq!(
            s.forward(secs(10_000), PortId(1), &frame(mac(7), mac(1))),
            Verdict::Unicast(PortId(2))
        );
    }

    #[test]
    fn runts_and_unknown_ports_are_dropped() {
        let mut s = switch(2);
        assert_eq!(
            s.forward(secs(0), PortId(0), &[0u8; 13]),
            Verdict::Drop(DropReason::Runt)
        );
        assert_eq!(
            s.forward(secs(0), PortId(0), &[]),
            Verdict::Drop(DropReason::Runt)
        );
        assert_eq!(s.port_stats(PortId(0)).unwrap().drop_runt, 2);
        assert_eq!(
            s.forward(secs(0), PortId(5), &frame(mac(1), mac(2))),
            Verdict::Drop(DropReason::UnknownPort)
        );
        assert!(s.fdb().is_empty());
    }

    #[test]
    fn port_down_and_removal_forget_entries() {
        let mut s = switch(3);
        s.forward(secs(0), PortId(1), &frame(mac(9), mac(1)));
        assert_eq!(s.port_down(PortId(1)), 1);
        assert_eq!(
            s.forward(secs(1), PortId(0), &frame(mac(1), mac(2))),
            Verdict::Flood
        );
        s.remove_port(PortId(0));
        assert_eq!(
            s.flood_targets(PortId(1), VlanId::DEFAULT)
                .collect::<Vec<_>>(),
            vec![PortId(2)]
        );
        assert_eq!(s.add_port("again"), PortId(0));
    }

    fn v(n: u32) -> VlanId {
        VlanId::new(n).unwrap()
    }

    /// A frame with these tags (TPID, VID) after the addresses, then `ether_type` and `body`.
    fn tagged(
        dst: MacAddr,
        src: MacAddr,
        tags: &[(u16, u16)],
        ether_type: u16,
        body: &[u8],
    ) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        for &(tpid, vid) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&ether_type.to_be_bytes());
        f.extend_from_slice(body);
        f.resize(f.len().max(60), 0);
        f
    }

    fn policy(vlan: PortVlan) -> PortPolicy {
        PortPolicy {
            vlan,
            ..PortPolicy::default()
        }
    }

    fn trunk(allowed: &[u32], native: Option<u32>) -> PortVlan {
        let mut set = VlanSet::new();
        for &a in allowed {
            set.insert(v(a));
        }
        PortVlan::Trunk {
            allowed: Box::new(set),
            native: native.map(v),
        }
    }

    const Q: u16 = 0x8100;
    const AD: u16 = 0x88a8;

    #[test]
    fn vlans_separate_learning_and_flooding_and_tags_change_on_the_way_out() {
        let mut s = Switch::new("t", Duration::from_secs(300), 1 << 20);
        let a10 = s.add_port_with("a10", policy(PortVlan::Access(v(10))));
        let b10 = s.add_port_with("b10", policy(PortVlan::Access(v(10))));
        let a20 = s.add_port_with("a20", policy(PortVlan::Access(v(20))));
        let tr = s.add_port_with("trunk", policy(trunk(&[10, 20], Some(30))));
        let n30 = s.add_port_with("n30", policy(PortVlan::Access(v(30))));
        let bc = MacAddr::BROADCAST;
        // Untagged broadcast from an access port: VLAN 10 members only; tagged on the trunk.
        let d = s.decide(secs(0), a10, &tagged(bc, mac(1), &[], 0x0800, &[]));
        assert_eq!((d.verdict, d.vlan, d.strip), (Verdict::Flood, v(10), 0));
        assert_eq!(
            s.flood_targets(a10, v(10)).collect::<Vec<_>>(),
            vec![b10, tr]
        );
        assert_eq!(s.egress_edit(b10, &d), Some(Edit::NONE));
        assert_eq!(
            s.egress_edit(tr, &d),
            Some(Edit {
                strip: 0,
                push: Some(vlan::Tag::c(10))
            })
        );
        assert_eq!(s.egress_edit(a20, &d), None);
        // The same MAC in VLAN 20 is another entry.
        s.decide(secs(0), a20, &tagged(bc, mac(1), &[], 0x0800, &[]));
        // A tagged reply from the trunk reaches mac(1) in VLAN 10 only, tag removed.
        let d = s.decide(
            secs(1),
            tr,
            &tagged(mac(1), mac(5), &[(Q, 10)], 0x0800, &[]),
        );
        assert_eq!(
            (d.verdict, d.vlan, d.strip),
            (Verdict::Unicast(a10), v(10), 4)
        );
        assert_eq!(
            s.egress_edit(a10, &d),
            Some(Edit {
                strip: 4,
                push: None
            })
        );
        let d = s.decide(
            secs(1),
            tr,
            &tagged(mac(1), mac(5), &[(Q, 20)], 0x0800, &[]),
        );
        assert_eq!(d.verdict, Verdict::Unicast(a20));
        // Untagged on the trunk: native VLAN 30, untagged out of the access port.
        let d = s.decide(secs(2), tr, &tagged(bc, mac(5), &[], 0x0800, &[]));
        assert_eq!(d.vlan, v(30));
        assert_eq!(s.flood_targets(tr, v(30)).collect::<Vec<_>>(), vec![n30]);
        assert_eq!(s.egress_edit(n30, &d), Some(Edit::NONE));
        // Priority tag on an access port: untagged, the tag removed on the way out.
        let d = s.decide(secs(3), a10, &tagged(bc, mac(1), &[(Q, 0)], 0x0800, &[]));
        assert_eq!((d.vlan, d.strip), (v(10), 4));
        // Refusals, each counted.
        let drops = [
            (
                a10,
                tagged(bc, mac(1), &[(Q, 20)], 0x0800, &[]),
                VlanDrop::TaggedOnAccess,
            ),
            (
                a10,
                tagged(bc, mac(1), &[(Q, 0), (Q, 20)], 0x0800, &[]),
                VlanDrop::TaggedOnAccess,
            ),
            (
                a10,
                tagged(bc, mac(1), &[(AD, 20), (Q, 10)], 0x0800, &[]),
                VlanDrop::TaggedOnAccess,
            ),
            (
                tr,
                tagged(bc, mac(5), &[(Q, 99)], 0x0800, &[]),
                VlanDrop::NotAllowed(99),
            ),
        ];
        for (port, f, why) in drops {
            assert_eq!(
                s.forward(secs(4), port, &f),
                Verdict::Drop(DropReason::Vlan(why))
            );
        }
        assert_eq!(s.port_stats(a10).unwrap().drop_vlan_tagged, 3);
        assert_eq!(s.port_stats(tr).unwrap().drop_vlan_not_allowed, 1);
        // A trunk without native VLAN refuses untagged frames.
        let t2 = s.add_port_with("t2", policy(trunk(&[10], None)));
        assert_eq!(
            s.forward(secs(5), t2, &tagged(bc, mac(8), &[], 0x0800, &[])),
            Verdict::Drop(DropReason::Vlan(VlanDrop::UntaggedOnTrunk))
        );
    }

    #[test]
    fn qinq_carries_customer_tags_inside_the_service_vlan() {
        let mut s = Switch::new("t", Duration::from_secs(300), 1 << 20);
        let c1 = s.add_port_with("c1", policy(PortVlan::Tunnel { svlan: v(300) }));
        let c2 = s.add_port_with("c2", policy(PortVlan::Tunnel { svlan: v(300) }));
        let other = s.add_port_with("c3", policy(PortVlan::Tunnel { svlan: v(301) }));
        let up = s.add_port_with("up", policy(trunk(&[300, 301], None)));
        let bc = MacAddr::BROADCAST;
        // A customer frame tagged 100 enters service VLAN 300 whole.
        let d = s.decide(secs(0), c1, &tagged(bc, mac(1), &[(Q, 100)], 0x0800, &[]));
        assert_eq!((d.vlan, d.strip), (v(300), 0));
        assert_eq!(
            s.flood_targets(c1, v(300)).collect::<Vec<_>>(),
            vec![c2, up]
        );
        assert_eq!(s.egress_edit(c2, &d), Some(Edit::NONE));
        // On the trunk it gets an S-tag (802.1ad) in front of the customer tag.
        assert_eq!(
            s.egress_edit(up, &d),
            Some(Edit {
                strip: 0,
                push: Some(vlan::Tag::s(300))
            })
        );
        assert_eq!(s.egress_edit(other, &d), None);
        // Back from the trunk: S-tag off, customer tag kept.
        let d = s.decide(
            secs(1),
            up,
            &tagged(mac(1), mac(2), &[(AD, 300), (Q, 100)], 0x0800, &[]),
        );
        assert_eq!(
            (d.verdict, d.vlan, d.strip),
            (Verdict::Unicast(c1), v(300), 4)
        );
        assert_eq!(
            s.egress_edit(c1, &d),
            Some(Edit {
                strip: 4,
                push: None
            })
        );
    }

    fn arp(sha: MacAddr, spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let mut b = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
        b.extend_from_slice(&sha.0);
        b.extend_from_slice(&spa);
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&tpa);
        b
    }

    fn ipv4(src: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0];
        h.extend_from_slice(&src);
        h.extend_from_slice(&[10, 0, 0, 99]);
        h
    }

    #[test]
    fn port_security_drops_spoofing_storms_and_mac_floods() {
        let mut s = Switch::new("t", Duration::from_secs(300), 1 << 20);
        let guarded = s.add_port_with(
            "g",
            PortPolicy {
                allowed_macs: Some(vec![mac(1)]),
                allowed_ips: Some(vec!["10.0.0.5".parse().unwrap()]),
                ..PortPolicy::default()
            },
        );
        let other = s.add_port("o");
        let bc = MacAddr::BROADCAST;
        let ok = Verdict::Flood;
        let spoof_ip = Verdict::Drop(DropReason::SpoofedIp);
        let cases: Vec<(Vec<u8>, Verdict)> = vec![
            (tagged(bc, mac(1), &[], 0x0800, &ipv4([10, 0, 0, 5])), ok),
            (tagged(bc, mac(1), &[], 0x0800, &ipv4([0, 0, 0, 0])), ok),
            (
                tagged(bc, mac(1), &[], 0x0800, &ipv4([10, 0, 0, 6])),
                spoof_ip,
            ),
            (
                tagged(
                    bc,
                    mac(1),
                    &[],
                    0x0806,
                    &arp(mac(1), [10, 0, 0, 5], [10, 0, 0, 1]),
                ),
                ok,
            ),
            (
                tagged(
                    bc,
                    mac(1),
                    &[],
                    0x0806,
                    &arp(mac(1), [10, 0, 0, 7], [10, 0, 0, 1]),
                ),
                spoof_ip,
            ),
            // ARP claiming another hardware address.
            (
                tagged(
                    bc,
                    mac(1),
                    &[],
                    0x0806,
                    &arp(mac(2), [10, 0, 0, 5], [10, 0, 0, 1]),
                ),
                spoof_ip,
            ),
            // A tagged frame is checked behind its tag too.
            (
                tagged(bc, mac(1), &[(Q, 7)], 0x0800, &ipv4([10, 0, 0, 6])),
                spoof_ip,
            ),
            (
                tagged(bc, mac(2), &[], 0x0800, &ipv4([10, 0, 0, 5])),
                Verdict::Drop(DropReason::SpoofedMac),
            ),
        ];
        // One by one and as a batch (the batch shortcut must not skip the checks).
        for (f, want) in &cases {
            assert_eq!(s.forward(secs(0), guarded, f), *want);
        }
        let mut got = Vec::new();
        s.forward_batch(
            secs(0),
            guarded,
            cases.iter().map(|c| c.0.as_slice()),
            |d| got.push(d.verdict),
        );
        assert_eq!(got, cases.iter().map(|c| c.1).collect::<Vec<_>>());
        let st = s.port_stats(guarded).unwrap();
        assert_eq!((st.drop_spoofed_ip, st.drop_spoofed_mac), (8, 2));
        assert_eq!(s.fdb().lookup(secs(0), VlanId::DEFAULT, mac(2)), None);
        // Storm limit: 10 broadcasts a second, a second's burst.
        let stormy = s.add_port_with(
            "s",
            PortPolicy {
                storm_pps: Some(10),
                ..PortPolicy::default()
            },
        );
        let b = tagged(bc, mac(3), &[], 0x0800, &[]);
        let passed = |s: &mut Switch, t| {
            (0..20)
                .filter(|_| s.forward(t, stormy, &b) == Verdict::Flood)
                .count()
        };
        assert_eq!(passed(&mut s, Time(1000)), 10);
        assert_eq!(passed(&mut s, Time(1500)), 5);
        assert_eq!(s.port_stats(stormy).unwrap().drop_storm, 25);
        // Unicast is not limited.
        assert_eq!(
            s.forward(
                Time(1500),
                stormy,
                &tagged(mac(9), mac(3), &[], 0x0800, &[])
            ),
            Verdict::Flood
        );
        // max_macs: a port spraying sources learns 4 and drops the rest; others keep theirs.
        let sprayer = s.add_port_with(
            "x",
            PortPolicy {
                max_macs: Some(4),
                ..PortPolicy::default()
            },
        );
        s.forward(secs(2), other, &tagged(bc, mac(50), &[], 0x0800, &[]));
        for n in 0..100u8 {
            s.forward(
                secs(2),
                sprayer,
                &tagged(bc, MacAddr([2, 0, 0, 0, 1, n]), &[], 0x0800, &[]),
            );
        }
        // Even the other port's address cannot be pulled over.
        assert_eq!(
            s.forward(secs(2), sprayer, &tagged(bc, mac(50), &[], 0x0800, &[])),
            Verdict::Drop(DropReason::MacLimit)
        );
        assert_eq!(s.port_stats(sprayer).unwrap().drop_mac_limit, 97);
        assert_eq!(s.fdb().port_entries(sprayer), 4);
        assert_eq!(
            s.fdb().lookup(secs(2), VlanId::DEFAULT, mac(50)),
            Some(other)
        );
    }

    #[test]
    fn isolated_ports_only_talk_to_others() {
        let mut s = Switch::new("t", Duration::from_secs(300), 1 << 20);
        let iso = PortPolicy {
            isolated: true,
            ..PortPolicy::default()
        };
        let i1 = s.add_port_with("i1", iso.clone());
        let i2 = s.add_port_with("i2", iso);
        let up = s.add_port("up");
        s.forward(secs(0), i2, &frame(MacAddr::BROADCAST, mac(2)));
        s.forward(secs(0), up, &frame(MacAddr::BROADCAST, mac(3)));
        assert_eq!(
            s.flood_targets(i1, VlanId::DEFAULT).collect::<Vec<_>>(),
            vec![up]
        );
        assert_eq!(
            s.flood_targets(up, VlanId::DEFAULT).collect::<Vec<_>>(),
            vec![i1, i2]
        );
        assert_eq!(
            s.forward(secs(1), i1, &frame(mac(2), mac(1))),
            Verdict::Drop(DropReason::Isolated)
        );
        assert_eq!(
            s.forward(secs(1), i1, &frame(mac(3), mac(1))),
            Verdict::Unicast(up)
        );
        assert_eq!(
            s.forward(secs(1), up, &frame(mac(2), mac(3))),
            Verdict::Unicast(i2)
        );
        assert_eq!(s.port_stats(i1).unwrap().drop_isolated, 1);
    }
}
