//! Any text as a topology file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = vswitch::topology::parse(std::path::Path::new("/t.toml"), text);
});
