//! The two ring operations both paths share: publishing a batch's used entries with one
//! store of the used index, and deciding whether the guest wants an interrupt (EVENT_IDX or
//! VRING_AVAIL_F_NO_INTERRUPT).

use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap};

/// Puts `entries` (head, length) in the used ring of `st`'s queue and publishes them with a
/// single store of the used index, after the elements. (`virtio-queue`'s `add_used` stores
/// the index once per entry, a cache line bounced to the guest's CPU every time.) Returns
/// the used index before and after.
pub(super) fn publish_used(
    st: &mut vhost_user_backend::VringState<GuestMemoryAtomic<GuestMemoryMmap>>,
    mem: &GuestMemoryMmap,
    entries: &[(u16, u32)],
) -> (u16, u16) {
    let q = st.get_queue_mut();
    let (ring, size) = (q.used_ring(), q.size());
    let old = q.next_used();
    if entries.is_empty() || size == 0 {
        return (old, old);
    }
    let mut idx = old;
    // One translation of the used ring for the whole batch (per entry if the ring straddles
    // two memory regions).
    match mem.get_slice(GuestAddress(ring), 4 + 8 * usize::from(size)) {
        Ok(used) => {
            for &(head, len) in entries {
                let at = 4 + 8 * usize::from(idx % size);
                let _ = used.write_obj(u32::from(head).to_le(), at);
                let _ = used.write_obj(len.to_le(), at + 4);
                idx = idx.wrapping_add(1);
            }
        }
        Err(_) => {
            for &(head, len) in entries {
                let at = ring + 4 + 8 * u64::from(idx % size);
                let _ = mem.write_obj(u32::from(head).to_le(), GuestAddress(at));
                let _ = mem.write_obj(len.to_le(), GuestAddress(at + 4));
                idx = idx.wrapping_add(1);
            }
        }
    }
    let _ = mem.store(
        idx.to_le(),
        GuestAddress(ring + 2),
        std::sync::atomic::Ordering::Release,
    );
    q.set_next_used(idx);
    (old, idx)
}

/// Whether the guest wants an interrupt for used entries `old..new` of the queue: under
/// EVENT_IDX when its `used_event` lies in that range, otherwise unless it set
/// VRING_AVAIL_F_NO_INTERRUPT (polling drivers, such as DPDK's, do).
pub(super) fn wants_interrupt(
    st: &vhost_user_backend::VringState<GuestMemoryAtomic<GuestMemoryMmap>>,
    mem: &GuestMemoryMmap,
    event_idx: bool,
    old: u16,
    new: u16,
) -> bool {
    if old == new {
        return false;
    }
    let q = st.get_queue();
    let avail = q.avail_ring();
    if event_idx {
        // The used index must be visible before used_event is read.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let at = GuestAddress(avail + 4 + 2 * u64::from(q.size()));
        let Ok(event) = mem.load::<u16>(at, std::sync::atomic::Ordering::Acquire) else {
            return true;
        };
        let event = u16::from_le(event);
        new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
    } else {
        let flags: u16 = mem.read_obj(GuestAddress(avail)).unwrap_or(0);
        u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0
    }
}
