//! Launching test guests under QEMU and talking to their command agent.
//!
//! A [`Vm`] is one QEMU process booting the [`guest_image`](crate::guest_image::guest_image): its
//! kernel console (ttyS0) goes to `<workdir>/<name>-console.log`, its command agent (ttyS1) is a unix
//! socket `<workdir>/<name>-agent.sock` the harness connects to, QEMU's own stdout/stderr go to
//! `<workdir>/<name>-qemu.log`. Guest RAM is a shared memfd, as vhost-user needs. The only NICs are
//! the vhost-user ones in [`VmConfig::nics`].
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use vfabric_tests::qemu::{Qemu, Vm, VmConfig};
//! let dir = tempfile::tempdir()?;
//! let mut vm = Vm::start(VmConfig::new("vm1", Qemu::system()?), dir.path())?;
//! vm.wait_ready(Duration::from_secs(60))?;
//! let kernel = vm.run_ok("uname -r", Duration::from_secs(10))?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::guest_image::{guest_image, workspace_root};

/// A QEMU binary (`qemu-system-x86_64`) and the data directory it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qemu {
    /// The `qemu-system-x86_64` executable.
    pub path: PathBuf,
    /// Passed as `-L` (BIOS, option ROMs) when set; `None` for the system install.
    pub data_dir: Option<PathBuf>,
    /// (major, minor, micro) from `--version`.
    pub version: (u32, u32, u32),
}

impl fmt::Display for Qemu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.version;
        write!(f, "QEMU {a}.{b}.{c}")
    }
}

impl Qemu {
    /// `qemu-system-x86_64` from `PATH` (QEMU 10.0 from bookworm-backports here).
    pub fn system() -> Result<Qemu> {
        let name = "qemu-system-x86_64";
        let path = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
            .with_context(|| format!("no {name} in PATH: run scripts/install-deps.sh"))?;
        Qemu::from_path(&path, None)
            .context("the system QEMU does not run: run scripts/install-deps.sh")
    }

    /// Debian 12's QEMU 7.2 as unpacked by `scripts/fetch-qemu-7.2.sh` into
    /// `<workspace>/.cache/qemu-7.2/`. `Ok(None)` when it was not fetched; an error when it is there
    /// but does not run or is not 7.2.
    pub fn v7_2() -> Result<Option<Qemu>> {
        let root = workspace_root().join(".cache/qemu-7.2");
        let bin = root.join("usr/bin/qemu-system-x86_64");
        if !bin.exists() {
            return Ok(None);
        }
        let q = Qemu::from_path(&bin, Some(root.join("usr/share/qemu"))).context(
            "the unpacked QEMU 7.2 does not run: re-run scripts/fetch-qemu-7.2.sh --force",
        )?;
        ensure!(
            (q.version.0, q.version.1) == (7, 2),
            "{} is {q}, not 7.2: re-run scripts/fetch-qemu-7.2.sh --force",
            bin.display()
        );
        Ok(Some(q))
    }

    /// The QEMU binary at `path` (looked up in `PATH` if it has no '/'), its version read from
    /// `--version`; `data_dir` is passed as `-L`.
    pub fn from_path(path: &Path, data_dir: Option<PathBuf>) -> Result<Qemu> {
        let mut q = Qemu {
            path: path.to_path_buf(),
            data_dir,
            version: (0, 0, 0),
        };
        let out = q
            .command()
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} --version", path.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "{} --version: {}: {}{}",
            path.display(),
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        q.version = parse_version(&text).with_context(|| format!("no version in {text:?}"))?;
        Ok(q)
    }

    /// An unpacked (not installed) QEMU's module directory (`usr/lib/x86_64-linux-gnu/qemu` next to
    /// its `usr/bin`), passed as `QEMU_MODULE_DIR`: Debian's 7.2 has TCG as a loadable module and
    /// would otherwise look in the system's module directory, which holds 10.0's.
    fn module_dir(&self) -> Option<PathBuf> {
        self.data_dir.as_ref()?;
        let dir = self
            .path
            .parent()?
            .parent()?
            .join("lib/x86_64-linux-gnu/qemu");
        dir.is_dir().then_some(dir)
    }

    /// A `Command` for this QEMU, run inside network namespace `netns` if given.
    fn command_in(&self, netns: Option<&str>) -> Command {
        let Some(ns) = netns else {
            return self.command();
        };
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(&self.path);
        if let Some(dir) = self.module_dir() {
            c.env("QEMU_MODULE_DIR", dir);
        }
        c
    }

    /// A `Command` for this QEMU with its environment set.
    fn command(&self) -> Command {
        let mut c = Command::new(&self.path);
        if let Some(dir) = self.module_dir() {
            c.env("QEMU_MODULE_DIR", dir);
        }
        c
    }

    /// Spelling of the chardev reconnect option for this version (`reconnect-ms` since 9.2).
    fn reconnect_opt(&self) -> &'static str {
        if self.version >= (9, 2, 0) {
            "reconnect-ms=100"
        } else {
            "reconnect=1"
        }
    }

    /// Whether vhost-user virtio-net may use MSI-X. Debian's 7.2 segfaults under TCG when the guest
    /// driver starts (`vhost_net_start -> msix_set_vector_notifiers`); 10.0.2 is fixed. Versions in
    /// between were never checked, so they get INTx too.
    fn msix_ok(&self) -> bool {
        self.version >= (10, 0, 0)
    }
}

