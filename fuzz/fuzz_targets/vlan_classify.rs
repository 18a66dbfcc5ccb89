//! Any frame classified by every kind of VLAN port.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vlan::{PortVlan, Tags, VlanId, VlanSet};

fuzz_target!(|frame: &[u8]| {
    let _ = Tags::of(frame);
    let mut all = VlanSet::new();
    all.insert_range(VlanId::new(1).unwrap(), VlanId::new(4094).unwrap());
    for p in [
        PortVlan::Access(VlanId::new(10).unwrap()),
        PortVlan::Trunk {
            allowed: Box::new(all),
            native: Some(VlanId::DEFAULT),
        },
        PortVlan::Tunnel {
            svlan: VlanId::new(300).unwrap(),
        },
    ] {
        let _ = p.ingress(frame);
    }
});
