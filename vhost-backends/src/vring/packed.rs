//! Packed virtqueues (VIRTIO_F_RING_PACKED, virtio 1.1 section 2.8): one ring of 16-byte
//! descriptors that the driver makes available and the device marks used in place, plus
//! two 4-byte event suppression areas.
//!
//! A position in the ring is a slot index (bits 0..15) and a wrap counter (bit 15): the
//! encoding vhost-user uses for a packed ring's base in SET/GET_VRING_BASE, kept as the
//! vring's `next_avail`. Both wrap counters start at 1.
//!
//! Semantics, written from the spec (virtio-queue has no packed ring to compare with; the
//! tests hold a model of these rules):
//! - The descriptor at the device's position is available when its AVAIL flag equals the
//!   device's wrap counter and its USED flag does not. Only the first descriptor of a chain
//!   is checked (the driver writes its flags last); its flags are loaded with acquire.
//! - A chain is the run of slots from there to the first descriptor without NEXT (wrapping
//!   past the end of the ring flips the wrap counter); its buffer id is the last one's. A
//!   run that does not end within `size` slots leaves the device no way to find the next
//!   chain: the ring is broken.
//! - A first descriptor with INDIRECT (and without NEXT) points to a table of `len / 16`
//!   descriptors laid out in order, of which only WRITE counts. INDIRECT elsewhere, with
//!   NEXT, on a table not a whole number of descriptors, empty or outside guest memory
//!   makes a bad chain: its descriptors are yielded up to the fault, the last one still
//!   saying NEXT, as the split walk does.
//! - Chains are used in the order they were taken and all of a batch's are used: a used
//!   descriptor (id, written length, AVAIL = USED = the wrap counter of its slot) goes to
//!   the first slot of its chain, its flags stored last with release; the used position
//!   after a batch is the avail position after it.
//! - Event suppression: the driver's area (read here) says whether to interrupt (ENABLE,
//!   DISABLE, or with RING_EVENT_IDX, DESC: at a position); the device's area (written
//!   here) turns the driver's kicks on and off.

use std::sync::atomic::{Ordering, fence};

use vm_memory::{Bytes, GuestAddress};

use super::host::HostRange;
use super::map::GuestMap;
use super::split::Desc;
use super::{Avail, RingChain, Used};

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
/// The descriptor flags a packed ring adds.
pub const F_AVAIL: u16 = 1 << 7;
pub const F_USED: u16 = 1 << 15;
/// Bit 15 of a position: the wrap counter.
const WRAP: u16 = 1 << 15;
const DESC_SIZE: usize = 16;

/// Event suppression flags.
pub const EVENT_ENABLE: u16 = 0;
pub const EVENT_DISABLE: u16 = 1;
pub const EVENT_DESC: u16 = 2;

/// The slot index of position `pos`.
#[inline]
pub fn slot(pos: u16) -> u16 {
    pos & !WRAP
}

/// The wrap counter of position `pos`.
#[inline]
pub fn wrap(pos: u16) -> bool {
    pos & WRAP != 0
}

/// Position `pos` moved `n` (at most `size`) slots on, in a ring of `size`.
#[inline]
pub fn advance(pos: u16, n: u16, size: u16) -> u16 {
    let mut i = u32::from(slot(pos)) + u32::from(n);
    let mut w = wrap(pos);
    if i >= u32::from(size) {
        i -= u32::from(size);
        w = !w;
    }
    (i as u16) | if w { WRAP } else { 0 }
}

/// A packed ring's layout, its descriptor ring translated to a host range once (when it
/// lies inside one region, as VMMs lay it out).
pub struct PackedRing<'r, 'm> {
    map: &'r GuestMap<'m>,
    ring: u64,
    driver_area: u64,
    device_area: u64,
    size: u16,
    host: Option<HostRange<'m>>,
}

impl<'r, 'm> PackedRing<'r, 'm> {
    /// The ring at `ring` of `size` descriptors, with the driver's and the device's event
    /// suppression areas (vhost-user's avail and used addresses of a packed ring).
    pub fn new(
        map: &'r GuestMap<'m>,
        ring: u64,
        driver_area: u64,
        device_area: u64,
        size: u16,
    ) -> Self {
        PackedRing {
            map,
            ring,
            driver_area,
            device_area,
            size: size.min(WRAP),
            host: ring
                .is_multiple_of(DESC_SIZE as u64)
                .then(|| map.host(ring, usize::from(size) * DESC_SIZE))
                .flatten(),
        }
    }

