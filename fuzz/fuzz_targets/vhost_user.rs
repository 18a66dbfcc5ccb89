//! Hostile vhost-user message sequences against a live port, on one VMM connection kept
//! from input to input (dialed again when a sequence makes the port hang up): the same
//! builder and checks as `vhost-backends/tests/hostile_messages.rs`. The port's
//! thread (and so its connections' relay and ring workers) runs under vfabric's data-path
//! seccomp filter, as under `vfabric run`; a system call outside it raises SIGSYS, which
//! aborts, so libFuzzer keeps the input.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../vhost-backends/tests/msgs/mod.rs"]
mod msgs;

extern "C" fn outside_the_filter(_: libc::c_int) {
    const MSG: &[u8] = b"vhost_user fuzz: a system call outside the data-path seccomp filter\n";
    // SAFETY: write(2) and abort(3) are async-signal-safe; MSG is a static buffer.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::abort();
    }
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
        // SAFETY: setting signal dispositions (SIGPIPE ignored, SIGSYS to a handler that only
        // writes and aborts), before any thread of ours runs.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            libc::signal(libc::SIGSYS, outside_the_filter as *const () as libc::sighandler_t);
        }
        let _ = msgs::CONFINE.set(confine);
    },
    |data: &[u8]| {
        msgs::run_persistent(data);
    }
);
