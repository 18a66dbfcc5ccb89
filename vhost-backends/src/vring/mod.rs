//! vfabric's own access to split virtqueues on the data path (the fast path's first layer),
//! for every device: net TX, net RX and blk.
//!
//! `map.rs` translates guest addresses through the guest's memory table, built once per batch
//! from the connection's memory (a handful of regions) with a last-hit cache, so a buffer
//! address costs one range check instead of a search of the whole table. `split.rs` walks a
//! split ring's available entries and descriptor chains and publishes its used entries; the
//! descriptor table, the avail ring and the used ring are translated to host ranges once per
//! batch, so each access is a bounds check and a load or store. `host.rs` holds those ranges
//! and the frame copies: the only `unsafe` of the data path. `queue.rs` applies the used-ring
//! publish and the interrupt decision to a vhost-user-backend vring.
//!
//! Invariants: every access stays inside the guest's memory regions (a range that leaves
//! them is refused, never clipped); the walk has exactly virtio-queue's semantics (the same
//! chains, descriptors and verdicts on any ring, hostile ones included), which the `rings`
//! property tests and fuzz target check against virtio-queue itself; ring fields are read
//! and written volatile, the indices with acquire loads and release stores.

mod host;
mod map;
mod queue;
mod split;

pub use host::{HostRange, copy_from_guest, copy_guest_to_guest, copy_to_guest};
pub use map::GuestMap;
pub(crate) use map::for_each_piece;
pub(crate) use queue::{publish_used, wants_interrupt};
pub use split::{Chain, Desc, DescChain, SplitRing, UsedRing};
