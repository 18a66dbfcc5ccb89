//! The two ring operations every device's data path shares (net TX, net RX, blk): publishing
//! a batch's used entries with one store of the used index, and deciding whether the guest
//! wants an interrupt (EVENT_IDX or VRING_AVAIL_F_NO_INTERRUPT), over a vhost-user-backend
//! vring's queue (its layout and positions as the VMM set them).

use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::QueueT;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use super::{GuestMap, SplitRing, UsedRing};

type VringState = vhost_user_backend::VringState<GuestMemoryAtomic<GuestMemoryMmap>>;

/// Puts `entries` (head, length) in the used ring of `st`'s queue and publishes them with a
/// single store of the used index, after the elements. (`virtio-queue`'s `add_used` stores
/// the index once per entry, a cache line bounced to the guest's CPU every time.) Returns
/// the used index before and after.
pub(crate) fn publish_used(
    st: &mut VringState,
    map: &GuestMap<'_>,
    entries: &[(u16, u32)],
) -> (u16, u16) {
    let q = st.get_queue_mut();
    let old = q.next_used();
    if entries.is_empty() {
        return (old, old);
    }
    let new = UsedRing::new(map, q.used_ring(), q.size()).publish(old, entries);
    q.set_next_used(new);
    (old, new)
}

/// Whether the guest wants an interrupt for used entries `old..new` of the queue: under
/// EVENT_IDX when its `used_event` lies in that range, otherwise unless it set
/// VRING_AVAIL_F_NO_INTERRUPT (polling drivers, such as DPDK's, do).
pub(crate) fn wants_interrupt(
    st: &VringState,
    map: &GuestMap<'_>,
    event_idx: bool,
    old: u16,
    new: u16,
) -> bool {
    if old == new {
        return false;
    }
    let q = st.get_queue();
    let ring = SplitRing::new(map, q.desc_table(), q.avail_ring(), q.size());
    if event_idx {
        // The used index must be visible before used_event is read.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let Some(event) = ring.used_event() else {
            return true;
        };
        new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
    } else {
        let flags = ring.avail_flags().unwrap_or(0);
        flags & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0
    }
}