/// "QEMU emulator version 10.0.2 (Debian ...)" -> (10, 0, 2).
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let word = text.split("version ").nth(1)?.split_whitespace().next()?;
    let mut nums = word.split('.').map(|n| n.parse::<u32>().ok());
    Some((
        nums.next()??,
        nums.next().flatten().unwrap_or(0),
        nums.next().flatten().unwrap_or(0),
    ))
}

/// Every QEMU the tests can use: the system one and, if fetched, 7.2. Problems are printed to stderr.
pub fn all_available() -> Vec<Qemu> {
    let mut all = Vec::new();
    match Qemu::system() {
        Ok(q) => all.push(q),
        Err(e) => eprintln!("vfabric-tests: system QEMU unavailable: {e:#}"),
    }
    match Qemu::v7_2() {
        Ok(Some(q)) => all.push(q),
        Ok(None) => {
            eprintln!("vfabric-tests: QEMU 7.2 not fetched (run scripts/fetch-qemu-7.2.sh)")
        }
        Err(e) => eprintln!("vfabric-tests: QEMU 7.2 unavailable: {e:#}"),
    }
    all
}

/// The accelerator guests run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation (`-accel kvm -cpu host`).
    Kvm,
    /// Binary translation (`-accel tcg`).
    Tcg,
}