    /// The ring of a virtio-queue `Queue` (its addresses and size as the VMM set them), with
    /// the device's position in it; `None` when the queue is not set up.
    pub fn of_queue(map: &'r GuestMap<'m>, q: &virtio_queue::Queue) -> Option<(Self, u16)> {
        use virtio_queue::QueueT;
        (q.ready() && q.size() > 0).then(|| {
            let ring =
                PackedRing::new(map, q.desc_table(), q.avail_ring(), q.used_ring(), q.size());
            (ring, q.next_avail())
        })
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// The u16 at byte `off` of the ring, loaded with acquire.
    #[inline]
    fn load_u16(&self, off: usize) -> Option<u16> {
        if let Some(h) = &self.host {
            return h.load_u16_acquire(off);
        }
        let at = GuestAddress(self.ring.checked_add(off as u64)?);
        self.map
            .mem()
            .load::<u16>(at, Ordering::Acquire)
            .ok()
            .map(u16::from_le)
    }

    /// The descriptor in slot `i` of the ring.
    #[inline]
    fn desc(&self, i: u16) -> Option<Desc> {
        read_desc(self.map, self.ring, self.host.as_ref(), i)
    }

    /// Whether the descriptor at `pos` is available to the device (flags loaded with
    /// acquire: the rest of the chain, written before them, is visible after).
    #[inline]
    fn is_avail(&self, pos: u16) -> bool {
        let Some(flags) = self.load_u16(usize::from(slot(pos)) * DESC_SIZE + 14) else {
            return false;
        };
        let w = wrap(pos);
        (flags & F_AVAIL != 0) == w && (flags & F_USED != 0) != w
    }

    /// Whether a chain is available at `pos` (for the check after turning kicks back on).
    pub fn has_avail(&self, pos: u16) -> bool {
        fence(Ordering::SeqCst);
        slot(pos) < self.size && self.is_avail(pos)
    }

    /// The chains available from the device's position `pos`.
    pub fn avail(&self, pos: u16) -> PackedAvail<'_, 'r, 'm> {
        PackedAvail {
            ring: self,
            pos,
            consumed: 0,
            broken: slot(pos) >= self.size,
        }
    }

    /// Writes the used descriptors of `entries` (each in its chain's first slot): every id
    /// and length first, then the flags of all but the first entry, the first's flags last
    /// (each with release). The driver, polling the first entry's flags, takes the batch
    /// whole and in order; it does not pull the ring's lines back while the rest of the
    /// batch is written into them (DPDK's vhost library publishes its batches this way).
    pub fn publish(&self, entries: &[Used]) {
        let Some((first, rest)) = entries.split_first() else {
            return;
        };
        for e in entries {
            self.write_len_id(e);
        }
        for e in rest {
            self.write_flags(e);
        }
        self.write_flags(first);
    }

    /// The byte offset of `e`'s slot in the ring, if within it.
    #[inline]
    fn used_slot(&self, e: &Used) -> Option<usize> {
        (slot(e.pos) < self.size).then(|| usize::from(slot(e.pos)) * DESC_SIZE)
    }

    /// Writes `e`'s length and buffer id into its slot.
    #[inline]
    fn write_len_id(&self, e: &Used) {
        let Some(off) = self.used_slot(e) else {
            return;
        };
        match &self.host {
            Some(h) => {
                h.write(off + 8, e.len.to_le_bytes());
                h.write(off + 12, e.id.to_le_bytes());
            }
            None => {
                let mut lid = [0u8; 6];
                lid[..4].copy_from_slice(&e.len.to_le_bytes());
                lid[4..].copy_from_slice(&e.id.to_le_bytes());
                if let Some(at) = self.ring.checked_add(off as u64 + 8) {
                    let _ = self.map.write(at, &lid);
                }
            }
        }
    }

    /// Marks `e`'s slot used (its flags, stored with release: its id and length are
    /// visible first).
    #[inline]
    fn write_flags(&self, e: &Used) {
        let Some(off) = self.used_slot(e) else {
            return;
        };
        let flags = if wrap(e.pos) { F_AVAIL | F_USED } else { 0 };
        match &self.host {
            Some(h) => {
                h.store_u16_release(off + 14, flags);
            }
            None => {
                if let Some(at) = self.ring.checked_add(off as u64 + 14) {
                    let _ =
                        self.map
                            .mem()
                            .store(flags.to_le(), GuestAddress(at), Ordering::Release);
                }
            }
        }
    }

