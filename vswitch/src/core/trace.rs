//! Explaining a decision: `Switch::trace` runs the forwarding decision itself
//! (`Switch::decide`'s code, generic over an [`Observe`]r) on a frame without acting on it:
//! nothing learned, no storm budget spent, no counter raised. Each check reports a [`Step`];
//! forwarding uses [`Quiet`], whose reports compile to nothing.

use std::fmt::Write as _;

use vlan::{PortVlan, VlanDrop};

/// One check of a decision, as `vfabric ctl trace` prints it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    /// Which check: `port`, `header`, `vlan`, `allowed_macs`, `allowed_ips`, `storm_limit`,
    /// `learn`, `destination`, `isolation`, `membership`.
    pub step: &'static str,
    /// Whether the frame got past it.
    pub pass: bool,
    /// What was found, in words.
    pub text: String,
}

/// Who watches a decision: forwarding (acts, reports nothing) or a trace (reports, acts on
/// nothing).
pub trait Observe {
    /// Whether the decision acts (learns, spends storm budget, counts).
    const LIVE: bool;
    /// Reports a check; `step` is only called when someone listens.
    fn step(&mut self, step: impl FnOnce() -> Step);
}

/// Forwarding: acts, reports nothing.
pub struct Quiet;

impl Observe for Quiet {
    const LIVE: bool = true;
    #[inline(always)]
    fn step(&mut self, _: impl FnOnce() -> Step) {}
}

/// A trace: every check recorded, nothing changed.
#[derive(Default)]
pub struct Steps(pub Vec<Step>);

impl Observe for Steps {
    const LIVE: bool = false;
    fn step(&mut self, step: impl FnOnce() -> Step) {
        self.0.push(step());
    }
}

/// A step that passed.
pub(super) fn ok(step: &'static str, text: impl Into<String>) -> Step {
    Step {
        step,
        pass: true,
        text: text.into(),
    }
}

/// A step that stopped the frame.
pub(super) fn refused(step: &'static str, text: impl Into<String>) -> Step {
    Step {
        step,
        pass: false,
        text: text.into(),
    }
}

/// A port's VLAN mode in the topology file's words: `access 10`, `trunk 10,20 native 1`,
/// `trunk all`, `qinq 300`.
pub fn vlan_mode(p: &PortVlan) -> String {
    match p {
        PortVlan::Access(v) => format!("access {}", v.get()),
        PortVlan::Tunnel { svlan } => format!("qinq {}", svlan.get()),
        PortVlan::Trunk { allowed, native } => {
            let vids = if allowed.len() == 4094 {
                "all".to_string()
            } else {
                let mut s = String::new();
                for (i, v) in allowed.iter().enumerate() {
                    let _ = write!(s, "{}{}", if i > 0 { "," } else { "" }, v.get());
                }
                s
            };
            match native {
                Some(n) => format!("trunk {vids} native {}", n.get()),
                None => format!("trunk {vids}"),
            }
        }
    }
}

/// Why a VLAN mode refused a frame, in words.
pub(super) fn vlan_drop_text(d: VlanDrop) -> String {
    match d {
        VlanDrop::TaggedOnAccess => "a VLAN-tagged frame on an access port".into(),
        VlanDrop::NotAllowed(vid) => format!("VLAN {vid} is not carried by this port"),
        VlanDrop::UntaggedOnTrunk => "an untagged frame on a trunk without a native VLAN".into(),
        VlanDrop::Malformed => "too short to hold its VLAN tags".into(),
    }
}