/// KVM only when the host has real `kvm_intel`/`kvm_amd` and `/dev/kvm` opens read-write (other KVM
/// flavours such as `kvm_pvm` do not boot stock kernels); TCG otherwise. `VFABRIC_ACCEL=tcg|kvm`
/// overrides.
pub fn accel() -> Accel {
    match std::env::var("VFABRIC_ACCEL").as_deref() {
        Ok("tcg") => return Accel::Tcg,
        Ok("kvm") => return Accel::Kvm,
        _ => {}
    }
    let hw =
        Path::new("/sys/module/kvm_intel").exists() || Path::new("/sys/module/kvm_amd").exists();
    if hw
        && OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
    {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

/// A vhost-user virtio-net NIC. NICs become eth0, eth1, ... in the guest, in `nics` order.
#[derive(Clone, Debug)]
pub struct NetDev {
    /// The vhost-user unix socket.
    pub socket: PathBuf,
    /// Guest MAC address, `52:54:00:xx:xx:xx`.
    pub mac: String,
    /// Queue pairs (multi-queue when > 1).
    pub queues: u16,
    /// QEMU listens on `socket` (`server=on,wait=off`) instead of connecting to the backend with
    /// reconnect. Either way QEMU does not start the guest until the backend is connected.
    pub qemu_is_server: bool,
    /// Packed virtqueues (`packed=on`): QEMU offers VIRTIO_F_RING_PACKED to the guest.
    pub packed: bool,
}

/// A vhost-user-blk disk. Disks become vda, vdb, ... in the guest, in `disks` order (the
/// guest needs `vf.modprobe=virtio_blk`).
#[derive(Clone, Debug)]
pub struct BlkDev {
    /// The vhost-user unix socket (QEMU connects, with reconnect).
    pub socket: PathBuf,
    pub queues: u16,
}

/// What to boot.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Guest name: hostname, QEMU `-name`, prefix of the files in the work directory.
    pub name: String,
    pub qemu: Qemu,
    /// Guest RAM (a shared memfd) in MiB.
    pub mem_mb: u32,
    pub cpus: u32,
    pub nics: Vec<NetDev>,
    pub disks: Vec<BlkDev>,
    /// Guest RAM shared with the backends (`share=on`); false reproduces the common
    /// mistake of a QEMU without shared memory.
    pub shared_memory: bool,
    /// Addresses /init assigns: (interface, CIDR), e.g. `("eth0", "10.0.0.1/24")`; the interface
    /// is brought up. `eth0.100` works when `extra_cmdline` has `vf.vlan=eth0:100`.
    pub ips: Vec<(String, String)>,
    /// Appended to the kernel command line. Guest options /init understands: `vf.vlan=PARENT:VID`,
    /// `vf.mtu=IFACE:MTU`, `vf.route=IFACE:DEST[:VIA]` (see tests/guest/init).
    pub extra_cmdline: String,
    /// Extra QEMU arguments (e.g. another kind of NIC for a comparison).
    pub extra_args: Vec<String>,
    /// Run QEMU inside this network namespace (`ip netns exec`), e.g. for TAP devices.
    pub netns: Option<String>,
    /// A guest reboot resets the machine and boots again (no `-no-reboot`): see
    /// [`Vm::reboot`].
    pub allow_reboot: bool,
}

impl VmConfig {
    /// 256 MiB, 1 CPU, no NIC, no address.
    pub fn new(name: &str, qemu: Qemu) -> VmConfig {
        VmConfig {
            name: name.to_owned(),
            qemu,
            mem_mb: 256,
            cpus: 1,
            nics: Vec::new(),
            disks: Vec::new(),
            shared_memory: true,
            ips: Vec::new(),
            extra_cmdline: String::new(),
            extra_args: Vec::new(),
            netns: None,
            allow_reboot: false,
        }
    }
}

/// The guest kernel command line for `cfg`.
pub fn guest_cmdline(cfg: &VmConfig) -> String {
    // clocksource=hpet: the TSC-based clock runs fast under TCG on a loaded host; panic=-1 with
    // -no-reboot makes a guest panic end QEMU. mitigations=off: PTI's CR3 switches cost TLB flushes
    // under TCG. cryptomgr.notests: the crypto self-tests take ~0.4 s of a TCG boot.
    let mut s = String::from(
        "console=ttyS0 clocksource=hpet no_timer_check panic=-1 loglevel=4 mitigations=off \
         cryptomgr.notests",
    );
    s.push_str(&format!(" vf.name={}", cfg.name));
    for (iface, cidr) in &cfg.ips {
        s.push_str(&format!(" vf.ip={iface}:{cidr}"));
    }
    if !cfg.extra_cmdline.trim().is_empty() {
        s.push(' ');
        s.push_str(cfg.extra_cmdline.trim());
    }
    s
}

/// Paths of a VM's files in its work directory.
struct Files {
    console: PathBuf,
    agent: PathBuf,
    qemu_log: PathBuf,
}

impl Files {
    fn new(workdir: &Path, name: &str) -> Files {
        Files {
            console: workdir.join(format!("{name}-console.log")),
            agent: workdir.join(format!("{name}-agent.sock")),
            qemu_log: workdir.join(format!("{name}-qemu.log")),
        }
    }
}

/// A path as a QEMU option value (commas doubled).
fn opt_path(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// QEMU's arguments (without the binary) for `cfg`.
fn qemu_args(cfg: &VmConfig, kernel: &Path, initrd: &Path, files: &Files) -> Vec<String> {
    let q = &cfg.qemu;
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&[
        "-name",
        &cfg.name,
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
    ]);
    if !cfg.allow_reboot {
        push(&["-no-reboot"]);
    }
    push(&["-nic", "none"]);
    if let Some(d) = &q.data_dir {
        push(&["-L", &d.to_string_lossy()]);
    }
    match accel() {
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => push(&["-accel", "tcg"]),
    }
    let mem = format!("{}M", cfg.mem_mb);
    push(&["-machine", "q35,memory-backend=mem"]);
    push(&[
        "-object",
        &if cfg.shared_memory {
            format!("memory-backend-memfd,id=mem,size={mem},share=on")
        } else {
            format!("memory-backend-ram,id=mem,size={mem}")
        },
    ]);
    push(&["-m", &mem, "-smp", &cfg.cpus.to_string()]);
    push(&["-kernel", &opt_path(kernel), "-initrd", &opt_path(initrd)]);
    push(&["-append", &guest_cmdline(cfg)]);
    push(&[
        "-chardev",
        &format!("file,id=con0,path={}", opt_path(&files.console)),
    ]);
    push(&["-serial", "chardev:con0"]);
    push(&[
        "-chardev",
        &format!(
            "socket,id=agent0,path={},server=on,wait=off",
            opt_path(&files.agent)
        ),
    ]);
    push(&["-serial", "chardev:agent0"]);
    for (i, nic) in cfg.nics.iter().enumerate() {
        let mode = if nic.qemu_is_server {
            "server=on,wait=off"
        } else {
            q.reconnect_opt()
        };
        push(&[
            "-chardev",
            &format!("socket,id=vhu{i},path={},{mode}", opt_path(&nic.socket)),
        ]);
        push(&[
            "-netdev",
            &format!("vhost-user,id=net{i},chardev=vhu{i},queues={}", nic.queues),
        ]);
        let mut dev = format!("virtio-net-pci,netdev=net{i},mac={},romfile=", nic.mac);
        if nic.queues > 1 {
            dev.push_str(",mq=on");
        }
        if nic.packed {
            dev.push_str(",packed=on");
        }
        if !q.msix_ok() {
            dev.push_str(",vectors=0");
        } else if nic.queues > 1 {
            dev.push_str(&format!(",vectors={}", 2 * u32::from(nic.queues) + 2));
        }
        push(&["-device", &dev]);
    }
    for (i, d) in cfg.disks.iter().enumerate() {
        push(&[
            "-chardev",
            &format!(
                "socket,id=vhb{i},path={},{}",
                opt_path(&d.socket),
                q.reconnect_opt()
            ),
        ]);
        let mut dev = format!("vhost-user-blk-pci,chardev=vhb{i},num-queues={}", d.queues);
        if !q.msix_ok() {
            dev.push_str(",vectors=0");
        }
        push(&["-device", &dev]);
    }
    a.extend(cfg.extra_args.iter().cloned());
    a
}

/// The libvirt domain XML of `cfg` with `devices`: the same machine as `qemu_args` builds
/// (q35, TCG, shared memfd memory, console on ttyS0 into a file, agent on ttyS1 through a
/// socket QEMU listens on).
fn libvirt_domain(
    cfg: &VmConfig,
    kernel: &Path,
    initrd: &Path,
    files: &Files,
    devices: &[String],
) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('\'', "&apos;")
    };
    let p = |p: &Path| esc(&p.to_string_lossy());
    format!(
        "<domain type='qemu'>\n\
         <name>{name}</name>\n\
         <memory unit='MiB'>{mem}</memory>\n\
         <vcpu>{cpus}</vcpu>\n\
         <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>\n\
         <os><type arch='x86_64' machine='q35'>hvm</type><kernel>{kernel}</kernel><initrd>{initrd}</initrd><cmdline>{cmdline}</cmdline></os>\n\
         <on_poweroff>destroy</on_poweroff><on_reboot>{reboot}</on_reboot><on_crash>destroy</on_crash>\n\
         <devices>\n\
         <emulator>{emulator}</emulator>\n\
         <serial type='file'><source path='{console}'/><target port='0'/></serial>\n\
         <serial type='unix'><source mode='bind' path='{agent}'/><target port='1'/></serial>\n\
         {devices}\n\
         <controller type='usb' model='none'/>\n\
         <memballoon model='none'/>\n\
         </devices>\n\
         </domain>\n",
        name = esc(&cfg.name),
        mem = cfg.mem_mb,
        cpus = cfg.cpus,
        kernel = p(kernel),
        initrd = p(initrd),
        cmdline = esc(&guest_cmdline(cfg)),
        reboot = if cfg.allow_reboot {
            "restart"
        } else {
            "destroy"
        },
        emulator = p(&cfg.qemu.path),
        console = p(&files.console),
        agent = p(&files.agent),
        devices = devices.join("\n"),
    )
}

