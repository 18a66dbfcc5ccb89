//! The guest's memory table as one batch sees it: regions sorted by guest address, each with
//! its mapping, and the region of the last translation remembered (consecutive buffers of
//! one guest almost always share a region).
//!
//! Invariant: a translated range lies entirely inside one region; ranges that cross into
//! another region or a hole, or lie past the regions the map holds, go through vm-memory,
//! with its exact semantics.

use std::cell::Cell;

use arrayvec::ArrayVec;

use super::host::{HostRange, copy_from_guest, copy_to_guest};

use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MemoryRegionAddress, VolatileSlice,
};

/// One region: [start, end) in guest addresses, and its mapping.
struct Span<'m> {
    start: u64,
    end: u64,
    region: &'m GuestRegionMmap,
}

/// Regions the map holds (vhost-user's classic table size); a memory with more keeps its
/// first ones here and reaches the others through vm-memory.
const MAX_SPANS: usize = 8;

/// The guest's memory, for one batch (built on the stack: no allocation per batch).
pub struct GuestMap<'m> {
    mem: &'m GuestMemoryMmap,
    spans: ArrayVec<Span<'m>, MAX_SPANS>,
    last: Cell<usize>,
}

impl<'m> GuestMap<'m> {
    /// The map of `mem` (its regions are sorted and do not overlap: vm-memory checks that).
    /// Inlined: built in the caller's frame, not copied out whole (8 spans) on return.
    #[inline(always)]
    pub fn new(mem: &'m GuestMemoryMmap) -> GuestMap<'m> {
        let spans = mem
            .iter()
            .take(MAX_SPANS)
            .map(|r| Span {
                start: r.start_addr().0,
                end: r.start_addr().0.saturating_add(r.len()),
                region: r,
            })
            .collect();
        GuestMap {
            mem,
            spans,
            last: Cell::new(0),
        }
    }

    /// The memory itself, for what the map does not translate.
    pub fn mem(&self) -> &'m GuestMemoryMmap {
        self.mem
    }

    /// The region holding `addr`, if any.
    #[inline]
    fn span(&self, addr: u64) -> Option<&Span<'m>> {
        let last = self.last.get();
        if let Some(s) = self.spans.get(last)
            && s.start <= addr
            && addr < s.end
        {
            return Some(s);
        }
        let i = self.spans.partition_point(|s| s.end <= addr);
        let s = self.spans.get(i).filter(|s| s.start <= addr)?;
        self.last.set(i);
        Some(s)
    }

    /// `len` bytes at guest address `addr`, when they lie in one region.
    #[inline]
    pub fn slice(&self, addr: u64, len: usize) -> Option<VolatileSlice<'m>> {
        let s = self.span(addr)?;
        let end = addr.checked_add(len as u64)?;
        if end > s.end {
            return None;
        }
        s.region
            .get_slice(MemoryRegionAddress(addr - s.start), len)
            .ok()
    }

    /// `len` bytes at `addr` as a host range, if they lie inside one region.
    #[inline]
    pub fn host(&self, addr: u64, len: usize) -> Option<HostRange<'m>> {
        HostRange::of_slice(&self.slice(addr, len)?)
    }

    /// Prefetches the cache lines holding `len` bytes at `addr` (at most the first two):
    /// for writing with `write`. A hint: nothing for bytes outside guest memory.
    #[inline]
    pub fn prefetch(&self, addr: u64, len: u32, write: bool) {
        let Some(s) = self.span(addr) else {
            return;
        };
        // The bytes wanted that lie in this region, at most two lines' worth.
        let n = u64::from(len).min(s.end - addr).min(128) as usize;
        let Some(h) = (n > 0)
            .then(|| {
                s.region
                    .get_slice(MemoryRegionAddress(addr - s.start), n)
                    .ok()
            })
            .flatten()
            .and_then(|v| HostRange::of_slice(&v))
        else {
            return;
        };
        // The second line, if the bytes reach into it.
        let second = 64 - (addr % 64) as usize;
        if write {
            h.prefetch_write(0);
            h.prefetch_write(second);
        } else {
            h.prefetch(0);
            h.prefetch(second);
        }
    }

    /// Reads `buf.len()` bytes at `addr`: from one region directly, else as vm-memory
    /// reads (across adjacent regions). False if any byte lies outside guest memory.
    #[inline]
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        match self.slice(addr, buf.len()) {
            Some(s) => {
                copy_from_guest(&s, buf);
                true
            }
            None => self.mem.read_slice(buf, GuestAddress(addr)).is_ok(),
        }
    }

    /// Writes `buf` at `addr`, as `read` reads. False (and nothing written) if any byte
    /// lies outside guest memory.
    #[inline]
    pub fn write(&self, addr: u64, buf: &[u8]) -> bool {
        match self.slice(addr, buf.len()) {
            Some(s) => {
                copy_to_guest(&s, buf);
                true
            }
            None => {
                // Checked whole first: vm-memory's write_slice may stop part-way.
                self.mem.check_range(GuestAddress(addr), buf.len())
                    && self.mem.write_slice(buf, GuestAddress(addr)).is_ok()
            }
        }
    }
}

