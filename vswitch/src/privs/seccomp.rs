//! Seccomp filters, one per kind of thread, on every thread of `vfabric run` by default
//! (`--seccomp kill`). What needs more than a thread's list (opening images, creating TAPs,
//! binding the sockets of the topology) happens before the thread confines itself.
//!
//! Filters stack: a thread started by a confined thread keeps its parent's filter and adds
//! its own, so a system call passes only when every filter on the thread allows it. The
//! control plane starts new ports on reload, so its list holds the data path's and the NAT
//! gateway's, plus what setting up a port takes; the threads it starts then narrow
//! themselves to their own list. The lists, and why each call is there, are in
//! `docs/seccomp.md` (a test checks that the document and this file agree).

use std::collections::{BTreeMap, BTreeSet};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// What a thread's seccomp filter does with a system call outside its list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SeccompMode {
    /// No filter (for diagnosis; `vfabric run` warns).
    Off,
    /// Allow it, and have the kernel log it (audit log / dmesg, with the thread's name and
    /// the call's number): for finding out what a setup needs.
    Log,
    /// Kill the whole process (a compromised thread goes no further). The default.
    #[default]
    Kill,
}

/// The kinds of threads, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreadKind {
    /// Each vhost-user port's thread with its connections' relay and ring workers, the
    /// busy-poll threads, the TAP and VXLAN readers, the impairment delay line: guest
    /// memory, eventfds, Unix sockets; the TAP and UDP sockets they read were opened before.
    DataPath,
    /// A NAT port's gateway thread: the host's IPv4 and IPv6 sockets it opens for the
    /// guests' connections, DNS questions and pings.
    Nat,
    /// A disk's thread with its connections' ring workers, and the qcow2 I/O threads:
    /// io_uring and the image file's operations (the image was opened and locked before).
    Disk,
    /// The main thread once started (signals, reload), the control thread (control socket,
    /// web console, reload, captures) and the housekeeping threads (socket keeper, FDB
    /// aging, systemd status). A reload starts ports, so this list also holds every call of
    /// [`ThreadKind::DataPath`] and [`ThreadKind::Nat`].
    Control,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 4] = [Self::DataPath, Self::Nat, Self::Disk, Self::Control];

    /// The name `docs/seccomp.md` uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::DataPath => "data path",
            Self::Nat => "nat",
            Self::Disk => "disk",
            Self::Control => "control",
        }
    }
}

