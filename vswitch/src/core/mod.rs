//! The pure core of the switch: MAC addresses, the forwarding database and the forwarding
//! decision. Nothing in here does I/O, reads a clock or uses `unsafe`: time is an argument,
//! frames are byte slices, ports are numbers (`PortId`, defined here so that the FDB and the
//! switch both use it without importing each other). The fabric (`crate::fabric`) feeds it;
//! `unsafe` is forbidden by the compiler here, not only by convention.

#![forbid(unsafe_code)]

pub mod fdb;
pub mod flow_cache;
pub mod mac;
pub mod switch;
pub mod time;
pub mod trace;

pub use fdb::{Fdb, FdbEntry, FdbStats, Learn};
pub use flow_cache::{FlowAt, FlowCache};
pub use mac::MacAddr;
pub use switch::{Decision, DropReason, PortPolicy, Switch, SwitchPortStats, Verdict};
pub use time::Time;
pub use trace::{Step, vlan_mode};

/// A port's number within its switch. Numbers are stable while the port exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u32);

impl PortId {
    /// The port number as an index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}