    /// The u16 at `off` of an event suppression area, loaded with acquire.
    fn area_u16(&self, area: u64, off: u64) -> Option<u16> {
        let at = GuestAddress(area.checked_add(off)?);
        self.map
            .mem()
            .load::<u16>(at, Ordering::Acquire)
            .ok()
            .map(u16::from_le)
    }

    /// Whether the driver wants an interrupt for the used entries between positions `old`
    /// and `new`: its event suppression area says ENABLE, or (with RING_EVENT_IDX) DESC at
    /// a position the entries passed.
    pub fn wants_interrupt(&self, event_idx: bool, old: u16, new: u16) -> bool {
        if old == new {
            return false;
        }
        // The used descriptors must be visible before the driver's area is read.
        fence(Ordering::SeqCst);
        let Some(flags) = self.area_u16(self.driver_area, 2) else {
            return true;
        };
        match flags & 3 {
            EVENT_DISABLE => false,
            EVENT_DESC if event_idx => {
                let Some(off_wrap) = self.area_u16(self.driver_area, 0) else {
                    return true;
                };
                event_passed(self.size, off_wrap, old, new)
            }
            _ => true,
        }
    }

    /// Turns the driver's kicks on (ENABLE) or off (DISABLE) in the device's area.
    pub fn set_kicks(&self, on: bool) {
        let flags = if on { EVENT_ENABLE } else { EVENT_DISABLE };
        if let Some(a) = self.device_area.checked_add(2) {
            let _ = self
                .map
                .mem()
                .store(flags.to_le(), GuestAddress(a), Ordering::Release);
        }
    }
}

/// Whether the event position `off_wrap` lies in (old, new] of a ring of `size`: the
/// packed form of EVENT_IDX's test (old and new are positions, at most a ring apart).
pub fn event_passed(size: u16, off_wrap: u16, old: u16, new: u16) -> bool {
    let size = i32::from(size);
    let new_i = i32::from(slot(new));
    let mut old_i = i32::from(slot(old));
    if new_i <= old_i {
        old_i -= size;
    }
    let mut off = i32::from(slot(off_wrap));
    if wrap(off_wrap) != wrap(new) {
        off -= size;
    }
    // vring_need_event: new - off - 1 < new - old, in 16-bit arithmetic.
    ((new_i - off - 1) as u16) < ((new_i - old_i) as u16)
}

/// Descriptor `i` of the table at `table` (host range when it has one).
#[inline]
fn read_desc(map: &GuestMap<'_>, table: u64, host: Option<&HostRange<'_>>, i: u16) -> Option<Desc> {
    let off = usize::from(i) * DESC_SIZE;
    let raw = match host {
        Some(h) => h.read_desc(off)?,
        None => {
            let mut raw = [0u8; 16];
            map.read(table.checked_add(off as u64)?, &mut raw)
                .then_some(raw)?
        }
    };
    // addr, len, id, flags
    Some(Desc {
        addr: u64::from_le_bytes(raw[..8].try_into().ok()?),
        len: u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]),
        flags: u16::from_le_bytes([raw[14], raw[15]]),
        next: u16::from_le_bytes([raw[12], raw[13]]),
    })
}

/// The chains available from a position. Taking them moves the position; `rewind` gives
/// chains back. Stops at the first slot not available, after a ring's worth of slots, or
/// at a run without an end (then `broken`).
pub struct PackedAvail<'a, 'r, 'm> {
    ring: &'a PackedRing<'r, 'm>,
    pos: u16,
    /// Slots taken since the start (at most a ring: used entries must not overlap).
    consumed: u32,
    broken: bool,
}

impl<'r, 'm> Iterator for PackedAvail<'_, 'r, 'm> {
    type Item = PackedChain<'r, 'm>;

    #[inline]
    fn next(&mut self) -> Option<PackedChain<'r, 'm>> {
        if self.broken || !self.ring.is_avail(self.pos) {
            return None;
        }
        let size = self.ring.size;
        let start = self.pos;
        // The run of slots to the first descriptor without NEXT.
        let mut i = slot(start);
        let mut n: u16 = 0;
        let mut head = None;
        let last = loop {
            let d = match self.ring.desc(i) {
                Some(d) => d,
                None => {
                    self.broken = true;
                    return None;
                }
            };
            n += 1;
            if head.is_none() {
                head = Some(d);
            }
            if d.flags & F_NEXT == 0 {
                break d;
            }
            if n >= size {
                self.broken = true;
                return None;
            }
            i = if i + 1 == size { 0 } else { i + 1 };
        };
        if self.consumed + u32::from(n) > u32::from(size) {
            return None;
        }
        self.consumed += u32::from(n);
        self.pos = advance(start, n, size);
        Some(PackedChain {
            map: self.ring.map,
            pos: start,
            id: last.next,
            table: self.ring.ring,
            host: self.ring.host,
            size,
            at: slot(start),
            left: n,
            indirect: false,
            first: true,
            head,
            yielded: 0,
        })
    }
}

