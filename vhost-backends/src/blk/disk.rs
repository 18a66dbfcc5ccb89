//! A disk as vfabric holds it across VMM connections: its configuration, its image, its
//! counters, the features and config space it offers, and the device limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vhost::vhost_user::message::VhostUserVirtioFeatures;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_MQ,
    VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_TOPOLOGY,
    VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use super::image::Image;
use super::request::SECTOR;

/// Queues a disk may have.
pub const MAX_QUEUES: u16 = 16;
/// Largest ring the device accepts.
pub const MAX_QUEUE_SIZE: usize = 1024;
/// Data segments per request offered to the driver (seg_max).
pub const SEG_MAX: u32 = 254;
/// Largest segment offered to the driver (size_max).
pub const SIZE_MAX: u32 = 1 << 20;
/// Ranges per discard / write-zeroes request, and sectors per range.
pub const MAX_RANGES: u32 = 32;
pub const MAX_RANGE_SECTORS: u32 = (1 << 30) / SECTOR as u32;

/// A disk's configuration.
#[derive(Clone, Debug)]
pub struct DiskConfig {
    pub name: String,
    pub queues: u16,
    pub serial: String,
}

/// Per-disk counters (kept across connections).
#[derive(Default, Debug)]
pub struct BlkCounters {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub flushes: AtomicU64,
    pub discards: AtomicU64,
    pub write_zeroes: AtomicU64,
    pub get_ids: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
    /// Requests answered IOERR (refused up front or failed in the engine).
    pub io_errors: AtomicU64,
    /// Requests answered UNSUPP.
    pub unsupported: AtomicU64,
    /// Chains without a status byte, returned with length 0.
    pub bad_chains: AtomicU64,
    /// Requests resubmitted after a backend restart.
    pub resubmitted: AtomicU64,
    pub connections: AtomicU64,
    /// VMM connections closed for breaking the protocol or a per-connection bound.
    pub vmm_refused: AtomicU64,
    /// Connections whose VMM cut the guest's memory under vfabric (no longer served).
    pub memory_cut: AtomicU64,
    /// Requests handed to the engine and not answered yet (a gauge).
    pub in_flight: AtomicU64,
}

impl BlkCounters {
    /// The counters as (name, value) pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("reads", g(&self.reads)),
            ("writes", g(&self.writes)),
            ("flushes", g(&self.flushes)),
            ("discards", g(&self.discards)),
            ("write_zeroes", g(&self.write_zeroes)),
            ("get_ids", g(&self.get_ids)),
            ("read_bytes", g(&self.read_bytes)),
            ("write_bytes", g(&self.write_bytes)),
            ("io_errors", g(&self.io_errors)),
            ("unsupported", g(&self.unsupported)),
            ("bad_chains", g(&self.bad_chains)),
            ("resubmitted", g(&self.resubmitted)),
            ("connections", g(&self.connections)),
            ("vmm_refused", g(&self.vmm_refused)),
            ("memory_cut", g(&self.memory_cut)),
            ("in_flight", g(&self.in_flight)),
        ]
    }
}

/// Fault injection for crash tests: with `VFABRIC_TEST_BLK_STALL_AFTER=N` in the
/// environment, completions stop being answered once N writes were, so a kill is certain to
/// find requests in flight. Read once; never set in production.
pub(super) fn stalled(c: &BlkCounters) -> bool {
    static AFTER: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let after = AFTER.get_or_init(|| {
        std::env::var("VFABRIC_TEST_BLK_STALL_AFTER")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    after.is_some_and(|n| c.writes.load(Ordering::Relaxed) >= n)
}

pub(super) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A disk: its image and configuration, living across VMM connections.
pub struct Disk {
    pub config: DiskConfig,
    pub image: Arc<Image>,
    pub counters: BlkCounters,
}

impl Disk {
    pub fn new(config: DiskConfig, image: Image) -> Arc<Disk> {
        Arc::new(Disk {
            config,
            image: Arc::new(image),
            counters: BlkCounters::default(),
        })
    }

    pub(super) fn features(&self) -> u64 {
        let mut f = (1u64 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_BLK_F_SIZE_MAX)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE)
            | (1 << VIRTIO_BLK_F_TOPOLOGY)
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_MQ)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if self.image.readonly {
            f |= 1 << VIRTIO_BLK_F_RO;
        } else {
            f |= (1 << VIRTIO_BLK_F_DISCARD) | (1 << VIRTIO_BLK_F_WRITE_ZEROES);
        }
        f
    }

    /// The virtio_blk_config space (60 bytes).
    pub fn config_space(&self) -> Vec<u8> {
        let mut c = vec![0u8; 60];
        let put32 =
            |c: &mut [u8], at: usize, v: u32| c[at..at + 4].copy_from_slice(&v.to_le_bytes());
        c[0..8].copy_from_slice(&(self.image.capacity / SECTOR).to_le_bytes());
        put32(&mut c, 8, SIZE_MAX);
        put32(&mut c, 12, SEG_MAX);
        put32(&mut c, 20, SECTOR as u32); // blk_size
        // topology: physical_block_exp 3 (4 KiB), alignment 0, min_io_size 1 sector,
        // opt_io_size 0.
        c[24] = 3;
        c[26..28].copy_from_slice(&1u16.to_le_bytes());
        c[34..36].copy_from_slice(&self.config.queues.to_le_bytes());
        put32(&mut c, 36, MAX_RANGE_SECTORS); // max_discard_sectors
        put32(&mut c, 40, MAX_RANGES); // max_discard_seg
        put32(&mut c, 44, 8); // discard_sector_alignment (4 KiB)
        put32(&mut c, 48, MAX_RANGE_SECTORS); // max_write_zeroes_sectors
        put32(&mut c, 52, MAX_RANGES); // max_write_zeroes_seg
        c[56] = 1; // write_zeroes_may_unmap
        c
    }
}
