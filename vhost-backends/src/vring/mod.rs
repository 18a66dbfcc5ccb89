//! vfabric's own access to split virtqueues on the data path (the fast path's first layer),
//! for every device: net TX, net RX and blk.
//!
//! `map.rs` translates guest addresses through the guest's memory table, built once per batch
//! from the connection's memory (a handful of regions) with a last-hit cache, so a buffer
//! address costs one range check instead of a search of the whole table. `split.rs` walks a
//! split ring's available entries and descriptor chains and publishes its used entries; the
//! descriptor table, the avail ring and the used ring are translated to host ranges once per
//! batch, so each access is a bounds check and a load or store. `host.rs` holds those ranges
//! and the frame copies: the only `unsafe` of the data path. `queue.rs` applies the used-ring
//! publish and the interrupt decision to a vhost-user-backend vring.
//!
//! Invariants: every access stays inside the guest's memory regions (a range that leaves
//! them is refused, never clipped); the walk has exactly virtio-queue's semantics (the same
//! chains, descriptors and verdicts on any ring, hostile ones included), which the `rings`
//! property tests and fuzz target check against virtio-queue itself; ring fields are read
//! and written volatile, the indices with acquire loads and release stores.

mod host;
mod map;
mod packed;
mod queue;
pub mod sigbus;
mod split;

pub use host::{HostRange, copy_from_guest, copy_guest_to_guest, copy_to_guest};
pub use map::GuestMap;
pub(crate) use map::for_each_piece;
pub use packed::{PackedAvail, PackedChain, PackedRing, event_passed};
pub(crate) use queue::{publish_used_any, set_kicks, wants_interrupt, wants_interrupt_any};
pub use split::{Chain, Desc, DescChain, SplitRing, UsedElem, UsedRing};

/// A used entry of either ring layout: the position of the chain's first slot (packed
/// rings write it there), the chain's head or buffer id, the bytes written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    pub pos: u16,
    pub id: u16,
    pub len: u32,
}

impl Used {
    /// The same entry with `len` bytes written.
    #[inline]
    pub fn with_len(self, len: u32) -> Used {
        Used { len, ..self }
    }
}

/// The chains available in a ring (split or packed), taken in order.
pub trait Avail: Iterator
where
    Self::Item: RingChain,
{
    /// The device's position after the chains taken so far (the vring's `next_avail`).
    fn cursor(&self) -> u16;
    /// Gives back every chain taken after `pos`, an earlier `cursor()`.
    fn rewind(&mut self, pos: u16);
    /// Whether the walk found the ring unusable (the guest broke its rules).
    fn broken(&self) -> bool {
        false
    }
    /// Prefetches the start of the first buffer of the chain `ahead` places after the
    /// cursor (for writing with `write`: RX buffers), so that its cache misses overlap with
    /// the work on the chains before it. A hint: nothing when that chain is not known yet.
    fn prefetch(&self, _ahead: u16, _write: bool) {}
}

/// One chain's descriptors, and the used entry that returns it.
pub trait RingChain: Iterator<Item = Desc> {
    fn used(&self, len: u32) -> Used;
}
