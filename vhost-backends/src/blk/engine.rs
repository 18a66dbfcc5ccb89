//! The I/O engines that serve one virtqueue each: io_uring for raw files (one ring per
//! queue, guest buffers handed to the kernel directly, the ring's eventfd waking the queue's
//! worker), the qcow2 I/O threads (completions back through a channel and an eventfd), and
//! the null engine (completes at once, for transport benchmarks).
//!
//! Invariant: guest memory handed to the kernel stays mapped until its completion is reaped
//! (each slot holds a guard of the memory it points into); no allocation per request once
//! the slots and iovec arrays are warm.

use std::io::{self};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::mpsc;

use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::frame::for_each_piece;

use super::image::{Done, Image, ImagoJob, ImagoMsg, Job, Kind, errno};

impl Image {
    /// An I/O engine for one queue with room for `depth` requests in flight.
    pub fn queue_io(self: &Arc<Image>, depth: u32) -> io::Result<QueueIo> {
        let notify = EventFd::new(EFD_NONBLOCK)?;
        let engine = match &self.kind {
            Kind::Raw { file } => {
                let ring = restricted_ring(depth, file.as_raw_fd(), notify.as_raw_fd())?;
                Engine::Uring {
                    ring: Box::new(ring),
                    queued: 0,
                }
            }
            Kind::Qcow2 { .. } => {
                let (tx, rx) = mpsc::channel();
                Engine::Imago { tx, rx }
            }
            Kind::Null => Engine::Null,
        };
        Ok(QueueIo {
            image: self.clone(),
            engine,
            notify,
            slots: Vec::new(),
            free: Vec::new(),
            iov_pool: IovPool(Vec::new()),
            ready: Vec::new(),
        })
    }
}

/// A ring for one queue of `depth` requests on the image `image`, waking `notify`, that can
/// do nothing but what a disk does: registered before it is enabled, its restrictions
/// (IORING_REGISTER_RESTRICTIONS) allow only readv, writev, fsync and fallocate, only on its
/// one registered file (the image: every request must use fixed file 0), with no other
/// request flag than a link. A ring is not covered by seccomp (its requests are not system
/// calls of the thread), so this is what keeps a disk thread's ring from opening, sending or
/// reading anything else.
fn restricted_ring(depth: u32, image: RawFd, notify: RawFd) -> io::Result<io_uring::IoUring> {
    use io_uring::opcode::{Fallocate, Fsync, Readv, Writev};
    use io_uring::register::Restriction;
    use io_uring::squeue::Flags;
    let ring = io_uring::IoUring::builder()
        .setup_r_disabled()
        .build(depth.next_power_of_two().max(8))?;
    let sub = ring.submitter();
    sub.register_eventfd(notify)?;
    sub.register_files(&[image])?;
    let mut allowed = [
        Restriction::sqe_op(Readv::CODE),
        Restriction::sqe_op(Writev::CODE),
        Restriction::sqe_op(Fsync::CODE),
        Restriction::sqe_op(Fallocate::CODE),
        Restriction::sqe_flags_allowed((Flags::FIXED_FILE | Flags::IO_LINK).bits()),
        Restriction::sqe_flags_required(Flags::FIXED_FILE.bits()),
    ];
    sub.register_restrictions(&mut allowed)?;
    sub.register_enable_rings()?;
    Ok(ring)
}

struct Slot {
    /// io_uring: the iovecs the kernel reads, kept in place until completion.
    iov: Vec<libc::iovec>,
    /// Keeps the guest memory mapped while the kernel uses it.
    _mem: GuestMemoryLoadGuard<GuestMemoryMmap>,
    /// SQEs still outstanding, and the first error.
    parts: u32,
    result: i32,
}

// SAFETY: the raw pointers in `iov` point into guest memory kept mapped by `_mem`; they are
// only handed to the kernel and never dereferenced by this process, so moving a slot to
// another thread is sound.
unsafe impl Send for Slot {}

/// Empty iovec arrays kept for reuse.
struct IovPool(Vec<Vec<libc::iovec>>);