/// `(number, name)` for a list of system calls.
macro_rules! calls {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {
        &[$($(#[$m])* (sys::$name, stringify!($name))),*]
    };
}

/// System call numbers by name (`libc::SYS_*`, under the names the docs use).
#[allow(non_upper_case_globals)]
mod sys {
    pub use libc::{
        SYS_accept4 as accept4, SYS_bind as bind, SYS_brk as brk,
        SYS_clock_gettime as clock_gettime, SYS_clock_nanosleep as clock_nanosleep,
        SYS_clone as clone, SYS_clone3 as clone3, SYS_close as close, SYS_connect as connect,
        SYS_dup as dup, SYS_dup3 as dup3, SYS_epoll_create1 as epoll_create1,
        SYS_epoll_ctl as epoll_ctl, SYS_epoll_pwait as epoll_pwait, SYS_eventfd2 as eventfd2,
        SYS_exit as exit, SYS_exit_group as exit_group, SYS_fallocate as fallocate,
        SYS_fchmodat as fchmodat, SYS_fchownat as fchownat, SYS_fcntl as fcntl,
        SYS_fdatasync as fdatasync, SYS_fstat as fstat, SYS_fsync as fsync,
        SYS_ftruncate as ftruncate, SYS_futex as futex, SYS_getcwd as getcwd,
        SYS_geteuid as geteuid, SYS_getpeername as getpeername, SYS_getpid as getpid,
        SYS_getrandom as getrandom, SYS_getsockname as getsockname, SYS_getsockopt as getsockopt,
        SYS_gettid as gettid, SYS_gettimeofday as gettimeofday,
        SYS_io_uring_enter as io_uring_enter, SYS_io_uring_register as io_uring_register,
        SYS_io_uring_setup as io_uring_setup, SYS_listen as listen, SYS_lseek as lseek,
        SYS_madvise as madvise, SYS_memfd_create as memfd_create, SYS_mkdirat as mkdirat,
        SYS_mmap as mmap, SYS_mprotect as mprotect, SYS_mremap as mremap, SYS_munmap as munmap,
        SYS_nanosleep as nanosleep, SYS_newfstatat as newfstatat, SYS_openat as openat,
        SYS_ppoll as ppoll, SYS_prctl as prctl, SYS_pread64 as pread64, SYS_preadv as preadv,
        SYS_preadv2 as preadv2, SYS_pwrite64 as pwrite64, SYS_pwritev as pwritev,
        SYS_pwritev2 as pwritev2, SYS_read as read, SYS_readlinkat as readlinkat,
        SYS_readv as readv, SYS_recvfrom as recvfrom, SYS_recvmmsg as recvmmsg,
        SYS_recvmsg as recvmsg, SYS_restart_syscall as restart_syscall, SYS_rseq as rseq,
        SYS_rt_sigaction as rt_sigaction, SYS_rt_sigprocmask as rt_sigprocmask,
        SYS_rt_sigreturn as rt_sigreturn, SYS_rt_sigtimedwait as rt_sigtimedwait,
        SYS_sched_getaffinity as sched_getaffinity, SYS_sched_yield as sched_yield,
        SYS_seccomp as seccomp, SYS_sendmmsg as sendmmsg, SYS_sendmsg as sendmsg,
        SYS_sendto as sendto, SYS_set_robust_list as set_robust_list, SYS_setns as setns,
        SYS_setsockopt as setsockopt, SYS_shutdown as shutdown, SYS_sigaltstack as sigaltstack,
        SYS_socketpair as socketpair, SYS_statx as statx, SYS_tgkill as tgkill,
        SYS_unlinkat as unlinkat, SYS_write as write, SYS_writev as writev,
    };
    #[cfg(target_arch = "x86_64")]
    pub use libc::{
        SYS_chmod as chmod, SYS_chown as chown, SYS_epoll_wait as epoll_wait, SYS_mkdir as mkdir,
        SYS_poll as poll, SYS_readlink as readlink, SYS_unlink as unlink,
    };
}

type Calls = &'static [(libc::c_long, &'static str)];

/// Every thread: memory, threads, futexes, signals, time, randomness, its own descriptors
/// (read, write, poll, close), what a panic's message and backtrace need, and seccomp
/// itself (a thread started by a confined thread adds its own filter; filters only ever
/// take calls away).
const BASE: Calls = calls![
    brk,
    clock_gettime,
    clock_nanosleep,
    clone,
    clone3,
    close,
    dup,
    dup3,
    epoll_create1,
    epoll_ctl,
    epoll_pwait,
    eventfd2,
    exit,
    exit_group,
    fcntl,
    fstat,
    futex,
    getcwd,
    getpid,
    getrandom,
    gettid,
    gettimeofday,
    lseek,
    madvise,
    mmap,
    mprotect,
    mremap,
    munmap,
    nanosleep,
    newfstatat,
    ppoll,
    prctl,
    read,
    readv,
    restart_syscall,
    rseq,
    rt_sigaction,
    rt_sigprocmask,
    rt_sigreturn,
    sched_getaffinity,
    sched_yield,
    seccomp,
    set_robust_list,
    sigaltstack,
    statx,
    tgkill,
    write,
    writev,
    #[cfg(target_arch = "x86_64")]
    epoll_wait,
    #[cfg(target_arch = "x86_64")]
    poll,
];

/// Using sockets already made or made by the thread (which families it may make is a rule
/// on `socket` of its own).
const SOCKET_IO: Calls = calls![
    accept4,
    bind,
    connect,
    getpeername,
    getsockname,
    getsockopt,
    listen,
    recvfrom,
    recvmmsg,
    recvmsg,
    sendmmsg,
    sendmsg,
    sendto,
    setsockopt,
    shutdown,
];

/// The data path's own: a vhost-user port's socket file made again (the socket keeper asks
/// the port's thread), guest memory files read at an offset (inflight state).
const DATA_PATH: Calls = calls![
    pread64,
    pwrite64,
    unlinkat,
    #[cfg(target_arch = "x86_64")]
    unlink,
];

/// The NAT gateway's own (beyond sockets): nothing else.
const NAT: Calls = calls![];

/// A disk's own: io_uring, the image file's I/O, flushes and discards (the qcow2 I/O
/// threads call them directly), the inflight-state memory file a VMM asks for, its stale
/// socket file replaced.
const DISK: Calls = calls![
    fallocate,
    fdatasync,
    fsync,
    ftruncate,
    io_uring_enter,
    io_uring_register,
    io_uring_setup,
    memfd_create,
    pread64,
    preadv,
    preadv2,
    pwrite64,
    pwritev,
    pwritev2,
    unlinkat,
    #[cfg(target_arch = "x86_64")]
    unlink,
];

/// The control plane's own (beyond the data path's and NAT's): files opened (the topology
/// file on reload, capture files, images and TAPs of ports added by reload, /proc for `ctl
/// ports`), signals taken by the main thread, socket files made with their directory,
/// owner and mode (on reload, and by the socket keeper), a NAT gateway's wake-up pair, TAPs made on reload (a namespace entered, netlink, TUN ioctls), paths
/// resolved, and a qcow2 image's metadata written and flushed when the main thread closes it
/// at exit.
const CONTROL: Calls = calls![
    fchmodat,
    openat,
    fchownat,
    fdatasync,
    fsync,
    geteuid,
    mkdirat,
    preadv,
    pwritev,
    readlinkat,
    rt_sigtimedwait,
    setns,
    socketpair,
    #[cfg(target_arch = "x86_64")]
    chmod,
    #[cfg(target_arch = "x86_64")]
    chown,
    #[cfg(target_arch = "x86_64")]
    mkdir,
    #[cfg(target_arch = "x86_64")]
    readlink,
];

/// Calls outside a kind's list that code it runs may still try without meaning harm (a
/// panic's backtrace opening the binary for its symbols, a library reading a /proc file):
/// refused with EACCES instead of killing the process, by a second filter stacked on the
/// kind's own (`guard`). The control plane opens files and has none.
fn refused_gently(kind: ThreadKind) -> Calls {
    match kind {
        ThreadKind::Control => &[],
        _ => calls![openat],
    }
}

/// Argument rules: the call is allowed only when argument `arg` is one of `values`.
struct ArgRule {
    call: libc::c_long,
    arg: u8,
    values: &'static [u64],
}

const AF_UNIX: u64 = libc::AF_UNIX as u64;
const AF_INET: u64 = libc::AF_INET as u64;
const AF_INET6: u64 = libc::AF_INET6 as u64;
const AF_NETLINK: u64 = libc::AF_NETLINK as u64;
/// ioctl: setting a descriptor non-blocking or close-on-exec.
const FD_IOCTLS: &[u64] = &[libc::FIONBIO, libc::FIOCLEX];
/// ioctl: making and setting up a TAP (TUNSETIFF and its settings) and finding an
/// interface's index.
const TAP_IOCTLS: &[u64] = &[
    libc::TUNSETIFF,
    libc::TUNSETVNETHDRSZ,
    libc::TUNSETOFFLOAD,
    libc::SIOCGIFINDEX,
];

/// Which sockets a thread kind may make, and which ioctls it may ask for.
fn arg_rules(kind: ThreadKind) -> Vec<ArgRule> {
    let socket = |values| ArgRule {
        call: libc::SYS_socket,
        arg: 0,
        values,
    };
    let ioctl = |values| ArgRule {
        call: libc::SYS_ioctl,
        arg: 1,
        values,
    };
    match kind {
        ThreadKind::DataPath | ThreadKind::Disk => vec![socket(&[AF_UNIX]), ioctl(FD_IOCTLS)],
        ThreadKind::Nat => vec![socket(&[AF_INET, AF_INET6]), ioctl(FD_IOCTLS)],
        ThreadKind::Control => vec![
            socket(&[AF_UNIX, AF_INET, AF_INET6, AF_NETLINK]),
            ioctl(FD_IOCTLS),
            ioctl(TAP_IOCTLS),
        ],
    }
}

/// The plain lists (no argument rule) of `kind`.
fn lists(kind: ThreadKind) -> Vec<Calls> {
    match kind {
        ThreadKind::DataPath => vec![BASE, SOCKET_IO, DATA_PATH],
        ThreadKind::Nat => vec![BASE, SOCKET_IO, NAT],
        ThreadKind::Disk => vec![BASE, SOCKET_IO, DISK],
        ThreadKind::Control => vec![BASE, SOCKET_IO, DATA_PATH, NAT, CONTROL],
    }
}

/// Every call `kind` allows, by name, with the argument rule's values if it has one (for the
/// docs' test and for `vfabric` to describe).
pub fn allowed(kind: ThreadKind) -> BTreeMap<&'static str, Option<BTreeSet<u64>>> {
    let mut out: BTreeMap<&'static str, Option<BTreeSet<u64>>> = BTreeMap::new();
    for list in lists(kind) {
        for &(_, name) in list {
            out.insert(name, None);
        }
    }
    for r in arg_rules(kind) {
        let name = if r.call == libc::SYS_socket {
            "socket"
        } else {
            "ioctl"
        };
        out.entry(name)
            .or_insert_with(|| Some(BTreeSet::new()))
            .get_or_insert_with(BTreeSet::new)
            .extend(r.values);
    }
    out
}

