//! `vfabric ctl`: the control socket's client. Builds the request line for each command,
//! prints the answer for people (or as JSON with `--json`), and writes `capture`'s frame
//! stream as a pcap file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;
use vswitch::control::Request;
use vswitch::control::capture::{pcap_frame, pcap_writer};
use vswitch::control::client::call as server_call;
use vswitch::control::server;
use vswitch::control::trace::{DEFAULT_SRC, FrameSpec, synth_frame, to_hex};

use crate::args::{CtlCmd, FdbCmd, PortCmd};
use crate::check;

pub fn ctl(
    socket: Option<PathBuf>,
    topology: Option<PathBuf>,
    host: Option<String>,
    json: bool,
    cmd: CtlCmd,
) -> ExitCode {
    let path = match (socket, topology) {
        (Some(s), _) => s,
        (None, Some(t)) => match check::load_local(&t, host.as_deref()) {
            Some(topo) => {
                server::client_socket_path(&t, &topo.control, topo.hosts.local.as_deref())
            }
            None => return ExitCode::FAILURE,
        },
        (None, None) => {
            eprintln!("vfabric ctl: give the control socket (-s) or the topology file (-t)");
            return ExitCode::from(2);
        }
    };
    if let CtlCmd::Capture {
        port,
        file,
        count,
        vlan,
    } = &cmd
    {
        return match capture(&path, port, file, *count, *vlan) {
            Ok(n) => {
                eprintln!("{n} frames written to {}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vfabric ctl: capture: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let words = match request_words(&cmd) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("vfabric ctl: {e}");
            return ExitCode::from(2);
        }
    };
    match call(&path, &words) {
        Ok(v) => {
            print_answer(&cmd, &v, json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vfabric ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The control socket's request for `cmd` (a relative socket path made absolute: it is the
/// user's, not vfabric's; a traced frame built or read from its pcap file here).
fn request_words(cmd: &CtlCmd) -> Result<Vec<String>, String> {
    if let CtlCmd::Trace {
        port,
        src,
        dst,
        vlan,
        ethertype,
        ip,
        pcap,
        frame,
    } = cmd
    {
        let bytes = match pcap {
            Some(file) => pcap_frame_at(file, *frame)?,
            None => synth_frame(&FrameSpec {
                src: src.clone().unwrap_or_else(|| DEFAULT_SRC.into()),
                dst: dst.clone().unwrap_or_default(),
                vlan: *vlan,
                ethertype: ethertype.clone(),
                ip: ip
                    .as_ref()
                    .and_then(|v| Some((v.first()?.clone(), v.get(1)?.clone()))),
            })?,
        };
        return Ok(vec!["trace".into(), port.clone(), to_hex(&bytes)]);
    }
    Ok(match cmd {
        CtlCmd::Trace { .. } => vec![],
        CtlCmd::Capture { .. } => vec![],
        CtlCmd::Ports => vec!["ports".into()],
        CtlCmd::Stats { name } => std::iter::once("stats".to_string())
            .chain(name.clone())
            .collect(),
        CtlCmd::Graph => vec!["graph".into()],
        CtlCmd::Attach { name, vmm } => vec!["attach".into(), name.clone(), vmm.name().into()],
        CtlCmd::Reload => vec!["reload".into()],
        CtlCmd::Port {
            cmd: PortCmd::Add { switch, name, keys },
        } => {
            let cwd = std::env::current_dir().unwrap_or_default();
            let keys = keys.iter().map(|kv| match kv.split_once('=') {
                // Relative paths are the user's, not vfabric's.
                Some(("socket", p)) if !p.is_empty() && Path::new(p).is_relative() => {
                    format!("socket={}", cwd.join(p).display())
                }
                _ => kv.clone(),
            });
            ["port".into(), "add".into(), switch.clone(), name.clone()]
                .into_iter()
                .chain(keys)
                .collect()
        }
        CtlCmd::Port {
            cmd: PortCmd::Del { name },
        } => vec!["port".into(), "del".into(), name.clone()],
        CtlCmd::Port {
            cmd: PortCmd::Show { name },
        } => vec!["port".into(), "show".into(), name.clone()],
        CtlCmd::Impair {
            port,
            loss,
            delay,
            jitter,
            rate,
            clear,
        } => {
            let n = |v: f64| {
                if *clear {
                    "0".to_string()
                } else {
                    v.to_string()
                }
            };
            vec![
                "impair".into(),
                port.clone(),
                n(*loss),
                n(*delay),
                n(*jitter),
                n(*rate),
            ]
        }
        CtlCmd::Fdb { cmd } => {
            let mut w = vec!["fdb".to_string()];
            match cmd {
                FdbCmd::Show { switch } => {
                    w.push("show".into());
                    w.extend(switch.clone());
                }
                FdbCmd::Flush { switch, port } => {
                    w.push("flush".into());
                    w.extend(switch.clone());
                    w.extend(port.clone());
                }
                FdbCmd::Add {
                    switch,
                    mac,
                    port,
                    vlan,
                } => {
                    w.extend(["add".into(), switch.clone(), mac.clone(), port.clone()]);
                    w.extend(vlan.map(|v| v.to_string()));
                }
                FdbCmd::Del { switch, mac, vlan } => {
                    w.extend(["del".into(), switch.clone(), mac.clone()]);
                    w.extend(vlan.map(|v| v.to_string()));
                }
            }
            w
        }
    })
}

/// Frame `n` (from 1) of a pcap or pcapng file.
fn pcap_frame_at(file: &Path, n: usize) -> Result<Vec<u8>, String> {
    let data = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let bad = |e: String| format!("{}: {e}", file.display());
    let mut frames: Vec<Vec<u8>> = Vec::new();
    if let Ok(mut r) = pcap_file::pcap::PcapReader::new(&data[..]) {
        while frames.len() < n {
            match r.next_packet() {
                Some(Ok(p)) => frames.push(p.data.into_owned()),
                Some(Err(e)) => return Err(bad(e.to_string())),
                None => break,
            }
        }
    } else {
        let mut r = pcap_file::pcapng::PcapNgReader::new(&data[..])
            .map_err(|e| bad(format!("not a pcap or pcapng file ({e})")))?;
        while frames.len() < n {
            match r.next_block() {
                Some(Ok(pcap_file::pcapng::Block::EnhancedPacket(p))) => {
                    frames.push(p.data.into_owned())
                }
                Some(Ok(pcap_file::pcapng::Block::SimplePacket(p))) => {
                    frames.push(p.data.into_owned())
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(bad(e.to_string())),
                None => break,
            }
        }
    }
    match (n, frames.len()) {
        (0, _) => Err("--frame counts from 1".into()),
        (n, have) if have < n => Err(bad(format!("has {have} frame(s), not {n}"))),
        _ => Ok(frames.swap_remove(n - 1)),
    }
}

/// `ctl capture`: asks vfabric for a port's frames and writes them as pcap (nanosecond
/// timestamps, Ethernet). Returns how many frames were written.
fn capture(
    sock: &Path,
    port: &str,
    file: &Path,
    count: Option<u64>,
    vlan: Option<u16>,
) -> Result<u64, String> {
    use std::io::{BufRead, BufReader, Read};
    let mut s = std::os::unix::net::UnixStream::connect(sock)
        .map_err(|e| format!("{}: {e}", sock.display()))?;
    let mut cmd = vec![
        "capture".to_string(),
        port.to_string(),
        count.unwrap_or(0).to_string(),
    ];
    cmd.extend(vlan.map(|v| v.to_string()));
    let mut req = serde_json::to_string(&Request { cmd }).map_err(|e| e.to_string())?;
    req.push('\n');
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut header = String::new();
    r.read_line(&mut header).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&header).map_err(|e| format!("bad answer: {e}"))?;
    if v["ok"] != Value::Bool(true) {
        return Err(v["error"].as_str().unwrap_or("refused").to_string());
    }
    let out = std::fs::File::create(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut w = pcap_writer(std::io::BufWriter::new(out))?;
    eprintln!("capturing {port} into {}", file.display());
    let mut n = 0u64;
    loop {
        let mut head = [0u8; 12];
        if r.read_exact(&mut head).is_err() {
            break;
        }
        let ns = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(head[8..].try_into().unwrap_or_default());
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data).map_err(|e| e.to_string())?;
        pcap_frame(&mut w, ns, &data)?;
        n += 1;
        if count.is_some_and(|c| n >= c) {
            break;
        }
    }
    w.into_writer().flush().map_err(|e| e.to_string())?;
    Ok(n)
}

/// Human-readable output of a `ctl` answer (JSON with --json).
fn print_answer(cmd: &CtlCmd, v: &Value, json: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(v).unwrap_or_default()
        );
        return;
    }
    match cmd {
        CtlCmd::Graph => {
            let _ = write!(out, "{}", v.as_str().unwrap_or_default());
        }
        CtlCmd::Attach { .. } => {
            let _ = writeln!(out, "{}", v["snippet"].as_str().unwrap_or_default());
        }
        CtlCmd::Ports => print_ports(&mut out, v),
        CtlCmd::Trace { .. } => print_trace(&mut out, v),
        CtlCmd::Port {
            cmd: PortCmd::Show { .. },
        } => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(v).unwrap_or_default()
            );
        }
        CtlCmd::Stats { .. } => print_stats(&mut out, v),
        CtlCmd::Fdb {
            cmd: FdbCmd::Show { .. },
        } => print_fdb(&mut out, v),
        CtlCmd::Reload => {
            let changes: Vec<String> = v["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect();
            if changes.is_empty() {
                let _ = writeln!(out, "nothing changed");
            }
            for c in changes {
                let _ = writeln!(out, "applied: {c}");
            }
        }
        CtlCmd::Port {
            cmd: PortCmd::Add { name, .. },
        } => {
            let _ = writeln!(out, "port {name} added");
        }
        CtlCmd::Port {
            cmd: PortCmd::Del { name },
        } => {
            let _ = writeln!(out, "port {name} removed");
        }
        CtlCmd::Fdb { .. } | CtlCmd::Capture { .. } | CtlCmd::Impair { .. } => {
            let _ = writeln!(out, "{v}");
        }
    }
}

/// A JSON value as text: a string without its quotes.
fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_ports(out: &mut impl Write, v: &Value) {
    let _ = writeln!(
        out,
        "{:<12} {:<16} {:<16} {:<5} {:<24} {:<8} SOCKET",
        "SWITCH", "PORT/DISK", "TYPE", "LINK", "VLAN", "POLL"
    );
    for p in v.as_array().into_iter().flatten() {
        let name = p.get("port").or(p.get("disk")).map(s).unwrap_or_default();
        let link = match p.get("connected") {
            Some(Value::Bool(true)) => "up",
            Some(_) => "down",
            None => "-",
        };
        // The busy-poll thread of each ring pair, e.g. "0,1"; "-" when kicks drive it.
        let poll = match p.get("poll_threads").and_then(Value::as_array) {
            Some(t) => t.iter().map(s).collect::<Vec<_>>().join(","),
            None => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<12} {:<16} {:<16} {:<5} {:<24} {:<8} {}",
            p.get("switch").map(s).unwrap_or_else(|| "-".into()),
            name,
            s(&p["type"]),
            link,
            p.get("vlan").map(s).unwrap_or_else(|| "-".into()),
            poll,
            s(&p["socket"])
        );
        // A tunnel: its VNI, then one line per remote (host, address, state).
        if let Some(vni) = p.get("vni") {
            let _ = writeln!(
                out,
                "{:<12}   {} VNI {vni}, {}:{}",
                "",
                s(&p["encap"]),
                s(&p["local"]),
                p["udp_port"]
            );
            for m in p["vlan_vnis"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "{:<12}   VLAN {} -> VNI {}", "", m["vlan"], m["vni"]);
            }
        }
        for r in p
            .get("remotes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let who = match r["host"].as_str() {
                Some(h) => format!("host {h} ({})", s(&r["address"])),
                None => s(&r["address"]),
            };
            let heard = match r["heard_ms_ago"].as_u64() {
                Some(ms) => format!(", heard {:.1}s ago", ms as f64 / 1000.0),
                None => String::new(),
            };
            let _ = writeln!(out, "{:<12}   -> {who}: {}{heard}", "", s(&r["state"]));
        }
    }
}

