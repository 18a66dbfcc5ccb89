//! The pure core of the switch: MAC addresses, the forwarding database and the forwarding
//! decision. Nothing in here does I/O, reads a clock or uses `unsafe`: time is an argument,
//! frames are byte slices, ports are numbers. The data plane (`crate::dataplane`) feeds it.

pub mod fdb;
pub mod mac;
pub mod switch;
pub mod time;

pub use fdb::{Fdb, FdbEntry, FdbStats, Learn};
pub use mac::MacAddr;
pub use switch::{Decision, DropReason, PortId, PortPolicy, Switch, SwitchPortStats, Verdict};
pub use time::Time;
