//! Guest memory that its VMM shrinks: a VMM that truncates a shared memory file after handing
//! it over makes the next access to the cut part raise SIGBUS, which would end vfabric with
//! every other port and disk. Guest mappings are registered here (`Guard`); a SIGBUS inside
//! one maps an anonymous page over the faulting page, so the access completes (reading zeros,
//! or writing into memory no guest sees), and counts a fault against that mapping. The
//! connection that owns it sees `Guard::faulted` after its batch and stops serving its guest.
//! A SIGBUS anywhere else goes to the handler that was there before (or the default: the
//! process ends, as it would have).
//!
//! The handler only reads and writes atomics and calls `mmap`, both async-signal-safe. The
//! registry is a fixed table: registering never allocates in a way the handler sees.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Guest mappings guarded at once (every region of every connection and disk).
const SLOTS: usize = 1024;

struct Slot {
    /// Start of the host mapping (0: free).
    start: AtomicUsize,
    len: AtomicUsize,
    /// Faults fixed up in it since it was registered.
    faults: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    faults: AtomicU64::new(0),
};

static TABLE: [Slot; SLOTS] = [FREE; SLOTS];
/// Faults fixed up in any guest mapping, ever.
static FAULTS: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();
/// The SIGBUS action before ours (a `libc::sigaction` written once, before ours is set).
static mut PREVIOUS: Option<libc::sigaction> = None;

/// Faults fixed up in guest mappings since the process started.
pub fn faults() -> u64 {
    FAULTS.load(Ordering::Relaxed)
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in &TABLE {
        let start = slot.start.load(Ordering::Acquire);
        let len = slot.len.load(Ordering::Acquire);
        if start == 0 || addr < start || addr - start >= len {
            continue;
        }
        // A 4 KiB page; in a hugetlbfs mapping (which cannot be split), its 2 MiB page.
        let mapped = [4096usize, 2 << 20].iter().any(|&size| {
            let page = addr & !(size - 1);
            if page < start || page - start + size > len {
                return false;
            }
            // SAFETY: replaces one page of a guest mapping registered by its owner (which
            // keeps it mapped while registered) with private anonymous memory: nothing of
            // vfabric's own lives there, and the faulting access is retried on it.
            let p = unsafe {
                libc::mmap(
                    page as *mut libc::c_void,
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            p != libc::MAP_FAILED
        });
        if mapped {
            slot.faults.fetch_add(1, Ordering::Relaxed);
            FAULTS.fetch_add(1, Ordering::Relaxed);
            return;
        }
        break;
    }
    // Not a guest mapping (or it could not be fixed): what would have happened without us.
    // SAFETY: PREVIOUS was written once before this handler was installed and never after.
    let prev = unsafe { (*std::ptr::addr_of!(PREVIOUS)).as_ref().copied() };
    match prev {
        Some(p) if p.sa_sigaction != libc::SIG_DFL && p.sa_sigaction != libc::SIG_IGN => {
            if p.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler was installed as an SA_SIGINFO handler.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(p.sa_sigaction) };
                f(sig, info, ctx);
            } else {
                // SAFETY: the previous handler was installed as a plain handler.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(p.sa_sigaction) };
                f(sig);
            }
        }
        _ => {
            // SAFETY: resetting SIGBUS to its default action; returning re-executes the
            // faulting access, which then ends the process as it would have.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            }
        }
    }
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sigaction with a zeroed (then filled) struct; the old action is saved
        // before the new one is installed, in a Once, so PREVIOUS is written exactly once
        // and before any handler of ours can run.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) == 0 {
                *std::ptr::addr_of_mut!(PREVIOUS) = Some(old);
            }
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_sigbus as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut act.sa_mask);
            if libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut()) != 0 {
                log::warn!("SIGBUS guard: {}", std::io::Error::last_os_error());
            }
        }
    });
}

