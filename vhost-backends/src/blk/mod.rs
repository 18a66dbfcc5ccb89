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

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

pub use device::{BlkBackend, BlkCounters, Disk, DiskConfig};
pub use image::{Format, Image, ImageSpec};

use crate::server::{PortStop, RelayedDaemon, Role, serve_until};

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
    let daemon = RelayedDaemon::new(
        format!("vf-{}", disk.config.name),
        backend.clone(),
        backend.exit_events.clone(),
        mem,
    )?;
    for (q, h) in daemon.handlers().iter().enumerate() {
        for (fd, id) in [backend.completion_listener(q), backend.enabled_listener(q)]
            .into_iter()
            .flatten()
        {
            h.register_listener(fd, EventSet::IN, id)?;
        }
    }
    let hooks = device::BlkHooks(backend.clone());
    let (relayed, waited) = daemon.serve(stream, hooks, || {})?;
    if let Err(e) = waited {
        log::debug!("disk {}: vhost-user handler ended: {e}", disk.config.name);
    }
    relayed.map(|_| ())
}
