//! Giving up privileges once the privileged setup is done: a topology with TAP ports needs
//! CAP_NET_ADMIN to create them, and nothing after that does. The data path never needs
//! root.

use std::io;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's effective capability set (64 bits).
pub fn effective() -> io::Result<u64> {
    let mut h = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: capget(2) with a version-3 header and room for the two data words it writes.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(d[0].effective) | (u64::from(d[1].effective) << 32))
}

/// Drops every capability of the calling thread (effective, permitted, inheritable,
/// ambient) and forbids gaining new ones (no_new_privs). Threads started afterwards inherit
/// the empty sets; call it before starting any.
pub fn drop_all() -> io::Result<()> {
    // SAFETY: prctl(2) with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; fails harmlessly (EINVAL) on kernels without ambient capabilities.
    let _ = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let h = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let d = [CapData::default(); 2];
    // SAFETY: capset(2) reads a version-3 header and its two data words, all zero.
    let r = unsafe { libc::syscall(libc::SYS_capset, &h, d.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What the data-path seccomp filter does with a system call outside its list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SeccompMode {
    /// No filter (for diagnosis; `vfabric run` warns).
    Off,
    /// Allow it, and have the kernel log it (audit log / dmesg): for finding out what a
    /// setup needs.
    Log,
    /// Kill the whole process (a compromised data path goes no further). The default.
    #[default]
    Kill,
}

/// System calls of the data-path threads: the vhost-user port threads with their connections'
/// relay and worker threads, and the TAP and VXLAN readers. Measured with `strace -f` under
/// traffic (guests connecting, reconnecting, rebooting; TAP and VXLAN ports), plus what a
/// thread's exit, a panic and the logger need. Sockets can only be Unix sockets (the relay's
/// private socket, dialing a VMM); ioctl only sets non-blocking or close-on-exec.
const DATA_PATH_SYSCALLS: &[libc::c_long] = &[
    libc::SYS_accept4,
    libc::SYS_bind,
    libc::SYS_brk,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_close,
    libc::SYS_connect,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_fcntl,
    libc::SYS_fstat,
    libc::SYS_futex,
    // A panic's backtrace (RUST_BACKTRACE) asks for the working directory.
    libc::SYS_getcwd,
    libc::SYS_getpeername,
    libc::SYS_getpid,
    libc::SYS_getrandom,
    libc::SYS_getsockname,
    libc::SYS_getsockopt,
    libc::SYS_gettid,
    libc::SYS_gettimeofday,
    libc::SYS_listen,
    libc::SYS_lseek,
    libc::SYS_madvise,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_munmap,
    libc::SYS_nanosleep,
    libc::SYS_newfstatat,
    libc::SYS_openat,
    libc::SYS_ppoll,
    libc::SYS_prctl,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_recvfrom,
    libc::SYS_recvmmsg,
    libc::SYS_recvmsg,
    libc::SYS_restart_syscall,
    libc::SYS_rseq,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_sendmmsg,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
    libc::SYS_set_robust_list,
    libc::SYS_setsockopt,
    libc::SYS_shutdown,
    libc::SYS_sigaltstack,
    libc::SYS_statx,
    libc::SYS_tgkill,
    libc::SYS_unlinkat,
    libc::SYS_write,
    libc::SYS_writev,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_unlink,
];

/// The compiled filter, when one was asked for (set once, before the data-path threads
/// start).
static FILTER: std::sync::OnceLock<seccompiler::BpfProgram> = std::sync::OnceLock::new();

/// Builds the data-path filter: the list above allowed (socket only for AF_UNIX, ioctl only
/// FIONBIO and FIOCLEX), anything else gets `mismatch`.
pub fn data_path_filter(
    mismatch: seccompiler::SeccompAction,
) -> Result<seccompiler::BpfProgram, seccompiler::BackendError> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    };
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> = DATA_PATH_SYSCALLS
        .iter()
        .map(|&n| (n, Vec::new()))
        .collect();
    let arg_is = |arg: u8, len: SeccompCmpArgLen, v: u64| {
        SeccompCondition::new(arg, len, SeccompCmpOp::Eq, v).and_then(|c| SeccompRule::new(vec![c]))
    };
    rules.insert(
        libc::SYS_socket,
        vec![arg_is(0, SeccompCmpArgLen::Dword, libc::AF_UNIX as u64)?],
    );
    rules.insert(
        libc::SYS_ioctl,
        vec![
            arg_is(1, SeccompCmpArgLen::Dword, libc::FIONBIO)?,
            arg_is(1, SeccompCmpArgLen::Dword, libc::FIOCLEX)?,
        ],
    );
    let arch = if cfg!(target_arch = "aarch64") {
        seccompiler::TargetArch::aarch64
    } else {
        seccompiler::TargetArch::x86_64
    };
    SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch)?.try_into()
}

/// Compiles the data-path filter for `mode`, for [`enter_data_path`] to apply. Call before
/// any data-path thread starts.
pub fn set_data_path_filter(mode: SeccompMode) -> Result<(), String> {
    let mismatch = match mode {
        SeccompMode::Off => return Ok(()),
        SeccompMode::Log => seccompiler::SeccompAction::Log,
        SeccompMode::Kill => seccompiler::SeccompAction::KillProcess,
    };
    let prog = data_path_filter(mismatch).map_err(|e| format!("seccomp filter: {e}"))?;
    let _ = FILTER.set(prog);
    Ok(())
}

/// First thing of every data-path thread: restricts its system calls (and those of the
/// threads it starts) to the data path's, when a filter was set. Returns an error only if a
/// filter was set and could not be applied.
pub fn enter_data_path() -> Result<(), String> {
    match FILTER.get() {
        Some(prog) => seccompiler::apply_filter(prog).map_err(|e| format!("seccomp: {e}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};

    /// The filter, with "refuse with EPERM" instead of "kill", applied to one thread: what the
    /// data path does works, the rest is refused.
    #[test]
    fn the_data_path_filter_allows_the_data_path_and_refuses_the_rest() {
        let prog = data_path_filter(seccompiler::SeccompAction::Errno(libc::EPERM as u32)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        std::thread::spawn(move || {
            seccompiler::apply_filter(&prog).unwrap();
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
            // Refused: network sockets, new files and directories, running programs.
            let eperm = Some(libc::EPERM);
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_err();
            assert_eq!(udp.raw_os_error(), eperm);
            let dir = std::fs::create_dir(path.join("d")).unwrap_err();
            assert_eq!(dir.raw_os_error(), eperm);
            let exec = std::process::Command::new("/bin/true")
                .status()
                .unwrap_err();
            assert_eq!(exec.raw_os_error(), eperm);
        })
        .join()
        .unwrap();
    }
}
