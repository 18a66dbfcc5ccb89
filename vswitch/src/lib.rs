//! vfabric's switch, in layers that import only downwards:
//!
//! - `core`: the pure switch (MAC learning, VLAN classification, the forwarding decision),
//!   time as a parameter, no I/O, no `unsafe`;
//! - `topology`: the topology file, parsed and validated into a model, errors at
//!   file:line:col;
//! - `ports`: what is at the far end of a switch port (a VM, a TAP, a VXLAN tunnel, the NAT
//!   gateway), behind one trait;
//! - `fabric`: the switches and ports of a topology at run time: build, reload, the batch
//!   forward path, captures, impairments;
//! - `control`: the control socket (`vfabric ctl`), its commands, the metrics endpoint;
//! - `sockets` and `privs`: Unix sockets with their permissions, capabilities and seccomp;
//! - `attach`: the QEMU, libvirt and cloud-hypervisor snippets that attach a VM to a port
//!   or disk (printed by `run`, answered by `ctl attach`).
//!
//! The `vfabric` binary (`src/cli/`) composes them.

pub mod attach;
pub mod control;
pub mod core;
pub mod fabric;
pub mod ports;
pub mod privs;
pub mod sockets;
pub mod topology;
