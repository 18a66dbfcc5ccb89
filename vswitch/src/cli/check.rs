//! `vfabric check`: load and validate a topology file without starting anything.

use std::path::Path;
use std::process::ExitCode;

use vswitch::topology::{self, Topology};

/// `vfabric check FILE`: a summary line, or every error at file:line:col and exit 1.
pub fn check(file: &Path) -> ExitCode {
    match load(file) {
        Some(t) => {
            let ports: usize = t.switches.iter().map(|s| s.ports.len()).sum();
            println!(
                "{}: ok ({} switches, {ports} ports, {} disks)",
                file.display(),
                t.switches.len(),
                t.disks.len()
            );
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}

/// The topology in `path`, or `None` with every error printed.
pub fn load(path: &Path) -> Option<Topology> {
    match topology::load(path) {
        Ok(t) => Some(t),
        Err(errs) => {
            eprintln!("{errs}");
            eprintln!(
                "{}: {} error(s); nothing started",
                path.display(),
                errs.0.len()
            );
            None
        }
    }
}
