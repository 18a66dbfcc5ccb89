//! The vhost-user virtio-net device: feature negotiation, the TX path (guest -> switch) and
//! the RX path (switch -> guest). Which ports a frame goes to is not decided here: the TX
//! path hands batches to a `FrameSwitch`, which calls `NetPort::deliver_batch` on the egress
//! ports and `NetPort::notify` once per batch.
//!
//! Files, each importing only those listed before it: `counters.rs` (what is counted, and
//! why frames drop), `poll.rs` (the busy-poll handle), `connection.rs` (one guest connection's memory and rings), `rx.rs`
//! (placing frames in a guest's RX buffers, offloads completed in software), `port.rs` (the
//! port that outlives connections, and the switch's trait), `tx.rs` (draining TX rings in
//! batches), `device.rs` (the `VhostUserBackend`: features, config space, events). Ring
//! access, used-entry publishing and interrupt decisions are `crate::vring`'s.
//!
//! Invariants: guest memory is hostile: a bad chain is returned with length 0 and counted,
//! never followed outside guest memory; decisions read header copies, never guest memory
//! twice; one ring lock, one avail-index read and one used-index store per batch.

mod connection;
pub mod counters;
mod device;
mod poll;
mod port;
mod rx;
mod tx;

pub use counters::RxDrop;
pub use device::NetBackend;
pub use poll::Poller;
pub use port::{
    FrameSwitch, GuestInfo, MAX_QUEUE_PAIRS, NetPort, NetPortConfig, QUEUE_SIZE, TX_BATCH,
};
pub use rx::{PackedPlaced, place_rx_for_test, place_rx_packed_for_test, plain_frames};
