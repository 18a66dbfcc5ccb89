//! The virtio-blk device: disks from image files (raw, qcow2) over vhost-user.
//!
//! `request` checks requests (pure), `image` opens and locks images (and runs the qcow2 I/O
//! threads), `engine` runs one queue's I/O (io_uring for raw files, the qcow2 threads, null),
//! `inflight` keeps the crash-safe record of requests in flight, `disk` is the disk across
//! connections (config, counters, features, config space), `device` the vhost-user backend.
//! `run_disk` serves one disk's socket forever, like a net port: each VMM connection gets a
//! fresh daemon, through the same relay.

pub mod device;
mod disk;
pub mod engine;
pub mod image;
pub mod inflight;
pub mod request;

use std::fs;
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

pub use device::{BlkBackend, BlkCounters, Disk, DiskConfig};
pub use image::{Format, Image, ImageSpec};

use crate::relay;
use crate::server::{PortStop, Role, accept_own, private_listener, serve_until};

/// Serves `disk` in the calling thread until `stop` (for the life of the process).
pub fn run_disk(disk: Arc<Disk>, role: Role, stop: Arc<PortStop>) {
    let what = format!("disk {}", disk.config.name);
    serve_until(&what, &role, &stop, |stream| {
        serve_connection(&disk, stream)
    });
}

/// Serves one VMM connection of `disk` until it ends.
pub fn serve_connection(disk: &Arc<Disk>, stream: UnixStream) -> io::Result<()> {
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = BlkBackend::new(disk.clone(), mem.clone())?;
    // Dropped after the daemon, on every path: closes what the crate leaks (`crate::exit`).
    let _exit_events = crate::exit::CloseOnDrop(backend.exit_events.clone());
    let mut daemon = VhostUserDaemon::new(format!("vf-{}", disk.config.name), backend.clone(), mem)
        .map_err(|e| io::Error::other(format!("vhost-user daemon: {e}")))?;
    let handlers = daemon.get_epoll_handlers();
    for (q, h) in handlers.iter().enumerate() {
        for (fd, id) in [backend.completion_listener(q), backend.enabled_listener(q)]
            .into_iter()
            .flatten()
        {
            h.register_listener(fd, EventSet::IN, id)?;
        }
    }
    let (inner_path, inner_listener) = private_listener()?;
    let started = daemon.start_client(&inner_path.to_string_lossy());
    let _ = fs::remove_file(&inner_path);
    started.map_err(|e| io::Error::other(format!("vhost-user daemon start: {e}")))?;
    let hooks = device::BlkHooks(backend.clone());
    let relayed =
        accept_own(&inner_listener).and_then(|inner| relay::run_with(stream, inner, &hooks));
    drop(hooks);
    let waited = daemon.wait();
    for h in &handlers {
        h.send_exit_event();
    }
    drop(handlers);
    drop(daemon);
    if let Err(e) = waited {
        log::debug!("disk {}: vhost-user handler ended: {e}", disk.config.name);
    }
    relayed.map(|_| ())
}
