//! The counters snapshot: every port's and disk's counters and every switch's FDB totals, as
//! typed lines. The `stats` command and SIGUSR1 print them as JSON, the metrics endpoint
//! renders them for Prometheus: one snapshot, two formats.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;
use serde_json::Value;
use vhost_backends::blk::Disk;

use super::Control;
use crate::core::PortId;
use crate::fabric::Fabric;

/// One line of the snapshot.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum StatsLine {
    /// A disk's counters.
    Disk {
        disk: String,
        counters: BTreeMap<String, u64>,
    },
    /// A port's counters: its device's, the switch's for it, its impairment's.
    Port {
        switch: String,
        port: String,
        connected: bool,
        connections: u64,
        counters: BTreeMap<String, u64>,
    },
    /// A switch's FDB totals.
    Switch {
        switch: String,
        fdb_entries: usize,
        fdb_learned: u64,
        fdb_moves: u64,
        fdb_aged_out: u64,
        fdb_table_full: u64,
    },
}

impl StatsLine {
    /// The line as a JSON object (keys in sorted order).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The counters of every port and every disk (or just `only`'s), and each switch's FDB
/// totals (when `only` is not given).
pub fn snapshot(fabric: &Fabric, disks: &[Arc<Disk>], only: Option<&str>) -> Vec<StatsLine> {
    let mut out = Vec::new();
    for d in disks {
        if only.is_some_and(|o| o != d.config.name) {
            continue;
        }
        let counters = d
            .counters
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        out.push(StatsLine::Disk {
            disk: d.config.name.clone(),
            counters,
        });
    }
    for sw in fabric.switches() {
        let core = sw.core();
        for (i, port) in sw.ports().iter().enumerate() {
            let Some(port) = port else {
                continue;
            };
            if only.is_some_and(|o| o != port.name()) {
                continue;
            }
            let mut counters: BTreeMap<String, u64> = port
                .counters()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let id = PortId(i as u32);
            if let Some(mut s) = core.port_stats(id) {
                sw.add_cached(id, &mut s);
                counters.extend(s.fields().into_iter().map(|(k, v)| (k.to_string(), v)));
            }
            counters.insert("flow_cache_hits".into(), sw.flow_cache_hits(id));
            counters.insert(
                "fdb_port_entries".into(),
                core.fdb().port_entries(id) as u64,
            );
            if let Some(imp) = sw.impairment(i) {
                counters.insert("impair_lost".into(), imp.lost.load(Relaxed));
                counters.insert("impair_over_rate".into(), imp.over_rate.load(Relaxed));
                counters.insert("impair_delayed".into(), imp.delayed.load(Relaxed));
            }
            out.push(StatsLine::Port {
                switch: core.name().to_string(),
                port: port.name().to_string(),
                connected: port.is_connected(),
                connections: port.connections(),
                counters,
            });
        }
        if only.is_none() {
            let f = core.fdb_stats();
            out.push(StatsLine::Switch {
                switch: core.name().to_string(),
                fdb_entries: core.fdb().len(),
                fdb_learned: f.learned,
                fdb_moves: f.moves,
                fdb_aged_out: f.aged_out,
                fdb_table_full: f.table_full,
            });
        }
    }
    out
}

impl Control {
    /// The snapshot of the fabric being served (see [`snapshot`]).
    pub fn stats_lines(&self, only: Option<&str>) -> Vec<StatsLine> {
        snapshot(&self.fabric, &self.disks, only)
    }

    /// Every port's and disk's counters (or just `only`'s), as the `stats` command answers.
    pub fn stats(&self, only: Option<&str>) -> Value {
        Value::Array(
            self.stats_lines(only)
                .iter()
                .map(StatsLine::to_json)
                .collect(),
        )
    }
}
