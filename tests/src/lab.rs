//! A test network: one vfabric switch and N guests on it, guest i (1-based) named `vmI` with
//! MAC 52:54:00:00:00:0I and address 10.0.0.I/24 on eth0.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::fabric::{Fabric, PortSpec};
use crate::qemu::{NetDev, Qemu, Vm, VmConfig};

/// How long a guest may take to boot under TCG on a busy 2-core machine.
pub const BOOT: Duration = Duration::from_secs(120);
/// How long an ordinary guest command may take.
pub const CMD: Duration = Duration::from_secs(60);

/// Options for the guests of a lab.
#[derive(Clone, Debug)]
pub struct GuestOpts {
    pub queues: u16,
    pub cpus: u32,
    pub mem_mb: u32,
    pub extra_cmdline: String,
    /// QEMU listens on the sockets (`server=on`) and vfabric dials them (`client = true`).
    pub qemu_is_server: bool,
    /// Extra topology lines for single ports: (guest number, TOML lines).
    pub port_extra: Vec<(usize, String)>,
    /// Topology text after the guests' ports (more `[[switch.port]]` tables of the switch).
    pub topology_extra: String,
    /// Run vfabric inside this network namespace.
    pub fabric_netns: Option<String>,
    /// The number of the first guest (guests are first..first+n-1, with their addresses).
    pub first: usize,
    /// No static address: the guests' eth0 stays down for the test to configure (DHCP).
    pub no_address: bool,
    /// Guests may reboot (QEMU without `-no-reboot`).
    pub allow_reboot: bool,
    /// Guests (by number) whose NIC uses packed virtqueues (QEMU `packed=on`).
    pub packed: Vec<usize>,
    /// Options of `vfabric run` before the topology file (e.g. `--http 127.0.0.1:0`).
    pub run_args: Vec<String>,
}

impl Default for GuestOpts {
    fn default() -> Self {
        GuestOpts {
            queues: 1,
            cpus: 1,
            mem_mb: 256,
            extra_cmdline: String::new(),
            qemu_is_server: false,
            port_extra: Vec::new(),
            topology_extra: String::new(),
            fabric_netns: None,
            first: 1,
            no_address: false,
            allow_reboot: false,
            packed: Vec::new(),
            run_args: Vec::new(),
        }
    }
}

pub struct NetLab {
    pub fabric: Fabric,
    pub vms: Vec<Vm>,
    dir: tempfile::TempDir,
    opts: GuestOpts,
}

/// Guest `i`'s (1-based) address.
pub fn ip(i: usize) -> String {
    format!("10.0.0.{i}")
}

/// Guest `i`'s (1-based) MAC.
pub fn mac(i: usize) -> String {
    format!("52:54:00:00:00:{i:02x}")
}

