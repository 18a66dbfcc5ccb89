//! The NAT gateway of a NAT port: DHCP, a DNS relay, and outbound and inbound NAT through
//! host sockets, for every guest on the segment, without root. Frames in, frames out: the
//! switch hands it frames, it hands frames back; it owns no vhost code.
#![forbid(unsafe_code)]

pub mod config;
pub mod dhcp;
pub mod gateway;
pub mod runner;

pub use config::{Forward, NatConfig, Proto};
pub use gateway::{Counters, Gateway};
pub use runner::{NatHandle, Runner};
