//! A split virtqueue walked through a `GuestMap`: the available entries from the device's
//! position to the driver's index, each a chain of descriptors (an indirect table followed
//! once), with virtio-queue's semantics to the letter: a chain ends quietly at a loop (after
//! as many descriptors as its table holds), at a `next` past its table, at an unreadable
//! descriptor, at a second indirect table or a malformed one, or when its lengths overflow
//! 2^32; an available index more than a ring ahead of the device is refused whole.

use std::sync::atomic::Ordering;

use vm_memory::{Bytes, GuestAddress};

use super::host::HostRange;
use super::map::GuestMap;

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;
const F_INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;
/// Bytes per descriptor in a table.
const DESC_SIZE: u64 = 16;

/// One descriptor, as the guest wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

impl From<virtio_queue::desc::split::Descriptor> for Desc {
    /// virtio-queue's view of a descriptor (the oracle the tests compare with).
    fn from(d: virtio_queue::desc::split::Descriptor) -> Desc {
        Desc {
            addr: d.addr().0,
            len: d.len(),
            flags: d.flags(),
            next: d.next(),
        }
    }
}

impl Desc {
    fn from_le(b: [u8; 16]) -> Desc {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        Desc {
            addr: u64_at(0),
            len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            flags: u16::from_le_bytes([b[12], b[13]]),
            next: u16::from_le_bytes([b[14], b[15]]),
        }
    }

    pub fn is_write_only(&self) -> bool {
        self.flags & F_WRITE != 0
    }

    pub fn has_next(&self) -> bool {
        self.flags & F_NEXT != 0
    }
}

/// A split ring's layout: its descriptor table, its available ring, its size; the table and
/// the ring translated to host ranges once (when each lies inside one region, as VMMs lay
/// them out), so walking them costs no lookups.
pub struct SplitRing<'r, 'm> {
    map: &'r GuestMap<'m>,
    desc_table: u64,
    avail_ring: u64,
    size: u16,
    /// The descriptor table (`size` descriptors).
    desc_host: Option<HostRange<'m>>,
    /// flags, idx, `size` entries and used_event; only when 2-aligned (as virtio-queue
    /// requires for its atomic loads; a misaligned ring goes through vm-memory, and fails).
    avail_host: Option<HostRange<'m>>,
    /// The avail ring lies over the used ring: every used entry the device writes would
    /// change what the driver offers (a ring that never empties). Judged broken.
    overlaps_used: bool,
}

/// Whether the guest ranges `[a, a + alen)` and `[b, b + blen)` share a byte (ranges that
/// wrap past the top of the address space count as reaching it).
fn overlap(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    let a_end = a.saturating_add(alen);
    let b_end = b.saturating_add(blen);
    a < b_end && b < a_end
}

impl<'r, 'm> SplitRing<'r, 'm> {
    pub fn new(map: &'r GuestMap<'m>, desc_table: u64, avail_ring: u64, size: u16) -> Self {
        let size_u = usize::from(size);
        SplitRing {
            map,
            desc_table,
            avail_ring,
            size,
            desc_host: map.host(desc_table, size_u * DESC_SIZE as usize),
            avail_host: avail_ring
                .is_multiple_of(2)
                .then(|| map.host(avail_ring, 6 + 2 * size_u))
                .flatten(),
            overlaps_used: false,
        }
    }

    /// The ring's avail part only (its flags, index and used_event), for the interrupt
    /// decision: the descriptor table is not translated.
    pub fn avail_only(map: &'r GuestMap<'m>, avail_ring: u64, size: u16) -> Self {
        SplitRing {
            map,
            desc_table: 0,
            avail_ring,
            size,
            desc_host: None,
            avail_host: avail_ring
                .is_multiple_of(2)
                .then(|| map.host(avail_ring, 6 + 2 * usize::from(size)))
                .flatten(),
            overlaps_used: false,
        }
    }

