//! The Prometheus endpoint (`metrics = "127.0.0.1:9100"`): every counter of every port and
//! disk, FDB sizes and drops by reason, in the OpenMetrics text format (`prometheus-client`),
//! rebuilt from the live counters on each scrape. Served on the control thread's runtime.

use std::collections::BTreeMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::control::Control;

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

/// The metrics text for the fabric's current counters.
pub fn render(control: &Control) -> String {
    let mut f = Families::default();
    for line in control.stats(None).as_array().into_iter().flatten() {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        if let Some(disk) = line.get("disk") {
            let disk = s(disk);
            for (k, v) in line["counters"].as_object().into_iter().flatten() {
                let v = v.as_u64().unwrap_or(0);
                let l = label(&[("disk", &disk)]);
                if is_gauge(k) {
                    f.gauge(&format!("vfabric_disk_{k}"), l, v as i64);
                } else {
                    f.counter(&format!("vfabric_disk_{k}"), l, v);
                }
            }
        } else if let Some(port) = line.get("port") {
            let (sw, port) = (s(&line["switch"]), s(port));
            let up = i64::from(line["connected"] == Value::Bool(true));
            f.gauge(
                "vfabric_port_up",
                label(&[("switch", &sw), ("port", &port)]),
                up,
            );
            for (k, v) in line["counters"].as_object().into_iter().flatten() {
                let v = v.as_u64().unwrap_or(0);
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
                            ("switch", &sw),
                            ("port", &port),
                            ("where", dir),
                            ("reason", reason),
                        ]),
                        v,
                    );
                } else if is_gauge(k) {
                    f.gauge(
                        &format!("vfabric_{k}"),
                        label(&[("switch", &sw), ("port", &port)]),
                        v as i64,
                    );
                } else {
                    f.counter(
                        &format!("vfabric_port_{k}"),
                        label(&[("switch", &sw), ("port", &port)]),
                        v,
                    );
                }
            }
        } else if let Some(sw) = line.get("switch") {
            let sw = s(sw);
            f.gauge(
                "vfabric_fdb_entries",
                label(&[("switch", &sw)]),
                line["fdb_entries"].as_i64().unwrap_or(0),
            );
            for k in ["fdb_learned", "fdb_moves", "fdb_aged_out", "fdb_table_full"] {
                f.counter(
                    &format!("vfabric_{k}"),
                    label(&[("switch", &sw)]),
                    line[k].as_u64().unwrap_or(0),
                );
            }
        }
    }
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
                        render(&control),
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
