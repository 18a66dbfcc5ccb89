//! Disk images: opening (format detection, QEMU-compatible locking, capacity), the jobs the
//! I/O engines run (`engine.rs`) and the qcow2 I/O threads.
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
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use imago::io_buffers::{IoVector, IoVectorMut};
use imago::{FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate};
use vm_memory::{GuestMemoryLoadGuard, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

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

pub(super) enum Kind {
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
    /// `drop`, which gives up some of the calling thread's privileges (its capabilities, or
    /// system calls through a seccomp filter): what a process gives up after opening images
    /// does not reach threads already running. Returns at once; each thread does it before
    /// its next job.
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
    pub(super) kind: Kind,
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
pub(super) enum ImagoMsg {
    Job(ImagoJob),
    /// Give up this thread's privileges with this function (the process gave up its own;
    /// capabilities and seccomp filters are per thread, and this thread was started before).
    DropPrivileges(fn() -> std::io::Result<()>),
}

/// A job for a qcow2 I/O thread.
pub struct ImagoJob {
    pub(super) job: Job,
    pub(super) mem: GuestMemoryLoadGuard<GuestMemoryMmap>,
    pub(super) slot: u32,
    pub(super) done: mpsc::Sender<Done>,
    pub(super) notify: EventFd,
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
                        // Fail closed: an I/O thread that could not give up what it was
                        // told to ends (the disk's requests then fail) rather than run on.
                        log::error!("qcow2 I/O thread: giving up privileges: {e}; ending");
                        return;
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

pub(super) fn errno(e: &io::Error) -> i32 {
    -e.raw_os_error().unwrap_or(libc::EIO)
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
