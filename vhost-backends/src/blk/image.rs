//! Disk images: opening (format detection, QEMU-compatible locking, capacity) and the I/O
//! engines that serve one virtqueue each.
//!
//! - raw files: io_uring, one ring per queue, guest buffers handed to the kernel directly;
//!   the ring's eventfd wakes the queue's worker thread. Many requests in flight, no thread
//!   per request.
//! - qcow2 (and raw images behind qcow2 backing chains): `imago`, on a small tokio runtime per
//!   disk; completions come back to the queue's worker through a channel and an eventfd.
//!   After every write the qcow2 metadata caches are written back to the file (not synced),
//!   so killing vfabric never loses a write the guest saw completed; a guest FLUSH syncs.
//! - null: completes everything at once without touching data (transport cost benchmarks).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use imago::io_buffers::{IoVector, IoVectorMut};
use imago::{FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::request::{Range, Seg};
use crate::frame::for_each_piece;

/// The image format of a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Detected from the file's first bytes.
    Auto,
    Raw,
    Qcow2,
    /// No storage: reads and writes succeed at once, data untouched (benchmarks).
    Null,
}

/// Everything needed to open a disk.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub path: PathBuf,
    pub format: Format,
    pub readonly: bool,
    /// Capacity of a null disk, in bytes.
    pub null_size: u64,
}

type Qcow2Access = FormatAccess<imago::file::File>;

enum Kind {
    Raw {
        file: File,
    },
    Qcow2 {
        img: Arc<tokio::sync::RwLock<Qcow2Access>>,
        /// imago's futures are not `Send`: each I/O thread runs its own single-threaded
        /// runtime and takes jobs round-robin.
        threads: Vec<tokio::sync::mpsc::UnboundedSender<ImagoMsg>>,
        next: std::sync::atomic::AtomicUsize,
    },
    Null,
}

impl Image {
    /// Has the image's own threads (qcow2 I/O threads, started when it was opened) call
    /// `drop`, which gives up the calling thread's privileges: a process that gives up its
    /// capabilities after opening images does not reach threads already running. Returns at
    /// once; each thread does it before its next job.
    pub fn drop_privileges(&self, drop: fn() -> std::io::Result<()>) {
        if let Kind::Qcow2 { threads, .. } = &self.kind {
            for t in threads {
                let _ = t.send(ImagoMsg::DropPrivileges(drop));
            }
        }
    }
}

/// An open disk image.
pub struct Image {
    kind: Kind,
    /// Bytes.
    pub capacity: u64,
    pub format: Format,
    pub readonly: bool,
    /// Keeps the QEMU-compatible byte-range locks.
    _lock: Option<File>,
}

const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// QEMU's lock bytes (block/file-posix.c): holding a shared lock at 100 + p means "I use
/// permission p", at 200 + p "I do not let others have p". p: 0 consistent read, 1 write,
/// 2 write unchanged, 3 resize.
const LOCK_PERM_BASE: i64 = 100;
const LOCK_SHARED_BASE: i64 = 200;
const PERM_READ: i64 = 0;
const PERM_WRITE: i64 = 1;
const PERM_RESIZE: i64 = 3;

fn ofd_lock(f: &File, start: i64, test_only: bool) -> io::Result<bool> {
    let mut fl = libc::flock {
        l_type: if test_only {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        } as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: start,
        l_len: 1,
        l_pid: 0,
    };
    let cmd = if test_only {
        libc::F_OFD_GETLK
    } else {
        libc::F_OFD_SETLK
    };
    // SAFETY: fcntl on an fd we own, with a properly initialised `flock` that lives across
    // the call; F_OFD_GETLK/SETLK only read and write that struct.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if !test_only && matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(if test_only {
        fl.l_type == libc::F_UNLCK as i16
    } else {
        true
    })
}

