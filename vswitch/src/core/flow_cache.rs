//! An exact-match flow cache, one per forwarding thread (as OVS-DPDK's EMC is one per PMD
//! thread): the switch's decision for a recent flow and the copies it made (receiver, tag
//! edit), so a batch whose frames all hit is forwarded without taking the switch's lock.
//!
//! A flow is the ingress port and the frame's first 16 bytes (destination, source, and the
//! bytes where a tag or the EtherType sits): the same bytes always get the same decision
//! from the same switch state. An entry is used only while the switch's version is the one
//! it was made at (any change of forwarding entries, ports or policies makes it stale) and
//! for at most `REFRESH` after, so a flow still takes the lock now and then and its source
//! address keeps being refreshed in the FDB (learning stays serialized under the lock).
//!
//! Invariants: a hit returns exactly what the locked path decided for those bytes at that
//! version; the cache is direct-mapped and bounded (`SLOTS` entries), never allocates after
//! it is made; ports that check every frame (IP source guard, storm control) are never
//! cached (the caller asks `Switch::caches_decisions`).

use std::time::Duration;

use arrayvec::ArrayVec;

use super::{Decision, PortId, Time};

/// Entries per cache (a power of two).
pub const SLOTS: usize = 2048;
/// The longest a cached decision is used before the flow goes through the lock again.
pub const REFRESH: Duration = Duration::from_secs(1);
/// Receivers a cached flow may have (a flood on a larger VLAN is decided under the lock).
pub const MAX_COPIES: usize = 4;

/// The frame bytes a flow is keyed on.
pub const KEY_LEN: usize = 16;

/// Where and when a flow is looked up or cached: the switch's number, its version, the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowAt {
    pub switch: u32,
    pub version: u64,
    pub now: Time,
}

/// One cached flow; `C` is what the caller keeps of each copy (receiver, tag edit).
#[derive(Clone, Debug)]
pub struct FlowEntry<C> {
    switch: u32,
    in_port: PortId,
    key: [u8; KEY_LEN],
    version: u64,
    made: Time,
    /// The decision the switch made.
    pub decision: Decision,
    /// Every copy it made.
    pub copies: ArrayVec<C, MAX_COPIES>,
}

/// A direct-mapped cache of flows (of any switch: the switch's number is in the key).
pub struct FlowCache<C> {
    slots: Box<[Option<FlowEntry<C>>]>,
}

impl<C> Default for FlowCache<C> {
    fn default() -> Self {
        FlowCache {
            slots: (0..SLOTS).map(|_| None).collect(),
        }
    }
}

fn slot_of(switch: u32, in_port: PortId, key: &[u8; KEY_LEN]) -> usize {
    let a = u64::from_le_bytes(key[..8].try_into().unwrap_or_default());
    let b = u64::from_le_bytes(key[8..].try_into().unwrap_or_default());
    let c = (u64::from(switch) << 32) | u64::from(in_port.0);
    let h = (a ^ b.rotate_left(21) ^ c.rotate_left(43)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 52) as usize & (SLOTS - 1)
}

impl<C: Copy> FlowCache<C> {
    /// The cached flow of `head` (the frame's start) arriving on `in_port` of switch
    /// `at.switch`, if it was made at `at.version` less than `REFRESH` before `at.now`.
    #[inline]
    pub fn lookup(&self, at: FlowAt, in_port: PortId, head: &[u8]) -> Option<&FlowEntry<C>> {
        let FlowAt {
            switch,
            version,
            now,
        } = at;
        let key: &[u8; KEY_LEN] = head.get(..KEY_LEN)?.try_into().ok()?;
        let e = self.slots.get(slot_of(switch, in_port, key))?.as_ref()?;
        (e.key == *key
            && e.in_port == in_port
            && e.switch == switch
            && e.version == version
            && now.since(e.made) < REFRESH)
            .then_some(e)
    }

