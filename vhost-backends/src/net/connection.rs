//! One guest connection: its memory, negotiated features, rings (once every worker handed
//! them over) and the per-ring state the TX and RX paths share.
//!
//! Invariant: a ring found broken (an avail index a ring ahead of used) is counted once and
//! left unused until the guest resets the device.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};

use vhost_user_backend::VringRwLock;
use virtio_bindings::virtio_config::VIRTIO_F_RING_PACKED;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use super::counters::NetCounters;
use crate::vring::sigbus::GuardedMemory;

/// One guest connection's view of its rings and memory, shared with other ports' workers.
pub(super) struct Connection {
    pub(super) mem: GuestMemoryAtomic<GuestMemoryMmap>,
    pub(super) features: AtomicU64,
    pub(super) event_idx: AtomicBool,
    /// Busy-poll mode, per TX ring: whether the guest's kicks are currently on.
    pub(super) tx_kicks: Vec<AtomicBool>,
    pub(super) vrings: OnceLock<Vec<VringRwLock>>,
    pub(super) rx_pending: Vec<AtomicBool>,
    /// Per RX queue: the used index at the last interrupt decision.
    pub(super) rx_checked: Vec<AtomicU16>,
    /// Per ring: found unusable (see `NetCounters::ring_broken`).
    pub(super) broken: Vec<AtomicBool>,
    /// The guest memory's regions under the SIGBUS guard (replaced with the memory table),
    /// and whether the VMM cut them (then nothing is served any more).
    pub(super) guarded: GuardedMemory,
}

impl Connection {
    /// Whether `features` (as negotiated) put the rings in the packed layout.
    #[inline]
    pub(super) fn is_packed(features: u64) -> bool {
        features & (1 << VIRTIO_F_RING_PACKED) != 0
    }

    /// Whether this guest's rings are packed.
    #[inline]
    pub(super) fn packed(&self) -> bool {
        Self::is_packed(self.features.load(Ordering::Relaxed))
    }

    /// Ring `q`'s avail index is more than a ring ahead of what was used: the guest broke
    /// the ring. Counted once per ring and connection; the ring stays unused until the
    /// guest resets the device (a new connection).
    pub(super) fn ring_broken(&self, q: usize, c: &NetCounters) {
        if let Some(b) = self.broken.get(q)
            && !b.swap(true, Ordering::Relaxed)
        {
            NetCounters::add(&c.ring_broken, 1);
        }
    }

    /// Puts the regions of the guest's memory (as the VMM's memory table has them now)
    /// under the SIGBUS guard.
    pub(super) fn guard_memory(&self) {
        use vm_memory::GuestAddressSpace;
        self.guarded.guard(&self.mem.memory());
    }

    /// Whether the VMM cut the guest's memory (a SIGBUS was caught in it): then nothing is
    /// served any more. Counted once. Cheap while no guest memory anywhere was ever cut.
    #[inline]
    pub(super) fn memory_cut(&self, c: &NetCounters) -> bool {
        let (cut, first) = self.guarded.is_cut();
        if first {
            NetCounters::add(&c.memory_cut, 1);
            log::warn!(
                "a VMM cut its guest's memory under vfabric: that guest is no longer served"
            );
        }
        cut
    }
}