// SAFETY: every array in the pool was cleared before it was pooled: it holds capacity, no
// pointers, so nothing refers to any memory when it moves between threads.
unsafe impl Send for IovPool {}

enum Engine {
    Uring {
        ring: Box<io_uring::IoUring>,
        queued: u32,
    },
    Imago {
        tx: mpsc::Sender<Done>,
        rx: mpsc::Receiver<Done>,
    },
    Null,
}

/// One queue's I/O: submit jobs, reap completions when `fd()` is readable.
pub struct QueueIo {
    image: Arc<Image>,
    engine: Engine,
    notify: EventFd,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    /// iovec arrays of finished jobs, kept for the next ones (no allocation per request).
    iov_pool: IovPool,
    /// Completions already known (null engine, submission failures).
    ready: Vec<Done>,
}

impl QueueIo {
    /// The eventfd that becomes readable when completions are waiting.
    pub fn fd(&self) -> RawFd {
        self.notify.as_raw_fd()
    }

    /// Jobs submitted and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn alloc(&mut self, slot: Slot) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// Starts `job`; its completion carries the returned slot. Guest addresses that are not
    /// guest memory complete the job with -EFAULT.
    pub fn submit(&mut self, mem: &GuestMemoryAtomic<GuestMemoryMmap>, job: Job) -> u32 {
        let guard = mem.memory();
        let iov = self.iov_pool.0.pop().unwrap_or_default();
        let slot = self.alloc(Slot {
            iov,
            _mem: guard.clone(),
            parts: 0,
            result: 0,
        });
        let image = self.image.clone();
        match &mut self.engine {
            Engine::Null => self.ready.push(Done { slot, result: 0 }),
            Engine::Uring { ring, queued } => {
                let Kind::Raw { .. } = &image.kind else {
                    self.ready.push(Done {
                        slot,
                        result: -libc::EIO,
                    });
                    return slot;
                };
                // The image is the ring's only file (`restricted_ring`): fixed file 0.
                let fd = io_uring::types::Fixed(0);
                let s = self.slots[slot as usize].as_mut().expect("just allocated");
                let mut sqes = Vec::new();
                match &job {
                    Job::Read { offset, data } | Job::Write { offset, data } => {
                        for &(a, l) in data {
                            let r = for_each_piece(&guard, a, l as usize, |v| {
                                s.iov.push(libc::iovec {
                                    iov_base: v.ptr_guard_mut().as_ptr().cast(),
                                    iov_len: v.len(),
                                })
                            });
                            if r.is_err() {
                                self.ready.push(Done {
                                    slot,
                                    result: -libc::EFAULT,
                                });
                                return slot;
                            }
                        }
                        let (ptr, n) = (s.iov.as_ptr(), s.iov.len() as u32);
                        sqes.push(if matches!(job, Job::Read { .. }) {
                            io_uring::opcode::Readv::new(fd, ptr, n)
                                .offset(*offset)
                                .build()
                        } else {
                            io_uring::opcode::Writev::new(fd, ptr, n)
                                .offset(*offset)
                                .build()
                        });
                    }
                    Job::Flush => sqes.push(
                        io_uring::opcode::Fsync::new(fd)
                            .flags(io_uring::types::FsyncFlags::DATASYNC)
                            .build(),
                    ),
                    Job::Discard(ranges) | Job::WriteZeroes(ranges) => {
                        let discard = matches!(job, Job::Discard(_));
                        for r in ranges {
                            // A punched hole reads back as zeroes and frees the blocks:
                            // discard always, write-zeroes when the guest allows unmapping.
                            // Otherwise the hole is allocated again right after (linked, so
                            // in order), which works on every file system that punches holes
                            // (tmpfs has no FALLOC_FL_ZERO_RANGE).
                            let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                            let hole = io_uring::opcode::Fallocate::new(fd, r.len)
                                .offset(r.offset)
                                .mode(punch)
                                .build();
                            if discard || r.unmap {
                                sqes.push(hole);
                            } else {
                                sqes.push(hole.flags(io_uring::squeue::Flags::IO_LINK));
                                sqes.push(
                                    io_uring::opcode::Fallocate::new(fd, r.len)
                                        .offset(r.offset)
                                        .mode(libc::FALLOC_FL_KEEP_SIZE)
                                        .build(),
                                );
                            }
                        }
                    }
                }
                if sqes.is_empty() {
                    self.ready.push(Done { slot, result: 0 });
                    return slot;
                }
                s.parts = sqes.len() as u32;
                for sqe in sqes {
                    let sqe = sqe.user_data(u64::from(slot));
                    loop {
                        // SAFETY: the iovec array and the guest buffers it points to stay
                        // alive and unmoved until this slot's completions are reaped: the
                        // slot owns both the Vec (not touched until then) and a guard that
                        // keeps the guest memory mapped.
                        let pushed = unsafe { ring.submission().push(&sqe) };
                        if pushed.is_ok() {
                            *queued += 1;
                            break;
                        }
                        // Submission queue full: hand what we have to the kernel.
                        if let Err(e) = ring.submit() {
                            log::warn!("io_uring submit: {e}");
                        }
                        *queued = 0;
                    }
                }
            }
            Engine::Imago { tx, .. } => {
                let Kind::Qcow2 { threads, next, .. } = &image.kind else {
                    self.ready.push(Done {
                        slot,
                        result: -libc::EIO,
                    });
                    return slot;
                };
                let notify = match self.notify.try_clone() {
                    Ok(n) => n,
                    Err(e) => {
                        self.ready.push(Done {
                            slot,
                            result: errno(&e),
                        });
                        return slot;
                    }
                };
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % threads.len();
                let j = ImagoJob {
                    job,
                    mem: guard,
                    slot,
                    done: tx.clone(),
                    notify,
                };
                if threads[i].send(ImagoMsg::Job(j)).is_err() {
                    self.ready.push(Done {
                        slot,
                        result: -libc::EIO,
                    });
                }
            }
        }
        slot
    }

