//! vfabric's real-VM test harness: a cached guest image ([`guest_image`]) and a QEMU launcher with
//! a command agent in the guest ([`qemu`]). See tests/vm/README.md.

pub mod dpdk;
pub mod fabric;
pub mod guest_image;
pub mod lab;
pub mod qemu;
