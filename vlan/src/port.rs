//! A port's VLAN policy: which VLAN an arriving frame belongs to (and which tag bytes come
//! off), and what happens to a frame of a VLAN leaving through the port.
//!
//! - Access port (`vlan = 10`): untagged in, untagged out. A priority tag (VID 0) counts as
//!   untagged and is removed. Any other tag is dropped — so a double-tagged frame entering an
//!   access port can never come out in another VLAN.
//! - Trunk (`trunk = [...]`, `native_vlan`): tagged frames of the allowed VLANs in and out;
//!   untagged (and priority-tagged) frames belong to the native VLAN, if any, and leave it
//!   untagged. A tag not allowed is dropped.
//! - QinQ tunnel (`qinq = 300`, 802.1ad): every customer frame, tagged or not, is carried
//!   whole in service VLAN 300; trunks carry a service VLAN with S-tags (TPID 0x88a8).

use crate::VlanId;
use crate::set::VlanSet;
use crate::tag::{Edit, TAG_LEN, TPID_8021AD, TPID_8021Q, Tag, Tags};

/// A port's VLAN mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortVlan {
    Access(VlanId),
    Trunk {
        allowed: Box<VlanSet>,
        native: Option<VlanId>,
    },
    Tunnel {
        svlan: VlanId,
    },
}

impl Default for PortVlan {
    /// An access port in VLAN 1: what a port without VLAN settings is.
    fn default() -> Self {
        PortVlan::Access(VlanId::DEFAULT)
    }
}

/// Why a frame was refused at ingress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VlanDrop {
    /// A VLAN tag on an access port.
    TaggedOnAccess,
    /// A tag for a VLAN the trunk does not carry (its VID).
    NotAllowed(u16),
    /// An untagged frame on a trunk without a native VLAN.
    UntaggedOnTrunk,
    /// Too short to hold its tags.
    Malformed,
}

/// Where an arriving frame belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingress {
    /// In `vlan`; `strip` bytes of tags at offset 12 do not travel with it.
    Accept {
        vlan: VlanId,
        strip: usize,
    },
    Drop(VlanDrop),
}

/// What to do with a frame of some VLAN leaving through a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// As it is in the switch (no tag of its VLAN).
    Untagged,
    /// With this tag in front.
    Tagged(Tag),
    /// The port is not a member of that VLAN.
    NotMember,
}

impl PortVlan {
    /// Classifies a frame (its first bytes) arriving on this port.
    pub fn ingress(&self, frame: &[u8]) -> Ingress {
        let Some(tags) = Tags::of(frame) else {
            return Ingress::Drop(VlanDrop::Malformed);
        };
        // A C-tag with VID 0 only carries a priority: the frame is untagged.
        let priority_only = matches!(tags.outer, Some(t) if t.tpid == TPID_8021Q && t.vid == 0);
        match self {
            PortVlan::Tunnel { svlan } => Ingress::Accept {
                vlan: *svlan,
                strip: 0,
            },
            PortVlan::Access(v) => match tags.outer {
                None => Ingress::Accept { vlan: *v, strip: 0 },
                Some(_) if priority_only && tags.inner.is_none() => Ingress::Accept {
                    vlan: *v,
                    strip: TAG_LEN,
                },
                Some(_) => Ingress::Drop(VlanDrop::TaggedOnAccess),
            },
            PortVlan::Trunk { allowed, native } => match tags.outer {
                None => native.map_or(Ingress::Drop(VlanDrop::UntaggedOnTrunk), |v| {
                    Ingress::Accept { vlan: v, strip: 0 }
                }),
                Some(_) if priority_only => match (native, tags.inner) {
                    (Some(v), None) => Ingress::Accept {
                        vlan: *v,
                        strip: TAG_LEN,
                    },
                    (None, None) => Ingress::Drop(VlanDrop::UntaggedOnTrunk),
                    // A priority tag in front of another tag: refuse rather than guess.
                    (_, Some(t)) => Ingress::Drop(VlanDrop::NotAllowed(t.vid)),
                },
                Some(t) => match VlanId::new(u32::from(t.vid)) {
                    Ok(v) if allowed.contains(v) || *native == Some(v) => Ingress::Accept {
                        vlan: v,
                        strip: TAG_LEN,
                    },
                    _ => Ingress::Drop(VlanDrop::NotAllowed(t.vid)),
                },
            },
        }
    }

