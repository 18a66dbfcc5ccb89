//! Guest memory reached through host pointers: the only `unsafe` of the fast path.
//!
//! A `HostRange` is a range of guest memory already translated (and bounds-checked against
//! the guest's memory table) by `GuestMap`, valid as long as the memory it came from
//! (`'m`). Every access checks its offset against the range; ring fields are read and
//! written with volatile accesses (the guest writes them concurrently), the indices with
//! atomic acquire loads and release stores as the virtio spec orders them. Frame bytes are
//! copied with `memcpy`/`memmove`: the guest may change them while they are copied, which
//! only changes what is copied.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use vm_memory::VolatileSlice;

/// A translated range of guest memory.
#[derive(Clone, Copy)]
pub struct HostRange<'m> {
    ptr: NonNull<u8>,
    len: usize,
    _mem: PhantomData<&'m [u8]>,
}

impl<'m> HostRange<'m> {
    /// The range a `VolatileSlice` of the guest's memory covers.
    pub fn of_slice(s: &VolatileSlice<'m>) -> Option<HostRange<'m>> {
        Some(HostRange {
            ptr: NonNull::new(s.ptr_guard_mut().as_ptr())?,
            len: s.len(),
            _mem: PhantomData,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pointer to `n` bytes at `off`, if they lie inside the range.
    #[inline]
    fn at(&self, off: usize, n: usize) -> Option<*mut u8> {
        let end = off.checked_add(n)?;
        if end > self.len {
            return None;
        }
        // SAFETY: off + n <= len, so the result stays inside the range (one allocation:
        // a mapping of the guest's memory).
        Some(unsafe { self.ptr.as_ptr().add(off) })
    }

    /// `N` bytes at `off`, read once (volatile).
    #[inline]
    pub fn read<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let p = self.at(off, N)?;
        // SAFETY: `p..p+N` is inside the mapped range (checked by `at`), valid for reads for
        // 'm; [u8; N] has alignment 1, and any bytes are a valid value.
        Some(unsafe { std::ptr::read_volatile(p as *const [u8; N]) })
    }

    /// A descriptor (16 bytes) at `off`, read once: as two 8-byte loads when aligned (a
    /// table is 16-aligned by the spec), byte by byte otherwise.
    #[inline]
    pub fn read_desc(&self, off: usize) -> Option<[u8; 16]> {
        let p = self.at(off, 16)?;
        if !(p as usize).is_multiple_of(8) {
            return self.read::<16>(off);
        }
        // SAFETY: 16 in-range bytes (checked by `at`), 8-aligned (checked), valid for reads
        // for 'm; any bits are a valid u64.
        let (a, b) = unsafe {
            (
                std::ptr::read_volatile(p as *const u64),
                std::ptr::read_volatile(p.add(8) as *const u64),
            )
        };
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&a.to_ne_bytes());
        out[8..].copy_from_slice(&b.to_ne_bytes());
        Some(out)
    }

    /// Writes a used element (id, len, little-endian) at `off`: two 4-byte stores when
    /// aligned (a used ring is 4-aligned by the spec), byte by byte otherwise. False if it
    /// does not fit.
    #[inline]
    pub fn write_used_elem(&self, off: usize, id: u32, len: u32) -> bool {
        let Some(p) = self.at(off, 8) else {
            return false;
        };
        if !(p as usize).is_multiple_of(4) {
            let mut elem = [0u8; 8];
            elem[..4].copy_from_slice(&id.to_le_bytes());
            elem[4..].copy_from_slice(&len.to_le_bytes());
            return self.write(off, elem);
        }
        // SAFETY: 8 in-range bytes of writable shared memory, 4-aligned (checked).
        unsafe {
            std::ptr::write_volatile(p as *mut u32, id.to_le());
            std::ptr::write_volatile(p.add(4) as *mut u32, len.to_le());
        }
        true
    }

    /// Writes `N` bytes at `off` (volatile). False if they do not fit.
    #[inline]
    pub fn write<const N: usize>(&self, off: usize, v: [u8; N]) -> bool {
        let Some(p) = self.at(off, N) else {
            return false;
        };
        // SAFETY: `p..p+N` is inside the mapped range, which is writable shared memory;
        // alignment 1.
        unsafe { std::ptr::write_volatile(p as *mut [u8; N], v) };
        true
    }

    /// The little-endian u16 at `off`, loaded with acquire ordering (a ring index: what the
    /// guest wrote before it is visible after). None if outside or misaligned.
    #[inline]
    pub fn load_u16_acquire(&self, off: usize) -> Option<u16> {
        let p = self.at(off, 2)?;
        if !(p as usize).is_multiple_of(2) {
            return None;
        }
        // SAFETY: two in-range bytes, 2-aligned (checked), valid for 'm; AtomicU16 has the
        // size and alignment of u16, and the guest accesses the index atomically too.
        let a = unsafe { AtomicU16::from_ptr(p as *mut u16) };
        Some(u16::from_le(a.load(Ordering::Acquire)))
    }

    /// Stores the little-endian u16 `v` at `off` with release ordering (a used index: the
    /// entries written before are visible to the guest first). False if outside or
    /// misaligned.
    #[inline]
    pub fn store_u16_release(&self, off: usize, v: u16) -> bool {
        let Some(p) = self.at(off, 2) else {
            return false;
        };
        if !(p as usize).is_multiple_of(2) {
            return false;
        }
        // SAFETY: as in `load_u16_acquire`; the range is writable shared memory.
        let a = unsafe { AtomicU16::from_ptr(p as *mut u16) };
        a.store(v.to_le(), Ordering::Release);
        true
    }

    /// Asks the CPU to bring the cache line holding byte `off` closer, for reading; nothing
    /// when `off` lies outside the range.
    #[inline(always)]
    pub fn prefetch(&self, off: usize) {
        if let Some(p) = self.at(off, 1) {
            prefetch_read(p);
        }
    }

    /// As `prefetch`, for writing: the line is fetched exclusive where the CPU can
    /// (PREFETCHW), so the stores that follow do not wait for the guest's CPU to give it up.
    #[inline(always)]
    pub fn prefetch_write(&self, off: usize) {
        if let Some(p) = self.at(off, 1) {
            prefetch_write(p);
        }
    }
}

/// Copies `n` bytes from `src` to `dst`, which may overlap: inline for up to 64 bytes (every
/// byte loaded before any is stored, in at most four 16-byte moves), else `memmove`. Frames'
/// headers and small frames are copied four times per frame; calling `memmove` for each cost
/// a tenth of the data path's time in the profile.
///
/// # Safety
/// `src` valid for reads and `dst` for writes of `n` bytes.
#[inline(always)]
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, n: usize) {
    // SAFETY: in every branch all offsets stay below `n`, so every access lies inside the two
    // ranges the caller vouches for; unaligned reads and writes of byte arrays.
    unsafe {
        use std::ptr::{read_unaligned as rd, write_unaligned as wr};
        type B16 = [u8; 16];
        type B8 = [u8; 8];
        type B4 = [u8; 4];
        if n > 64 {
            std::ptr::copy(src, dst, n);
        } else if n >= 32 {
            let (a, b) = (rd(src as *const B16), rd(src.add(16) as *const B16));
            let (c, d) = (
                rd(src.add(n - 32) as *const B16),
                rd(src.add(n - 16) as *const B16),
            );
            wr(dst as *mut B16, a);
            wr(dst.add(16) as *mut B16, b);
            wr(dst.add(n - 32) as *mut B16, c);
            wr(dst.add(n - 16) as *mut B16, d);
        } else if n >= 16 {
            let (a, b) = (rd(src as *const B16), rd(src.add(n - 16) as *const B16));
            wr(dst as *mut B16, a);
            wr(dst.add(n - 16) as *mut B16, b);
        } else if n >= 8 {
            let (a, b) = (rd(src as *const B8), rd(src.add(n - 8) as *const B8));
            wr(dst as *mut B8, a);
            wr(dst.add(n - 8) as *mut B8, b);
        } else if n >= 4 {
            let (a, b) = (rd(src as *const B4), rd(src.add(n - 4) as *const B4));
            wr(dst as *mut B4, a);
            wr(dst.add(n - 4) as *mut B4, b);
        } else {
            let mut t = [0u8; 3];
            for (i, v) in t.iter_mut().enumerate().take(n) {
                *v = *src.add(i);
            }
            for (i, v) in t.iter().enumerate().take(n) {
                *dst.add(i) = *v;
            }
        }
    }
}

/// Copies the start of guest memory `src` into `dst`; returns the bytes copied.
#[inline]
pub fn copy_from_guest(src: &VolatileSlice<'_>, dst: &mut [u8]) -> usize {
    let n = src.len().min(dst.len());
    if n != 0 {
        // SAFETY: `src` is valid for reads of its len >= n bytes (a VolatileSlice of mapped
        // guest memory), `dst` for writes of n; they cannot overlap (dst is vfabric's own
        // memory, never a guest mapping).
        unsafe { copy_bytes(src.ptr_guard().as_ptr(), dst.as_mut_ptr(), n) };
    }
    n
}

/// Copies the start of `src` into guest memory `dst`; returns the bytes copied.
#[inline]
pub fn copy_to_guest(dst: &VolatileSlice<'_>, src: &[u8]) -> usize {
    let n = src.len().min(dst.len());
    if n != 0 {
        // SAFETY: `dst` is valid for writes of its len >= n bytes (mapped, writable guest
        // memory), `src` for reads of n; no overlap (src is vfabric's own memory).
        unsafe { copy_bytes(src.as_ptr(), dst.ptr_guard_mut().as_ptr(), n) };
    }
    n
}

/// Copies the start of guest memory `src` into guest memory `dst` (the same guest's or
/// another's, possibly overlapping); returns the bytes copied.
#[inline]
pub fn copy_guest_to_guest(dst: &VolatileSlice<'_>, src: &VolatileSlice<'_>) -> usize {
    let n = src.len().min(dst.len());
    if n != 0 {
        // SAFETY: both valid for n bytes (reads, writes); `copy` allows overlap, which a
        // guest can arrange by pointing an RX buffer at its own TX buffer.
        unsafe { copy_bytes(src.ptr_guard().as_ptr(), dst.ptr_guard_mut().as_ptr(), n) };
    }
    n
}

/// Whether this CPU has PREFETCHW (CPUID 0x8000_0001, ECX bit 8: "3DNowPrefetch", which
/// Intel sets too since Broadwell): 0 not looked at yet, 1 no, 2 yes.
#[cfg(target_arch = "x86_64")]
static PREFETCHW: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

#[cfg(target_arch = "x86_64")]
#[cold]
fn detect_prefetchw() -> bool {
    // CPUID is available on every x86_64 CPU; leaf 0x8000_0001 exists when the maximum
    // extended leaf (leaf 0x8000_0000's EAX) reaches it.
    let max = std::arch::x86_64::__cpuid(0x8000_0000).eax;
    let has = max >= 0x8000_0001 && std::arch::x86_64::__cpuid(0x8000_0001).ecx & (1 << 8) != 0;
    PREFETCHW.store(
        if has { 2 } else { 1 },
        std::sync::atomic::Ordering::Relaxed,
    );
    has
}

/// A read prefetch of the line holding `p` (a hint: it never faults, loads nothing into
/// registers and changes no memory).
#[inline(always)]
fn prefetch_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is in SSE, which every x86_64 CPU has; a prefetch does not access
    // memory architecturally (no fault, no value), whatever `p` is.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A write prefetch of the line holding `p`: PREFETCHW where the CPU has it, else a read
/// prefetch.
#[inline(always)]
fn prefetch_write(p: *mut u8) {
    #[cfg(target_arch = "x86_64")]
    {
        let has = match PREFETCHW.load(std::sync::atomic::Ordering::Relaxed) {
            0 => detect_prefetchw(),
            v => v == 2,
        };
        if has {
            // SAFETY: the CPU has PREFETCHW (checked above); like every prefetch it neither
            // faults nor changes memory, whatever `p` is, and it touches no stack or flags.
            unsafe {
                std::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly))
            };
            return;
        }
    }
    prefetch_read(p);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_stay_inside_the_range_and_respect_alignment() {
        let mut buf = [0u8; 32];
        let s = VolatileSlice::from(&mut buf[4..20]);
        let r = HostRange::of_slice(&s).unwrap();
        assert_eq!(r.len(), 16);
        assert!(r.write(0, [1u8, 2, 3, 4]));
        assert!(r.write(12, [9u8; 4]));
        assert!(!r.write(13, [9u8; 4]));
        assert!(!r.write(usize::MAX, [9u8; 4]));
        assert_eq!(r.read::<4>(0), Some([1, 2, 3, 4]));
        assert_eq!(r.read::<4>(13), None);
        assert!(r.store_u16_release(2, 0x1234));
        assert_eq!(r.load_u16_acquire(2), Some(0x1234));
        assert_eq!(r.read::<2>(2), Some(0x1234u16.to_le_bytes()));
        assert_eq!(r.load_u16_acquire(15), None);
        assert!(r.write_used_elem(4, 0x0102_0304, 0x0506_0708));
        assert!(!r.write_used_elem(9, 1, 1));
        let mut want = [0u8; 16];
        want[..4].copy_from_slice(&[1, 2, 0x34, 0x12]);
        want[4..8].copy_from_slice(&0x0102_0304u32.to_le_bytes());
        want[8..12].copy_from_slice(&0x0506_0708u32.to_le_bytes());
        want[12..].copy_from_slice(&[9u8; 4]);
        assert_eq!(r.read_desc(0), Some(want));
        assert_eq!(r.read_desc(1), None);
        assert!(!r.store_u16_release(15, 1));
        assert_eq!(&buf[4..8], &[1, 2, 0x34, 0x12]);
        assert_eq!(&buf[16..20], &[9u8; 4]);
        assert_eq!(buf[20], 0);
    }

    #[test]
    fn small_and_large_copies_equal_memmove_at_every_length_and_overlap() {
        for n in 0..=80usize {
            for (from, to) in [(0usize, 100usize), (0, 3), (3, 0), (0, 17), (17, 0), (5, 5)] {
                let mut a: Vec<u8> = (0..200u32).map(|i| (i * 7 + 1) as u8).collect();
                let mut b = a.clone();
                // SAFETY: from + n and to + n stay below 200.
                unsafe {
                    copy_bytes(a.as_ptr().add(from), a.as_mut_ptr().add(to), n);
                    std::ptr::copy(b.as_ptr().add(from), b.as_mut_ptr().add(to), n);
                }
                assert_eq!(a, b, "n {n} from {from} to {to}");
            }
        }
    }

    #[test]
    fn copies_take_the_shorter_length_and_allow_overlap_between_guest_pieces() {
        let mut g = [0u8; 16];
        for (i, b) in g.iter_mut().enumerate() {
            *b = i as u8;
        }
        let s = VolatileSlice::from(&mut g[..]);
        let mut out = [0u8; 4];
        assert_eq!(copy_from_guest(&s, &mut out), 4);
        assert_eq!(out, [0, 1, 2, 3]);
        let (a, b) = (s.subslice(0, 8).unwrap(), s.subslice(2, 8).unwrap());
        assert_eq!(copy_guest_to_guest(&b, &a), 8);
        assert_eq!(copy_to_guest(&s.subslice(14, 2).unwrap(), &[7, 7, 7]), 2);
        assert_eq!(&g[..12], &[0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 10, 11]);
        assert_eq!(&g[14..], &[7, 7]);
    }
}
