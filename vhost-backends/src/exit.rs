//! Exit events for `vhost-user-backend`'s ring workers that do not leak.
//!
//! `vhost-user-backend` 0.24 (pinned) registers the consumer side of a worker's exit event in
//! the worker's epoll with `into_raw_fd` and never closes it (`VringEpollHandler::new`). vfabric
//! makes a fresh daemon, with fresh workers, for every VMM connection, so each connection
//! would leave one eventfd per worker behind: a lab whose guests restart all day runs out of
//! descriptors. Backends hand out their exit events through [`ExitEvents`] and close the
//! consumers once the connection's daemon is gone ([`CloseOnDrop`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

/// The exit events handed out for one connection.
#[derive(Debug, Default)]
pub struct ExitEvents {
    handed_out: Mutex<Vec<RawFd>>,
}

impl ExitEvents {
    pub fn new() -> Arc<ExitEvents> {
        Arc::new(ExitEvents::default())
    }

    /// A fresh exit event for a worker (`VhostUserBackend::exit_event`); its consumer is
    /// remembered for [`ExitEvents::close_handed_out`].
    pub fn pair(&self) -> Option<(EventConsumer, EventNotifier)> {
        let (consumer, notifier) = new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()?;
        self.handed_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(consumer.as_raw_fd());
        Some((consumer, notifier))
    }

    /// Closes the consumers handed out. Only once the daemon that took them is dropped (its
    /// workers joined): see [`CloseOnDrop`].
    fn close_handed_out(&self) {
        for fd in self
            .handed_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            // SAFETY: `fd` is the consumer of an exit event this backend handed to
            // vhost-user-backend 0.24, which released it with `into_raw_fd` into its worker's
            // epoll and never closes it (the crate version is pinned for this). The daemon and
            // its workers are gone, so no one owns or uses the descriptor; it is closed once
            // (drained from the list).
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
}

/// Closes a connection's handed-out exit events when dropped: declare it before the
/// connection's `VhostUserDaemon`, so that it drops after the daemon (whose drop joins the
/// workers), on every path out.
pub struct CloseOnDrop(pub Arc<ExitEvents>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close_handed_out();
    }
}