/// Builds `kind`'s filter: its calls allowed, anything else gets `mismatch`.
pub fn filter(
    kind: ThreadKind,
    mismatch: SeccompAction,
) -> Result<BpfProgram, seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    // Passed on to the guard stacked on this filter, which refuses them gently.
    for list in lists(kind).into_iter().chain([refused_gently(kind)]) {
        for &(nr, _) in list {
            rules.insert(nr, Vec::new());
        }
    }
    for r in arg_rules(kind) {
        let entry = rules.entry(r.call).or_default();
        for &v in r.values {
            let c = SeccompCondition::new(r.arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v)?;
            entry.push(SeccompRule::new(vec![c])?);
        }
    }
    let arch = if cfg!(target_arch = "aarch64") {
        seccompiler::TargetArch::aarch64
    } else {
        seccompiler::TargetArch::x86_64
    };
    SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch)?.try_into()
}

/// The filter stacked on `kind`'s own: its `refused_gently` calls get `action` (EACCES in
/// kill mode, a log record in log mode), everything else passes on to the kind's filter.
/// `None` when the kind has no such call.
pub fn guard(
    kind: ThreadKind,
    action: SeccompAction,
) -> Result<Option<BpfProgram>, seccompiler::BackendError> {
    let calls = refused_gently(kind);
    if calls.is_empty() {
        return Ok(None);
    }
    let rules = calls.iter().map(|&(nr, _)| (nr, Vec::new())).collect();
    let arch = if cfg!(target_arch = "aarch64") {
        seccompiler::TargetArch::aarch64
    } else {
        seccompiler::TargetArch::x86_64
    };
    Ok(Some(
        SeccompFilter::new(rules, SeccompAction::Allow, action, arch)?.try_into()?,
    ))
}

