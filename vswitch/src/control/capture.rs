//! `capture PORT [COUNT] [VLAN]`: a port's frames streamed to the client after a JSON header
//! line, as records (timestamp ns u64, length u32, both little endian, then the bytes), until
//! COUNT frames were sent or the client went away. The capture ends with the stream.

use std::io;

use serde_json::json;
use tokio::io::{AsyncWriteExt, BufReader};

use super::Control;

impl Control {
    /// `capture PORT [COUNT] [VLAN]`: a JSON header line, then frame records
    /// (timestamp ns u64, length u32, both little endian, then the bytes) until COUNT frames
    /// were sent or the client went away.
    pub(super) async fn capture(
        &self,
        args: &[String],
        w: &mut tokio::net::unix::OwnedWriteHalf,
        mut reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    ) -> io::Result<()> {
        let found = args.first().and_then(|name| self.find_port(name));
        let count: u64 = args.get(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let vlan = args
            .get(2)
            .and_then(|v| v.parse::<u32>().ok())
            .and_then(|v| vlan::VlanId::new(v).ok());
        let started = match found {
            Some((si, pi)) => self.fabric.switches()[si]
                .start_capture(pi, vlan)
                .map(|rx| (si, pi, rx)),
            None => Err(format!("no port `{}`", args.first().map_or("", |s| s))),
        };
        let (si, pi, mut rx) = match started {
            Ok(x) => x,
            Err(e) => {
                let mut out = json!({"ok": false, "error": e}).to_string();
                out.push('\n');
                return w.write_all(out.as_bytes()).await;
            }
        };
        let mut out = json!({"ok": true, "data": {"linktype": "ethernet"}}).to_string();
        out.push('\n');
        let mut sent = 0u64;
        let mut result = w.write_all(out.as_bytes()).await;
        let mut gone = [0u8; 1];
        while result.is_ok() && (count == 0 || sent < count) {
            tokio::select! {
                f = rx.recv() => {
                    let Some((ns, bytes)) = f else { break };
                    let mut rec = Vec::with_capacity(12 + bytes.len());
                    rec.extend_from_slice(&ns.to_le_bytes());
                    rec.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                    rec.extend_from_slice(&bytes);
                    result = w.write_all(&rec).await;
                    sent += 1;
                }
                // The client closed its side: stop.
                r = tokio::io::AsyncReadExt::read(&mut reader, &mut gone) => {
                    if matches!(r, Ok(0) | Err(_)) {
                        break;
                    }
                }
            }
        }
        let missed = self.fabric.switches()[si].stop_capture(pi);
        if missed > 0 {
            tracing::info!("capture of {}: {missed} frames missed", args[0]);
        }
        let _ = w.shutdown().await;
        result
    }
}