/// A guest mapping under guard; unregistered when dropped (drop it before the mapping goes).
#[derive(Debug)]
pub struct Guard {
    slot: usize,
}

impl Guard {
    /// Guards `len` bytes of host memory at `start` (a guest region's mapping). `None` when
    /// the table is full (the mapping is then served unguarded, as before).
    pub fn new(start: usize, len: usize) -> Option<Guard> {
        install();
        if start == 0 || len == 0 {
            return None;
        }
        for (i, slot) in TABLE.iter().enumerate() {
            if slot
                .start
                .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                slot.faults.store(0, Ordering::Relaxed);
                slot.len.store(len, Ordering::Release);
                slot.start.store(start, Ordering::Release);
                return Some(Guard { slot: i });
            }
        }
        log::warn!("SIGBUS guard: {SLOTS} guest mappings guarded already; this one is not");
        None
    }

    /// Faults fixed up in this mapping (its VMM cut the memory under it).
    pub fn faults(&self) -> u64 {
        TABLE[self.slot].faults.load(Ordering::Relaxed)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let slot = &TABLE[self.slot];
        slot.len.store(0, Ordering::Release);
        slot.start.store(0, Ordering::Release);
    }
}

/// A device connection's guest memory under the guard: its regions (replaced with each
/// memory table) and whether the VMM cut them.
#[derive(Debug, Default)]
pub struct GuardedMemory {
    guards: std::sync::Mutex<Vec<Guard>>,
    cut: std::sync::atomic::AtomicBool,
}

impl GuardedMemory {
    /// Guards the regions of `mem` (as the VMM's memory table has them now) instead of the
    /// ones before.
    pub fn guard(&self, mem: &vm_memory::GuestMemoryMmap) {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
        let guards: Vec<Guard> = mem
            .iter()
            .filter_map(|r| Guard::new(r.as_ptr() as usize, r.len() as usize))
            .collect();
        *self.guards.lock().unwrap_or_else(|p| p.into_inner()) = guards;
    }

    /// Whether the VMM cut this memory (a fault was caught in it), and whether this call is
    /// the first to see it (to count it once). Cheap while no guest memory anywhere was
    /// ever cut: one atomic load.
    #[inline]
    pub fn is_cut(&self) -> (bool, bool) {
        if self.cut.load(Ordering::Relaxed) {
            return (true, false);
        }
        if faults() == 0 {
            return (false, false);
        }
        let cut = self
            .guards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|g| g.faults() > 0);
        let first = cut && !self.cut.swap(true, Ordering::Relaxed);
        (cut, first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A shared file mapping truncated under its reader: the access completes (zeros),
    /// the fault is counted on that mapping only, and writes after it go nowhere.
    #[test]
    fn a_cut_mapping_reads_zeros_and_counts_the_fault() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(4 * 4096).unwrap();
        // SAFETY: a fresh shared mapping of our own file, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4 * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let base = p as usize;
        let g = Guard::new(base, 4 * 4096).unwrap();
        let other = Guard::new(base + 64 * 4096, 4096).unwrap();
        // SAFETY: inside the mapping.
        unsafe { std::ptr::write_volatile((base + 3 * 4096) as *mut u8, 7) };
        f.set_len(4096).unwrap();
        // SAFETY: inside the mapping; the page is cut, the guard maps a fresh one.
        let v = unsafe { std::ptr::read_volatile((base + 3 * 4096 + 5) as *const u8) };
        assert_eq!(v, 0);
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile((base + 2 * 4096) as *mut u8, 9) };
        assert_eq!(g.faults(), 2);
        assert_eq!(other.faults(), 0);
        // The first page, not cut, still reads the file.
        // SAFETY: inside the mapping.
        unsafe { std::ptr::write_volatile(base as *mut u8, 1) };
        assert_eq!(g.faults(), 2);
        drop((g, other));
        // SAFETY: our mapping, no longer used.
        unsafe { libc::munmap(p, 4 * 4096) };
    }
}