/// The compiled filters of each kind (its own, then its guard), when asked for (set once,
/// before any thread starts).
static FILTERS: std::sync::OnceLock<BTreeMap<ThreadKind, Vec<BpfProgram>>> =
    std::sync::OnceLock::new();

/// Compiles every kind's filter for `mode`, for [`enter`] to apply. Call before any thread
/// starts.
pub fn set_filters(mode: SeccompMode) -> Result<(), String> {
    let (mismatch, gently) = match mode {
        SeccompMode::Off => return Ok(()),
        SeccompMode::Log => (SeccompAction::Log, SeccompAction::Log),
        SeccompMode::Kill => (
            SeccompAction::KillProcess,
            SeccompAction::Errno(libc::EACCES as u32),
        ),
    };
    let mut progs = BTreeMap::new();
    for kind in ThreadKind::ALL {
        let err = |e| format!("seccomp filter ({}): {e}", kind.name());
        let mut both = vec![filter(kind, mismatch.clone()).map_err(err)?];
        both.extend(guard(kind, gently.clone()).map_err(err)?);
        progs.insert(kind, both);
    }
    let _ = FILTERS.set(progs);
    Ok(())
}

/// Restricts the calling thread's system calls (and those of the threads it starts) to
/// `kind`'s, when filters were set. Returns an error only if a filter was set and could not
/// be applied.
pub fn enter(kind: ThreadKind) -> Result<(), String> {
    for prog in FILTERS
        .get()
        .and_then(|f| f.get(&kind))
        .into_iter()
        .flatten()
    {
        seccompiler::apply_filter(prog).map_err(|e| format!("seccomp ({}): {e}", kind.name()))?;
    }
    Ok(())
}

