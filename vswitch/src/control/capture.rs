//! Captures: a port's frames (both directions, optionally one VLAN) as they pass, for
//! `vfabric ctl capture` (a JSON header line, then records of timestamp ns u64 and length
//! u32, both little endian, then the bytes) and the web console's pcap download. One
//! [`Tap`] type serves both; the capture stops when it is dropped. The pcap encoding
//! (nanosecond timestamps, Ethernet) is [`pcap_writer`] / [`pcap_frame`], used by the CLI and
//! the web console alike.

use std::io;

use serde_json::json;
use tokio::io::{AsyncWriteExt, BufReader};

use super::Control;

/// A capture running on one port; stopped when dropped.
pub struct Tap<'c> {
    control: &'c Control,
    si: usize,
    pi: usize,
    name: String,
    rx: tokio::sync::mpsc::Receiver<(u64, Vec<u8>)>,
}

impl Tap<'_> {
    /// The next frame (timestamp in ns, bytes), or `None` when the capture ended.
    pub async fn next(&mut self) -> Option<(u64, Vec<u8>)> {
        self.rx.recv().await
    }
}

impl Drop for Tap<'_> {
    fn drop(&mut self) {
        let missed = self.control.fabric.switches()[self.si].stop_capture(self.pi);
        if missed > 0 {
            tracing::info!("capture of {}: {missed} frames missed", self.name);
        }
    }
}

/// A pcap writer (nanosecond timestamps, Ethernet, the host's byte order) over `w`, its
/// file header written.
pub fn pcap_writer<W: io::Write>(w: W) -> Result<pcap_file::pcap::PcapWriter<W>, String> {
    pcap_file::pcap::PcapWriter::with_header(
        w,
        pcap_file::pcap::PcapHeader {
            datalink: pcap_file::DataLink::ETHERNET,
            ts_resolution: pcap_file::TsResolution::NanoSecond,
            // The host's byte order, as tcpdump writes (the crate's default is big endian).
            endianness: if cfg!(target_endian = "little") {
                pcap_file::Endianness::Little
            } else {
                pcap_file::Endianness::Big
            },
            // Frames up to 64 KiB + headers (TSO super-frames) are kept whole.
            snaplen: 262_144,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())
}

/// Writes one captured frame.
pub fn pcap_frame<W: io::Write>(
    w: &mut pcap_file::pcap::PcapWriter<W>,
    ns: u64,
    data: &[u8],
) -> Result<(), String> {
    let pkt = pcap_file::pcap::PcapPacket::new(
        std::time::Duration::from_nanos(ns),
        data.len() as u32,
        data,
    );
    w.write_packet(&pkt).map(drop).map_err(|e| e.to_string())
}

impl Control {
    /// Starts capturing port `name` (only `vlan`'s frames, if given).
    pub fn open_capture(&self, name: &str, vlan: Option<vlan::VlanId>) -> Result<Tap<'_>, String> {
        let (si, pi) = self
            .find_port(name)
            .ok_or_else(|| format!("no port `{name}`"))?;
        let rx = self.fabric.switches()[si].start_capture(pi, vlan)?;
        Ok(Tap {
            control: self,
            si,
            pi,
            name: name.to_string(),
            rx,
        })
    }

    /// `capture PORT [COUNT] [VLAN]`: a JSON header line, then frame records
    /// (timestamp ns u64, length u32, both little endian, then the bytes) until COUNT frames
    /// were sent or the client went away.
    pub(super) async fn capture(
        &self,
        args: &[String],
        w: &mut tokio::net::unix::OwnedWriteHalf,
        mut reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    ) -> io::Result<()> {
        let count: u64 = args.get(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let vlan = args
            .get(2)
            .and_then(|v| v.parse::<u32>().ok())
            .and_then(|v| vlan::VlanId::new(v).ok());
        let mut tap = match self.open_capture(args.first().map_or("", |s| s), vlan) {
            Ok(t) => t,
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
                f = tap.next() => {
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
        drop(tap);
        let _ = w.shutdown().await;
        result
    }
}
