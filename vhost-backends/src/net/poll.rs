//! The busy-poll handle: the switch's poll thread sleeps on it when idle, and guests' kicks
//! wake it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// The busy-poll thread's handle: guests' kicks wake it when it sleeps.
#[derive(Debug)]
pub struct Poller {
    wake: EventFd,
    sleeping: AtomicBool,
}

impl Poller {
    /// A poller handle (the thread itself is the switch's).
    pub fn new() -> io::Result<Arc<Poller>> {
        Ok(Arc::new(Poller {
            wake: EventFd::new(EFD_NONBLOCK)?,
            sleeping: AtomicBool::new(false),
        }))
    }

    /// A guest kicked a TX ring: wake the poller if it sleeps.
    pub fn wake(&self) {
        if self.sleeping.load(Ordering::Acquire) {
            let _ = self.wake.write(1);
        }
    }

    /// Sleeps until a kick (or `timeout`). Call `prepare_sleep` first, then re-enable the
    /// rings' notifications, then this.
    pub fn sleep(&self, timeout: std::time::Duration) {
        use std::os::fd::AsRawFd;
        // SAFETY: the eventfd is owned by self and outlives the call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.wake.as_raw_fd()) };
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
        let _ = self.wake.read();
        self.sleeping.store(false, Ordering::Release);
    }

    /// Marks the poller as going to sleep: kicks from now on write the eventfd.
    pub fn prepare_sleep(&self) {
        self.sleeping.store(true, Ordering::Release);
    }
}