impl<'m> GuestMap<'m> {
    /// Calls `f` with the pieces of guest memory that hold `len` bytes at `addr`: one slice
    /// when they lie in one region (the common case, translated through the map), several
    /// when they straddle regions. Fails at the first byte outside guest memory.
    #[inline]
    pub fn pieces(
        &self,
        addr: u64,
        len: usize,
        mut f: impl FnMut(VolatileSlice<'m>),
    ) -> Result<(), vm_memory::GuestMemoryError> {
        match self.slice(addr, len).filter(|_| len != 0) {
            Some(s) => {
                f(s);
                Ok(())
            }
            None => for_each_piece(self.mem, GuestAddress(addr), len, f),
        }
    }
}

/// Calls `f` with the pieces of guest memory that hold `len` bytes at `addr`: one slice in
/// the common case (one translation), several when the range straddles memory regions.
/// Fails at the first byte outside guest memory.
pub(crate) fn for_each_piece<'a>(
    mem: &'a GuestMemoryMmap,
    addr: GuestAddress,
    len: usize,
    mut f: impl FnMut(VolatileSlice<'a>),
) -> Result<(), vm_memory::GuestMemoryError> {
    if len == 0 {
        return Ok(());
    }
    if let Ok(s) = mem.get_slice(addr, len) {
        f(s);
        return Ok(());
    }
    for piece in mem.get_slices(addr, len) {
        f(piece?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two regions with a hole between them and one right after the second.
    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x3000), 0x1000),
            (GuestAddress(0x4000), 0x1000),
        ])
        .unwrap()
    }

    /// Prefetch hints take any address and length a guest can write in a descriptor: inside
    /// a region, across its end, in the hole, past the memory, at the top of the address
    /// space; nothing is read or written, nothing panics, and the memory is unchanged.
    #[test]
    fn prefetching_any_guest_address_is_harmless() {
        let mem = mem();
        let map = GuestMap::new(&mem);
        map.write(0xff0, &[7; 16]);
        let lens = [0u32, 1, 63, 64, 65, 200, u32::MAX];
        let addrs =
            (0..0x5200u64)
                .step_by(0x3f)
                .chain([0xfff, 0x2fff, 0x4fc1, u64::MAX - 1, u64::MAX]);
        for addr in addrs {
            for len in lens {
                map.prefetch(addr, len, false);
                map.prefetch(addr, len, true);
            }
        }
        let mut back = [0u8; 16];
        assert!(map.read(0xff0, &mut back));
        assert_eq!(back, [7; 16]);
        let h = map.host(0x3000, 0x100).unwrap();
        for off in [0, 0xff, 0x100, usize::MAX] {
            h.prefetch(off);
            h.prefetch_write(off);
        }
    }

    #[test]
    fn slices_agree_with_vm_memory_inside_regions_and_stop_at_their_edges() {
        let mem = mem();
        let map = GuestMap::new(&mem);
        for addr in (0..0x5100u64).step_by(0x7f) {
            for len in [0usize, 1, 16, 0x80, 0x1000] {
                let ours = map
                    .slice(addr, len)
                    .map(|s| (s.ptr_guard().as_ptr(), s.len()));
                let in_one = [(0u64, 0x1000u64), (0x3000, 0x4000), (0x4000, 0x5000)]
                    .iter()
                    .any(|&(a, b)| a <= addr && addr < b && addr + len as u64 <= b);
                let theirs = mem
                    .get_slice(GuestAddress(addr), len)
                    .ok()
                    .filter(|_| in_one)
                    .map(|s| (s.ptr_guard().as_ptr(), s.len()));
                assert_eq!(ours, theirs, "addr {addr:#x} len {len}");
            }
        }
    }

    #[test]
    fn reads_cross_adjacent_regions_but_not_holes() {
        let mem = mem();
        mem.write_slice(&[7u8; 8], GuestAddress(0x3ffc)).unwrap();
        let map = GuestMap::new(&mem);
        let mut buf = [0u8; 8];
        assert!(map.read(0x3ffc, &mut buf));
        assert_eq!(buf, [7u8; 8]);
        assert!(!map.read(0xffc, &mut buf));
        assert!(!map.read(0x4ffc, &mut buf));
        assert!(!map.read(u64::MAX - 2, &mut buf));
    }

    #[test]
    fn writes_cross_adjacent_regions_and_write_nothing_when_any_byte_is_outside() {
        let mem = mem();
        let map = GuestMap::new(&mem);
        assert!(map.write(0x3ffc, &[5u8; 8]));
        let mut buf = [0u8; 8];
        mem.read_slice(&mut buf, GuestAddress(0x3ffc)).unwrap();
        assert_eq!(buf, [5u8; 8]);
        // Into the hole after region 0, past the end, and wrapping the address space.
        assert!(!map.write(0xffc, &[6u8; 8]));
        assert!(!map.write(0x4ffc, &[6u8; 8]));
        assert!(!map.write(u64::MAX - 2, &[6u8; 8]));
        let mut edge = [0u8; 4];
        mem.read_slice(&mut edge, GuestAddress(0xffc)).unwrap();
        assert_eq!(edge, [0u8; 4], "nothing written before the hole");
        mem.read_slice(&mut edge, GuestAddress(0x4ffc)).unwrap();
        assert_eq!(edge, [0u8; 4], "nothing written before the end");
    }

    #[test]
    fn regions_past_the_map_s_table_are_reached_through_vm_memory() {
        let ranges: Vec<(GuestAddress, usize)> = (0..12u64)
            .map(|i| (GuestAddress(i * 0x2000), 0x1000))
            .collect();
        let mem = GuestMemoryMmap::from_ranges(&ranges).unwrap();
        mem.write_slice(&[9u8; 4], GuestAddress(11 * 0x2000 + 8))
            .unwrap();
        let map = GuestMap::new(&mem);
        let mut buf = [0u8; 4];
        assert!(map.read(11 * 0x2000 + 8, &mut buf));
        assert_eq!(buf, [9u8; 4]);
        let mut pieces = 0;
        map.pieces(11 * 0x2000, 0x100, |s| pieces += s.len())
            .unwrap();
        assert_eq!(pieces, 0x100);
        assert!(!map.read(11 * 0x2000 + 0x1000, &mut buf));
    }
}
