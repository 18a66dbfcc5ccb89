//! The forwarding decision: one frame in, a verdict out.
//!
//! `Switch::forward` learns the source and picks the egress: the one port the destination
//! was learned on, or every other port of the segment (flood) for broadcast, multicast and
//! unknown unicast. A frame never goes back out of its ingress port.

use std::time::Duration;

use vlan::VlanId;

use super::fdb::{Fdb, FdbStats, Learn};
use super::mac::MacAddr;
use super::time::Time;

/// A port's number within its switch. Numbers are stable while the port exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u32);

impl PortId {
    /// The port number as an index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

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
}

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver to exactly this port.
    Unicast(PortId),
    /// Deliver to every port of `Switch::flood_targets`.
    Flood,
    /// Do not deliver; the reason was counted on the ingress port.
    Drop(DropReason),
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
}

#[derive(Debug)]
struct PortSlot {
    name: String,
    stats: SwitchPortStats,
}

/// One learning switch: its ports and its forwarding database.
#[derive(Debug)]
pub struct Switch {
    name: String,
    fdb: Fdb,
    ports: Vec<Option<PortSlot>>,
}

impl Switch {
    /// A switch without ports whose learned addresses age out after `aging`.
    pub fn new(name: impl Into<String>, aging: Duration, max_entries: usize) -> Switch {
        Switch {
            name: name.into(),
            fdb: Fdb::new(aging, max_entries),
            ports: Vec::new(),
        }
    }

    /// The switch's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a port and returns its number (the lowest free one).
    pub fn add_port(&mut self, name: impl Into<String>) -> PortId {
        let slot = Some(PortSlot {
            name: name.into(),
            stats: SwitchPortStats::default(),
        });
        match self.ports.iter().position(Option::is_none) {
            Some(i) => {
                self.ports[i] = slot;
                PortId(i as u32)
            }
            None => {
                self.ports.push(slot);
                PortId((self.ports.len() - 1) as u32)
            }
        }
    }

    /// Removes a port and every forwarding entry pointing at it.
    pub fn remove_port(&mut self, port: PortId) {
        if let Some(slot) = self.ports.get_mut(port.index()) {
            *slot = None;
            self.fdb.remove_port(port);
        }
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
        let Some(Some(slot)) = self.ports.get_mut(in_port.index()) else {
            return Verdict::Drop(DropReason::UnknownPort);
        };
        let stats = &mut slot.stats;
        let (Some(dst), Some(src), true) = (
            MacAddr::from_slice(frame),
            frame.get(6..).and_then(MacAddr::from_slice),
            frame.len() >= 14,
        ) else {
            stats.drop_runt += 1;
            return Verdict::Drop(DropReason::Runt);
        };
        // Every port is in the default VLAN until VLAN policy exists; tagged frames pass
        // through untouched.
        let vlan = VlanId::DEFAULT;
        match self.fdb.learn(now, vlan, src, in_port) {
            Learn::InvalidSource => {
                stats.drop_invalid_source += 1;
                return Verdict::Drop(DropReason::InvalidSource);
            }
            Learn::Moved { .. } => stats.mac_moves_in += 1,
            Learn::New | Learn::Refreshed | Learn::Static | Learn::TableFull => {}
        }
        if dst.is_multicast() {
            stats.flooded += 1;
            return Verdict::Flood;
        }
        match self.fdb.lookup(now, vlan, dst) {
            Some(p) if p == in_port => {
                stats.drop_same_port += 1;
                Verdict::Drop(DropReason::SamePort)
            }
            Some(p) => {
                stats.unicast += 1;
                Verdict::Unicast(p)
            }
            None => {
                stats.flooded += 1;
                Verdict::Flood
            }
        }
    }

    /// Decides a batch of frames that arrived together on `in_port` at `now`, pushing one
    /// verdict per frame into `out`. Same result as calling `forward` for each frame, but a
    /// run of frames from the same source to the same destination (a bulk flow) costs one
    /// learn and one lookup.
    pub fn forward_batch<'f>(
        &mut self,
        now: Time,
        in_port: PortId,
        frames: impl IntoIterator<Item = &'f [u8]>,
        mut out: impl FnMut(Verdict),
    ) {
        // (dst, src) of the previous frame, and its verdict, if it was learned and forwarded
        // without a change (moves and table-full are re-evaluated per frame).
        let mut last: Option<([u8; 12], Verdict)> = None;
        for f in frames {
            if let (Some(key), Some((k, v))) = (f.get(..12), last)
                && key == k
            {
                if let Some(Some(slot)) = self.ports.get_mut(in_port.index()) {
                    match v {
                        Verdict::Unicast(_) => slot.stats.unicast += 1,
                        Verdict::Flood => slot.stats.flooded += 1,
                        Verdict::Drop(_) => {}
                    }
                }
                out(v);
                continue;
            }
            let before = self.fdb.stats();
            let v = self.forward(now, in_port, f);
            let after = self.fdb.stats();
            let quiet = after.moves == before.moves && after.table_full == before.table_full;
            last = match (f.get(..12), v) {
                (Some(k), Verdict::Unicast(_) | Verdict::Flood) if quiet => {
                    k.try_into().ok().map(|k| (k, v))
                }
                _ => None,
            };
            out(v);
        }
    }

    /// The ports a flooded frame from `in_port` goes to: every other port of the segment.
    pub fn flood_targets(&self, in_port: PortId) -> impl Iterator<Item = PortId> + '_ {
        self.ports().filter(move |&p| p != in_port)
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
        let one: Vec<Verdict> = frames
            .iter()
            .map(|f| a.forward(secs(1), PortId(0), f))
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
        let t: Vec<_> = s.flood_targets(PortId(2)).collect();
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
            s.flood_targets(PortId(1)).collect::<Vec<_>>(),
            vec![PortId(2)]
        );
        assert_eq!(s.add_port("again"), PortId(0));
    }
}