/// Starts a thread named `name` that confines itself to `kind`'s list before it runs
/// `body`, and returns once the filter is on: a thread started this way never runs
/// unconfined, and `vfabric ready` means every such thread is confined. If the filter cannot
/// be applied, the thread ends without running `body` and the error is returned.
pub fn spawn_confined(
    name: String,
    kind: ThreadKind,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        let confined = enter(kind);
        let ok = confined.is_ok();
        let _ = tx.send(confined);
        if ok {
            body()
        }
    })?;
    match rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => Err(std::io::Error::other(e)),
        Err(_) => Err(std::io::Error::other(
            "the thread ended before confining itself",
        )),
    }
}

/// First thing of every data-path thread: [`enter`] for [`ThreadKind::DataPath`].
pub fn enter_data_path() -> Result<(), String> {
    enter(ThreadKind::DataPath)
}

/// [`enter`] for [`ThreadKind::Disk`], in the shape the qcow2 I/O threads run.
pub fn enter_disk() -> std::io::Result<()> {
    enter(ThreadKind::Disk).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};

    const EPERM: Option<i32> = Some(libc::EPERM);

    /// Runs `body` on a thread of its own under `kind`'s filter, with "refuse with EPERM"
    /// instead of "kill".
    fn confined(kind: ThreadKind, body: impl FnOnce() + Send + 'static) {
        let prog = filter(kind, SeccompAction::Errno(libc::EPERM as u32)).unwrap();
        let guard = guard(kind, SeccompAction::Errno(libc::EACCES as u32)).unwrap();
        std::thread::spawn(move || {
            seccompiler::apply_filter(&prog).unwrap();
            if let Some(g) = &guard {
                seccompiler::apply_filter(g).unwrap();
            }
            body()
        })
        .join()
        .unwrap();
    }

    /// Refused with EACCES (not a kill) to every kind but the control plane: opening files,
    /// even for reading.
    fn no_open() {
        let e = std::fs::File::open("/proc/self/status").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    }

    /// Refused to every kind: running programs.
    fn no_exec() {
        let exec = std::process::Command::new("/bin/true")
            .status()
            .unwrap_err();
        assert_eq!(exec.raw_os_error(), EPERM);
    }

    #[test]
    fn the_data_path_filter_allows_the_data_path_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        confined(ThreadKind::DataPath, move || {
            // A Unix socket served and dialed, bytes both ways, a thread started.
            let l = UnixListener::bind(path.join("s")).unwrap();
            let mut c = UnixStream::connect(path.join("s")).unwrap();
            let (mut s, _) = l.accept().unwrap();
            c.write_all(b"ring").unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"ring");
            s.set_nonblocking(true).unwrap();
            std::thread::spawn(|| 7).join().unwrap();
            // What a panic's backtrace needs.
            assert!(std::env::current_dir().is_ok());
            // Refused: network sockets, new directories, running programs.
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_err();
            assert_eq!(udp.raw_os_error(), EPERM);
            let d = std::fs::create_dir(path.join("d")).unwrap_err();
            assert_eq!(d.raw_os_error(), EPERM);
            no_open();
            no_exec();
        });
    }

    #[test]
    fn the_nat_filter_allows_host_sockets_and_nothing_of_unix_or_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        confined(ThreadKind::Nat, move || {
            // UDP and TCP on loopback, both families where the host has them.
            let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            a.send_to(b"dns?", b.local_addr().unwrap()).unwrap();
            let mut buf = [0u8; 8];
            assert_eq!(b.recv_from(&mut buf).unwrap().0, 4);
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (mut s, _) = l.accept().unwrap();
            c.write_all(b"tcp").unwrap();
            s.read_exact(&mut buf[..3]).unwrap();
            assert_eq!(&buf[..3], b"tcp");
            c.set_nonblocking(true).unwrap();
            // Refused: Unix sockets, new directories, running programs.
            let u = UnixListener::bind(path.join("s")).unwrap_err();
            assert_eq!(u.raw_os_error(), EPERM);
            let d = std::fs::create_dir(path.join("d")).unwrap_err();
            assert_eq!(d.raw_os_error(), EPERM);
            no_open();
            no_exec();
        });
    }

    #[test]
    fn the_disk_filter_allows_image_io_and_refuses_network_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("img");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&image)
            .unwrap();
        confined(ThreadKind::Disk, move || {
            use std::os::unix::fs::FileExt;
            // Written, flushed, read back, grown; io_uring set up.
            f.write_all_at(b"sector", 512).unwrap();
            f.sync_data().unwrap();
            f.sync_all().unwrap();
            let mut b = [0u8; 6];
            f.read_exact_at(&mut b, 512).unwrap();
            assert_eq!(&b, b"sector");
            f.set_len(4096).unwrap();
            let mut params = [0u8; 120]; // struct io_uring_params, zeroed
            // SAFETY: io_uring_setup reads and fills the 120-byte params we own; the ring
            // descriptor it returns is closed right after.
            let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 8, params.as_mut_ptr()) };
            assert!(
                fd >= 0,
                "io_uring_setup: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: closing the descriptor io_uring_setup just gave us.
            unsafe { libc::close(fd as i32) };
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_err();
            assert_eq!(udp.raw_os_error(), EPERM);
            no_open();
            no_exec();
        });
    }

    #[test]
    fn the_control_filter_allows_setting_up_ports_and_refuses_programs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        confined(ThreadKind::Control, move || {
            // A socket file with its mode, a UDP socket, the topology file read again.
            let l = UnixListener::bind(path.join("s")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path.join("s"), std::fs::Permissions::from_mode(0o660))
                .unwrap();
            drop(l);
            std::fs::remove_file(path.join("s")).unwrap();
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            std::fs::write(path.join("lab.toml"), "x").unwrap();
            assert_eq!(std::fs::read(path.join("lab.toml")).unwrap(), b"x");
            // Threads can be started from here.
            assert_eq!(std::thread::spawn(|| 7).join().unwrap(), 7);
            no_exec();
        });
    }

    /// Every filter compiles, within the kernel's limit of 4096 instructions; their sizes
    /// are printed (`docs/seccomp.md` gives them).
    #[test]
    fn every_filter_compiles_within_the_kernels_limit() {
        for kind in ThreadKind::ALL {
            let prog = filter(kind, SeccompAction::KillProcess).unwrap();
            println!(
                "{}: {} calls, {} BPF instructions",
                kind.name(),
                allowed(kind).len(),
                prog.len()
            );
            assert!(prog.len() <= 4096, "{}: {}", kind.name(), prog.len());
            let guard = guard(kind, SeccompAction::Errno(libc::EACCES as u32)).unwrap();
            assert_eq!(guard.is_some(), kind != ThreadKind::Control);
        }
    }

    /// The data path and NAT threads are started by the control plane (on reload): whatever
    /// they may do, the control plane's filter must allow too, with the same arguments.
    #[test]
    fn the_control_list_holds_every_list_of_a_thread_it_starts() {
        let control = allowed(ThreadKind::Control);
        for kind in [ThreadKind::DataPath, ThreadKind::Nat] {
            for (name, rule) in allowed(kind) {
                match (rule, control.get(name)) {
                    (_, None) => panic!("{}: {name} not in the control list", kind.name()),
                    (Some(v), Some(Some(c))) => assert!(v.is_subset(c), "{name}"),
                    (None, Some(Some(_))) => panic!("{name}: control has a narrower rule"),
                    (_, Some(None)) => {}
                }
            }
        }
    }

    /// `docs/seccomp.md` lists every call of every kind, and nothing more: its table has a
    /// row per call with a column per kind.
    #[test]
    fn the_document_lists_each_kinds_calls() {
        let doc = include_str!("../../../docs/seccomp.md");
        let mut documented: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let header: Vec<&str> = doc
            .lines()
            .find(|l| l.starts_with("| system call |"))
            .expect("the table's header")
            .split('|')
            .map(str::trim)
            .collect();
        for line in doc.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`');
            for (i, cell) in cells.iter().enumerate() {
                if cell.starts_with('x') {
                    documented.entry(header[i]).or_default().insert(name);
                }
            }
        }
        for kind in ThreadKind::ALL {
            let code: BTreeSet<&str> = allowed(kind).keys().copied().collect();
            let doc = documented.remove(kind.name()).unwrap_or_default();
            assert_eq!(
                doc.difference(&code).collect::<Vec<_>>(),
                Vec::<&&str>::new(),
                "documented for {} but not in the code",
                kind.name()
            );
            assert_eq!(
                code.difference(&doc).collect::<Vec<_>>(),
                Vec::<&&str>::new(),
                "in the code for {} but not documented",
                kind.name()
            );
        }
    }
}
