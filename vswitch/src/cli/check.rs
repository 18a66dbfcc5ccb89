//! `vfabric check`: load and validate a topology file without starting anything; and the
//! share of a topology across hosts that this machine serves (`load_local`).

use std::path::Path;
use std::process::ExitCode;

use vswitch::topology::{self, Topology};

/// `vfabric check FILE [--host NAME]`: a summary line, or every error at file:line:col and
/// exit 1. With hosts, the summary counts each host's ports and disks.
pub fn check(file: &Path, host: Option<&str>) -> ExitCode {
    let loaded = match host {
        Some(_) => load_local(file, host),
        None => load(file),
    };
    let Some(t) = loaded else {
        return ExitCode::FAILURE;
    };
    let ports: usize = t.switches.iter().map(|s| s.ports.len()).sum();
    println!(
        "{}: ok ({} switches, {ports} ports, {} disks{})",
        file.display(),
        t.switches.len(),
        t.disks.len(),
        match &t.hosts.local {
            Some(h) => format!("; as host \"{h}\", its meshes included"),
            None => String::new(),
        }
    );
    for h in t.hosts.list.iter().filter(|_| t.hosts.local.is_none()) {
        let on = |n: &String| t.hosts.placement.get(n) == Some(&h.name);
        let ports = t
            .switches
            .iter()
            .flat_map(|s| &s.ports)
            .filter(|p| on(&p.name));
        let disks = t.disks.iter().filter(|d| on(&d.name));
        println!(
            "  host \"{}\" ({}): {} ports, {} disks",
            h.name,
            h.address,
            ports.count(),
            disks.count()
        );
    }
    ExitCode::SUCCESS
}

/// The topology in `path`, or `None` with every error printed.
pub fn load(path: &Path) -> Option<Topology> {
    report(path, topology::load(path))
}

/// What this machine serves of the topology in `path`: all of it, or for a topology across
/// hosts, the share of host `host` (else of the host whose address is here), its meshes
/// built. `None` with the errors printed.
pub fn load_local(path: &Path, host: Option<&str>) -> Option<Topology> {
    // Which host this is does not depend on the images: read the file once to know.
    // (A file that cannot be read or parsed is reported by `load_for` below.)
    let whole = std::fs::read_to_string(path)
        .ok()
        .and_then(|src| topology::parse_checked(path, &src, false).ok());
    let chosen = match whole {
        Some(t) => match topology::choose_host(&t, host, &topology::local_addresses()) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("{}: {e}; nothing started", path.display());
                return None;
            }
        },
        None => None,
    };
    let t = report(path, topology::load_for(path, chosen.as_deref()))?;
    Some(match &chosen {
        Some(h) => topology::localize(&t, h),
        None => t,
    })
}

fn report(path: &Path, loaded: Result<Topology, topology::ConfigErrors>) -> Option<Topology> {
    match loaded {
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
