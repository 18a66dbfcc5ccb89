//! The command line: `vfabric run | check | ctl ...` as clap definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vfabric",
    version,
    about = "A vhost-user virtual switch fabric for VMs"
)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve every port of a topology until SIGINT/SIGTERM (SIGUSR1 prints counters as JSON).
    Run {
        /// The topology file (TOML).
        topology: PathBuf,
        /// The seccomp filter on every thread (each kind of thread has its own list:
        /// docs/seccomp.md): `kill` (the default) ends the process on a system call outside
        /// the thread's list, `log` only has the kernel log it, `off` (for diagnosis)
        /// applies none.
        #[arg(long, value_enum, default_value_t = vswitch::privs::SeccompMode::Kill)]
        seccomp: vswitch::privs::SeccompMode,
        /// Serve the web console (read-only: topology, live rates, drops, port pages,
        /// capture downloads, trace) and /metrics at ADDR: `8080` (on 127.0.0.1),
        /// `127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8080` (every address: think twice).
        #[arg(long, value_name = "ADDR", value_parser = http_addr)]
        http: Option<std::net::SocketAddr>,
        /// Which [[host]] of a topology across hosts this machine is (default: the one whose
        /// address is on this machine). Only its ports and disks are served, and the meshes
        /// to the other hosts are built.
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
    },
    /// Validate a topology file without starting anything; exit 1 on errors.
    Check {
        /// The topology file (TOML).
        topology: PathBuf,
        /// Also check the images of this host's disks (a topology across hosts).
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
    },
    /// Talk to a running vfabric through its control socket.
    Ctl {
        /// The control socket (default: the one of the topology given with -t).
        #[arg(short, long)]
        socket: Option<PathBuf>,
        /// The topology file vfabric runs (finds its control socket).
        #[arg(short, long)]
        topology: Option<PathBuf>,
        /// With -t: the host whose vfabric to talk to (a topology across hosts; default:
        /// the one whose address is on this machine).
        #[arg(long, value_name = "NAME", requires = "topology")]
        host: Option<String>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        cmd: CtlCmd,
    },
}

/// `--http`'s address: a port alone listens on loopback.
fn http_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("`{port}` is not a port"))?;
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse::<std::net::SocketAddr>().map_err(|_| {
        format!("`{s}` is not PORT, ADDRESS:PORT or [IPv6]:PORT (e.g. 127.0.0.1:8080)")
    })
}

#[derive(Subcommand)]
pub enum CtlCmd {
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
    /// How a VM attaches to a port or disk: QEMU arguments, libvirt domain XML (with the
    /// memory backing it needs) or cloud-hypervisor arguments.
    Attach {
        name: String,
        #[arg(long = "as", value_enum, default_value_t = vswitch::attach::Vmm::Qemu)]
        vmm: vswitch::attach::Vmm,
    },
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
    /// Explain what the switch would do with a frame arriving on PORT, step by step (VLAN
    /// classification, port security, learning, FDB lookup, receivers and their tag edits,
    /// impairments), without sending it or learning anything: like ovs-appctl ofproto/trace.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["dst", "pcap"])))]
    Trace {
        port: String,
        /// Source MAC (default with --dst: 02:00:00:00:00:01).
        #[arg(long, requires = "dst")]
        src: Option<String>,
        /// Destination MAC.
        #[arg(long)]
        dst: Option<String>,
        /// An 802.1Q tag with this VLAN id (the frame as it arrives, tagged).
        #[arg(long, requires = "dst")]
        vlan: Option<u16>,
        /// ipv4, ipv6, arp or a number such as 0x88b5 (default: from --ip, else 0x88b5).
        #[arg(long, requires = "dst")]
        ethertype: Option<String>,
        /// Network-layer source and destination (a UDP packet, or ARP sender and target).
        #[arg(long, num_args = 2, value_names = ["SRC", "DST"], requires = "dst")]
        ip: Option<Vec<String>>,
        /// Trace a captured frame instead (from `ctl capture`, tcpdump, Wireshark).
        #[arg(long, conflicts_with_all = ["dst", "src", "vlan", "ethertype", "ip"])]
        pcap: Option<PathBuf>,
        /// Which frame of the pcap file (1 = the first).
        #[arg(long, default_value_t = 1, requires = "pcap")]
        frame: usize,
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
pub enum PortCmd {
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
    /// One port: its settings, counters, learned addresses, policy, guest connection and
    /// impairment.
    Show { name: String },
}

#[derive(Subcommand)]
pub enum FdbCmd {
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
