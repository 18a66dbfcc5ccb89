//! DPDK's testpmd as a comparison point in the benchmarks: a plain two-port wire (io
//! forwarding between two vhost-user server sockets, DPDK's vhost PMD).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

/// Waits (at most 30 s) until every path in `paths` exists.
pub fn wait_for_paths(paths: &[PathBuf], what: &str) -> Result<()> {
    crate::wait_until(
        Duration::from_secs(30),
        || Ok(paths.iter().all(|p| p.exists())),
        || format!("{what}: {paths:?} never appeared"),
    )
}

/// Starts `dpdk-testpmd` forwarding between vhost-user server sockets `socks` in io mode,
/// on DPDK lcores `lcores` (e.g. `"0@0,1@0"`), with its own `prefix` for hugepage files
/// (keep it starting with `vfb`: the bench scripts clean those up), logging to `log`.
/// Returns once both sockets exist.
pub fn testpmd_io(socks: &[PathBuf; 2], lcores: &str, prefix: &str, log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    let mut child = Command::new("dpdk-testpmd")
        .args([
            "--lcores",
            lcores,
            "-n",
            "1",
            "--no-pci",
            "-m",
            "256",
            "--file-prefix",
            prefix,
        ])
        .arg("--vdev")
        .arg(format!("net_vhost0,iface={},queues=1", socks[0].display()))
        .arg("--vdev")
        .arg(format!("net_vhost1,iface={},queues=1", socks[1].display()))
        .args([
            "--",
            "--forward-mode=io",
            "--auto-start",
            "--stats-period",
            "0",
            "--nb-cores=1",
        ])
        .stdin(Stdio::piped())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("dpdk-testpmd (install dpdk-dev: scripts/install-deps.sh --bench)")?;
    if let Err(e) = wait_for_paths(socks, "testpmd") {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e.context(format!("see {}", log.display())));
    }
    Ok(child)
}