    /// Hands submitted jobs to the kernel (io_uring: one system call for the batch).
    /// Callers reap right after, so jobs finished at once need no wake-up.
    pub fn kick(&mut self) {
        if let Engine::Uring { ring, queued } = &mut self.engine
            && *queued > 0
        {
            if let Err(e) = ring.submit() {
                log::warn!("io_uring submit: {e}");
            }
            *queued = 0;
        }
    }

    /// Clears the completion eventfd (before a last `reap` and sleeping).
    pub fn clear_notify(&mut self) {
        let _ = self.notify.read();
    }

    /// Collects finished jobs into `out` (their slots are free again). Cheap when there
    /// are none: no system call.
    pub fn reap(&mut self, out: &mut Vec<Done>) {
        let mut finished = std::mem::take(&mut self.ready);
        match &mut self.engine {
            Engine::Uring { ring, .. } => {
                for cqe in ring.completion() {
                    let slot = cqe.user_data() as u32;
                    let Some(Some(s)) = self.slots.get_mut(slot as usize) else {
                        continue;
                    };
                    if cqe.result() < 0 && s.result == 0 {
                        s.result = cqe.result();
                    }
                    s.parts = s.parts.saturating_sub(1);
                    if s.parts == 0 {
                        finished.push(Done {
                            slot,
                            result: s.result,
                        });
                    }
                }
            }
            Engine::Imago { rx, .. } => finished.extend(rx.try_iter()),
            Engine::Null => {}
        }
        for d in finished {
            if let Some(s) = self.slots.get_mut(d.slot as usize)
                && let Some(mut old) = s.take()
            {
                old.iov.clear();
                self.iov_pool.0.push(old.iov);
                self.free.push(d.slot);
                out.push(d);
            }
        }
    }