impl NetLab {
    /// Starts vfabric with ports vm1..vmN and boots one guest per port with `qemu[i % len]`.
    pub fn start(n: usize, qemus: &[Qemu], opts: GuestOpts) -> Result<NetLab> {
        let dir = tempfile::Builder::new().prefix("vf").tempdir_in("/tmp")?;
        let first = opts.first.max(1);
        let ports: Vec<PortSpec> = (first..first + n)
            .map(|i| PortSpec {
                name: format!("vm{i}"),
                extra: format!(
                    "queues = {}\nclient = {}\n{}",
                    opts.queues.max(1),
                    opts.qemu_is_server,
                    opts.port_extra
                        .iter()
                        .filter(|(g, _)| *g == i)
                        .map(|(_, e)| e.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            })
            .collect();
        let fabric = Fabric::start_with_args(
            dir.path(),
            &ports,
            &opts.topology_extra,
            opts.fabric_netns.as_deref(),
            &opts.run_args,
        )?;
        let mut lab = NetLab {
            fabric,
            vms: Vec::new(),
            dir,
            opts,
        };
        for i in first..first + n {
            let vm = lab.boot(i, qemus[(i - first) % qemus.len()].clone())?;
            lab.vms.push(vm);
        }
        for vm in &mut lab.vms {
            vm.wait_ready(BOOT)?;
        }
        Ok(lab)
    }

    /// The lab's directory (sockets, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts guest `i` (1-based) without waiting for it.
    pub fn boot(&self, i: usize, qemu: Qemu) -> Result<Vm> {
        let name = format!("vm{i}");
        let mut cfg = VmConfig::new(&name, qemu);
        cfg.cpus = self.opts.cpus;
        cfg.mem_mb = self.opts.mem_mb;
        cfg.allow_reboot = self.opts.allow_reboot;
        cfg.nics.push(NetDev {
            socket: self.fabric.socket(&name),
            mac: mac(i),
            queues: self.opts.queues.max(1),
            qemu_is_server: self.opts.qemu_is_server,
            packed: self.opts.packed.contains(&i),
        });
        if !self.opts.no_address {
            cfg.ips.push(("eth0".into(), format!("{}/24", ip(i))));
        }
        cfg.extra_cmdline = self.opts.extra_cmdline.clone();
        static BOOTS: AtomicUsize = AtomicUsize::new(0);
        let workdir: PathBuf = self
            .dir
            .path()
            .join(format!("{name}-{}", BOOTS.fetch_add(1, Ordering::Relaxed)));
        Vm::start(cfg, &workdir)
    }

    /// Guest `i` (1-based).
    pub fn vm(&mut self, i: usize) -> &mut Vm {
        let first = self.opts.first.max(1);
        &mut self.vms[i - first]
    }

    /// Kills guest `i`'s QEMU (as a crash would) and starts it again on the same port, until
    /// it is ready: the port sees a new VMM connection.
    pub fn restart_guest(&mut self, i: usize, qemu: Qemu) -> Result<()> {
        self.vm(i).kill();
        let mut vm = self.boot(i, qemu)?;
        vm.wait_ready(BOOT)?;
        *self.vm(i) = vm;
        Ok(())
    }

    /// Pings from guest `from` to guest `to` `count` times; error unless every reply came.
    pub fn ping(&mut self, from: usize, to: usize, count: u32) -> Result<String> {
        let out = self
            .vm(from)
            .run_ok(&format!("ping -c {count} -W 5 {}", ip(to)), CMD)?;
        if !out.contains(&format!("{count} packets received")) {
            bail!("vm{from} -> vm{to}: not every ping came back:\n{out}");
        }
        Ok(out)
    }

    /// Pings once a second from `from` to `to` until one reply comes, for at most `timeout`.
    pub fn wait_reachable(
        &mut self,
        from: usize,
        to: usize,
        timeout: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let out = self
                .vm(from)
                .run(&format!("ping -c 1 -W 1 {}", ip(to)), CMD)?;
            if out.code == 0 {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "vm{to} not reachable from vm{from} within {timeout:?}; vfabric log:\n{}",
                    self.fabric.log_tail()
                );
            }
        }
    }

    /// Waits (at most 10 s) until guest `i` listens on TCP `port`: servers started with
    /// `-D`/in the background are not listening yet when their command returns.
    pub fn wait_listening(&mut self, i: usize, port: u16) -> Result<()> {
        self.vm(i).run_ok(&listening_cmd(port), CMD).map(|_| ())
    }

    /// A guest's interface counters (`tx_packets`, `rx_packets`, ...) for eth0.
    pub fn guest_counters(&mut self, i: usize) -> Result<(u64, u64)> {
        let out = self.vm(i).run_ok(
            "cat /sys/class/net/eth0/statistics/tx_packets /sys/class/net/eth0/statistics/rx_packets",
            CMD,
        )?;
        let mut it = out.split_whitespace().map(|s| s.parse::<u64>());
        let tx = it.next().context("tx_packets")??;
        let rx = it.next().context("rx_packets")??;
        Ok((tx, rx))
    }
}

/// A guest shell command that waits, bounded to 10 s, until something listens on TCP `port`.
pub fn listening_cmd(port: u16) -> String {
    format!(
        "for i in $(seq 100); do netstat -ltn 2>/dev/null | grep -q ':{port} ' && exit 0; sleep 0.1; done; \
         echo 'nothing listens on port {port}'; exit 1"
    )
}
