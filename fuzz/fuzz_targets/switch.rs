//! Frames from any port through the switch core.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vswitch::core::{PortId, Switch, Time};

fuzz_target!(|frames: Vec<(u8, Vec<u8>)>| {
    let mut sw = Switch::new("s", std::time::Duration::from_secs(300), 64);
    for i in 0..4 {
        sw.add_port(format!("p{i}"));
    }
    for (t, (port, f)) in frames.iter().enumerate() {
        let _ = sw.forward(Time(t as u64), PortId(u32::from(port % 4)), f);
    }
});
