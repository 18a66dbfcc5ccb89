//! The control plane: the control socket behind `vfabric ctl` and the metrics endpoint.
//!
//! One JSON request line in, one JSON answer line out, per connection (`capture` streams
//! frames after its answer). Requests are served by a single-threaded tokio runtime on its
//! own thread; the data path never waits for it. Files: `server.rs` the socket, peer
//! credentials and access; `commands.rs` what changes the fabric (ports, FDB, impairments,
//! reload); `show.rs` what describes it (ports, FDB, graph); `stats.rs` the typed counters
//! snapshot that the `stats` command, SIGUSR1 and `metrics.rs` (Prometheus) all render;
//! `capture.rs` the frame stream.
//!
//! Invariants: a command either applies whole or answers an error and changes nothing; the
//! topology held here is the one being served (a reload replaces it only when the fabric
//! took it); the client (`vfabric ctl`) lives in the binary, not here.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vhost_backends::blk::Disk;

use crate::core::PortId;
use crate::fabric::Fabric;
use crate::topology::Topology;

pub mod capture;
pub mod client;
pub mod commands;
pub mod http;
pub mod metrics;
pub mod server;
pub mod show;
pub mod stats;
pub mod trace;

/// A request: a command and its arguments.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Request {
    pub cmd: Vec<String>,
}

/// What the control socket serves.
pub struct Control {
    pub fabric: Arc<Fabric>,
    /// The topology being served (replaced by a reload).
    pub topology: std::sync::RwLock<Topology>,
    /// The file it came from (re-read by a reload).
    pub file: PathBuf,
    pub disks: Vec<Arc<Disk>>,
}

impl Control {
    fn topo(&self) -> std::sync::RwLockReadGuard<'_, Topology> {
        self.topology.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the topology file and makes the fabric match it: ports added and removed,
    /// VLAN modes, port security, static addresses, MAC aging. Untouched ports keep their
    /// guests, counters and learned addresses; a port whose VLAN mode changed forgets its
    /// learned addresses. What needs a restart (disks, switches, a port's device settings)
    /// makes the reload refused as a whole, naming what differs; nothing is half-applied.
    ///
    /// A host's share of a topology across hosts is taken again from the whole file: its
    /// ports, disks and meshes as the file now places them.
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let host = self.topo().hosts.local.clone();
        let new =
            crate::topology::load_for(&self.file, host.as_deref()).map_err(|e| e.to_string())?;
        let new = match &host {
            Some(h) if new.hosts.list.iter().any(|o| &o.name == h) => {
                crate::topology::localize(&new, h)
            }
            Some(h) => {
                return Err(format!(
                    "reload refused, nothing changed: host \"{h}\" (this one) is no longer in the file"
                ));
            }
            None if !new.hosts.list.is_empty() => {
                return Err(
                    "reload refused, nothing changed: the file now spans hosts (restart vfabric with --host)"
                        .into(),
                );
            }
            None => new,
        };
        let mut guard = self.topology.write().unwrap_or_else(|p| p.into_inner());
        let changes = self.fabric.reload(&guard, &new)?;
        *guard = new;
        Ok(changes)
    }

    /// (switch index, port index) of the port called `name`.
    fn find_port(&self, name: &str) -> Option<(usize, usize)> {
        self.fabric
            .switches()
            .iter()
            .enumerate()
            .find_map(|(si, s)| s.port_by_name(name).map(|(pi, _)| (si, pi)))
    }

    fn switch(&self, name: &str) -> Result<usize, String> {
        self.topo()
            .switches
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| format!("no switch `{name}`"))
    }

    fn port_id(&self, si: usize, port: &str) -> Result<PortId, String> {
        self.fabric.switches()[si]
            .port_by_name(port)
            .map(|(i, _)| PortId(i as u32))
            .ok_or_else(|| {
                format!(
                    "no port `{port}` on switch `{}`",
                    self.topo().switches[si].name
                )
            })
    }
}