impl Avail for PackedAvail<'_, '_, '_> {
    fn cursor(&self) -> u16 {
        self.pos
    }

    /// Gives back every chain taken after position `pos` (an earlier `cursor()`).
    fn rewind(&mut self, pos: u16) {
        let size = u32::from(self.ring.size);
        // Positions cycle through 2 * size values: the slot, plus size when wrapped.
        let linear = |p: u16| u32::from(slot(p)) + if wrap(p) { size } else { 0 };
        let back = (linear(self.pos) + 2 * size - linear(pos)) % (2 * size).max(1);
        self.consumed = self.consumed.saturating_sub(back);
        self.pos = pos;
    }

    /// Whether a chain's run had no end (the ring is unusable).
    fn broken(&self) -> bool {
        self.broken
    }

    /// Counted in slots (chains of one descriptor, as frames almost always are): the
    /// descriptor a few slots further is prefetched, and the buffer of the one `ahead`
    /// slots on when that slot is already available. A hint: a stale or bad descriptor
    /// only prefetches the wrong line.
    #[inline(always)]
    fn prefetch(&self, ahead: u16, write: bool) {
        let (ring, size) = (self.ring, self.ring.size);
        let Some(host) = &ring.host else {
            return;
        };
        if self.broken || ahead >= size {
            return;
        }
        let later = advance(self.pos, ahead, size);
        let ahead2 = advance(later, ahead.min(size - ahead), size);
        host.prefetch(usize::from(slot(ahead2)) * DESC_SIZE);
        if !ring.is_avail(later) {
            return;
        }
        if let Some(d) = ring.desc(slot(later))
            && d.flags & F_INDIRECT == 0
        {
            ring.map.prefetch(d.addr, d.len, write);
        }
    }
}

/// One chain of a packed ring: its slots in order, or its indirect table.
pub struct PackedChain<'r, 'm> {
    map: &'r GuestMap<'m>,
    pos: u16,
    id: u16,
    table: u64,
    host: Option<HostRange<'m>>,
    size: u16,
    /// The next descriptor's index in `table` (ring slots wrap at `size`).
    at: u16,
    /// Descriptors left.
    left: u16,
    indirect: bool,
    first: bool,
    /// The first descriptor, as read when the run was measured (not read twice).
    head: Option<Desc>,
    yielded: u32,
}

impl PackedChain<'_, '_> {
    /// The position of the chain's first slot.
    pub fn pos(&self) -> u16 {
        self.pos
    }

    /// The buffer id (of the chain's last descriptor).
    pub fn id(&self) -> u16 {
        self.id
    }

    fn stop(&mut self) -> Option<Desc> {
        self.left = 0;
        None
    }
}

impl RingChain for PackedChain<'_, '_> {
    /// The used entry for this chain, `len` bytes written.
    #[inline]
    fn used(&self, len: u32) -> Used {
        Used {
            pos: self.pos,
            id: self.id,
            len,
        }
    }
}

impl Iterator for PackedChain<'_, '_> {
    type Item = Desc;

