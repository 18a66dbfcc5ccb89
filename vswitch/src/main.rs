//! `vfabric`: run, check and inspect a virtual switch fabric described by a topology file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use vhost_backends::blk::{self, Disk};
use vhost_backends::server::{Role, bind_socket};
use vswitch::control;
use vswitch::dataplane::Fabric;
use vswitch::topology::{self, DiskFormat, PortKind, Topology};

#[derive(Parser)]
#[command(
    name = "vfabric",
    version,
    about = "A vhost-user virtual switch fabric for VMs"
)]
struct Cli {
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every port of a topology until SIGINT/SIGTERM (SIGUSR1 prints counters as JSON).
    Run {
        /// The topology file (TOML).
        topology: PathBuf,
        /// A seccomp filter on the data-path threads (vhost-user ports, TAP and VXLAN
        /// readers): `kill` ends the process on a system call outside the data path's list,
        /// `log` only has the kernel log it.
        #[arg(long, value_enum, default_value_t = vswitch::privs::SeccompMode::Off)]
        seccomp: vswitch::privs::SeccompMode,
    },
    /// Validate a topology file without starting anything; exit 1 on errors.
    Check {
        /// The topology file (TOML).
        topology: PathBuf,
    },
    /// Talk to a running vfabric through its control socket.
    Ctl {
        /// The control socket (default: the one of the topology given with -t).
        #[arg(short, long)]
        socket: Option<PathBuf>,
        /// The topology file vfabric runs (finds its control socket).
        #[arg(short, long)]
        topology: Option<PathBuf>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        cmd: CtlCmd,
    },
}

#[derive(Subcommand)]
enum CtlCmd {
    /// Ports and disks, with link state and VLAN mode.
    Ports,
    /// Counters of every port and disk, or of one.
    Stats { name: Option<String> },
    /// The forwarding database.
    Fdb {
        #[command(subcommand)]
        cmd: FdbCmd,
    },
    /// The topology as Graphviz dot.
    Graph,
    /// Impair a port's link, both directions (test networks): loss, delay, jitter, rate.
    Impair {
        port: String,
        /// Percent of frames lost.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Milliseconds of delay.
        #[arg(long, default_value_t = 0.0)]
        delay: f64,
        /// Milliseconds of random extra delay (0..jitter).
        #[arg(long, default_value_t = 0.0)]
        jitter: f64,
        /// Megabits per second; frames beyond are dropped.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Remove the impairment.
        #[arg(long)]
        clear: bool,
    },
    /// Re-read the topology file and make the fabric match it: ports added and removed,
    /// VLAN, security, static-address and aging changes (SIGHUP does the same).
    Reload,
    /// Add or remove a port of the running fabric (the topology file is not changed).
    Port {
        #[command(subcommand)]
        cmd: PortCmd,
    },
    /// Capture a port's frames (both directions) into a pcap file (Wireshark, tcpdump -r).
    Capture {
        port: String,
        file: PathBuf,
        /// Stop after this many frames (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
        /// Only frames of this VLAN.
        #[arg(long)]
        vlan: Option<u16>,
    },
}

#[derive(Subcommand)]
enum PortCmd {
    /// Add a port: `port add lab vm3 type=vhost-user-net socket=/run/vf/vm3.sock vlan=10`
    /// (the topology file's keys; a relative socket path is taken from the current directory).
    Add {
        switch: String,
        name: String,
        /// KEY=VALUE pairs.
        keys: Vec<String>,
    },
    /// Remove a port: its guest is disconnected and its socket file removed.
    Del { name: String },
}

#[derive(Subcommand)]
enum FdbCmd {
    /// Entries (of one switch).
    Show { switch: Option<String> },
    /// Forget learned entries (of a switch, of one of its ports).
    Flush {
        switch: Option<String>,
        port: Option<String>,
    },
    /// Add a static entry.
    Add {
        switch: String,
        mac: String,
        port: String,
        #[arg(long)]
        vlan: Option<u16>,
    },
    /// Remove an entry.
    Del {
        switch: String,
        mac: String,
        #[arg(long)]
        vlan: Option<u16>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Check { topology } => match load(&topology) {
            Some(t) => {
                let ports: usize = t.switches.iter().map(|s| s.ports.len()).sum();
                println!(
                    "{}: ok ({} switches, {ports} ports, {} disks)",
                    topology.display(),
                    t.switches.len(),
                    t.disks.len()
                );
                ExitCode::SUCCESS
            }
            None => ExitCode::FAILURE,
        },
        Command::Run { topology, seccomp } => match load(&topology) {
            Some(t) => run(&topology, t, seccomp),
            None => ExitCode::FAILURE,
        },
        Command::Ctl {
            socket,
            topology,
            json,
            cmd,
        } => ctl(socket, topology, json, cmd),
    }
}