    /// The ring of a virtio-queue `Queue` (its layout as the VMM set it), with the device's
    /// position in it; `None` when the queue is not set up (not ready, or without an avail
    /// ring), which virtio-queue's own walk refuses too.
    pub fn of_queue(map: &'r GuestMap<'m>, q: &virtio_queue::Queue) -> Option<(Self, u16)> {
        use virtio_queue::QueueT;
        (q.ready() && q.avail_ring() != 0).then(|| {
            let mut ring = SplitRing::new(map, q.desc_table(), q.avail_ring(), q.size());
            let n = u64::from(q.size());
            // The parts every driver has (flags, index, entries); used_event and avail_event exist
            // only with EVENT_IDX, and VMMs lay the used ring right after the avail entries.
            ring.overlaps_used = overlap(q.avail_ring(), 4 + 2 * n, q.used_ring(), 4 + 8 * n);
            (ring, q.next_avail())
        })
    }

    /// The u16 at `off` in the avail ring, loaded with acquire ordering.
    #[inline]
    fn avail_u16(&self, off: u64) -> Option<u16> {
        if let Some(h) = &self.avail_host {
            return h.load_u16_acquire(off as usize);
        }
        let at = GuestAddress(self.avail_ring.checked_add(off)?);
        self.map
            .mem()
            .load::<u16>(at, Ordering::Acquire)
            .ok()
            .map(u16::from_le)
    }

    /// The driver's available index (acquire: the entries before it are visible).
    pub fn avail_idx(&self) -> Option<u16> {
        self.avail_u16(2)
    }

    /// The driver's avail flags (VRING_AVAIL_F_NO_INTERRUPT).
    pub fn avail_flags(&self) -> Option<u16> {
        self.avail_u16(0)
    }

    /// The driver's used_event (EVENT_IDX): interrupt when the used index passes it.
    pub fn used_event(&self) -> Option<u16> {
        self.avail_u16(4 + 2 * u64::from(self.size))
    }

    /// The chains available from the device's position `next_avail`: `None` when the ring
    /// is broken: its index cannot be read or lies more than a ring ahead, or the avail ring
    /// lies over the used ring (`of_queue`; every publication would offer more).
    pub fn avail(&self, next_avail: u16) -> Option<Chain<'_, 'r, 'm>> {
        if self.overlaps_used {
            return None;
        }
        let idx = self.avail_idx()?;
        if idx.wrapping_sub(next_avail) > self.size {
            return None;
        }
        Some(Chain {
            ring: self,
            next_avail,
            last: idx,
            heads: [0; AVAIL_CHUNK],
            from: next_avail,
            cached: 0,
        })
    }

    /// The descriptor chain starting at `head`.
    pub fn chain(&self, head: u16) -> DescChain<'r, 'm> {
        DescChain {
            map: self.map,
            head,
            table: self.desc_table,
            host: self.desc_host,
            size: self.size,
            next: head,
            ttl: self.size,
            yielded: 0,
            indirect: false,
        }
    }
}

/// The available entries of a ring, each as its descriptor chain.
pub struct Chain<'a, 'r, 'm> {
    ring: &'a SplitRing<'r, 'm>,
    next_avail: u16,
    last: u16,
    /// Entries copied out of the ring in one go: `heads[i]` is the one at position
    /// `from + i`, for i < `cached`. The guest refills the ring while the device reads it;
    /// reading each entry when its chain is taken would pull the shared cache line back
    /// from the guest's CPU again and again.
    heads: [u16; AVAIL_CHUNK],
    from: u16,
    cached: u16,
}

/// Avail entries read at a time (64 bytes: one cache line when aligned).
const AVAIL_CHUNK: usize = 32;

impl<'r, 'm> Iterator for Chain<'_, 'r, 'm> {
    type Item = DescChain<'r, 'm>;

    // Always inlined: the chain stays in registers (returned through memory, its head was
    // stored as 2 bytes and read back as 4, a store-forwarding stall in the profile).
    #[inline(always)]
    fn next(&mut self) -> Option<DescChain<'r, 'm>> {
        if self.next_avail == self.last {
            return None;
        }
        let head = self.entry(self.next_avail)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        Some(self.ring.chain(head))
    }
}

impl Chain<'_, '_, '_> {
    /// The device's position after the entries taken so far.
    pub fn position(&self) -> u16 {
        self.next_avail
    }

    /// Gives the last entry taken back (it will be taken again).
    pub fn go_back(&mut self) {
        self.next_avail = self.next_avail.wrapping_sub(1);
    }
}