/// A trace as steps, verdict and copies.
fn print_trace(out: &mut impl Write, v: &Value) {
    let _ = writeln!(
        out,
        "frame: {} bytes, {}\non port {} of switch {}",
        v["frame"]["len"],
        s(&v["frame"]["summary"]),
        s(&v["port"]),
        s(&v["switch"])
    );
    for (i, st) in v["steps"].as_array().into_iter().flatten().enumerate() {
        let mark = if st["pass"] == Value::Bool(true) {
            "ok  "
        } else {
            "STOP"
        };
        let _ = writeln!(
            out,
            "{:>3}. {mark} {:<13} {}",
            i + 1,
            s(&st["step"]),
            s(&st["text"])
        );
    }
    let _ = writeln!(
        out,
        "verdict: {} (counter {} on {})",
        s(&v["verdict"]["text"]),
        s(&v["verdict"]["counter"]),
        s(&v["port"])
    );
    for o in v["outputs"].as_array().into_iter().flatten() {
        let cap = if o["captured"] == Value::Bool(true) {
            ", captured"
        } else {
            ""
        };
        let _ = writeln!(out, "  -> {}{cap}", s(&o["text"]));
    }
}

fn print_stats(out: &mut impl Write, v: &Value) {
    for l in v.as_array().into_iter().flatten() {
        let who = l.get("port").or(l.get("disk"));
        match who {
            Some(name) => {
                let _ = writeln!(out, "{}:", s(name));
                for (k, c) in l["counters"].as_object().into_iter().flatten() {
                    if c.as_u64() != Some(0) {
                        let _ = writeln!(out, "  {k:<24} {c}");
                    }
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "switch {}: {} forwarding entries",
                    s(&l["switch"]),
                    l["fdb_entries"]
                );
            }
        }
    }
}

fn print_fdb(out: &mut impl Write, v: &Value) {
    let _ = writeln!(
        out,
        "{:<12} {:<5} {:<18} {:<16} {:<16} AGE",
        "SWITCH", "VLAN", "MAC", "PORT", "VIA"
    );
    for e in v.as_array().into_iter().flatten() {
        let age = if e["static"] == Value::Bool(true) {
            "static".to_string()
        } else {
            format!("{}s", e["age_s"])
        };
        let via = e["via"].as_str().unwrap_or("-");
        let _ = writeln!(
            out,
            "{:<12} {:<5} {:<18} {:<16} {via:<16} {age}",
            s(&e["switch"]),
            e["vlan"],
            s(&e["mac"]),
            s(&e["port"])
        );
    }
}

/// Sends one request to the control socket at `path` and returns the answer's data.
pub fn call(path: &Path, cmd: &[String]) -> Result<Value, String> {
    server_call(path, cmd, None).map_err(|e| e.to_string())
}