/// Result of a command run in the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmdOutput {
    /// Exit status of `sh`.
    pub code: i32,
    /// stdout and stderr, interleaved as written.
    pub output: String,
}

/// A running guest. Dropping it kills QEMU.
pub struct Vm {
    cfg: VmConfig,
    child: Proc,
    files: Files,
    stream: UnixStream,
    lines: Receiver<String>,
    next_id: u64,
    started: Instant,
    ready_after: Option<Duration>,
    killed: bool,
}

/// Bound for QEMU to create the agent socket after launch.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval of every wait.
const POLL: Duration = Duration::from_millis(20);

impl Vm {
    /// Builds (or reuses) the guest image, spawns QEMU and connects to the agent socket. Does not
    /// wait for the guest to boot: call [`Vm::wait_ready`]. `workdir` is created if needed; its path
    /// must be short enough for unix sockets (< 90 bytes).
    pub fn start(cfg: VmConfig, workdir: &Path) -> Result<Vm> {
        let image = guest_image()?;
        fs::create_dir_all(workdir).with_context(|| format!("creating {}", workdir.display()))?;
        ensure!(
            !cfg.name.is_empty()
                && cfg
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "VM name {:?} must be non-empty [A-Za-z0-9_-]",
            cfg.name
        );
        let files = Files::new(workdir, &cfg.name);
        ensure!(
            files.agent.as_os_str().len() < 100,
            "socket path {} too long for a unix socket",
            files.agent.display()
        );
        for p in [&files.console, &files.agent, &files.qemu_log] {
            let _ = fs::remove_file(p);
        }
        let log = File::create(&files.qemu_log)?;
        let args = qemu_args(&cfg, &image.kernel, &image.initrd, &files);
        let env = match cfg.qemu.module_dir() {
            Some(d) => format!("QEMU_MODULE_DIR={} ", d.display()),
            None => String::new(),
        };
        fs::write(
            workdir.join(format!("{}-cmdline.txt", cfg.name)),
            format!("{env}{} {}\n", cfg.qemu.path.display(), args.join(" ")),
        )?;
        let started = Instant::now();
        let child = cfg
            .qemu
            .command_in(cfg.netns.as_deref())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", cfg.qemu.path.display()))?;

        Vm::attach(cfg, files, Proc::Child(child), started)
    }