    /// Waits until every submitted job finished (a ring being stopped), collecting them.
    pub fn drain(&mut self, out: &mut Vec<Done>) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        self.kick();
        loop {
            // Jobs finished without the kernel (null engine, failed submissions) first.
            self.reap(out);
            if self.in_flight() == 0 || std::time::Instant::now() > deadline {
                return;
            }
            match &self.engine {
                Engine::Uring { ring, .. } => {
                    let _ = ring.submit_and_wait(1);
                }
                _ => std::thread::sleep(std::time::Duration::from_micros(200)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blk::image::{Format, ImageSpec};
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use vm_memory::{Bytes, GuestAddress};

    const MIB: u64 = 1 << 20;

    /// The ring of a raw image does only what a disk does: another request (a nop, an
    /// openat, a read of a descriptor that is not the registered image) completes with
    /// EACCES, a read of the image through fixed file 0 works.
    #[test]
    fn a_disk_ring_refuses_everything_but_its_image_operations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        fs::write(&path, vec![7u8; 4096]).unwrap();
        let image = fs::File::open(&path).unwrap();
        let other = fs::File::open("/proc/self/status").unwrap();
        let notify = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut ring = restricted_ring(8, image.as_raw_fd(), notify.as_raw_fd()).unwrap();
        let mut buf = vec![0u8; 512];
        let iov = [libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }];
        let name = c"/etc/hostname";
        let cases = [
            io_uring::opcode::Nop::new().build(),
            io_uring::opcode::OpenAt::new(io_uring::types::Fd(libc::AT_FDCWD), name.as_ptr())
                .build(),
            io_uring::opcode::Readv::new(io_uring::types::Fd(other.as_raw_fd()), iov.as_ptr(), 1)
                .build(),
            io_uring::opcode::Readv::new(io_uring::types::Fixed(0), iov.as_ptr(), 1).build(),
        ];
        let mut results = Vec::new();
        for (i, sqe) in cases.into_iter().enumerate() {
            // SAFETY: the buffers and the name outlive the request, which is reaped below.
            unsafe { ring.submission().push(&sqe.user_data(i as u64)).unwrap() };
            ring.submit_and_wait(1).unwrap();
            let cqe = ring.completion().next().unwrap();
            results.push(cqe.result());
        }
        let e = -libc::EACCES;
        assert_eq!(results, [e, e, e, 512]);
        assert!(buf.iter().all(|&b| b == 7));
    }

    fn guest() -> GuestMemoryAtomic<GuestMemoryMmap> {
        GuestMemoryAtomic::new(
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MIB as usize)]).unwrap(),
        )
    }

    /// Submits one job and waits for it (bounded).
    fn run(io: &mut QueueIo, mem: &GuestMemoryAtomic<GuestMemoryMmap>, job: Job) -> i32 {
        let slot = io.submit(mem, job);
        io.kick();
        let mut out = Vec::new();
        io.drain(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].slot, slot);
        out[0].result
    }

    fn spec(path: &Path, format: Format, readonly: bool) -> ImageSpec {
        ImageSpec {
            path: path.into(),
            format,
            readonly,
            null_size: 0,
        }
    }

    #[test]
    fn raw_reads_writes_zeroes_and_discards_through_io_uring() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.raw");
        fs::File::create(&path).unwrap().set_len(8 * MIB).unwrap();
        let img = Arc::new(Image::open(&spec(&path, Format::Auto, false)).unwrap());
        assert_eq!((img.format, img.capacity), (Format::Raw, 8 * MIB));
        let mem = guest();
        let mut io = img.queue_io(64).unwrap();
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 253) as u8).collect();
        mem.memory()
            .write_slice(&data, GuestAddress(0x1000))
            .unwrap();
        // A write from two guest pieces, read back into another place.
        let w = Job::Write {
            offset: MIB,
            data: vec![(GuestAddress(0x1000), 4096), (GuestAddress(0x2000), 61440)],
        };
        assert_eq!(run(&mut io, &mem, w), 0);
        assert_eq!(
            &fs::read(&path).unwrap()[MIB as usize..MIB as usize + 65536],
            &data[..]
        );
        let r = Job::Read {
            offset: MIB,
            data: vec![(GuestAddress(0x40000), 65536)],
        };
        assert_eq!(run(&mut io, &mem, r), 0);
        let mut back = vec![0u8; 65536];
        mem.memory()
            .read_slice(&mut back, GuestAddress(0x40000))
            .unwrap();
        assert_eq!(back, data);
        assert_eq!(run(&mut io, &mem, Job::Flush), 0);
        // Write-zeroes keeps the blocks, discard frees them; both read back as zeroes.
        let before = fs::metadata(&path).unwrap().blocks();
        let z = Job::WriteZeroes(vec![super::super::request::Range {
            offset: MIB,
            len: 32768,
            unmap: false,
        }]);
        assert_eq!(run(&mut io, &mem, z), 0);
        assert_eq!(fs::metadata(&path).unwrap().blocks(), before);
        let d = Job::Discard(vec![super::super::request::Range {
            offset: MIB,
            len: 65536,
            unmap: false,
        }]);
        assert_eq!(run(&mut io, &mem, d), 0);
        assert!(fs::metadata(&path).unwrap().blocks() < before);
        assert!(
            fs::read(&path).unwrap()[MIB as usize..MIB as usize + 65536]
                .iter()
                .all(|&b| b == 0)
        );
        // Guest addresses outside guest memory fail the job, nothing else.
        let bad = Job::Read {
            offset: 0,
            data: vec![(GuestAddress(2 * MIB), 512)],
        };
        assert_eq!(run(&mut io, &mem, bad), -libc::EFAULT);
    }

    #[test]
    fn qcow2_overlay_reads_its_backing_file_and_never_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        let mut f = fs::File::create(&base).unwrap();
        f.write_all(&vec![0xabu8; 4 * MIB as usize]).unwrap();
        drop(f);
        let over = dir.path().join("over.qcow2");
        let st = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&base)
            .arg(&over)
            .status()
            .expect("qemu-img (scripts/install-deps.sh)");
        assert!(st.success());
        let img = Arc::new(Image::open(&spec(&over, Format::Auto, false)).unwrap());
        assert_eq!((img.format, img.capacity), (Format::Qcow2, 4 * MIB));
        let mem = guest();
        let mut io = img.queue_io(8).unwrap();
        let r = Job::Read {
            offset: 0,
            data: vec![(GuestAddress(0), 8192)],
        };
        assert_eq!(run(&mut io, &mem, r.clone()), 0);
        let mut b = vec![0u8; 8192];
        mem.memory().read_slice(&mut b, GuestAddress(0)).unwrap();
        assert!(b.iter().all(|&x| x == 0xab));
        mem.memory()
            .write_slice(&[7u8; 4096], GuestAddress(0x10000))
            .unwrap();
        let w = Job::Write {
            offset: 4096,
            data: vec![(GuestAddress(0x10000), 4096)],
        };
        assert_eq!(run(&mut io, &mem, w), 0);
        assert_eq!(run(&mut io, &mem, r), 0);
        mem.memory().read_slice(&mut b, GuestAddress(0)).unwrap();
        assert!(b[..4096].iter().all(|&x| x == 0xab) && b[4096..].iter().all(|&x| x == 7));
        assert_eq!(run(&mut io, &mem, Job::Flush), 0);
        img.close();
        assert!(
            fs::read(&base).unwrap().iter().all(|&x| x == 0xab),
            "backing file written"
        );
        drop(io);
        drop(img);
        let check = std::process::Command::new("qemu-img")
            .arg("check")
            .arg(&over)
            .output()
            .unwrap();
        assert!(check.status.success(), "{check:?}");
    }

    #[test]
    fn a_second_writer_is_refused_and_readers_share() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.raw");
        fs::File::create(&path).unwrap().set_len(MIB).unwrap();
        let w = Image::open(&spec(&path, Format::Raw, false)).unwrap();
        let e = Image::open(&spec(&path, Format::Raw, false)).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
        assert!(Image::open(&spec(&path, Format::Raw, true)).is_err());
        drop(w);
        let r1 = Image::open(&spec(&path, Format::Raw, true)).unwrap();
        let _r2 = Image::open(&spec(&path, Format::Raw, true)).unwrap();
        assert!(Image::open(&spec(&path, Format::Raw, false)).is_err());
        drop(r1);
        let missing = Image::open(&spec(&dir.path().join("nope"), Format::Auto, false))
            .err()
            .unwrap();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }
}
