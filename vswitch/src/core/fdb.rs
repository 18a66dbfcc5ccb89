//! The forwarding database: (VLAN, MAC) -> port, with idle aging and static entries.
//!
//! Semantics follow what bridge users expect (Open vSwitch's MAC table, the Linux bridge):
//! - a dynamic entry ages out when no frame from that address was seen for `aging`;
//! - a static entry never ages and is never overwritten by learning;
//! - a group (multicast/broadcast) or all-zero source is never learned;
//! - an address seen on a new port moves there, and the move is counted;
//! - the table is bounded: when full, new addresses are not learned (counted) and traffic to
//!   them floods, which is correct, only slower.

use std::collections::HashMap;
use std::time::Duration;

use vlan::VlanId;

use super::PortId;
use super::mac::MacAddr;
use super::time::Time;

/// Default idle time after which a learned address is forgotten.
pub const DEFAULT_AGING: Duration = Duration::from_secs(300);
/// Default bound on the number of entries.
pub const DEFAULT_MAX_ENTRIES: usize = 1 << 20;

/// One entry of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// Where frames to this address go.
    pub port: PortId,
    /// Last time a frame from this address was seen (for static entries: when it was added).
    pub last_seen: Time,
    /// Static entries come from the topology or the operator; they never age or move.
    pub is_static: bool,
}

/// What `learn` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learn {
    /// A new entry.
    New,
    /// The entry existed on the same port; its age was reset.
    Refreshed,
    /// The address moved from another port.
    Moved { from: PortId },
    /// A static entry exists for this address; nothing changed.
    Static,
    /// A group or all-zero source address; never learned.
    InvalidSource,
    /// The table is full.
    TableFull,
    /// The port already has as many learned addresses as it may (`max_macs`); nothing
    /// changed (another port's entry is never taken over by a port at its limit).
    PortLimit,
}

/// Counters of the table's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdbStats {
    pub learned: u64,
    pub moves: u64,
    pub aged_out: u64,
    pub table_full: u64,
}

/// The forwarding database.
#[derive(Debug)]
pub struct Fdb {
    entries: HashMap<(VlanId, MacAddr), FdbEntry>,
    /// Dynamic entries per port (index = port number), aged-out ones included until swept.
    per_port: Vec<usize>,
    aging: Duration,
    max_entries: usize,
    stats: FdbStats,
    /// Bumped by every change that can alter a lookup (an entry added, moved, revived or
    /// removed; the aging time): decisions cached at another version are stale.
    version: u64,
}

impl Default for Fdb {
    fn default() -> Self {
        Fdb::new(DEFAULT_AGING, DEFAULT_MAX_ENTRIES)
    }
}

impl Fdb {
    /// An empty table whose dynamic entries age out after `aging` of silence.
    pub fn new(aging: Duration, max_entries: usize) -> Fdb {
        Fdb {
            entries: HashMap::new(),
            per_port: Vec::new(),
            aging,
            max_entries,
            stats: FdbStats::default(),
            version: 0,
        }
    }

    /// The idle time after which dynamic entries are forgotten.
    pub fn aging(&self) -> Duration {
        self.aging
    }

    /// Changes the aging time (applies to existing entries too).
    pub fn set_aging(&mut self, aging: Duration) {
        self.version += 1;
        self.aging = aging;
    }

    fn expired(&self, e: &FdbEntry, now: Time) -> bool {
        !e.is_static && now.since(e.last_seen) >= self.aging
    }

    fn count_mut(&mut self, port: PortId) -> &mut usize {
        let i = port.index();
        if self.per_port.len() <= i {
            self.per_port.resize(i + 1, 0);
        }
        &mut self.per_port[i]
    }

    /// Dynamic entries learned on `port` (aged-out ones count until the next sweep).
    pub fn port_entries(&self, port: PortId) -> usize {
        self.per_port.get(port.index()).copied().unwrap_or(0)
    }

    /// Records that a frame from `mac` in `vlan` arrived on `port` at `now`.
    pub fn learn(&mut self, now: Time, vlan: VlanId, mac: MacAddr, port: PortId) -> Learn {
        self.learn_limited(now, vlan, mac, port, None)
    }