    /// Caches the decision `decision` and copies `copies` the switch made at `at` for `head` on `in_port` (nothing if the frame is shorter than a key or the
    /// flow has too many receivers). Replaces whatever shared its slot.
    pub fn insert(
        &mut self,
        at: FlowAt,
        in_port: PortId,
        head: &[u8],
        decision: Decision,
        copies: impl IntoIterator<Item = C>,
    ) {
        let FlowAt {
            switch,
            version,
            now,
        } = at;
        let Some(key) = head
            .get(..KEY_LEN)
            .and_then(|k| <[u8; KEY_LEN]>::try_from(k).ok())
        else {
            return;
        };
        let mut list = ArrayVec::new();
        for c in copies {
            if list.try_push(c).is_err() {
                return;
            }
        }
        if let Some(slot) = self.slots.get_mut(slot_of(switch, in_port, &key)) {
            *slot = Some(FlowEntry {
                switch,
                in_port,
                key,
                version,
                made: now,
                decision,
                copies: list,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Verdict;
    use vlan::{Edit, VlanId};

    fn head(dst: u8, src: u8) -> Vec<u8> {
        let mut h = vec![0u8; 60];
        h[5] = dst;
        h[11] = src;
        h[12..14].copy_from_slice(&[0x08, 0x00]);
        h
    }

    fn at(switch: u32, version: u64, now: Time) -> FlowAt {
        FlowAt {
            switch,
            version,
            now,
        }
    }

    fn unicast(p: u32) -> Decision {
        Decision {
            verdict: Verdict::Unicast(PortId(p)),
            vlan: VlanId::DEFAULT,
            strip: 0,
        }
    }

    #[test]
    fn a_hit_needs_the_same_bytes_port_switch_and_version_within_the_refresh_time() {
        let mut c = FlowCache::<(PortId, Edit)>::default();
        let t0 = Time(1_000);
        let copies = [(PortId(1), Edit::default())];
        c.insert(at(0, 7, t0), PortId(0), &head(2, 1), unicast(1), copies);
        let hit = c.lookup(at(0, 7, t0), PortId(0), &head(2, 1)).unwrap();
        assert_eq!(hit.decision, unicast(1));
        assert_eq!(hit.copies.as_slice(), &copies);
        // Bytes past the key do not matter.
        let mut longer = head(2, 1);
        longer[40] = 9;
        assert!(c.lookup(at(0, 7, t0), PortId(0), &longer).is_some());
        // Anything else misses.
        assert!(
            c.lookup(at(0, 8, t0), PortId(0), &head(2, 1)).is_none(),
            "version"
        );
        assert!(
            c.lookup(at(1, 7, t0), PortId(0), &head(2, 1)).is_none(),
            "switch"
        );
        assert!(
            c.lookup(at(0, 7, t0), PortId(3), &head(2, 1)).is_none(),
            "port"
        );
        assert!(
            c.lookup(at(0, 7, t0), PortId(0), &head(3, 1)).is_none(),
            "bytes"
        );
        assert!(
            c.lookup(at(0, 7, t0), PortId(0), &head(2, 1)[..15])
                .is_none(),
            "short"
        );
        let late = t0.plus(REFRESH);
        assert!(
            c.lookup(at(0, 7, late), PortId(0), &head(2, 1)).is_none(),
            "stale"
        );
    }

    #[test]
    fn flows_with_too_many_receivers_or_short_frames_are_not_cached() {
        let mut c = FlowCache::<(PortId, Edit)>::default();
        let many = (0..=MAX_COPIES as u32).map(|p| (PortId(p), Edit::default()));
        c.insert(
            at(0, 1, Time(0)),
            PortId(0),
            &head(0xff, 1),
            unicast(1),
            many,
        );
        assert!(
            c.lookup(at(0, 1, Time(0)), PortId(0), &head(0xff, 1))
                .is_none()
        );
        c.insert(
            at(0, 1, Time(0)),
            PortId(0),
            &head(2, 1)[..10],
            unicast(1),
            [],
        );
        assert!(
            c.lookup(at(0, 1, Time(0)), PortId(0), &head(2, 1)[..10])
                .is_none()
        );
    }
}
