//! Crash-safe tracking of requests in flight (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD).
//!
//! The VMM keeps a shared memory region for the device across backend restarts: the backend
//! creates it (`GET_INFLIGHT_FD`), the VMM hands it back on every start (`SET_INFLIGHT_FD`).
//! The layout per queue is the split-ring one of the vhost-user specification:
//!
//! ```text
//! u64 features; u16 version; u16 desc_num; u16 last_batch_head; u16 used_idx;
//! desc[desc_num] { u8 inflight; u8 padding[5]; u16 next; u64 counter }
//! ```
//!
//! A request is marked in flight (with an increasing counter) when it is taken from the
//! avail ring and cleared once its used entry is published; a used-index shadow tells a
//! restarted backend whether the last publication completed. On restart, the requests still
//! marked are resubmitted in counter order, so no request the guest is waiting for is lost
//! and none is answered twice.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use vm_memory::mmap::MmapRegion;
use vm_memory::{Bytes, FileOffset, VolatileMemory};

const HEADER: usize = 16;
const DESC: usize = 16;
const VERSION: u16 = 1;
const ALIGN: usize = 64;

/// The payload of GET/SET_INFLIGHT_FD: mmap_size u64, mmap_offset u64, num_queues u16,
/// queue_size u16 (24 bytes with padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InflightMsg {
    pub mmap_size: u64,
    pub mmap_offset: u64,
    pub num_queues: u16,
    pub queue_size: u16,
}

impl InflightMsg {
    pub fn parse(p: &[u8]) -> Option<InflightMsg> {
        Some(InflightMsg {
            mmap_size: u64::from_le_bytes(p.get(0..8)?.try_into().ok()?),
            mmap_offset: u64::from_le_bytes(p.get(8..16)?.try_into().ok()?),
            num_queues: u16::from_le_bytes(p.get(16..18)?.try_into().ok()?),
            queue_size: u16::from_le_bytes(p.get(18..20)?.try_into().ok()?),
        })
    }

    pub fn to_bytes(self) -> Vec<u8> {
        let mut b = vec![0u8; 24];
        b[0..8].copy_from_slice(&self.mmap_size.to_le_bytes());
        b[8..16].copy_from_slice(&self.mmap_offset.to_le_bytes());
        b[16..18].copy_from_slice(&self.num_queues.to_le_bytes());
        b[18..20].copy_from_slice(&self.queue_size.to_le_bytes());
        b
    }
}

/// Bytes of one queue's region.
pub fn queue_region_size(queue_size: u16) -> usize {
    (HEADER + DESC * usize::from(queue_size)).div_ceil(ALIGN) * ALIGN
}

/// Creates the zeroed region for `num_queues` queues of `queue_size` (GET_INFLIGHT_FD).
pub fn create(num_queues: u16, queue_size: u16) -> io::Result<(InflightMsg, OwnedFd)> {
    if num_queues == 0 || queue_size == 0 || !queue_size.is_power_of_two() {
        return Err(io::Error::other(format!(
            "GET_INFLIGHT_FD for {num_queues} queues of {queue_size}"
        )));
    }
    let size = queue_region_size(queue_size) * usize::from(num_queues);
    let fd =
        nix::sys::memfd::memfd_create(c"vfabric-inflight", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    let file = File::from(fd);
    file.set_len(size as u64)?;
    Ok((
        InflightMsg {
            mmap_size: size as u64,
            mmap_offset: 0,
            num_queues,
            queue_size,
        },
        file.into(),
    ))
}

/// A mapped inflight region.
pub struct Inflight {
    map: MmapRegion,
    num_queues: u16,
    queue_size: u16,
}

impl Inflight {
    /// Maps the region the VMM handed over (SET_INFLIGHT_FD) and initialises the queues a
    /// fresh region has not set up yet.
    pub fn map(msg: InflightMsg, fd: OwnedFd) -> io::Result<Inflight> {
        let per_q = queue_region_size(msg.queue_size);
        let need = per_q * usize::from(msg.num_queues);
        if msg.num_queues == 0 || msg.queue_size == 0 || (msg.mmap_size as usize) < need {
            return Err(io::Error::other(format!(
                "inflight region of {} bytes for {} queues of {}",
                msg.mmap_size, msg.num_queues, msg.queue_size
            )));
        }
        let map = MmapRegion::from_file(FileOffset::new(File::from(fd), msg.mmap_offset), need)
            .map_err(|e| io::Error::other(format!("mapping the inflight region: {e}")))?;
        let me = Inflight {
            map,
            num_queues: msg.num_queues,
            queue_size: msg.queue_size,
        };
        for q in 0..me.num_queues {
            let base = usize::from(q) * per_q;
            let s = me.map.as_volatile_slice();
            let version: u16 = s.load(base + 8, Ordering::Acquire).unwrap_or(0);
            if version == 0 {
                let _ = s.store(msg.queue_size, base + 10, Ordering::Relaxed);
                let _ = s.store(VERSION, base + 8, Ordering::Release);
            }
        }
        Ok(me)
    }

    /// The view of queue `q`, if the region has it.
    pub fn queue(&self, q: usize) -> Option<QueueInflight<'_>> {
        (q < usize::from(self.num_queues)).then(|| QueueInflight {
            region: self,
            base: q * queue_region_size(self.queue_size),
        })
    }
}

/// One queue's part of the region.
pub struct QueueInflight<'a> {
    region: &'a Inflight,
    base: usize,
}