    #[inline(always)]
    fn next(&mut self) -> Option<Desc> {
        loop {
            if self.left == 0 {
                return None;
            }
            let read = match self.head.take() {
                Some(d) => Some(d),
                None => read_desc(self.map, self.table, self.host.as_ref(), self.at),
            };
            let Some(mut d) = read else {
                return self.stop();
            };
            let first = std::mem::replace(&mut self.first, false);
            if !self.indirect && d.flags & F_INDIRECT != 0 {
                // Only a chain's sole descriptor may point to a table, of whole descriptors.
                if !first
                    || self.left != 1
                    || d.len == 0
                    || !d.len.is_multiple_of(DESC_SIZE as u32)
                    || d.len / DESC_SIZE as u32 > u32::from(u16::MAX)
                {
                    return self.stop();
                }
                self.table = d.addr;
                self.host = self.map.host(d.addr, d.len as usize);
                self.size = (d.len / DESC_SIZE as u32) as u16;
                self.at = 0;
                self.left = self.size;
                self.indirect = true;
                continue;
            }
            // Only WRITE counts; NEXT is set on all but the last (in the ring as the run
            // was measured, in a table by position), so a chain cut short ends on NEXT.
            self.left -= 1;
            d.flags = (d.flags & F_WRITE) | if self.left > 0 { F_NEXT } else { 0 };
            self.yielded = match self.yielded.checked_add(d.len) {
                Some(y) => y,
                None => return self.stop(),
            };
            self.at = if !self.indirect && self.at + 1 == self.size {
                0
            } else {
                self.at + 1
            };
            d.next = 0;
            return Some(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use super::*;

    /// Ring at 0 (up to 256 descriptors), areas at 0x1000 and 0x1004, indirect tables at
    /// 0x2000, buffers from 0x4000; a hole from 0x8000, a second region at 0x10000.
    const RING: u64 = 0;
    const DRIVER: u64 = 0x1000;
    const DEVICE: u64 = 0x1004;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x8000), (GuestAddress(0x1_0000), 0x4000)])
            .unwrap()
    }

    fn put_desc(mem: &GuestMemoryMmap, at: u64, addr: u64, len: u32, id: u16, flags: u16) {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&id.to_le_bytes());
        b[14..].copy_from_slice(&flags.to_le_bytes());
        mem.write_slice(&b, GuestAddress(at)).unwrap();
    }

    /// A driver written from the spec's driver-side rules: makes chains available (head
    /// flags last), reads used descriptors back.
    struct Driver {
        size: u16,
        /// Next slot to fill, and the driver's avail wrap counter.
        avail: (u16, bool),
        /// Next slot to read used, and the used wrap counter.
        used: (u16, bool),
        /// Slots each outstanding id took.
        slots: std::collections::HashMap<u16, u16>,
    }

    impl Driver {
        fn new(size: u16) -> Driver {
            Driver {
                size,
                avail: (0, true),
                used: (0, true),
                slots: Default::default(),
            }
        }

        fn flags(w: bool) -> u16 {
            if w { F_AVAIL } else { F_USED }
        }

        /// Adds a chain of buffers (addr, len, device-writable) under `id`.
        fn add(&mut self, mem: &GuestMemoryMmap, id: u16, bufs: &[(u64, u32, bool)]) {
            let (first, first_w) = self.avail;
            let mut head_flags = 0;
            for (k, &(addr, len, write)) in bufs.iter().enumerate() {
                let (i, w) = self.avail;
                let mut f = Self::flags(w) | if write { F_WRITE } else { 0 };
                if k + 1 < bufs.len() {
                    f |= F_NEXT;
                }
                if k == 0 {
                    head_flags = f;
                    put_desc(mem, RING + 16 * u64::from(i), addr, len, id, 0);
                } else {
                    put_desc(mem, RING + 16 * u64::from(i), addr, len, id, f);
                }
                self.avail = if i + 1 == self.size {
                    (0, !w)
                } else {
                    (i + 1, w)
                };
            }
            let _ = first_w;
            // The head's flags last: the whole chain becomes visible at once.
            mem.write_obj(head_flags, GuestAddress(RING + 16 * u64::from(first) + 14))
                .unwrap();
            self.slots.insert(id, bufs.len() as u16);
        }

        /// Adds one indirect descriptor whose table (at `table`) holds `bufs`.
        fn add_indirect(
            &mut self,
            mem: &GuestMemoryMmap,
            id: u16,
            table: u64,
            bufs: &[(u64, u32, bool)],
        ) {
            for (k, &(addr, len, write)) in bufs.iter().enumerate() {
                put_desc(
                    mem,
                    table + 16 * k as u64,
                    addr,
                    len,
                    0,
                    if write { F_WRITE } else { 0 },
                );
            }
            let (i, w) = self.avail;
            put_desc(
                mem,
                RING + 16 * u64::from(i),
                table,
                16 * bufs.len() as u32,
                id,
                0,
            );
            mem.write_obj(
                Self::flags(w) | F_INDIRECT,
                GuestAddress(RING + 16 * u64::from(i) + 14),
            )
            .unwrap();
            self.avail = if i + 1 == self.size {
                (0, !w)
            } else {
                (i + 1, w)
            };
            self.slots.insert(id, 1);
        }

        /// The used descriptors the device wrote since the last call: (id, len).
        fn take_used(&mut self, mem: &GuestMemoryMmap) -> Vec<(u16, u32)> {
            let mut out = Vec::new();
            loop {
                let (i, w) = self.used;
                let at = RING + 16 * u64::from(i);
                let flags: u16 = mem.read_obj(GuestAddress(at + 14)).unwrap();
                let want = if w { F_AVAIL | F_USED } else { 0 };
                if flags & (F_AVAIL | F_USED) != want {
                    return out;
                }
                let id: u16 = mem.read_obj(GuestAddress(at + 12)).unwrap();
                let len: u32 = mem.read_obj(GuestAddress(at + 8)).unwrap();
                let n = self.slots.remove(&id).expect("a used id the driver gave");
                out.push((id, len));
                let j = u32::from(i) + u32::from(n);
                self.used = if j >= u32::from(self.size) {
                    ((j - u32::from(self.size)) as u16, !w)
                } else {
                    (j as u16, w)
                };
            }
        }
    }

    fn pos_of((i, w): (u16, bool)) -> u16 {
        i | if w { WRAP } else { 0 }
    }

    /// A chain as taken: first slot, id, descriptors as (addr, len, write, next).
    type Taken = (u16, u16, Vec<(u64, u32, bool, bool)>);

    /// Takes every available chain; also the position after them and whether the ring broke.
    fn take_all(ring: &PackedRing<'_, '_>, pos: u16) -> (Vec<Taken>, u16, bool) {
        let mut avail = ring.avail(pos);
        let mut out = Vec::new();
        for c in avail.by_ref() {
            let u = c.used(0);
            let descs = c
                .map(|d| (d.addr, d.len, d.is_write_only(), d.has_next()))
                .collect();
            out.push((u.pos, u.id, descs));
        }
        (out, avail.cursor(), avail.broken())
    }

    #[test]
    fn chains_round_trip_with_a_driver_across_many_wraps() {
        let mem = mem();
        let size = 8;
        let map = GuestMap::new(&mem);
        let ring = PackedRing::new(&map, RING, DRIVER, DEVICE, size);
        let mut drv = Driver::new(size);
        let mut pos = pos_of((0, true));
        let mut next_id = 0u16;
        for round in 0..40u16 {
            // 1 to 3 chains of 1 to 3 buffers, some indirect, ids out of order.
            let mut want = Vec::new();
            let mut room = size;
            for k in 0..1 + round % 3 {
                let n = 1 + (round + k) % 3;
                if n > room {
                    break;
                }
                let id = (next_id * 7) % 61;
                next_id += 1;
                let bufs: Vec<(u64, u32, bool)> = (0..n)
                    .map(|j| (0x4000 + 0x100 * u64::from(j + k), 64 + u32::from(j), j > 0))
                    .collect();
                let start = pos_of(drv.avail);
                if (round + k) % 4 == 3 {
                    drv.add_indirect(&mem, id, 0x2000 + 0x100 * u64::from(k), &bufs);
                    room -= 1;
                } else {
                    drv.add(&mem, id, &bufs);
                    room -= n;
                }
                want.push((start, id, bufs));
            }
            let (got, end, broken) = take_all(&ring, pos);
            assert!(!broken);
            assert_eq!(got.len(), want.len(), "round {round}");
            for ((gp, gid, gd), (wp, wid, wb)) in got.iter().zip(&want) {
                assert_eq!((gp, gid), (wp, wid), "round {round}");
                let wd: Vec<_> = wb
                    .iter()
                    .enumerate()
                    .map(|(j, &(a, l, w))| (a, l, w, j + 1 < wb.len()))
                    .collect();
                assert_eq!(gd, &wd, "round {round}");
            }
            assert_eq!(end, pos_of(drv.avail), "the position follows the driver's");
            // Nothing more until the driver adds more.
            assert!(ring.avail(end).next().is_none());
            let used: Vec<Used> = got
                .iter()
                .enumerate()
                .map(|(j, (p, id, _))| Used {
                    pos: *p,
                    id: *id,
                    len: 100 + j as u32,
                })
                .collect();
            ring.publish(&used);
            let back = drv.take_used(&mem);
            let want_back: Vec<(u16, u32)> = used.iter().map(|u| (u.id, u.len)).collect();
            assert_eq!(back, want_back, "round {round}");
            pos = end;
        }
        assert!(wrap(pos) == drv.avail.1 && drv.used == drv.avail);
    }

    #[test]
    fn rewind_gives_chains_back_and_a_ring_is_taken_at_most_once() {
        let mem = mem();
        let size = 4;
        let map = GuestMap::new(&mem);
        let ring = PackedRing::new(&map, RING, DRIVER, DEVICE, size);
        let mut drv = Driver::new(size);
        // Start near the end so the chains cross it.
        drv.avail = (3, true);
        drv.used = (3, true);
        let start = pos_of((3, true));
        drv.add(&mem, 1, &[(0x4000, 10, true), (0x4100, 10, true)]);
        drv.add(&mem, 2, &[(0x4200, 10, true), (0x4300, 10, true)]);
        let mut avail = ring.avail(start);
        let a = avail.next().unwrap();
        assert_eq!((a.pos(), a.id()), (start, 1));
        let mid = avail.cursor();
        assert_eq!(mid, pos_of((1, false)));
        let b = avail.next().unwrap();
        assert_eq!((b.pos(), b.id()), (mid, 2));
        assert_eq!(avail.cursor(), pos_of((3, false)));
        avail.rewind(mid);
        assert_eq!(avail.next().map(|c| c.id()), Some(2));
        avail.rewind(start);
        assert_eq!(avail.next().map(|c| c.id()), Some(1));
        assert_eq!(avail.next().map(|c| c.id()), Some(2));
        // A ring's worth taken: nothing more in this walk, even if slots looked available.
        assert!(avail.next().is_none());
    }

    #[test]
    fn bad_chains_end_on_next_and_endless_runs_break_the_ring() {
        let mem = mem();
        let size = 4;
        let map = GuestMap::new(&mem);
        let ring = PackedRing::new(&map, RING, DRIVER, DEVICE, size);
        let av = F_AVAIL;
        // Indirect with NEXT, then a plain one: the first yields nothing and takes 2 slots.
        put_desc(&mem, RING, 0x2000, 32, 0, av | F_INDIRECT | F_NEXT);
        put_desc(&mem, RING + 16, 0x4000, 8, 5, av);
        put_desc(&mem, RING + 32, 0x4000, 8, 6, av);
        put_desc(&mem, RING + 48, 0, 0, 0, 0);
        let (got, end, broken) = take_all(&ring, WRAP);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0, got[0].1, got[0].2.len()), (WRAP, 5, 0));
        assert_eq!((got[1].0, got[1].1), (WRAP | 2, 6));
        assert_eq!((end, broken), (WRAP | 3, false));
        // An indirect table outside memory, of a partial descriptor, or empty.
        for (addr, len) in [(0x7ff8u64, 32u32), (0x2000, 24), (0x2000, 0)] {
            put_desc(&mem, RING, addr, len, 9, av | F_INDIRECT);
            let (got, _, _) = take_all(&ring, WRAP);
            assert!(got[0].2.is_empty(), "table {addr:#x}+{len}");
        }
        // INDIRECT on a second descriptor: cut short, the last yielded says NEXT.
        put_desc(&mem, RING, 0x4000, 8, 0, av | F_NEXT);
        put_desc(&mem, RING + 16, 0x2000, 16, 3, av | F_INDIRECT);
        let (got, _, _) = take_all(&ring, WRAP);
        assert_eq!(got[0].2, vec![(0x4000, 8, false, true)]);
        // Every slot says NEXT: no chain end, the ring is broken.
        for i in 0..4 {
            put_desc(&mem, RING + 16 * i, 0x4000, 8, 0, av | F_NEXT);
        }
        let (got, end, broken) = take_all(&ring, WRAP);
        assert!(got.is_empty() && broken && end == WRAP);
        // A position outside the ring (from SET_VRING_BASE) takes nothing.
        let (got, _, broken) = take_all(&ring, WRAP | 9);
        assert!(got.is_empty() && broken);
    }

    #[test]
    fn hostile_rings_never_read_or_write_outside_and_stay_within_a_ring() {
        let mem = mem();
        let map = GuestMap::new(&mem);
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let size = 1 + (rnd() % 16) as u16;
            for i in 0..u64::from(size) {
                let r = rnd();
                let addr = match r % 4 {
                    0 => 0x2000 + (r >> 8) % 0x100 * 16,
                    1 => 0x7ff0 + (r >> 8) % 0x40,
                    2 => 0x1_0000 + (r >> 8) % 0x4000,
                    _ => r,
                };
                let flags = (rnd() as u16) & (F_NEXT | F_WRITE | F_INDIRECT | F_AVAIL | F_USED);
                put_desc(
                    &mem,
                    RING + 16 * i,
                    addr,
                    (rnd() % 0x90) as u32,
                    rnd() as u16,
                    flags,
                );
            }
            for k in 0..64u64 {
                put_desc(&mem, 0x2000 + 16 * k, rnd(), rnd() as u32, 0, rnd() as u16);
            }
            let ring = PackedRing::new(&map, RING, DRIVER, DEVICE, size);
            let pos = (rnd() as u16 % size) | if rnd() & 1 == 0 { WRAP } else { 0 };
            let (got, end, _) = take_all(&ring, pos);
            let slots: u32 = got
                .windows(2)
                .map(|w| {
                    let l = |p: u16| u32::from(slot(p)) + if wrap(p) { u32::from(size) } else { 0 };
                    (l(w[1].0) + 2 * u32::from(size) - l(w[0].0)) % (2 * u32::from(size))
                })
                .sum();
            assert!(slots <= u32::from(size));
            for (_, _, d) in &got {
                let total: u64 = d.iter().map(|x| u64::from(x.1)).sum();
                assert!(total <= u64::from(u32::MAX));
                assert!(
                    d.iter().rev().skip(1).all(|x| x.3),
                    "NEXT on all but the last"
                );
            }
            // Publishing writes only the ring's slots.
            let before: Vec<u8> = {
                let mut b = vec![0u8; 0x8000];
                mem.read_slice(&mut b, GuestAddress(0)).unwrap();
                b
            };
            let used: Vec<Used> = got
                .iter()
                .map(|(p, id, _)| Used {
                    pos: *p,
                    id: *id,
                    len: 1,
                })
                .collect();
            ring.publish(&used);
            let mut after = vec![0u8; 0x8000];
            mem.read_slice(&mut after, GuestAddress(0)).unwrap();
            let ring_end = 16 * usize::from(size);
            assert!(
                before[ring_end..] == after[ring_end..],
                "wrote outside the ring"
            );
            let _ = end;
        }
    }

    #[test]
    fn event_position_is_passed_exactly_when_the_used_position_moves_over_it() {
        // Positions as a count modulo 2 * size (slot, plus size when wrapped).
        for size in [1u16, 2, 3, 8, 256] {
            let n = 2 * u32::from(size);
            let pos = |l: u32| {
                let l = l % n;
                if l >= u32::from(size) {
                    (l - u32::from(size)) as u16 | WRAP
                } else {
                    l as u16
                }
            };
            for old in 0..n {
                for step in 1..=u32::from(size) {
                    let new = old + step;
                    for ev in old.saturating_sub(u32::from(size))..new + u32::from(size) {
                        // The driver's event lies within a ring of the used position.
                        if ev + u32::from(size) < new || ev >= new + u32::from(size) {
                            continue;
                        }
                        let want = old <= ev && ev < new;
                        let got = event_passed(size, pos(ev), pos(old), pos(new));
                        assert_eq!(got, want, "size {size} old {old} new {new} event {ev}");
                    }
                }
            }
        }
    }

    #[test]
    fn interrupts_and_kicks_follow_the_event_suppression_areas() {
        let mem = mem();
        let map = GuestMap::new(&mem);
        let ring = PackedRing::new(&map, RING, DRIVER, DEVICE, 8);
        let set = |off_wrap: u16, flags: u16| {
            mem.write_obj(off_wrap, GuestAddress(DRIVER)).unwrap();
            mem.write_obj(flags, GuestAddress(DRIVER + 2)).unwrap();
        };
        set(0, EVENT_ENABLE);
        assert!(ring.wants_interrupt(false, WRAP, WRAP | 2));
        assert!(!ring.wants_interrupt(false, WRAP, WRAP), "nothing used");
        set(0, EVENT_DISABLE);
        assert!(!ring.wants_interrupt(true, WRAP, WRAP | 2));
        set(WRAP | 1, EVENT_DESC);
        assert!(ring.wants_interrupt(true, WRAP, WRAP | 2));
        assert!(!ring.wants_interrupt(true, WRAP | 2, WRAP | 4));
        // DESC without RING_EVENT_IDX is not the driver's to ask: interrupt.
        assert!(ring.wants_interrupt(false, WRAP | 2, WRAP | 4));
        ring.set_kicks(false);
        assert_eq!(
            mem.read_obj::<u16>(GuestAddress(DEVICE + 2)).unwrap(),
            EVENT_DISABLE
        );
        ring.set_kicks(true);
        assert_eq!(
            mem.read_obj::<u16>(GuestAddress(DEVICE + 2)).unwrap(),
            EVENT_ENABLE
        );
        // After turning kicks on, a chain made available meanwhile is seen.
        assert!(!ring.has_avail(WRAP));
        let mut drv = Driver::new(8);
        drv.add(&mem, 4, &[(0x4000, 8, false)]);
        assert!(ring.has_avail(WRAP));
    }
}