/// Takes QEMU's locks on `path` for a reader or a writer, refusing when another process
/// (vfabric, QEMU, qemu-img, qemu-storage-daemon) has it open in a conflicting way.
fn lock_image(path: &Path, readonly: bool) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    // What we use, and what we do not share: readers need stable data (no writers);
    // writers need exclusive write and resize.
    let (uses, refuses): (&[i64], &[i64]) = if readonly {
        (&[PERM_READ], &[PERM_WRITE, PERM_RESIZE])
    } else {
        (&[PERM_READ, PERM_WRITE], &[PERM_WRITE, PERM_RESIZE])
    };
    let conflict = || {
        io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "{} is in use by another process (failed to get the {} lock QEMU uses)",
                path.display(),
                if readonly { "shared read" } else { "write" }
            ),
        )
    };
    for &p in uses {
        // Somebody refuses to share what we use?
        if !ofd_lock(&f, LOCK_SHARED_BASE + p, true)? {
            return Err(conflict());
        }
    }
    for &p in refuses {
        // Somebody uses what we refuse to share?
        if !ofd_lock(&f, LOCK_PERM_BASE + p, true)? {
            return Err(conflict());
        }
    }
    for &p in uses {
        if !ofd_lock(&f, LOCK_PERM_BASE + p, false)? {
            return Err(conflict());
        }
    }
    for &p in refuses {
        if !ofd_lock(&f, LOCK_SHARED_BASE + p, false)? {
            return Err(conflict());
        }
    }
    Ok(f)
}

fn detect(path: &Path) -> io::Result<Format> {
    let mut magic = [0u8; 4];
    let mut f = File::open(path)?;
    let n = f.read(&mut magic)?;
    Ok(if n == 4 && magic == QCOW2_MAGIC {
        Format::Qcow2
    } else {
        Format::Raw
    })
}

impl Image {
    /// Opens (and locks) an image. Errors name the path and say what is wrong.
    pub fn open(spec: &ImageSpec) -> io::Result<Image> {
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", spec.path.display()));
        if spec.format == Format::Null {
            return Ok(Image {
                kind: Kind::Null,
                capacity: spec.null_size,
                format: Format::Null,
                readonly: spec.readonly,
                _lock: None,
            });
        }
        let format = match spec.format {
            Format::Auto => detect(&spec.path).map_err(ctx)?,
            f => f,
        };
        let lock = lock_image(&spec.path, spec.readonly).map_err(|e| {
            if e.kind() == io::ErrorKind::ResourceBusy {
                e
            } else {
                ctx(e)
            }
        })?;
        match format {
            Format::Qcow2 => {
                let rt = tokio::runtime::Builder::new_current_thread().build()?;
                let path = spec.path.clone();
                let writable = !spec.readonly;
                let access = rt
                    .block_on(async move {
                        let q = imago::qcow2::Qcow2::<imago::file::File>::builder_path(&path)
                            .write(writable)
                            .open(PermissiveImplicitOpenGate::default())
                            .await?;
                        Ok::<_, io::Error>(FormatAccess::new(q))
                    })
                    .map_err(ctx)?;
                let capacity = access.size();
                let img = Arc::new(tokio::sync::RwLock::new(access));
                let mut threads = Vec::new();
                for i in 0..QCOW2_THREADS {
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                    let img = img.clone();
                    std::thread::Builder::new()
                        .name(format!("vf-qcow2-{i}"))
                        .spawn(move || imago_thread(img, rx))?;
                    threads.push(tx);
                }
                Ok(Image {
                    capacity,
                    kind: Kind::Qcow2 {
                        img,
                        threads,
                        next: Default::default(),
                    },
                    format,
                    readonly: spec.readonly,
                    _lock: Some(lock),
                })
            }
            _ => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(!spec.readonly)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&spec.path)
                    .map_err(ctx)?;
                let md = file.metadata().map_err(ctx)?;
                if !md.is_file() {
                    return Err(ctx(io::Error::other("not a regular file")));
                }
                Ok(Image {
                    capacity: md.len(),
                    kind: Kind::Raw { file },
                    format: Format::Raw,
                    readonly: spec.readonly,
                    _lock: Some(lock),
                })
            }
        }
    }

    /// An I/O engine for one queue with room for `depth` requests in flight.
    pub fn queue_io(self: &Arc<Image>, depth: u32) -> io::Result<QueueIo> {
        let notify = EventFd::new(EFD_NONBLOCK)?;
        let engine = match &self.kind {
            Kind::Raw { .. } => {
                let ring = io_uring::IoUring::new(depth.next_power_of_two().max(8))?;
                ring.submitter().register_eventfd(notify.as_raw_fd())?;
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

    /// Writes back the qcow2 caches; called at shutdown.
    pub fn close(&self) {
        if let Kind::Qcow2 { img, .. } = &self.kind {
            let img = img.clone();
            let r = tokio::runtime::Builder::new_current_thread()
                .build()
                .and_then(|rt| rt.block_on(async move { img.read().await.flush().await }));
            if let Err(e) = r {
                log::warn!("flushing qcow2 image: {e}");
            }
        }
    }
}

/// I/O threads per qcow2 disk.
const QCOW2_THREADS: usize = 2;

/// What a qcow2 I/O thread is sent.
enum ImagoMsg {
    Job(ImagoJob),
    /// Give up this thread's privileges with this function (the process gave up its own;
    /// capabilities are per thread, and this thread was started before).
    DropPrivileges(fn() -> std::io::Result<()>),
}

/// A job for a qcow2 I/O thread.
pub struct ImagoJob {
    job: Job,
    mem: GuestMemoryLoadGuard<GuestMemoryMmap>,
    slot: u32,
    done: mpsc::Sender<Done>,
    notify: EventFd,
}

/// A qcow2 I/O thread: runs jobs concurrently on a single-threaded runtime until the disk
/// is dropped.
fn imago_thread(
    img: Arc<tokio::sync::RwLock<Qcow2Access>>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<ImagoMsg>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("qcow2 I/O thread: {e}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        while let Some(m) = rx.recv().await {
            let j = match m {
                ImagoMsg::Job(j) => j,
                ImagoMsg::DropPrivileges(drop) => {
                    if let Err(e) = drop() {
                        log::warn!("qcow2 I/O thread: giving up privileges: {e}");
                    }
                    continue;
                }
            };
            let img = img.clone();
            tokio::task::spawn_local(async move {
                let result = match run_imago(&img, &j.mem, j.job).await {
                    Ok(()) => 0,
                    Err(e) => {
                        log::warn!("qcow2 I/O: {e}");
                        errno(&e)
                    }
                };
                let _ = j.done.send(Done {
                    slot: j.slot,
                    result,
                });
                let _ = j.notify.write(1);
            });
        }
    });
}