    /// What a frame of `vlan` becomes on its way out of this port. `service` says the VLAN
    /// is a QinQ service VLAN (carried with S-tags on trunks).
    pub fn egress(&self, vlan: VlanId, service: bool) -> Egress {
        match self {
            PortVlan::Access(v) | PortVlan::Tunnel { svlan: v } if *v == vlan => Egress::Untagged,
            PortVlan::Access(_) | PortVlan::Tunnel { .. } => Egress::NotMember,
            PortVlan::Trunk {
                native: Some(n), ..
            } if *n == vlan => Egress::Untagged,
            PortVlan::Trunk { allowed, .. } if allowed.contains(vlan) => {
                let tpid = if service { TPID_8021AD } else { TPID_8021Q };
                Egress::Tagged(Tag {
                    tpid,
                    pcp: 0,
                    dei: false,
                    vid: vlan.get(),
                })
            }
            PortVlan::Trunk { .. } => Egress::NotMember,
        }
    }

    /// Whether frames of `vlan` reach this port at all.
    pub fn is_member(&self, vlan: VlanId) -> bool {
        self.egress(vlan, false) != Egress::NotMember
    }

    /// The service VLAN of a tunnel port.
    pub fn service_vlan(&self) -> Option<VlanId> {
        match self {
            PortVlan::Tunnel { svlan } => Some(*svlan),
            _ => None,
        }
    }
}