impl super::Avail for Chain<'_, '_, '_> {
    fn cursor(&self) -> u16 {
        self.next_avail
    }

    /// Gives back the entries taken after `pos` (an earlier `cursor()`).
    fn rewind(&mut self, pos: u16) {
        self.next_avail = pos;
    }

    /// Only for a chain whose head is in the copied entries and whose first descriptor is
    /// a direct one in the ring's table.
    #[inline(always)]
    fn prefetch(&self, ahead: u16, write: bool) {
        if ahead >= self.last.wrapping_sub(self.next_avail) {
            return;
        }
        let k = self.next_avail.wrapping_add(ahead).wrapping_sub(self.from);
        let (Some(&head), Some(table)) = (
            self.heads.get(usize::from(k)).filter(|_| k < self.cached),
            &self.ring.desc_host,
        ) else {
            return;
        };
        if let Some(d) = table
            .read_desc(usize::from(head) * DESC_SIZE as usize)
            .map(Desc::from_le)
            && d.flags & F_INDIRECT == 0
        {
            self.ring.map.prefetch(d.addr, d.len, write);
        }
    }
}

impl Chain<'_, '_, '_> {
    /// The entry at position `pos` (< `last`), from the copy or read with those after it.
    #[inline(always)]
    fn entry(&mut self, pos: u16) -> Option<u16> {
        let k = pos.wrapping_sub(self.from);
        if k < self.cached {
            return self.heads.get(usize::from(k)).copied();
        }
        self.refill(pos)
    }

    /// Copies the entries from `pos` on (up to `AVAIL_CHUNK`) out of the ring; returns the
    /// first. Out of line: once per chunk.
    #[inline(never)]
    fn refill(&mut self, pos: u16) -> Option<u16> {
        // Entries up to the driver's index were written before it (read with acquire), and
        // the driver may not change them until the device has used them.
        let n = self.last.wrapping_sub(pos).min(AVAIL_CHUNK as u16);
        self.from = pos;
        self.cached = 0;
        let size = self.ring.size;
        // One division for the chunk: the slots that follow wrap by comparison.
        let mut at = pos.checked_rem(size)?;
        let mut cached = 0;
        for slot in self.heads.iter_mut().take(usize::from(n)) {
            match self.ring.avail_u16(4 + 2 * u64::from(at)) {
                Some(h) => *slot = h,
                None => break,
            }
            cached += 1;
            at += 1;
            if at == size {
                at = 0;
            }
        }
        self.cached = cached;
        // Their descriptors are read soon: start bringing them in together.
        if let Some(table) = &self.ring.desc_host {
            for &h in &self.heads[..usize::from(self.cached)] {
                table.prefetch(usize::from(h) * DESC_SIZE as usize);
            }
        }
        (self.cached > 0).then_some(self.heads[0])
    }
}

/// One descriptor chain.
pub struct DescChain<'r, 'm> {
    map: &'r GuestMap<'m>,
    head: u16,
    /// The table being walked (the ring's, or an indirect one) and, when it lies inside one
    /// region, its host range.
    table: u64,
    host: Option<HostRange<'m>>,
    size: u16,
    next: u16,
    ttl: u16,
    yielded: u32,
    indirect: bool,
}

impl DescChain<'_, '_> {
    pub fn head(&self) -> u16 {
        self.head
    }

    /// Descriptor `i` of the current table. Always inlined, like `next` (returned through
    /// memory it stalls on store forwarding; the profile showed it out of line once the RX
    /// loop grew).
    #[inline(always)]
    fn read(&self, i: u16) -> Option<Desc> {
        let off = u64::from(i) * DESC_SIZE;
        if let Some(h) = &self.host {
            return h.read_desc(off as usize).map(Desc::from_le);
        }
        let mut raw = [0u8; 16];
        self.map
            .read(self.table.checked_add(off)?, &mut raw)
            .then(|| Desc::from_le(raw))
    }
}

impl super::RingChain for DescChain<'_, '_> {
    #[inline]
    fn used(&self, len: u32) -> super::Used {
        super::Used {
            pos: 0,
            id: self.head,
            len,
        }
    }
}

impl Iterator for DescChain<'_, '_> {
    type Item = Desc;

