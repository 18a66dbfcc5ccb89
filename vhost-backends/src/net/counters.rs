//! Per-port counters of the virtio-net device, named from the switch's side: `rx` is what
//! the switch received from the guest (the guest's TX ring), `tx` what it delivered to the
//! guest (its RX ring). Every drop has its reason.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($(#[$m:meta])* $name:ident / $snap:ident { $($(#[$fm:meta])* $f:ident,)* }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        pub struct $name { $($(#[$fm])* pub $f: AtomicU64,)* }

        /// A point-in-time copy of the counters.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $snap { $($(#[$fm])* pub $f: u64,)* }

        impl $name {
            /// Reads every counter.
            pub fn snapshot(&self) -> $snap {
                $snap { $($f: self.$f.load(Relaxed),)* }
            }
        }

        impl $snap {
            /// (name, value) pairs, in declaration order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($f), self.$f),)*]
            }
        }
    };
}

counters! {
    /// Counters of one virtio-net port.
    NetCounters / NetCountersSnapshot {
        /// Frames taken from the guest's TX ring and handed to the switch.
        rx_frames,
        /// Bytes of those frames (Ethernet, without the virtio-net header).
        rx_bytes,
        /// Guest TX chains with a descriptor outside guest memory or of the wrong direction.
        rx_drop_bad_descriptor,
        /// Guest TX chains shorter than the virtio-net header.
        rx_drop_missing_header,
        /// Frames shorter than an Ethernet header.
        rx_drop_runt,
        /// Frames longer than 64 KiB + headers.
        rx_drop_oversize,
        /// Frames spread over too many pieces of guest memory.
        rx_drop_too_fragmented,
        /// Frames asking for an offload that was not negotiated.
        rx_drop_bad_offload,
        /// Frames delivered into the guest's RX ring.
        tx_frames,
        /// Bytes of those frames.
        tx_bytes,
        /// Frames dropped because the guest had posted no (or too few) RX buffers.
        tx_drop_no_buffer,
        /// Frames dropped because no guest was connected or its RX ring was not running.
        tx_drop_link_down,
        /// Frames dropped because the guest's RX chain was malformed (returned with length 0).
        tx_drop_bad_descriptor,
        /// Offloaded frames checksummed in software for a guest without GUEST_CSUM.
        tx_sw_checksummed,
        /// TCP super-frames cut into segments in software for a guest without GUEST_TSO.
        tx_sw_segmented,
        /// Times the guest was interrupted for its RX ring.
        tx_notifications,
        /// Times the guest was interrupted for its TX ring.
        rx_notifications,
        /// Rings found unusable: an avail index more than a ring's size ahead of what was
        /// used (a broken or hostile driver). Counted once per ring and connection; the ring
        /// is not touched again until the guest resets the device.
        ring_broken,
        /// The VMM cut the guest's memory under vfabric (truncated its shared file): the
        /// access was caught (`vring::sigbus`), and the connection is no longer served.
        /// Counted once per connection.
        memory_cut,
        /// VMM connections closed for breaking the vhost-user protocol or a per-connection
        /// bound (memory regions, mapped size, descriptors per message: `relay`).
        vmm_refused,
    }
}

impl NetCounters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        if n != 0 {
            c.fetch_add(n, Relaxed);
        }
    }

    pub(crate) fn count_drop(&self, e: RxDrop) {
        Self::add(
            match e {
                RxDrop::LinkDown => &self.tx_drop_link_down,
                RxDrop::NoBuffer => &self.tx_drop_no_buffer,
                RxDrop::BadDescriptor => &self.tx_drop_bad_descriptor,
            },
            1,
        );
    }
}

/// Why `deliver` did not deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxDrop {
    LinkDown,
    NoBuffer,
    BadDescriptor,
}
