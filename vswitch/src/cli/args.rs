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