fn ctl(socket: Option<PathBuf>, topology: Option<PathBuf>, json: bool, cmd: CtlCmd) -> ExitCode {
    let path = match (socket, topology) {
        (Some(s), _) => s,
        (None, Some(t)) => match load(&t) {
            Some(topo) => control::socket_path(&t, &topo.control),
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
    let words: Vec<String> = match &cmd {
        CtlCmd::Capture { .. } => vec![],
        CtlCmd::Ports => vec!["ports".into()],
        CtlCmd::Stats { name } => std::iter::once("stats".to_string())
            .chain(name.clone())
            .collect(),
        CtlCmd::Graph => vec!["graph".into()],
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
    };
    match control::call(&path, &words) {
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
    let mut req = serde_json::to_string(&control::Request { cmd }).map_err(|e| e.to_string())?;
    req.push('\n');
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut header = String::new();
    r.read_line(&mut header).map_err(|e| e.to_string())?;
    let v: serde_json::Value =
        serde_json::from_str(&header).map_err(|e| format!("bad answer: {e}"))?;
    if v["ok"] != serde_json::Value::Bool(true) {
        return Err(v["error"].as_str().unwrap_or("refused").to_string());
    }
    let out = std::fs::File::create(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut w = pcap_file::pcap::PcapWriter::with_header(
        std::io::BufWriter::new(out),
        pcap_file::pcap::PcapHeader {
            datalink: pcap_file::DataLink::ETHERNET,
            ts_resolution: pcap_file::TsResolution::NanoSecond,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
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
        let pkt = pcap_file::pcap::PcapPacket::new(std::time::Duration::from_nanos(ns), len, &data);
        w.write_packet(&pkt).map_err(|e| e.to_string())?;
        n += 1;
        if count.is_some_and(|c| n >= c) {
            break;
        }
    }
    w.into_writer().flush().map_err(|e| e.to_string())?;
    Ok(n)
}

/// Human-readable output of a `ctl` answer (JSON with --json).
fn print_answer(cmd: &CtlCmd, v: &serde_json::Value, json: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(v).unwrap_or_default()
        );
        return;
    }
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match cmd {
        CtlCmd::Graph => {
            let _ = write!(out, "{}", v.as_str().unwrap_or_default());
        }
        CtlCmd::Ports => {
            let _ = writeln!(
                out,
                "{:<12} {:<16} {:<16} {:<5} {:<24} SOCKET",
                "SWITCH", "PORT/DISK", "TYPE", "LINK", "VLAN"
            );
            for p in v.as_array().into_iter().flatten() {
                let name = p.get("port").or(p.get("disk")).map(s).unwrap_or_default();
                let link = match p.get("connected") {
                    Some(serde_json::Value::Bool(true)) => "up",
                    Some(_) => "down",
                    None => "-",
                };
                let _ = writeln!(
                    out,
                    "{:<12} {:<16} {:<16} {:<5} {:<24} {}",
                    p.get("switch").map(s).unwrap_or_else(|| "-".into()),
                    name,
                    s(&p["type"]),
                    link,
                    p.get("vlan").map(s).unwrap_or_else(|| "-".into()),
                    s(&p["socket"])
                );
            }
        }
        CtlCmd::Stats { .. } => {
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
        CtlCmd::Fdb {
            cmd: FdbCmd::Show { .. },
        } => {
            let _ = writeln!(
                out,
                "{:<12} {:<5} {:<18} {:<16} AGE",
                "SWITCH", "VLAN", "MAC", "PORT"
            );
            for e in v.as_array().into_iter().flatten() {
                let age = if e["static"] == serde_json::Value::Bool(true) {
                    "static".to_string()
                } else {
                    format!("{}s", e["age_s"])
                };
                let _ = writeln!(
                    out,
                    "{:<12} {:<5} {:<18} {:<16} {age}",
                    s(&e["switch"]),
                    e["vlan"],
                    s(&e["mac"]),
                    s(&e["port"])
                );
            }
        }
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

fn load(path: &Path) -> Option<Topology> {
    match topology::load(path) {
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

fn run(path: &Path, topo: Topology, seccomp: vswitch::privs::SeccompMode) -> ExitCode {
    // Signals are taken synchronously by this thread; block them before any thread exists
    // (threads inherit the mask: the qcow2 I/O threads start when an image is opened, and a
    // SIGUSR1 delivered to a thread that does not block it would end the process).
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGUSR1,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    if let Err(e) = signals.thread_block() {
        eprintln!("cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    // The data-path filter is compiled before anything is made; threads apply it.
    if let Err(e) = vswitch::privs::set_data_path_filter(seccomp) {
        eprintln!("{}: {e}; nothing started", path.display());
        return ExitCode::FAILURE;
    }
    if seccomp != vswitch::privs::SeccompMode::Off {
        tracing::info!("data-path threads run under a seccomp filter ({seccomp:?})");
    }
    let fabric = match Fabric::new(&topo) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot set up the data plane: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Open (and lock) every image first: a missing or busy image is an error before any
    // socket exists.
    let mut disks = Vec::new();
    for d in &topo.disks {
        let spec = blk::ImageSpec {
            path: d.path.clone(),
            format: match d.format {
                DiskFormat::Auto => blk::Format::Auto,
                DiskFormat::Raw => blk::Format::Raw,
                DiskFormat::Qcow2 => blk::Format::Qcow2,
                DiskFormat::Null => blk::Format::Null,
            },
            readonly: d.readonly,
            null_size: d.size,
        };
        match blk::Image::open(&spec) {
            Ok(img) => disks.push(Disk::new(
                blk::DiskConfig {
                    name: d.name.clone(),
                    queues: d.queues,
                    serial: d.serial.clone(),
                },
                img,
            )),
            Err(e) => {
                eprintln!(
                    "{}: disk \"{}\": path: {e}; nothing started",
                    path.display(),
                    d.name
                );
                return ExitCode::FAILURE;
            }
        }
    }
    // Create every listening socket before serving any: all or nothing.
    let mut roles = Vec::new();
    let mut disk_roles = Vec::new();
    let mut bound: Vec<PathBuf> = Vec::new();
    for (d, disk) in topo.disks.iter().zip(&disks) {
        if d.client {
            disk_roles.push((disk.clone(), Role::Client(d.socket.clone())));
            continue;
        }
        match bind_socket(&d.socket).and_then(|l| {
            bound.push(d.socket.clone());
            control::apply_perms(&d.socket, &d.perms).map(|()| l)
        }) {
            Ok(l) => {
                disk_roles.push((disk.clone(), Role::Server(l)));
            }
            Err(e) => {
                eprintln!(
                    "{}: disk \"{}\": socket {}: {e}; nothing started",
                    path.display(),
                    d.name,
                    d.socket.display()
                );
                for b in &bound {
                    let _ = std::fs::remove_file(b);
                }
                return ExitCode::FAILURE;
            }
        }
    }
    let mut port_sockets: Vec<PathBuf> = Vec::new();
    for (si, sw_cfg) in topo.switches.iter().enumerate() {
        for p in &sw_cfg.ports {
            let (PortKind::VhostUserNet(v), Some((index, _))) =
                (&p.kind, fabric.switches()[si].port_by_name(&p.name))
            else {
                continue;
            };
            if v.client {
                roles.push((si, index, Role::Client(v.socket.clone()), None));
                continue;
            }
            match bind_socket(&v.socket).and_then(|l| {
                bound.push(v.socket.clone());
                control::apply_perms(&v.socket, &v.perms).map(|()| l)
            }) {
                Ok(l) => {
                    port_sockets.push(v.socket.clone());
                    roles.push((si, index, Role::Server(l), Some(v.socket.clone())));
                }
                Err(e) => {
                    eprintln!(
                        "{}: switch \"{}\" port \"{}\": socket {}: {e}; nothing started",
                        path.display(),
                        sw_cfg.name,
                        p.name,
                        v.socket.display()
                    );
                    for b in &bound {
                        let _ = std::fs::remove_file(b);
                    }
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let ctl_path = control::socket_path(path, &topo.control);
    let mut ctl_listener = match control::bind(&ctl_path, &topo.control) {
        Ok(l) => {
            bound.push(ctl_path.clone());
            l
        }
        Err(e) => {
            eprintln!(
                "{}: control: socket {}: {e}; nothing started",
                path.display(),
                ctl_path.display()
            );
            for b in &bound {
                let _ = std::fs::remove_file(b);
            }
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = topo.metrics {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => {
                if let Ok(a) = l.local_addr() {
                    println!("metrics: http://{a}/metrics");
                }
                ctl_listener.metrics = Some(l);
            }
            Err(e) => {
                eprintln!("{}: metrics: {addr}: {e}; nothing started", path.display());
                for b in &bound {
                    let _ = std::fs::remove_file(b);
                }
                return ExitCode::FAILURE;
            }
        }
    }
    // Every privileged step is done (TAPs created, sockets bound and chowned): a fabric
    // that needed root for its TAPs gives up every capability before any thread starts.
    let has_tap = topo
        .switches
        .iter()
        .flat_map(|s| &s.ports)
        .any(|p| matches!(p.kind, PortKind::Tap(_)));
    if has_tap && vswitch::privs::effective().is_ok_and(|c| c != 0) {
        match vswitch::privs::drop_all() {
            Ok(()) => {
                // Capabilities are per thread: the qcow2 I/O threads already run.
                for disk in &disks {
                    disk.image.drop_privileges(vswitch::privs::drop_all);
                }
                tracing::info!("TAPs created: every capability dropped")
            }
            Err(e) => tracing::warn!("dropping capabilities: {e}"),
        }
    }
    for (si, index, role, socket) in roles {
        if let Err(e) = fabric.serve_vm_port(si, index, role, socket) {
            eprintln!("cannot start a port thread: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Disks' stop handles and socket files, for the socket keeper.
    let mut disk_sockets = Vec::new();
    for (disk, role) in disk_roles {
        let name = format!("disk-{}", disk.config.name);
        let stop = vhost_backends::server::PortStop::new();
        if let Role::Server(l) = &role
            && let Some(p) = l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        {
            disk_sockets.push((stop.clone(), p, format!("disk {}", disk.config.name)));
        }
        if let Err(e) = std::thread::Builder::new()
            .name(name)
            .spawn(move || blk::run_disk(disk, role, stop))
        {
            eprintln!("cannot start a disk thread: {e}");
            return ExitCode::FAILURE;
        }
    }
    // The socket keeper: a listening socket whose file was deleted is made again.
    {
        let fabric = fabric.clone();
        let _ = std::thread::Builder::new()
            .name("socket-keeper".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    for (stop, path, what) in fabric.listening().iter().chain(&disk_sockets) {
                        stop.keep_socket(path, what);
                    }
                }
            });
    }
    if let Err(e) = fabric.start_pollers() {
        eprintln!("cannot start a poll thread: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = fabric.start_host_ports() {
        eprintln!("cannot start a TAP or VXLAN thread: {e}");
        return ExitCode::FAILURE;
    }
    {
        let fabric = fabric.clone();
        let _ = std::thread::Builder::new()
            .name("fdb-aging".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Fabric::EXPIRE_INTERVAL);
                    fabric.expire();
                }
            });
    }
    let control = Arc::new(control::Control {
        fabric: fabric.clone(),
        topology: std::sync::RwLock::new(topo.clone()),
        file: path.to_path_buf(),
        disks: disks.clone(),
    });
    if let Err(e) = ctl_listener.serve(control.clone()) {
        eprintln!("cannot start the control thread: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "control: {} (vfabric ctl -s {} ports)",
        ctl_path.display(),
        ctl_path.display()
    );
    print_ready(&topo);
    notify_systemd("READY=1");
    loop {
        match signals.wait() {
            Ok(Signal::SIGUSR1) => print_stats(&fabric, &disks),
            Ok(Signal::SIGHUP) => match control.reload() {
                Ok(changes) if changes.is_empty() => tracing::info!("reload: nothing changed"),
                Ok(changes) => tracing::info!("reload: {}", changes.join(", ")),
                Err(e) => tracing::error!("reload: {e}"),
            },
            Ok(sig) => {
                tracing::info!("{sig}: shutting down");
                notify_systemd("STOPPING=1");
                vhost_backends::server::begin_shutdown();
                for d in &disks {
                    d.image.close();
                }
                // Port sockets as they are now (ports come and go at run time); the others
                // as bound at start.
                for b in bound.iter().filter(|b| !port_sockets.contains(b)) {
                    let _ = std::fs::remove_file(b);
                }
                for b in fabric.socket_files() {
                    let _ = std::fs::remove_file(b);
                }
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                tracing::error!("sigwait: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
}

/// Tells systemd (`Type=notify` services) about our state through $NOTIFY_SOCKET, if set.
fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name),
        None => SocketAddr::from_pathname(Path::new(&path)),
    };
    let sent = addr.and_then(|a| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &a));
    if let Err(e) = sent {
        tracing::warn!("sd_notify {state}: {e}");
    }
}

fn print_ready(topo: &Topology) {
    let mut out = std::io::stdout().lock();
    for sw in &topo.switches {
        for p in &sw.ports {
            let v = match &p.kind {
                PortKind::VhostUserNet(v) => v,
                PortKind::Tap(t) => {
                    let _ = writeln!(
                        out,
                        "port {} (switch {}): tap {}{}{}{} ({} queue{})",
                        p.name,
                        sw.name,
                        t.ifname,
                        t.netns
                            .as_ref()
                            .map(|n| format!(" in namespace {n}"))
                            .unwrap_or_default(),
                        t.address
                            .map(|(a, l)| format!(", address {a}/{l}"))
                            .unwrap_or_default(),
                        t.bridge
                            .as_ref()
                            .map(|b| format!(", bridge {b}"))
                            .unwrap_or_default(),
                        t.queues,
                        if t.queues == 1 { "" } else { "s" }
                    );
                    continue;
                }
                PortKind::Nat(n) => {
                    let _ = writeln!(
                        out,
                        "port {} (switch {}): nat {}/{}: gateway {} (also the host's loopback), DNS {} -> {}, DHCP {}-{}{}{}",
                        p.name,
                        sw.name,
                        n.network,
                        n.prefix,
                        n.gateway,
                        n.dns,
                        n.dns_upstream,
                        n.dhcp_first,
                        n.dhcp_last,
                        if n.restrict { ", restricted" } else { "" },
                        n.forwards
                            .iter()
                            .map(|f| format!(", forward {:?} {} -> {}", f.proto, f.host, f.guest))
                            .collect::<String>()
                    );
                    continue;
                }
                PortKind::Vxlan(x) => {
                    let _ = writeln!(
                        out,
                        "port {} (switch {}): vxlan vni {} from {} port {} to {}",
                        p.name,
                        sw.name,
                        x.vni,
                        x.local,
                        x.port,
                        x.remote
                            .iter()
                            .map(|r| r.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    let _ = writeln!(
                        out,
                        "  linux peer: ip link add vxlan{vni} type vxlan id {vni} local <peer address> remote {local} dstport {port}",
                        vni = x.vni,
                        local = x.local,
                        port = x.port
                    );
                    continue;
                }
            };
            let sock = v.socket.display();
            let (chardev, role) = if v.client {
                (
                    format!(
                        "-chardev socket,id={n},path={sock},server=on,wait=off",
                        n = p.name
                    ),
                    "vfabric dials",
                )
            } else {
                (
                    format!(
                        "-chardev socket,id={n},path={sock},reconnect-ms=100",
                        n = p.name
                    ),
                    "listening",
                )
            };
            let mq = if v.queues > 1 {
                format!(",mq=on,vectors={}", 2 * v.queues + 2)
            } else {
                String::new()
            };
            let mac = v.mac.map(|m| format!(",mac={m}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "port {} (switch {}): vhost-user-net {sock} ({role}, up to {} queue pairs)",
                p.name, sw.name, v.queues
            );
            let _ = writeln!(
                out,
                "  qemu: -object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem {chardev} -netdev vhost-user,id={n},chardev={n},queues={q} -device virtio-net-pci,netdev={n}{mac}{mq}",
                n = p.name,
                q = v.queues
            );
            let _ = writeln!(
                out,
                "  cloud-hypervisor: --memory size=1G,shared=on --net vhost_user=true,socket={sock},num_queues={}{}",
                2 * v.queues,
                if v.client {
                    ",vhost_mode=server"
                } else {
                    ",vhost_mode=client"
                }
            );
        }
    }
    for d in &topo.disks {
        let sock = d.socket.display();
        let chardev = if d.client {
            format!(
                "-chardev socket,id={n},path={sock},server=on,wait=off",
                n = d.name
            )
        } else {
            format!(
                "-chardev socket,id={n},path={sock},reconnect-ms=100",
                n = d.name
            )
        };
        let _ = writeln!(
            out,
            "disk {}: vhost-user-blk {sock} ({}, {} queues, {})",
            d.name,
            if d.client {
                "vfabric dials"
            } else {
                "listening"
            },
            d.queues,
            if d.format == DiskFormat::Null {
                "null".to_string()
            } else {
                d.path.display().to_string()
            }
        );
        let _ = writeln!(
            out,
            "  qemu: {chardev} -device vhost-user-blk-pci,chardev={n},num-queues={q}",
            n = d.name,
            q = d.queues
        );
    }
    let _ = writeln!(out, "vfabric ready");
    let _ = out.flush();
}

fn print_stats(fabric: &Fabric, disks: &[Arc<Disk>]) {
    let mut out = std::io::stdout().lock();
    for line in control::stats_lines(fabric, disks, None) {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}