/// The edit that takes a frame accepted with `strip` bytes of tags to what `egress` wants.
pub fn edit(strip: usize, egress: Egress) -> Option<Edit> {
    match egress {
        Egress::Untagged => Some(Edit { strip, push: None }),
        Egress::Tagged(t) => Some(Edit {
            strip,
            push: Some(t),
        }),
        Egress::NotMember => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u32) -> VlanId {
        VlanId::new(n).unwrap()
    }

    fn frame(tags: &[Tag]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        for t in tags {
            f.extend_from_slice(&t.to_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 20]);
        f
    }

    fn trunk(allowed: &[u32], native: Option<u32>) -> PortVlan {
        let mut s = VlanSet::new();
        for &a in allowed {
            s.insert(v(a));
        }
        PortVlan::Trunk {
            allowed: Box::new(s),
            native: native.map(v),
        }
    }

    #[test]
    fn ingress_table() {
        let access = PortVlan::Access(v(10));
        let tunnel = PortVlan::Tunnel { svlan: v(300) };
        let prio = Tag::c(0);
        use Ingress::{Accept, Drop};
        let cases: Vec<(&PortVlan, Vec<Tag>, Ingress)> = vec![
            (
                &access,
                vec![],
                Accept {
                    vlan: v(10),
                    strip: 0,
                },
            ),
            (
                &access,
                vec![prio],
                Accept {
                    vlan: v(10),
                    strip: 4,
                },
            ),
            (&access, vec![Tag::c(20)], Drop(VlanDrop::TaggedOnAccess)),
            (
                &access,
                vec![prio, Tag::c(20)],
                Drop(VlanDrop::TaggedOnAccess),
            ),
            (
                &access,
                vec![Tag::s(10), Tag::c(20)],
                Drop(VlanDrop::TaggedOnAccess),
            ),
        ];
        let t = trunk(&[10, 20], Some(1));
        let t_no_native = trunk(&[10, 20], None);
        let more: Vec<(&PortVlan, Vec<Tag>, Ingress)> = vec![
            (
                &t,
                vec![Tag::c(10)],
                Accept {
                    vlan: v(10),
                    strip: 4,
                },
            ),
            (
                &t,
                vec![Tag::c(20), Tag::c(5)],
                Accept {
                    vlan: v(20),
                    strip: 4,
                },
            ),
            (&t, vec![Tag::c(30)], Drop(VlanDrop::NotAllowed(30))),
            (
                &t,
                vec![Tag::c(1)],
                Accept {
                    vlan: v(1),
                    strip: 4,
                },
            ),
            (
                &t,
                vec![],
                Accept {
                    vlan: v(1),
                    strip: 0,
                },
            ),
            (
                &t,
                vec![prio],
                Accept {
                    vlan: v(1),
                    strip: 4,
                },
            ),
            (&t, vec![Tag::c(4095)], Drop(VlanDrop::NotAllowed(4095))),
            (
                &t,
                vec![Tag::s(20)],
                Accept {
                    vlan: v(20),
                    strip: 4,
                },
            ),
            (&t_no_native, vec![], Drop(VlanDrop::UntaggedOnTrunk)),
            (&t_no_native, vec![prio], Drop(VlanDrop::UntaggedOnTrunk)),
            (
                &tunnel,
                vec![],
                Accept {
                    vlan: v(300),
                    strip: 0,
                },
            ),
            (
                &tunnel,
                vec![Tag::c(10)],
                Accept {
                    vlan: v(300),
                    strip: 0,
                },
            ),
            (
                &tunnel,
                vec![Tag::s(7), Tag::c(10)],
                Accept {
                    vlan: v(300),
                    strip: 0,
                },
            ),
        ];
        for (i, (port, tags, want)) in cases.into_iter().chain(more).enumerate() {
            assert_eq!(
                port.ingress(&frame(&tags)),
                want,
                "case {i}: {port:?} {tags:?}"
            );
        }
        assert_eq!(access.ingress(&[0u8; 10]), Drop(VlanDrop::Malformed));
    }

    #[test]
    fn egress_table() {
        let t = trunk(&[10, 300], Some(1));
        assert_eq!(
            PortVlan::Access(v(10)).egress(v(10), false),
            Egress::Untagged
        );
        assert_eq!(
            PortVlan::Access(v(10)).egress(v(20), false),
            Egress::NotMember
        );
        assert_eq!(t.egress(v(1), false), Egress::Untagged);
        assert_eq!(t.egress(v(10), false), Egress::Tagged(Tag::c(10)));
        assert_eq!(t.egress(v(300), true), Egress::Tagged(Tag::s(300)));
        assert_eq!(t.egress(v(20), false), Egress::NotMember);
        assert_eq!(
            PortVlan::Tunnel { svlan: v(300) }.egress(v(300), true),
            Egress::Untagged
        );
        assert!(!PortVlan::Tunnel { svlan: v(300) }.is_member(v(10)));
    }

    /// A frame crossing from one port to another: push/pop as the two policies say.
    fn cross(from: &PortVlan, to: &PortVlan, f: &[u8], service: bool) -> Option<Vec<u8>> {
        let Ingress::Accept { vlan, strip } = from.ingress(f) else {
            return None;
        };
        let e = edit(strip, to.egress(vlan, service))?;
        let mut out = Vec::new();
        e.apply(f, &mut out);
        Some(out)
    }

    #[test]
    fn frames_cross_between_modes() {
        let access10 = PortVlan::Access(v(10));
        let access20 = PortVlan::Access(v(20));
        let t = trunk(&[10, 20, 300], Some(1));
        let tunnel = PortVlan::Tunnel { svlan: v(300) };
        // access 10 -> trunk: tagged 10; trunk -> access 10: untagged.
        assert_eq!(
            cross(&access10, &t, &frame(&[]), false),
            Some(frame(&[Tag::c(10)]))
        );
        assert_eq!(
            cross(&t, &access10, &frame(&[Tag::c(10)]), false),
            Some(frame(&[]))
        );
        // access 10 never reaches access 20.
        assert_eq!(cross(&access10, &access20, &frame(&[]), false), None);
        // native VLAN 1 leaves untagged.
        assert_eq!(cross(&t, &t, &frame(&[]), false), Some(frame(&[])));
        // A customer trunk inside the tunnel: S-tag 300 pushed in front of the C-tags on the
        // provider trunk, and popped again.
        let customer = frame(&[Tag::c(10)]);
        let provider = frame(&[Tag::s(300), Tag::c(10)]);
        assert_eq!(cross(&tunnel, &t, &customer, true), Some(provider.clone()));
        assert_eq!(cross(&t, &tunnel, &provider, true), Some(customer));
    }
}