/// A request for the engine.
#[derive(Clone, Debug)]
pub enum Job {
    Read { offset: u64, data: Vec<Seg> },
    Write { offset: u64, data: Vec<Seg> },
    Flush,
    Discard(Vec<Range>),
    WriteZeroes(Vec<Range>),
}

/// A finished job: its slot and 0 or a negative errno.
#[derive(Clone, Copy, Debug)]
pub struct Done {
    pub slot: u32,
    pub result: i32,
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

fn errno(e: &io::Error) -> i32 {
    -e.raw_os_error().unwrap_or(libc::EIO)
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
                let Kind::Raw { file } = &image.kind else {
                    self.ready.push(Done {
                        slot,
                        result: -libc::EIO,
                    });
                    return slot;
                };
                let fd = io_uring::types::Fd(file.as_raw_fd());
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

/// Runs one job through imago.
async fn run_imago(
    img: &tokio::sync::RwLock<Qcow2Access>,
    mem: &GuestMemoryMmap,
    job: Job,
) -> io::Result<()> {
    let slices = |data: &[Seg]| -> io::Result<Vec<vm_memory::VolatileSlice<'_>>> {
        let mut v = Vec::new();
        for &(a, l) in data {
            for_each_piece(mem, a, l as usize, |s| v.push(s))
                .map_err(|_| io::Error::from_raw_os_error(libc::EFAULT))?;
        }
        Ok(v)
    };
    match job {
        Job::Read { offset, data } => {
            let s = slices(&data)?;
            let (iov, _guard) = IoVectorMut::from_volatile_slice(&s);
            img.read().await.readv(iov, offset).await
        }
        Job::Write { offset, data } => {
            let s = slices(&data)?;
            let (iov, _guard) = IoVector::from_volatile_slice(&s);
            let g = img.read().await;
            g.writev(iov, offset).await?;
            // Metadata to the file before the guest hears "done" (see the module comment).
            g.flush().await
        }
        Job::Flush => {
            let g = img.read().await;
            g.flush().await?;
            g.sync().await
        }
        Job::Discard(ranges) => {
            let mut g = img.write().await;
            for r in ranges {
                g.discard_to_any(r.offset, r.len).await?;
            }
            g.flush().await
        }
        Job::WriteZeroes(ranges) => {
            let mut g = img.write().await;
            for r in ranges {
                if r.unmap {
                    g.discard_to_zero(r.offset, r.len).await?;
                } else {
                    g.write_zeroes(r.offset, r.len).await?;
                }
            }
            g.flush().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use vm_memory::{Bytes, GuestAddress};

    const MIB: u64 = 1 << 20;

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