    /// `learn`, with at most `limit` dynamic entries on `port`: at the limit, new addresses
    /// and addresses moving in from other ports are not learned (`Learn::PortLimit`).
    pub fn learn_limited(
        &mut self,
        now: Time,
        vlan: VlanId,
        mac: MacAddr,
        port: PortId,
        limit: Option<usize>,
    ) -> Learn {
        self.learn_impl::<true>(now, vlan, mac, port, limit)
    }

    /// What `learn_limited` would do, without doing it (`vfabric ctl trace`).
    pub fn would_learn(
        &mut self,
        now: Time,
        vlan: VlanId,
        mac: MacAddr,
        port: PortId,
        limit: Option<usize>,
    ) -> Learn {
        self.learn_impl::<false>(now, vlan, mac, port, limit)
    }

    /// `learn_limited` (`APPLY`) or only its outcome: one decision for both, so a trace says
    /// exactly what forwarding does.
    fn learn_impl<const APPLY: bool>(
        &mut self,
        now: Time,
        vlan: VlanId,
        mac: MacAddr,
        port: PortId,
        limit: Option<usize>,
    ) -> Learn {
        if !mac.is_valid_source() {
            return Learn::InvalidSource;
        }
        let aging = self.aging;
        let len = self.entries.len();
        let at_limit = limit.is_some_and(|l| self.port_entries(port) >= l);
        let (from, expired) = match self.entries.get_mut(&(vlan, mac)) {
            Some(e) if e.is_static => return Learn::Static,
            Some(e) if e.port == port => {
                let expired = now.since(e.last_seen) >= aging;
                if !APPLY {
                    return if expired {
                        Learn::New
                    } else {
                        Learn::Refreshed
                    };
                }
                e.last_seen = now;
                if expired {
                    self.stats.learned += 1;
                    self.version += 1;
                    return Learn::New;
                }
                return Learn::Refreshed;
            }
            Some(_) if at_limit => return Learn::PortLimit,
            Some(e) => {
                let expired = now.since(e.last_seen) >= aging;
                let from = e.port;
                if APPLY {
                    e.last_seen = now;
                    e.port = port;
                }
                (from, expired)
            }
            None if at_limit => return Learn::PortLimit,
            None if len >= self.max_entries => {
                if APPLY {
                    self.stats.table_full += 1;
                }
                return Learn::TableFull;
            }
            None => {
                if APPLY {
                    self.entries.insert(
                        (vlan, mac),
                        FdbEntry {
                            port,
                            last_seen: now,
                            is_static: false,
                        },
                    );
                    *self.count_mut(port) += 1;
                    self.stats.learned += 1;
                    self.version += 1;
                }
                return Learn::New;
            }
        };
        if !APPLY {
            return if expired {
                Learn::New
            } else {
                Learn::Moved { from }
            };
        }
        // The address changed ports.
        self.version += 1;
        let c = self.count_mut(from);
        *c = c.saturating_sub(1);
        *self.count_mut(port) += 1;
        if expired {
            // The old entry was already dead: this is a fresh learn, not a move.
            self.stats.learned += 1;
            Learn::New
        } else {
            self.stats.moves += 1;
            Learn::Moved { from }
        }
    }

    /// The live entry for `mac` in `vlan` at `now`, if any.
    pub fn get(&self, now: Time, vlan: VlanId, mac: MacAddr) -> Option<FdbEntry> {
        self.entries
            .get(&(vlan, mac))
            .filter(|e| !self.expired(e, now))
            .copied()
    }

    /// The port for `mac` in `vlan`, if known and not aged out at `now`.
    pub fn lookup(&self, now: Time, vlan: VlanId, mac: MacAddr) -> Option<PortId> {
        self.entries
            .get(&(vlan, mac))
            .filter(|e| !self.expired(e, now))
            .map(|e| e.port)
    }

    /// Adds (or replaces) a static entry.
    pub fn add_static(&mut self, now: Time, vlan: VlanId, mac: MacAddr, port: PortId) {
        let old = self.entries.insert(
            (vlan, mac),
            FdbEntry {
                port,
                last_seen: now,
                is_static: true,
            },
        );
        self.version += 1;
        self.uncount(old);
    }

    fn uncount(&mut self, old: Option<FdbEntry>) {
        if let Some(e) = old.filter(|e| !e.is_static) {
            let c = self.count_mut(e.port);
            *c = c.saturating_sub(1);
        }
    }