    /// Boots the guest of `cfg` through libvirt instead: a domain (type `qemu`, i.e. TCG)
    /// defined from `cfg` (memory shared as vhost-user needs, the guest kernel, its command
    /// line, the console and agent serial ports) with `devices` (libvirt XML, e.g. what
    /// `vfabric ctl attach NAME --as libvirt` prints) added, then `virsh define` (unless a
    /// domain of that name is defined already) and `virsh start`. `cfg.nics` and `cfg.disks` are not used: the devices say it all.
    /// Dropping the `Vm` destroys the domain (it stays defined).
    pub fn start_libvirt(
        cfg: VmConfig,
        workdir: &Path,
        lv: &crate::libvirt::Libvirtd,
        devices: &[String],
    ) -> Result<Vm> {
        let image = guest_image()?;
        fs::create_dir_all(workdir)?;
        let files = Files::new(workdir, &cfg.name);
        for p in [&files.console, &files.agent] {
            let _ = fs::remove_file(p);
        }
        let xml = libvirt_domain(&cfg, &image.kernel, &image.initrd, &files, devices);
        let xml_path = workdir.join(format!("{}-domain.xml", cfg.name));
        fs::write(&xml_path, &xml)?;
        let virsh = lv.virsh();
        // Defined once; a domain already defined (destroyed before) is started again as is.
        if virsh.run(&["domuuid", &cfg.name]).is_err() {
            virsh.run(&["define", &xml_path.to_string_lossy()])?;
        }
        let started = Instant::now();
        virsh
            .run(&["start", &cfg.name])
            .map_err(|e| anyhow!("{e}\n{}", lv.qemu_log(&cfg.name)))?;
        let pid = lv
            .qemu_pid(&cfg.name)
            .with_context(|| format!("no pid file for domain {}", cfg.name))?;
        // QEMU's own output is libvirt's log of the domain.
        let _ = fs::remove_file(&files.qemu_log);
        let _ =
            std::os::unix::fs::symlink(Path::new(&lv.qemu_log_path(&cfg.name)), &files.qemu_log);
        let name = cfg.name.clone();
        Vm::attach(cfg, files, Proc::Domain { virsh, name, pid }, started)
    }