    // Always inlined: returned through memory, a descriptor's fields were stored one by one
    // and read back as words, which stalls on store forwarding (measured).
    #[inline(always)]
    fn next(&mut self) -> Option<Desc> {
        loop {
            if self.ttl == 0 || self.next >= self.size {
                return None;
            }
            let d = self.read(self.next)?;
            if d.flags & F_INDIRECT != 0 {
                // One indirect table per chain, whole descriptors, at most 2^16 of them.
                if self.indirect || !d.len.is_multiple_of(DESC_SIZE as u32) {
                    return None;
                }
                let n = u16::try_from(d.len / DESC_SIZE as u32).ok()?;
                self.table = d.addr;
                self.host = self.map.host(d.addr, d.len as usize);
                self.size = n;
                self.next = 0;
                self.ttl = n;
                self.indirect = true;
                continue;
            }
            self.yielded = self.yielded.checked_add(d.len)?;
            if d.has_next() {
                self.next = d.next;
                self.ttl -= 1;
            } else {
                self.ttl = 0;
            }
            return Some(d);
        }
    }
}

/// A used entry as a split ring stores it: the chain's head and the bytes written.
pub trait UsedElem {
    fn head(&self) -> u16;
    fn written(&self) -> u32;
}

impl UsedElem for (u16, u32) {
    #[inline]
    fn head(&self) -> u16 {
        self.0
    }
    #[inline]
    fn written(&self) -> u32 {
        self.1
    }
}

impl UsedElem for super::Used {
    #[inline]
    fn head(&self) -> u16 {
        self.id
    }
    #[inline]
    fn written(&self) -> u32 {
        self.len
    }
}

/// A split ring's used ring, translated once (when inside one region and 4-aligned, as the
/// spec requires and VMMs do; otherwise written through vm-memory).
pub struct UsedRing<'m> {
    mem: &'m vm_memory::GuestMemoryMmap,
    addr: u64,
    size: u16,
    host: Option<HostRange<'m>>,
}

impl<'m> UsedRing<'m> {
    pub fn new(map: &GuestMap<'m>, addr: u64, size: u16) -> Self {
        UsedRing {
            mem: map.mem(),
            addr,
            size,
            host: addr
                .is_multiple_of(4)
                .then(|| map.host(addr, 6 + 8 * usize::from(size)))
                .flatten(),
        }
    }

    /// VIRTIO_F_IN_ORDER, a batch whose chains all came back unwritten (TX): writes only the
    /// batch's last entry (the driver knows the others from their order, as the spec allows)
    /// and publishes the whole batch with one store of the used index. Returns the new used
    /// index.
    pub fn publish_in_order<E: UsedElem>(&self, idx: u16, entries: &[E]) -> u16 {
        match entries.last() {
            // The last entry at its place; the index stored after it covers the whole batch.
            Some(last) if self.size != 0 => self.publish(
                idx.wrapping_add(entries.len() as u16 - 1),
                std::slice::from_ref(last),
            ),
            _ => idx,
        }
    }

    /// Writes `entries` (head, length) from used index `idx` on, then publishes them with a
    /// single release store of the used index (the elements are visible first). Returns the
    /// new used index. One store of the index per batch, not per entry: that cache line
    /// moves to the guest's CPU once.
    pub fn publish<E: UsedElem>(&self, mut idx: u16, entries: &[E]) -> u16 {
        if entries.is_empty() || self.size == 0 {
            return idx;
        }
        // One division for the batch: the slots that follow wrap by comparison.
        let mut slot = idx % self.size;
        for e in entries {
            let (head, len) = (e.head(), e.written());
            let at = 4 + 8 * usize::from(slot);
            slot += 1;
            if slot == self.size {
                slot = 0;
            }
            match &self.host {
                Some(h) => {
                    h.write_used_elem(at, u32::from(head), len);
                }
                None => {
                    let mut elem = [0u8; 8];
                    elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
                    elem[4..].copy_from_slice(&len.to_le_bytes());
                    let _ = self
                        .addr
                        .checked_add(at as u64)
                        .map(|a| self.mem.write_slice(&elem, GuestAddress(a)));
                }
            }
            idx = idx.wrapping_add(1);
        }
        match &self.host {
            Some(h) => {
                h.store_u16_release(2, idx);
            }
            None => {
                if let Some(a) = self.addr.checked_add(2) {
                    let _ = self
                        .mem
                        .store(idx.to_le(), GuestAddress(a), Ordering::Release);
                }
            }
        }
        idx
    }
}

