//! The Prometheus endpoint (`metrics = "127.0.0.1:9100"`): every counter of every port and
//! disk, FDB sizes and drops by reason, in the OpenMetrics text format (`prometheus-client`),
//! rebuilt from the live counters on each scrape (`stats::snapshot`, the same lines the
//! `stats` command prints). Served at `/metrics` by `http.rs`.

use std::collections::BTreeMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::stats::StatsLine;

type Labels = Vec<(String, String)>;

/// Counters whose value can go down are gauges.
fn is_gauge(name: &str) -> bool {
    matches!(name, "fdb_port_entries" | "in_flight")
}

#[derive(Default)]
struct Families {
    counters: BTreeMap<String, Family<Labels, Counter>>,
    gauges: BTreeMap<String, Family<Labels, Gauge>>,
}

impl Families {
    fn counter(&mut self, name: &str, labels: Labels, v: u64) {
        self.counters
            .entry(name.to_string())
            .or_default()
            .get_or_create(&labels)
            .inc_by(v);
    }

    fn gauge(&mut self, name: &str, labels: Labels, v: i64) {
        self.gauges
            .entry(name.to_string())
            .or_default()
            .get_or_create(&labels)
            .set(v);
    }
}

fn label(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The metrics text for a counters snapshot.
pub fn render(lines: &[StatsLine]) -> String {
    let mut f = Families::default();
    for line in lines {
        match line {
            StatsLine::Disk { disk, counters } => {
                for (k, &v) in counters {
                    let l = label(&[("disk", disk)]);
                    if is_gauge(k) {
                        f.gauge(&format!("vfabric_disk_{k}"), l, v as i64);
                    } else {
                        f.counter(&format!("vfabric_disk_{k}"), l, v);
                    }
                }
            }
            StatsLine::Port {
                switch,
                port,
                connected,
                counters,
                ..
            } => port_families(&mut f, switch, port, *connected, counters),
            StatsLine::Switch {
                switch,
                fdb_entries,
                fdb_learned,
                fdb_moves,
                fdb_aged_out,
                fdb_table_full,
            } => {
                let l = || label(&[("switch", switch)]);
                f.gauge("vfabric_fdb_entries", l(), *fdb_entries as i64);
                for (k, v) in [
                    ("fdb_learned", fdb_learned),
                    ("fdb_moves", fdb_moves),
                    ("fdb_aged_out", fdb_aged_out),
                    ("fdb_table_full", fdb_table_full),
                ] {
                    f.counter(&format!("vfabric_{k}"), l(), *v);
                }
            }
        }
    }
    encode_families(f)
}

/// A port's link state and counters; drops are one family, labelled by direction and reason.
fn port_families(
    f: &mut Families,
    sw: &str,
    port: &str,
    connected: bool,
    counters: &BTreeMap<String, u64>,
) {
    f.gauge(
        "vfabric_port_up",
        label(&[("switch", sw), ("port", port)]),
        i64::from(connected),
    );
    for (k, &v) in counters {
        if let Some(reason) = k.strip_prefix("drop_").or_else(|| {
            k.strip_prefix("rx_drop_")
                .or_else(|| k.strip_prefix("tx_drop_"))
        }) {
            let dir = if k.starts_with("rx_") {
                "rx"
            } else if k.starts_with("tx_") {
                "tx"
            } else {
                "switch"
            };
            f.counter(
                "vfabric_port_drops",
                label(&[
                    ("switch", sw),
                    ("port", port),
                    ("where", dir),
                    ("reason", reason),
                ]),
                v,
            );
        } else if is_gauge(k) {
            f.gauge(
                &format!("vfabric_{k}"),
                label(&[("switch", sw), ("port", port)]),
                v as i64,
            );
        } else {
            f.counter(
                &format!("vfabric_port_{k}"),
                label(&[("switch", sw), ("port", port)]),
                v,
            );
        }
    }
}

fn encode_families(f: Families) -> String {
    let mut reg = Registry::default();
    for (name, fam) in f.counters {
        reg.register(name.clone(), name.replace('_', " "), fam);
    }
    for (name, fam) in f.gauges {
        reg.register(name.clone(), name.replace('_', " "), fam);
    }
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &reg) {
        tracing::warn!("metrics encoding: {e}");
    }
    out
}
