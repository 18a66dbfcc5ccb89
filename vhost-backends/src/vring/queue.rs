//! The two ring operations every device's data path shares (net TX, net RX, blk): publishing
//! a batch's used entries with one store of the used index, and deciding whether the guest
//! wants an interrupt (EVENT_IDX or VRING_AVAIL_F_NO_INTERRUPT), over a vhost-user-backend
//! vring's queue (its layout and positions as the VMM set them).

use std::io;

use vhost_user_backend::{VringRwLock, VringT};
use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::QueueT;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use super::{GuestMap, PackedRing, SplitRing, Used, UsedElem, UsedRing};

type VringState = vhost_user_backend::VringState<GuestMemoryAtomic<GuestMemoryMmap>>;

/// Puts `entries` (head, length) in the used ring of `st`'s queue and publishes them with a
/// single store of the used index, after the elements. (`virtio-queue`'s `add_used` stores
/// the index once per entry, a cache line bounced to the guest's CPU every time.) Returns
/// the used index before and after.
/// With `last_only` (VIRTIO_F_IN_ORDER and chains the device wrote nothing into), only the
/// batch's last element is written.
fn publish_used<E: UsedElem>(
    st: &mut VringState,
    map: &GuestMap<'_>,
    entries: &[E],
    last_only: bool,
) -> (u16, u16) {
    let q = st.get_queue_mut();
    let old = q.next_used();
    if entries.is_empty() {
        return (old, old);
    }
    let used = UsedRing::new(map, q.used_ring(), q.size());
    let new = if last_only {
        used.publish_in_order(old, entries)
    } else {
        used.publish(old, entries)
    };
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
    let ring = SplitRing::avail_only(map, q.avail_ring(), q.size());
    // The used index must be visible before used_event or the flags are read: a driver
    // turning interrupts back on checks the used index after it wrote them (otherwise both
    // sides could miss the other's write and the interrupt would be lost).
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    if event_idx {
        let Some(event) = ring.used_event() else {
            return true;
        };
        new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
    } else {
        let flags = ring.avail_flags().unwrap_or(0);
        flags & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0
    }
}

/// Packed rings: writes `entries` (all of the batch's chains, in the order taken) as used
/// descriptors; the used position becomes the avail position, where the batch ended.
/// Returns the used position before and after.
pub(crate) fn publish_used_packed(
    st: &mut VringState,
    map: &GuestMap<'_>,
    entries: &[Used],
) -> (u16, u16) {
    let q = st.get_queue_mut();
    let new = q.next_avail();
    let Some(first) = entries.first() else {
        return (new, new);
    };
    PackedRing::new(map, q.desc_table(), q.avail_ring(), q.used_ring(), q.size()).publish(entries);
    q.set_next_used(new);
    (first.pos, new)
}

/// Publishes a batch's used entries on a ring of either layout. `in_order_tx`: the guest
/// took VIRTIO_F_IN_ORDER and the chains were only read (a TX ring), so a split ring gets
/// only the batch's last element (packed rings get every used descriptor, which the spec
/// also allows).
pub(crate) fn publish_used_any(
    st: &mut VringState,
    map: &GuestMap<'_>,
    packed: bool,
    in_order_tx: bool,
    entries: &[Used],
) -> (u16, u16) {
    if packed {
        publish_used_packed(st, map, entries)
    } else {
        publish_used(st, map, entries, in_order_tx)
    }
}

/// `wants_interrupt` for a ring of either layout (a packed ring's driver area says it).
pub(crate) fn wants_interrupt_any(
    st: &VringState,
    map: &GuestMap<'_>,
    packed: bool,
    event_idx: bool,
    old: u16,
    new: u16,
) -> bool {
    if !packed {
        return wants_interrupt(st, map, event_idx, old, new);
    }
    let q = st.get_queue();
    PackedRing::new(map, q.desc_table(), q.avail_ring(), q.used_ring(), q.size())
        .wants_interrupt(event_idx, old, new)
}

/// Turns the guest's kicks for `vring` on or off (split: VRING_USED_F_NO_NOTIFY or
/// EVENT_IDX's avail_event, through virtio-queue; packed: the device's event suppression
/// area). Turning them on returns whether chains are already available (look again before
/// sleeping).
pub(crate) fn set_kicks(
    vring: &VringRwLock,
    mem: &GuestMemoryMmap,
    packed: bool,
    on: bool,
) -> io::Result<bool> {
    if !packed {
        return if on {
            vring.enable_notification().map_err(io::Error::other)
        } else {
            vring.disable_notification().map_err(io::Error::other)?;
            Ok(false)
        };
    }
    let st = vring.get_ref();
    let map = GuestMap::new(mem);
    let Some((ring, pos)) = PackedRing::of_queue(&map, st.get_queue()) else {
        return Ok(false);
    };
    ring.set_kicks(on);
    Ok(on && ring.has_avail(pos))
}