    /// Connects to the agent socket of a QEMU just started (`child`) and starts reading it.
    fn attach(cfg: VmConfig, files: Files, mut child: Proc, started: Instant) -> Result<Vm> {
        // QEMU creates the agent socket before it starts the guest (and before it waits for any
        // vhost-user backend), so connect now: nothing the agent writes can get lost.
        let deadline = Instant::now() + SOCKET_TIMEOUT;
        let stream = loop {
            if let Ok(s) = UnixStream::connect(&files.agent) {
                break s;
            }
            let exited = child.try_wait()?;
            if exited.is_some() || Instant::now() > deadline {
                let what = match exited {
                    Some(st) => format!("QEMU exited ({st}) before creating its agent socket"),
                    None => {
                        child.kill();
                        format!(
                            "QEMU did not create {} within {SOCKET_TIMEOUT:?}",
                            files.agent.display()
                        )
                    }
                };
                bail!("{}: {what}\n{}", cfg.name, diagnostics(&files));
            }
            thread::sleep(POLL);
        };
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let (tx, lines) = mpsc::channel();
        let reader = stream.try_clone()?;
        thread::Builder::new()
            .name(format!("{}-agent", cfg.name))
            .spawn(move || {
                let mut r = BufReader::new(reader);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf)
                                .trim_end_matches(['\r', '\n'])
                                .to_owned();
                            if tx.send(line).is_err() {
                                break;
                            }
                        }
                    }
                }
            })?;
        Ok(Vm {
            cfg,
            child,
            files,
            stream,
            lines,
            next_id: 1,
            started,
            ready_after: None,
            killed: false,
        })
    }

    /// Waits until the guest's agent announced itself (`AGENT READY`), i.e. /init configured the
    /// network and the agent takes commands. Fails early if QEMU exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        if self.ready_after.is_some() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let mut last_ping: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                bail!(self.failure(&format!("guest not ready within {timeout:?}")));
            }
            match self
                .lines
                .recv_timeout((deadline - now).min(Duration::from_millis(250)))
            {
                Ok(line) => {
                    if line.ends_with("AGENT READY") || line.starts_with("PONG ") {
                        self.ready_after = Some(self.started.elapsed());
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.check_alive()?;
                    // Fallback if "AGENT READY" was missed: once /init is done, ping every second.
                    // (Early pings are harmless: the agent ignores lines it does not parse.)
                    if last_ping.is_none_or(|t| t.elapsed() > Duration::from_secs(1))
                        && self.console_log().contains("VFGUEST READY")
                    {
                        last_ping = Some(Instant::now());
                        let id = self.take_id();
                        self.send(&format!("PING {id}"))?;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!(self.failure("agent socket closed while waiting for the guest"))
                }
            }
        }
    }

    /// Runs `cmd` with `sh` in the guest (waiting for readiness first, within the same timeout) and
    /// returns its exit code and combined stdout/stderr. On timeout the command keeps running in
    /// the guest, and later commands queue behind it.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Result<CmdOutput> {
        let deadline = Instant::now() + timeout;
        self.wait_ready(timeout)?;
        let id = self.take_id();
        self.send(&format!("CMD {id} {}", B64.encode(cmd)))?;
        let end_prefix = format!("END {id} ");
        let mut b64 = String::new();
        loop {
            let now = Instant::now();
            if now >= deadline {
                bail!(self.failure(&format!(
                    "command {cmd:?} did not finish within {timeout:?}"
                )));
            }
            match self
                .lines
                .recv_timeout((deadline - now).min(Duration::from_millis(250)))
            {
                Ok(line) => {
                    if let Some(code) = line.strip_prefix(&end_prefix) {
                        let code: i32 = code
                            .trim()
                            .parse()
                            .with_context(|| format!("bad agent line {line:?}"))?;
                        let bytes = B64
                            .decode(b64.as_bytes())
                            .with_context(|| format!("agent sent bad base64 for {cmd:?}"))?;
                        let output = String::from_utf8_lossy(&bytes).into_owned();
                        return Ok(CmdOutput { code, output });
                    } else if line.starts_with("END ") {
                        // The end of an earlier command that timed out: drop its output.
                        b64.clear();
                    } else if line.ends_with("AGENT READY") {
                        bail!(self.failure(&format!("the agent restarted while running {cmd:?}")));
                    } else if line
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
                    {
                        b64.push_str(&line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.check_alive()?,
                Err(RecvTimeoutError::Disconnected) => {
                    bail!(self.failure(&format!("agent socket closed while running {cmd:?}")))
                }
            }
        }
    }

    /// Reboots the guest from inside (`reboot -f`; the VM must have `allow_reboot`): QEMU
    /// resets the machine, its devices included (a vhost-user device is stopped and set up
    /// again on the same connection), and the guest boots again. Returns once the new boot's
    /// agent answers.
    pub fn reboot(&mut self, timeout: Duration) -> Result<()> {
        anyhow::ensure!(
            self.cfg.allow_reboot,
            "{}: started with -no-reboot",
            self.cfg.name
        );
        let deadline = Instant::now() + timeout;
        let boots = self.console_log().matches("VFGUEST READY").count();
        let id = self.take_id();
        self.send(&format!("CMD {id} {}", B64.encode("reboot -f")))?;
        crate::wait_until(
            timeout,
            || {
                self.check_alive()?;
                Ok(self.console_log().matches("VFGUEST READY").count() > boots)
            },
            || "the guest did not boot again".into(),
        )?;
        // What the first boot's agent still said is stale.
        self.ready_after = None;
        while self.lines.try_recv().is_ok() {}
        self.wait_ready(deadline.saturating_duration_since(Instant::now()))
    }

    /// Like [`Vm::run`], but exit code 0 is required; returns the output.
    pub fn run_ok(&mut self, cmd: &str, timeout: Duration) -> Result<String> {
        let out = self.run(cmd, timeout)?;
        if out.code != 0 {
            bail!(
                "{}: {cmd:?} exited with {}; output:\n{}",
                self.cfg.name,
                out.code,
                out.output
            );
        }
        Ok(out.output)
    }

    /// Starts `cmd` in the background in the guest (in its own session, stdin /dev/null) and returns
    /// its id: output goes to `/tmp/bg-<id>.log`, its pid is in `/tmp/bg-<id>.pid`.
    pub fn spawn_bg(&mut self, cmd: &str) -> Result<u64> {
        let timeout = Duration::from_secs(30);
        self.wait_ready(timeout)?;
        let id = self.take_id();
        self.send(&format!("BG {id} {}", B64.encode(cmd)))?;
        let want = format!("END {id} 0");
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                bail!(self.failure(&format!("background command {cmd:?} not acknowledged")));
            }
            match self
                .lines
                .recv_timeout((deadline - now).min(Duration::from_millis(250)))
            {
                Ok(line) if line == want => return Ok(id),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => self.check_alive()?,
                Err(RecvTimeoutError::Disconnected) => bail!(self.failure("agent socket closed")),
            }
        }
    }

    /// SIGKILLs QEMU and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if !self.killed {
            self.killed = true;
            self.child.kill();
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The guest's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The configuration the VM was started with.
    pub fn config(&self) -> &VmConfig {
        &self.cfg
    }

    /// Time from spawning QEMU until the agent was ready (after a successful [`Vm::wait_ready`]).
    pub fn boot_time(&self) -> Option<Duration> {
        self.ready_after
    }

    /// Everything the guest printed on its console (ttyS0) so far.
    pub fn console_log(&self) -> String {
        fs::read(&self.files.console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn send(&mut self, line: &str) -> Result<()> {
        let mut msg = Vec::with_capacity(line.len() + 1);
        msg.extend_from_slice(line.as_bytes());
        msg.push(b'\n');
        if let Err(e) = self.stream.write_all(&msg) {
            bail!(self.failure(&format!("writing to the agent socket: {e}")));
        }
        Ok(())
    }

    /// Error if QEMU has exited.
    fn check_alive(&mut self) -> Result<()> {
        if self.killed {
            bail!("{}: the VM was killed", self.cfg.name);
        }
        match self.child.try_wait() {
            Ok(Some(status)) => bail!(self.failure(&format!("QEMU exited: {status}"))),
            Ok(None) => Ok(()),
            Err(e) => Err(anyhow!("{}: waiting for QEMU: {e}", self.cfg.name)),
        }
    }

    /// An error message with QEMU's state, its output and the console tail.
    fn failure(&mut self, what: &str) -> String {
        // A closed agent socket usually means QEMU is on its way out: give it a moment
        // (bounded) so the report says how it ended.
        if !self.killed {
            let child = &mut self.child;
            // Still running after 2 s: the state below says so.
            let _ = crate::wait_until(
                Duration::from_secs(2),
                || Ok(!matches!(child.try_wait(), Ok(None))),
                String::new,
            );
        }
        let state = match self.child.try_wait() {
            Ok(Some(st)) => format!("QEMU pid {} exited: {st}", self.child.id()),
            _ if self.killed => "QEMU was killed".to_owned(),
            _ => format!("QEMU pid {} still running", self.child.id()),
        };
        format!(
            "{} ({}, {:.1}s after start, {state}): {what}\n{}",
            self.cfg.name,
            self.cfg.qemu,
            self.started.elapsed().as_secs_f64(),
            diagnostics(&self.files)
        )
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The QEMU behind a `Vm`: a child of the test, or one libvirtd runs for a domain.
enum Proc {
    Child(Child),
    Domain {
        virsh: crate::libvirt::Virsh,
        name: String,
        pid: u32,
    },
}

impl Proc {
    /// `None` while QEMU runs, else how it ended.
    fn try_wait(&mut self) -> std::io::Result<Option<String>> {
        match self {
            Proc::Child(c) => Ok(c.try_wait()?.map(|st| st.to_string())),
            Proc::Domain { virsh, name, pid } => {
                // SAFETY: kill(2) with signal 0 only checks that the process exists.
                if unsafe { libc::kill(*pid as i32, 0) } == 0 {
                    return Ok(None);
                }
                let state = virsh.run(&["domstate", name]).unwrap_or_default();
                Ok(Some(format!("domain {name} {}", state.trim())))
            }
        }
    }

    fn kill(&mut self) {
        match self {
            Proc::Child(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Proc::Domain { virsh, name, .. } => {
                let _ = virsh.run(&["destroy", name]);
            }
        }
    }

    fn id(&self) -> u32 {
        match self {
            Proc::Child(c) => c.id(),
            Proc::Domain { pid, .. } => *pid,
        }
    }
}

/// QEMU's output and the tail of the console log, for error messages.
fn diagnostics(files: &Files) -> String {
    let read = |p: &Path| {
        fs::read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    format!(
        "--- QEMU output ({}):\n{}\n--- console tail ({}):\n{}",
        files.qemu_log.display(),
        tail(&read(&files.qemu_log), 30),
        files.console.display(),
        tail(&read(&files.console), 40)
    )
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright"
            ),
            Some((10, 0, 2))
        );
        assert_eq!(
            parse_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"),
            Some((7, 2, 22))
        );
        assert_eq!(parse_version("nothing"), None);
    }

    #[test]
    fn nic_args_depend_on_version() {
        let q = |v| Qemu {
            path: "q".into(),
            data_dir: None,
            version: v,
        };
        let nic = NetDev {
            socket: "/s".into(),
            mac: "52:54:00:00:00:01".into(),
            queues: 2,
            qemu_is_server: false,
            packed: false,
        };
        let files = Files::new(Path::new("/w"), "vm");
        for (version, reconnect, vectors) in [
            ((7, 2, 22), "reconnect=1", "vectors=0"),
            ((10, 0, 2), "reconnect-ms=100", "vectors=6"),
        ] {
            let mut cfg = VmConfig::new("vm", q(version));
            cfg.nics.push(nic.clone());
            let args = qemu_args(&cfg, Path::new("k"), Path::new("i"), &files).join(" ");
            assert!(
                args.contains(&format!("socket,id=vhu0,path=/s,{reconnect}")),
                "{args}"
            );
            assert!(
                args.contains(&format!("mac=52:54:00:00:00:01,romfile=,mq=on,{vectors}")),
                "{args}"
            );
            assert!(
                args.contains("vhost-user,id=net0,chardev=vhu0,queues=2"),
                "{args}"
            );
        }
    }

    #[test]
    fn cmdline() {
        let mut cfg = VmConfig::new(
            "vm1",
            Qemu {
                path: "q".into(),
                data_dir: None,
                version: (10, 0, 0),
            },
        );
        cfg.ips.push(("eth0".into(), "10.0.0.1/24".into()));
        cfg.extra_cmdline = "vf.vlan=eth0:100".into();
        let c = guest_cmdline(&cfg);
        assert!(c.starts_with("console=ttyS0 clocksource=hpet no_timer_check panic=-1"));
        assert!(
            c.contains(" mitigations=off cryptomgr.notests vf.name=vm1"),
            "{c}"
        );
        assert!(
            c.ends_with(" vf.name=vm1 vf.ip=eth0:10.0.0.1/24 vf.vlan=eth0:100"),
            "{c}"
        );
    }
}
