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

mod seccomp;
pub use seccomp::{
    SeccompMode, ThreadKind, allowed, enter, enter_data_path, enter_disk, filter, set_filters,
    spawn_confined,
};