impl QueueInflight<'_> {
    fn desc_num(&self) -> u16 {
        self.region.queue_size
    }

    fn at(&self, off: usize) -> usize {
        self.base + off
    }

    fn desc(&self, head: u16) -> Option<usize> {
        (head < self.desc_num()).then(|| self.at(HEADER + DESC * usize::from(head)))
    }

    /// Marks `head` in flight with `counter` (its order of arrival).
    pub fn begin(&self, head: u16, counter: u64) {
        let s = self.region.map.as_volatile_slice();
        if let Some(d) = self.desc(head) {
            let _ = s.store(counter, d + 8, Ordering::Relaxed);
            let _ = s.store(1u8, d, Ordering::Release);
        }
    }

    /// Step 1 of completing `head`: remember it as the batch being published (call before
    /// the used ring is updated).
    pub fn publishing(&self, head: u16) {
        let s = self.region.map.as_volatile_slice();
        if let Some(d) = self.desc(head) {
            let last: u16 = s.load(self.at(12), Ordering::Relaxed).unwrap_or(0);
            let _ = s.store(last, d + 6, Ordering::Relaxed);
            let _ = s.store(head, self.at(12), Ordering::Release);
        }
    }

    /// Step 2, after the used index reached `used_idx`: `head` is no longer in flight.
    pub fn published(&self, head: u16, used_idx: u16) {
        let s = self.region.map.as_volatile_slice();
        if let Some(d) = self.desc(head) {
            let _ = s.store(0u8, d, Ordering::Release);
        }
        let _ = s.store(used_idx, self.at(14), Ordering::Release);
    }

    /// After a restart, given the used index in the guest's ring: repairs a publication the
    /// crash cut short and returns the heads still in flight, oldest first, and the highest
    /// counter seen.
    pub fn recover(&self, used_idx: u16) -> (Vec<u16>, u64) {
        let s = self.region.map.as_volatile_slice();
        let shadow: u16 = s.load(self.at(14), Ordering::Acquire).unwrap_or(used_idx);
        if shadow != used_idx {
            // The used index moved past the shadow: the last published head was answered.
            let last: u16 = s.load(self.at(12), Ordering::Acquire).unwrap_or(0);
            if let Some(d) = self.desc(last) {
                let _ = s.store(0u8, d, Ordering::Release);
            }
            let _ = s.store(used_idx, self.at(14), Ordering::Release);
        }
        let mut live: Vec<(u64, u16)> = Vec::new();
        let mut max = 0;
        for head in 0..self.desc_num() {
            let Some(d) = self.desc(head) else { break };
            let counter: u64 = s.load(d + 8, Ordering::Relaxed).unwrap_or(0);
            max = max.max(counter);
            if s.load::<u8>(d, Ordering::Acquire).unwrap_or(0) == 1 {
                live.push((counter, head));
            }
        }
        live.sort_unstable();
        (live.into_iter().map(|(_, h)| h).collect(), max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(queues: u16, size: u16) -> (InflightMsg, OwnedFd) {
        create(queues, size).unwrap()
    }

    fn remap(msg: InflightMsg, fd: &OwnedFd) -> Inflight {
        Inflight::map(msg, fd.try_clone().unwrap()).unwrap()
    }

    #[test]
    fn message_round_trip_and_sizes() {
        let m = InflightMsg {
            mmap_size: 4160,
            mmap_offset: 0,
            num_queues: 2,
            queue_size: 128,
        };
        assert_eq!(InflightMsg::parse(&m.to_bytes()), Some(m));
        assert_eq!(queue_region_size(128), 2112);
        assert!(create(1, 100).is_err());
    }

    #[test]
    fn completed_requests_are_not_resubmitted() {
        let (msg, fd) = region(2, 8);
        let r = remap(msg, &fd);
        let q = r.queue(1).unwrap();
        q.begin(3, 1);
        q.begin(5, 2);
        q.begin(0, 3);
        // 5 completes first.
        q.publishing(5);
        q.published(5, 1);
        drop(r);
        // "Restart": the same memory, mapped again.
        let r = remap(msg, &fd);
        let (live, max) = r.queue(1).unwrap().recover(1);
        assert_eq!(live, vec![3, 0]);
        assert_eq!(max, 3);
        // Queue 0 is untouched.
        assert_eq!(r.queue(0).unwrap().recover(0).0, Vec::<u16>::new());
        assert!(r.queue(2).is_none());
    }

    #[test]
    fn a_publication_cut_short_is_repaired() {
        let (msg, fd) = region(1, 8);
        let r = remap(msg, &fd);
        let q = r.queue(0).unwrap();
        q.begin(2, 1);
        q.begin(4, 2);
        // Crash after the used index moved to 1 but before the flag was cleared.
        q.publishing(4);
        drop(r);
        let r = remap(msg, &fd);
        assert_eq!(r.queue(0).unwrap().recover(1).0, vec![2]);
        // Crash before the used index moved: 4 is still in flight.
        let (msg, fd) = region(1, 8);
        let r = remap(msg, &fd);
        let q = r.queue(0).unwrap();
        q.begin(4, 7);
        q.publishing(4);
        drop(r);
        let r = remap(msg, &fd);
        assert_eq!(r.queue(0).unwrap().recover(0).0, vec![4]);
    }

    #[test]
    fn hostile_heads_and_short_regions_are_harmless() {
        let (msg, fd) = region(1, 8);
        let r = remap(msg, &fd);
        let q = r.queue(0).unwrap();
        q.begin(200, 1);
        q.publishing(9);
        q.published(65535, 0);
        assert_eq!(q.recover(0).0, Vec::<u16>::new());
        let short = InflightMsg {
            mmap_size: 10,
            ..msg
        };
        assert!(Inflight::map(short, fd.try_clone().unwrap()).is_err());
    }
}
