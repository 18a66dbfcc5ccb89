//! The Prometheus endpoint (`metrics = "127.0.0.1:9100"`): every counter of every port and
//! disk, FDB sizes and drops by reason, in the OpenMetrics text format (`prometheus-client`),
//! rebuilt from the live counters on each scrape (`stats::snapshot`, the same lines the
//! `stats` command prints). Served on the control thread's runtime.

use std::collections::BTreeMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Control;
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

/// Serves `GET /metrics` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, control: std::sync::Arc<Control>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let control = control.clone();
        tokio::spawn(async move {
            // The request head, at most 8 KiB; only the request line matters.
            let mut buf = vec![0u8; 8192];
            let mut got = 0;
            while got < buf.len() {
                match stream.read(&mut buf[got..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
                if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..got]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (status, ctype, body) =
                if head.starts_with("GET ") && (path == "/metrics" || path == "/") {
                    (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        render(&control.stats_lines(None)),
                    )
                } else {
                    (
                        "404 Not Found",
                        "text/plain",
                        "only GET /metrics\n".to_string(),
                    )
                };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