#[cfg(test)]
mod tests {
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT, QueueT};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use super::*;

    const SIZE: u16 = 8;

    /// Lays out `descs` as the ring's table, `heads` as its available entries (index =
    /// their count), and `extra` (address, descriptors) as indirect tables; then compares
    /// the fast path's walk with virtio-queue's.
    fn same_walk(descs: &[(u64, u32, u16, u16)], heads: &[u16], extra: &[(u64, Vec<Desc>)]) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let mock = MockSplitQueue::create(&mem, GuestAddress(0), SIZE);
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            let d = SplitDescriptor::new(addr, len, flags, next);
            mock.desc_table()
                .store(i as u16, RawDescriptor::from(d))
                .unwrap();
        }
        for (table, entries) in extra {
            for (i, d) in entries.iter().enumerate() {
                let mut raw = [0u8; 16];
                raw[0..8].copy_from_slice(&d.addr.to_le_bytes());
                raw[8..12].copy_from_slice(&d.len.to_le_bytes());
                raw[12..14].copy_from_slice(&d.flags.to_le_bytes());
                raw[14..16].copy_from_slice(&d.next.to_le_bytes());
                mem.write_slice(&raw, GuestAddress(table + 16 * i as u64))
                    .unwrap();
            }
        }
        for (i, &h) in heads.iter().enumerate() {
            mock.avail().ring().ref_at(i).unwrap().store(h.to_le());
        }
        mock.avail().idx().store((heads.len() as u16).to_le());
        let mut q: Queue = mock.create_queue().unwrap();
        let theirs: Vec<(u16, Vec<Desc>)> = q
            .iter(&mem)
            .unwrap()
            .map(|c| {
                let head = c.head_index();
                let d = c.map(Desc::from).collect();
                (head, d)
            })
            .collect();
        let map = GuestMap::new(&mem);
        let ring = SplitRing::new(&map, q.desc_table(), q.avail_ring(), q.size());
        let ours: Vec<(u16, Vec<Desc>)> = ring
            .avail(0)
            .unwrap()
            .map(|c| (c.head(), c.collect()))
            .collect();
        assert_eq!(ours, theirs);
    }

    fn d(addr: u64, len: u32, flags: u16, next: u16) -> Desc {
        Desc {
            addr,
            len,
            flags,
            next,
        }
    }

    #[test]
    fn an_indirect_table_inside_an_indirect_table_ends_the_chain() {
        let nested = vec![d(0x6000, 32, F_INDIRECT, 0), d(0x7000, 64, 0, 0)];
        same_walk(&[(0x5000, 32, F_INDIRECT, 0)], &[0], &[(0x5000, nested)]);
    }

    #[test]
    fn an_indirect_table_of_part_descriptors_ends_the_chain() {
        let table = vec![d(0x7000, 64, 0, 0)];
        same_walk(&[(0x5000, 20, F_INDIRECT, 0)], &[0], &[(0x5000, table)]);
    }

    #[test]
    fn indirect_chains_follow_their_own_table() {
        let table = vec![
            d(0x7000, 12, F_NEXT, 2),
            d(0x7100, 1, 0, 0),
            d(0x7200, 64, F_NEXT | F_WRITE, 1),
        ];
        same_walk(&[(0x5000, 48, F_INDIRECT, 0)], &[0], &[(0x5000, table)]);
    }

    #[test]
    fn lengths_past_four_gigabytes_end_the_chain() {
        same_walk(
            &[(0x7000, 0xffff_fff0, F_NEXT, 1), (0x7000, 0x20, 0, 0)],
            &[0],
            &[],
        );
    }

    #[test]
    fn loops_and_next_past_the_table_end_quietly() {
        same_walk(
            &[
                (0x7000, 8, F_NEXT, 0),
                (0x7000, 8, F_NEXT, SIZE),
                (0x7000, 8, F_NEXT, 2),
            ],
            &[0, 1, 2, SIZE - 1],
            &[],
        );
    }

    /// The used ring after `UsedRing::publish` equals the one virtio-queue's `add_used`
    /// writes, entries and index, across the ring's end; `ring_at` puts the used ring inside
    /// one region or across two adjacent ones (then written through vm-memory).
    fn same_used(ring_at: u64) {
        let regions = [(GuestAddress(0), 0x2000), (GuestAddress(0x2000), 0x2000)];
        let ours_mem = GuestMemoryMmap::<()>::from_ranges(&regions).unwrap();
        let theirs_mem = GuestMemoryMmap::<()>::from_ranges(&regions).unwrap();
        let mut q = Queue::new(SIZE).unwrap();
        q.set_used_ring_address(Some(ring_at as u32), None);
        q.set_ready(true);
        let map = GuestMap::new(&ours_mem);
        let used = UsedRing::new(&map, ring_at, SIZE);
        let mut idx = 0u16;
        for batch in [&[(3u16, 60u32), (5, 0)][..], &[(1, 1514); 7], &[(7, 9)]] {
            idx = used.publish(idx, batch);
            for &(h, l) in batch {
                q.add_used(&theirs_mem, h, l).unwrap();
            }
        }
        assert_eq!(idx, q.next_used());
        let (mut a, mut b) = ([0u8; 4 + 8 * SIZE as usize], [0u8; 4 + 8 * SIZE as usize]);
        ours_mem.read_slice(&mut a, GuestAddress(ring_at)).unwrap();
        theirs_mem
            .read_slice(&mut b, GuestAddress(ring_at))
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn used_entries_and_index_are_virtio_queue_s_in_one_region_and_across_two() {
        same_used(0x1000);
        same_used(0x2000 - 16);
    }

    /// VIRTIO_F_IN_ORDER: a batch is published with its last element only, at its place
    /// (across the ring's end too), and the index covers the whole batch; the slots before
    /// it keep what the driver left there.
    #[test]
    fn an_in_order_batch_writes_its_last_element_and_the_whole_index() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap();
        let ring_at = 0x1000u64;
        mem.write_slice(&[0xee; 4 + 8 * SIZE as usize], GuestAddress(ring_at))
            .unwrap();
        let map = GuestMap::new(&mem);
        let used = UsedRing::new(&map, ring_at, SIZE);
        let elem = |slot: u16| {
            let mut e = [0u8; 8];
            mem.read_slice(&mut e, GuestAddress(ring_at + 4 + 8 * u64::from(slot)))
                .unwrap();
            e
        };
        let idx = |m: &GuestMemoryMmap| m.read_obj::<u16>(GuestAddress(ring_at + 2)).unwrap();
        // Used index 6: a batch of 3 (heads 6, 7, 0) ends in slot 0, after the ring's end.
        assert_eq!(used.publish_in_order(6, &[(6u16, 0u32), (7, 0), (0, 0)]), 9);
        assert_eq!(idx(&mem), 9);
        assert_eq!(elem(0), [0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(elem(6), [0xee; 8]);
        assert_eq!(elem(7), [0xee; 8]);
        // One chain: written as `publish` would; nothing: nothing at all.
        assert_eq!(used.publish_in_order(9, &[(1u16, 0u32)]), 10);
        assert_eq!(elem(1), [1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(used.publish_in_order::<(u16, u32)>(10, &[]), 10);
        assert_eq!(idx(&mem), 10);
    }

    /// An avail ring laid over the used ring (its flags, index or entries) is broken:
    /// nothing is taken from it; apart, the same ring serves.
    #[test]
    fn an_avail_ring_over_the_used_ring_is_broken() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let mock = MockSplitQueue::create(&mem, GuestAddress(0), SIZE);
        mock.avail().idx().store(1u16.to_le());
        let mut q: Queue = mock.create_queue().unwrap();
        q.set_ready(true);
        q.set_used_ring_address(Some(0x2000), Some(0));
        let map = GuestMap::new(&mem);
        let avail = q.avail_ring();
        let n = u64::from(SIZE);
        let (ring, next) = SplitRing::of_queue(&map, &q).unwrap();
        assert_eq!(ring.avail(next).map(|c| c.count()), Some(1));
        for used in [avail, avail + 2, avail + 2 + 2 * n, avail - (4 + 8 * n) + 2] {
            q.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
            let (ring, next) = SplitRing::of_queue(&map, &q).unwrap();
            assert!(ring.avail(next).is_none(), "used ring at {used:#x}");
        }
        // Right after the avail entries, or right before the avail ring: apart.
        for used in [avail + 4 + 2 * n, avail - (4 + 8 * n)] {
            q.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
            let (ring, next) = SplitRing::of_queue(&map, &q).unwrap();
            assert!(ring.avail(next).is_some(), "used ring at {used:#x}");
        }
    }
}
