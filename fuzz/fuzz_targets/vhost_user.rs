//! Hostile vhost-user message sequences against a live port, on one VMM connection kept
//! from input to input (dialed again when a sequence makes the port hang up): the same
//! builder and checks as `vhost-backends/tests/hostile_messages.rs`. The port's thread (and so
//! its connections' relay and ring workers) runs under vfabric's data-path seccomp filter, as
//! under `vfabric run`; a system call outside it raises SIGSYS, whose handler notes the call
//! and makes it fail (ENOSYS), and the input that caused it panics on the fuzzer's own thread
//! (unconfined), so libFuzzer keeps it.
#![no_main]
use std::sync::atomic::{AtomicI64, Ordering};

use libfuzzer_sys::fuzz_target;

#[path = "../../vhost-backends/tests/msgs/mod.rs"]
#[allow(dead_code)] // the one-connection-per-input entry points are the proptest's
mod msgs;

/// The number of the last system call the filter refused (-1: none).
static REFUSED: AtomicI64 = AtomicI64::new(-1);

extern "C" fn outside_the_filter(
    _: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel hands a SIGSYS handler installed with SA_SIGINFO a valid siginfo
    // (with the refused call's number) and ucontext; only an atomic store and the saved RAX
    // register (the call's return value) are written.
    unsafe {
        let nr = (*info.cast::<SigsysInfo>()).syscall;
        REFUSED.store(i64::from(nr), Ordering::SeqCst);
        let uc = context.cast::<libc::ucontext_t>();
        (*uc).uc_mcontext.gregs[libc::REG_RAX as usize] = -i64::from(libc::ENOSYS);
    }
}

/// The SIGSYS fields of `siginfo_t` (x86-64): signo, errno, code, then call address,
/// syscall number and arch.
#[repr(C)]
struct SigsysInfo {
    _signo: libc::c_int,
    _errno: libc::c_int,
    _code: libc::c_int,
    _pad: libc::c_int,
    _call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    _arch: libc::c_uint,
}

fn confine() {
    let prog = vswitch::privs::filter(
        vswitch::privs::ThreadKind::DataPath,
        seccompiler::SeccompAction::Trap,
    )
    .expect("the data-path filter compiles");
    seccompiler::apply_filter(&prog).expect("the data-path filter applies");
}

fuzz_target!(
    init: {
        // vfabric is a Rust program: its runtime ignores SIGPIPE, and the vhost crate relies
        // on that when it answers a peer that hung up. libFuzzer's main does not.
        // SAFETY: setting signal dispositions (SIGPIPE ignored, SIGSYS to the handler above),
        // before any thread of ours runs; the sigaction struct outlives the call.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = outside_the_filter as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut());
        }
        let _ = msgs::CONFINE.set(confine);
    },
    |data: &[u8]| {
        msgs::run_persistent(data);
        let nr = REFUSED.swap(-1, Ordering::SeqCst);
        assert_eq!(nr, -1, "the port made system call {nr}, outside the data-path filter");
    }
);
