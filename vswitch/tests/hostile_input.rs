//! Hostile input to the pure core and the topology parser: any frames through the switch, any
//! text as a topology. Never a panic; errors always name a line inside the text.

use std::path::Path;

use proptest::prelude::*;
use vswitch::core::{PortId, Switch, Time, Verdict};
use vswitch::topology;

/// `n` cases, or `PROPTEST_CASES` when set (long runs outside CI).
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(n),
    )
}

proptest! {
    #![proptest_config(cases(3000))]

    #[test]
    fn any_frames_through_the_switch(
        frames in proptest::collection::vec((0u32..4, proptest::collection::vec(any::<u8>(), 0..80)), 1..40),
    ) {
        let mut sw = Switch::new("s", std::time::Duration::from_secs(300), 64);
        for i in 0..4 {
            sw.add_port(format!("p{i}"));
        }
        for (t, (port, f)) in frames.iter().enumerate() {
            let v = sw.forward(Time(t as u64), PortId(*port), f);
            if let Verdict::Unicast(p) = v {
                prop_assert!(p.index() < 4);
                prop_assert_ne!(p, PortId(*port));
            }
        }
        prop_assert!(sw.fdb().len() <= 64);
    }

    #[test]
    fn any_text_as_a_topology(text in "\\PC{0,300}") {
        if let Err(e) = topology::parse(Path::new("/t.toml"), &text) {
            let lines = text.lines().count().max(1) + 1;
            for err in &e.0 {
                prop_assert!(err.line <= lines, "{err} in {text:?}");
            }
        }
    }

    #[test]
    fn mutated_topologies(cut in 0usize..400, junk in "[\\[\\]=\"a-z0-9 .:/\\n-]{0,12}") {
        let base = "[[switch]]\nname = \"lab\"\n[[switch.port]]\nname = \"vm1\"\ntype = \"vhost-user-net\"\nsocket = \"vm1.sock\"\nvlan = 10\n[[switch.port]]\nname = \"up\"\ntype = \"nat\"\nsubnet = \"10.0.2.0/24\"\nforward = [\"tcp:127.0.0.1:2222-10.0.2.15:22\"]\n[[switch.port]]\nname = \"t\"\ntype = \"vxlan\"\nvni = 5\nlocal = \"192.0.2.1\"\nremote = [\"192.0.2.2\"]\n";
        let at = cut.min(base.len());
        let at = (0..=at).rev().find(|i| base.is_char_boundary(*i)).unwrap_or(0);
        let text = format!("{}{junk}{}", &base[..at], &base[at..]);
        let _ = topology::parse(Path::new("/t.toml"), &text);
    }
}