    /// Removes one entry, static or not. Returns whether it existed.
    pub fn remove(&mut self, vlan: VlanId, mac: MacAddr) -> bool {
        let old = self.entries.remove(&(vlan, mac));
        let existed = old.is_some();
        self.version += u64::from(existed);
        self.uncount(old);
        existed
    }

    /// Forgets the dynamic entries pointing at `port` (its link went down). Returns how many.
    pub fn flush_port(&mut self, port: PortId) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.is_static || e.port != port);
        *self.count_mut(port) = 0;
        self.version += 1;
        before - self.entries.len()
    }

    /// Forgets every entry pointing at `port`, static ones included (the port was removed).
    pub fn remove_port(&mut self, port: PortId) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.port != port);
        *self.count_mut(port) = 0;
        self.version += 1;
        before - self.entries.len()
    }

    /// Drops the dynamic entries that aged out by `now`. Returns how many.
    pub fn expire(&mut self, now: Time) -> usize {
        let aging = self.aging;
        let before = self.entries.len();
        let per_port = &mut self.per_port;
        self.entries.retain(|_, e| {
            let keep = e.is_static || now.since(e.last_seen) < aging;
            if !keep && let Some(c) = per_port.get_mut(e.port.index()) {
                *c = c.saturating_sub(1);
            }
            keep
        });
        let n = before - self.entries.len();
        self.stats.aged_out += n as u64;
        self.version += u64::from(n > 0);
        n
    }

    /// Number of entries (including ones that aged out but were not swept yet).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The live entries at `now`, in no particular order.
    pub fn entries(&self, now: Time) -> impl Iterator<Item = (VlanId, MacAddr, FdbEntry)> + '_ {
        self.entries
            .iter()
            .filter(move |(_, e)| !self.expired(e, now))
            .map(|(&(v, m), &e)| (v, m, e))
    }

    /// Changes so far that can alter a lookup (see the field).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Lifetime counters.
    pub fn stats(&self) -> FdbStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_at_its_limit_learns_nothing_and_takes_nothing() {
        let mut f = Fdb::default();
        let m = |n: u8| MacAddr([0x52, 0x54, 0, 0, 1, n]);
        let (p1, p2) = (PortId(1), PortId(2));
        assert_eq!(f.learn(secs(0), V1, m(100), p2), Learn::New);
        for n in 0..3 {
            assert_eq!(f.learn_limited(secs(0), V1, m(n), p1, Some(3)), Learn::New);
        }
        assert_eq!(f.port_entries(p1), 3);
        // New addresses and another port's address: refused, nothing changes.
        assert_eq!(
            f.learn_limited(secs(1), V1, m(3), p1, Some(3)),
            Learn::PortLimit
        );
        assert_eq!(
            f.learn_limited(secs(1), V1, m(100), p1, Some(3)),
            Learn::PortLimit
        );
        assert_eq!(f.lookup(secs(1), V1, m(100)), Some(p2));
        assert_eq!(f.lookup(secs(1), V1, m(3)), None);
        // Known ones refresh.
        assert_eq!(
            f.learn_limited(secs(1), V1, m(0), p1, Some(3)),
            Learn::Refreshed
        );
        // Room again after an address moves away, ages out, or is removed.
        assert!(matches!(
            f.learn(secs(2), V1, m(0), p2),
            Learn::Moved { .. }
        ));
        assert_eq!(f.port_entries(p1), 2);
        assert_eq!(f.learn_limited(secs(2), V1, m(3), p1, Some(3)), Learn::New);
        assert_eq!(f.expire(secs(301)), 3);
        assert_eq!(f.port_entries(p1), 1);
        assert!(f.remove(V1, m(3)));
        assert_eq!(f.port_entries(p1), 0);
        // m(0) on p2 survives (seen at 2 s); a static entry replacing it uncounts it.
        assert_eq!(f.port_entries(p2), 1);
        f.add_static(secs(302), V1, m(0), p1);
        assert_eq!((f.port_entries(p1), f.port_entries(p2)), (0, 0));
        assert_eq!(f.learn(secs(303), V1, m(7), p2), Learn::New);
        assert_eq!(f.flush_port(p2), 1);
        assert_eq!(f.port_entries(p2), 0);
    }

    const A: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0xb]);
    const V1: VlanId = VlanId::DEFAULT;
    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);

    fn secs(s: u64) -> Time {
        Time(s * 1000)
    }

    #[test]
    fn learn_refresh_move_and_age() {
        let mut f = Fdb::default();
        // (time, mac, port, expected outcome, expected lookup afterwards)
        let steps: &[(u64, MacAddr, PortId, Learn)] = &[
            (0, A, P1, Learn::New),
            (10, A, P1, Learn::Refreshed),
            (20, A, P2, Learn::Moved { from: P1 }),
            (21, B, P1, Learn::New),
            // 300 s after its last sighting, A is gone; learning it again is a new entry.
            (320, A, P1, Learn::New),
        ];
        for &(t, mac, port, want) in steps {
            assert_eq!(f.learn(secs(t), V1, mac, port), want, "at {t}s");
            assert_eq!(f.lookup(secs(t), V1, mac), Some(port));
        }
        assert_eq!(f.stats().learned, 3);
        assert_eq!(f.stats().moves, 1);
    }

    #[test]
    fn ages_out_at_exactly_the_aging_time() {
        let mut f = Fdb::default();
        f.learn(secs(100), V1, A, P1);
        assert_eq!(f.lookup(Time(399_999), V1, A), Some(P1));
        assert_eq!(f.lookup(secs(400), V1, A), None);
        assert_eq!(f.expire(Time(399_999)), 0);
        assert_eq!(f.expire(secs(400)), 1);
        assert_eq!(f.stats().aged_out, 1);
        assert!(f.is_empty());
    }

    #[test]
    fn static_entry_wins_and_never_ages() {
        let mut f = Fdb::default();
        f.add_static(secs(0), V1, A, P1);
        assert_eq!(f.learn(secs(1), V1, A, P2), Learn::Static);
        assert_eq!(f.lookup(secs(100_000), V1, A), Some(P1));
        assert_eq!(f.expire(secs(100_000)), 0);
        assert_eq!(f.stats().moves, 0);
        assert_eq!(f.flush_port(P1), 0, "flush keeps static entries");
        assert_eq!(f.remove_port(P1), 1);
    }

    #[test]
    fn group_and_zero_sources_are_never_learned() {
        let mut f = Fdb::default();
        for mac in [
            MacAddr::BROADCAST,
            MacAddr([1, 0, 0x5e, 0, 0, 1]),
            MacAddr([0x33, 0x33, 0, 0, 0, 1]),
            MacAddr([0; 6]),
        ] {
            assert_eq!(f.learn(secs(0), V1, mac, P1), Learn::InvalidSource);
        }
        assert!(f.is_empty());
    }

    #[test]
    fn vlans_are_separate_tables() {
        let mut f = Fdb::default();
        let v10 = VlanId::new(10).unwrap();
        f.learn(secs(0), V1, A, P1);
        f.learn(secs(0), v10, A, P2);
        assert_eq!(f.lookup(secs(1), V1, A), Some(P1));
        assert_eq!(f.lookup(secs(1), v10, A), Some(P2));
        assert_eq!(f.stats().moves, 0);
    }

    #[test]
    fn bounded_table_refuses_new_addresses() {
        let mut f = Fdb::new(DEFAULT_AGING, 2);
        assert_eq!(f.learn(secs(0), V1, A, P1), Learn::New);
        assert_eq!(f.learn(secs(0), V1, B, P1), Learn::New);
        let c = MacAddr([0x52, 0x54, 0, 0, 0, 0xc]);
        assert_eq!(f.learn(secs(0), V1, c, P1), Learn::TableFull);
        assert_eq!(f.lookup(secs(0), V1, c), None);
        // Existing addresses still refresh and move.
        assert_eq!(f.learn(secs(1), V1, A, P2), Learn::Moved { from: P1 });
        assert_eq!(f.stats().table_full, 1);
    }

    #[test]
    fn flush_port_forgets_dynamic_entries_of_that_port_only() {
        let mut f = Fdb::default();
        f.learn(secs(0), V1, A, P1);
        f.learn(secs(0), V1, B, P2);
        assert_eq!(f.flush_port(P1), 1);
        assert_eq!(f.lookup(secs(0), V1, A), None);
        assert_eq!(f.lookup(secs(0), V1, B), Some(P2));
    }
}
