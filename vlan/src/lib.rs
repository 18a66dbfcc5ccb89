//! 802.1Q / 802.1ad VLANs for vfabric. Pure: no I/O, no unsafe.
//!
//! - `VlanId`: a VLAN number (1-4094), the key of the switch's forwarding table with the MAC;
//! - `tag`: tags as they sit in frames, parsing and emitting them, push/pop edits;
//! - `set`: VLAN sets (a trunk's allowed list, with ranges);
//! - `port`: a port's VLAN policy (access, trunk with native VLAN, QinQ tunnel): ingress
//!   classification and egress tagging.
#![forbid(unsafe_code)]

pub mod port;
pub mod set;
pub mod tag;

pub use port::{Egress, Ingress, PortVlan, VlanDrop};
pub use set::VlanSet;
pub use tag::{Edit, Tag, Tags};

use std::fmt;

/// A VLAN identifier, 1..=4094 (0 means "priority tag only" on the wire and 4095 is reserved,
/// so neither names a VLAN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VlanId(u16);

/// A VLAN number outside 1..=4094.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("VLAN {0} is out of range (1-4094)")]
pub struct BadVlanId(pub u32);

impl VlanId {
    /// VLAN 1, the default VLAN every untagged port belongs to.
    pub const DEFAULT: VlanId = VlanId(1);

    /// Checks the range 1..=4094.
    pub fn new(id: u32) -> Result<Self, BadVlanId> {
        match id {
            1..=4094 => Ok(VlanId(id as u16)),
            _ => Err(BadVlanId(id)),
        }
    }

    /// The numeric VLAN identifier.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl Default for VlanId {
    fn default() -> Self {
        VlanId::DEFAULT
    }
}

impl fmt::Display for VlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_is_enforced() {
        for (id, ok) in [
            (0, false),
            (1, true),
            (4094, true),
            (4095, false),
            (70000, false),
        ] {
            assert_eq!(VlanId::new(id).is_ok(), ok, "VLAN {id}");
        }
        assert_eq!(VlanId::new(10).unwrap().get(), 10);
        assert_eq!(VlanId::default(), VlanId::DEFAULT);
    }
}
