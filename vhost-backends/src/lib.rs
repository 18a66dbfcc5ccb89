//! Everything of vfabric that touches vhost-user and guest memory: the virtio-net device,
//! its rings and the per-port connection loop; the virtio-blk device and its disk images. No switching logic: the switch plugs in
//! through `net::FrameSwitch`.

pub mod blk;
pub use net::counters;
pub mod exit;
pub mod frame;
pub mod net;
pub mod offload;
pub mod relay;
pub mod server;
pub mod vring;
