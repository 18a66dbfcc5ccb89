//! Runs the real `vfabric` binary for tests: writes a topology, starts `vfabric run`, waits
//! for its "vfabric ready" line, reads counters (SIGUSR1 prints them as JSON lines), and
//! kills or restarts it like a crash would.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The `vfabric` binary: `$VFABRIC_BIN`, or built once with cargo (debug profile).
pub fn vfabric_bin() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var("VFABRIC_BIN") {
        Ok(p) => Ok(PathBuf::from(p)),
        Err(_) => cargo_bin("vfabric"),
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// The `vfabric-cni` plugin, built once with cargo (debug profile).
pub fn vfabric_cni_bin() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| cargo_bin("vfabric-cni"))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Builds binary `name` of the vswitch package; its path.
fn cargo_bin(name: &str) -> std::result::Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "-q",
            "-p",
            "vswitch",
            "--bin",
            name,
            "--message-format=json",
        ])
        .current_dir(crate::guest_image::workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo build --bin {name} failed"));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("executable")?.as_str().map(PathBuf::from))
        .next_back()
        .ok_or_else(|| format!("cargo build did not report the {name} executable"))
}

/// One vhost-user-net port of a test topology.
#[derive(Clone, Debug)]
pub struct PortSpec {
    pub name: String,
    /// Extra TOML lines for the port's table (e.g. `queues = 2`).
    pub extra: String,
}

impl PortSpec {
    pub fn new(name: &str) -> PortSpec {
        PortSpec {
            name: name.into(),
            extra: String::new(),
        }
    }
}

/// A running (or stopped) vfabric with one switch "lab".
pub struct Fabric {
    dir: PathBuf,
    topology: PathBuf,
    child: Option<Child>,
    lines: Option<Receiver<String>>,
    log: PathBuf,
    ports: Vec<PortSpec>,
    env: Vec<(String, String)>,
    control: Option<PathBuf>,
    /// Run inside this network namespace (`ip netns exec`).
    netns: Option<String>,
    /// Options of `vfabric run` before the topology file.
    run_args: Vec<String>,
    /// The web console's address (`run --http`), as vfabric announced it.
    console: Option<String>,
    /// The [[host]] it serves of a topology across hosts (`ctl --host`).
    host: Option<String>,
}

impl Fabric {
    /// Writes the topology for `ports` into `dir` (sockets `dir/<port>.sock`) and starts vfabric.
    pub fn start(dir: &Path, ports: &[PortSpec]) -> Result<Fabric> {
        Fabric::start_with(dir, ports, "")
    }

    /// `start`, with more topology text appended (e.g. `[[disk]]` tables; relative paths are
    /// relative to `dir`).
    pub fn start_with(dir: &Path, ports: &[PortSpec], extra: &str) -> Result<Fabric> {
        Fabric::start_in(dir, ports, extra, None)
    }

    /// `start_with`, vfabric running inside network namespace `netns` (its vhost-user
    /// sockets are files, reachable from QEMU outside it).
    pub fn start_in(
        dir: &Path,
        ports: &[PortSpec],
        extra: &str,
        netns: Option<&str>,
    ) -> Result<Fabric> {
        Fabric::start_with_args(dir, ports, extra, netns, &[])
    }

    /// `start_in`, with options of `vfabric run` (kept for restarts).
    pub fn start_with_args(
        dir: &Path,
        ports: &[PortSpec],
        extra: &str,
        netns: Option<&str>,
        run_args: &[String],
    ) -> Result<Fabric> {
        fs::create_dir_all(dir)?;
        let mut toml = String::from("[[switch]]\nname = \"lab\"\n");
        for p in ports {
            toml += &format!(
                "\n[[switch.port]]\nname = \"{n}\"\ntype = \"vhost-user-net\"\nsocket = \"{n}.sock\"\n{e}\n",
                n = p.name,
                e = p.extra
            );
        }
        toml += "\n";
        toml += extra;
        let topology = dir.join("topology.toml");
        fs::write(&topology, toml)?;
        let mut f = Fabric {
            dir: dir.to_path_buf(),
            topology,
            child: None,
            lines: None,
            log: dir.join("vfabric.log"),
            ports: ports.to_vec(),
            env: Vec::new(),
            control: None,
            netns: netns.map(str::to_string),
            run_args: run_args.to_vec(),
            console: None,
            host: None,
        };
        f.launch()?;
        Ok(f)
    }

    /// vfabric serving host `host`'s share of the topology file `topology` (written by the
    /// test; several hosts' vfabrics share it), inside namespace `netns`, logging to
    /// `<dir>/vfabric-<host>.log`. `ports`: the ports it serves (its meshes included), whose
    /// counters `stats` waits for. `named`: pass `--host` (else vfabric finds its host by
    /// address).
    pub fn start_host(
        topology: &Path,
        host: &str,
        named: bool,
        netns: &str,
        ports: &[&str],
    ) -> Result<Fabric> {
        let dir = topology.parent().context("the topology's directory")?;
        let mut f = Fabric {
            dir: dir.to_path_buf(),
            topology: topology.to_path_buf(),
            child: None,
            lines: None,
            log: dir.join(format!("vfabric-{host}.log")),
            ports: ports.iter().map(|p| PortSpec::new(p)).collect(),
            env: Vec::new(),
            control: None,
            netns: Some(netns.to_string()),
            run_args: if named {
                vec!["--host".into(), host.into()]
            } else {
                Vec::new()
            },
            console: None,
            host: Some(host.to_string()),
        };
        f.launch()?;
        Ok(f)
    }

    /// The ports whose counters `stats` waits for.
    pub fn set_ports(&mut self, ports: &[&str]) {
        self.ports = ports.iter().map(|p| PortSpec::new(p)).collect();
    }

    /// The control socket vfabric announced.
    pub fn control_socket(&self) -> Option<&Path> {
        self.control.as_deref()
    }

    /// The topology file it runs.
    pub fn topology(&self) -> &Path {
        &self.topology
    }

    /// Runs `vfabric ctl -t <topology> ARGS...` and returns (exit code, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> Result<(i32, String, String)> {
        let mut cmd = Command::new(vfabric_bin()?);
        cmd.arg("ctl").arg("-t").arg(&self.topology);
        if let Some(h) = &self.host {
            cmd.args(["--host", h]);
        }
        let out = cmd.args(args).output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// What `vfabric ctl --json ports` says about port `name` (type, connections, learned...).
    pub fn port_info(&self, name: &str) -> Result<serde_json::Value> {
        let (code, out, err) = self.ctl(&["--json", "ports"])?;
        if code != 0 {
            bail!("vfabric ctl ports: exit {code}: {err}");
        }
        let ports: serde_json::Value = serde_json::from_str(&out)?;
        ports
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["port"] == name)
            .cloned()
            .with_context(|| format!("no port {name} in {out}"))
    }

    /// The socket of a port.
    pub fn socket(&self, port: &str) -> PathBuf {
        self.dir.join(format!("{port}.sock"))
    }

    /// The ports it was started with.
    pub fn ports(&self) -> &[PortSpec] {
        &self.ports
    }

    fn launch(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        // `ip netns exec` execs vfabric: the child's pid is vfabric's.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.as_str()]).arg(vfabric_bin()?);
                c
            }
            None => Command::new(vfabric_bin()?),
        };
        let mut child = cmd
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("-v")
            .arg("run")
            .args(&self.run_args)
            .arg(&self.topology)
            .stdout(Stdio::piped())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting vfabric")?;
        let stdout = child.stdout.take().context("vfabric stdout")?;
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.child = Some(child);
        self.lines = Some(rx);
        let mut control = None;
        let mut console = None;
        self.wait_line(
            |l| {
                if let Some(rest) = l.strip_prefix("control: ") {
                    control = rest.split(' ').next().map(PathBuf::from);
                }
                if let Some(url) = l.strip_prefix("console: ") {
                    console = Some(url.to_string());
                }
                l == "vfabric ready"
            },
            Duration::from_secs(20),
        )
        .with_context(|| format!("vfabric did not get ready; log:\n{}", self.log_tail()))?;
        self.control = control;
        self.console = console;
        Ok(())
    }

    /// The web console's URL (`http://ADDR/`), when vfabric runs with `--http`.
    pub fn console_url(&self) -> Option<&str> {
        self.console.as_deref()
    }

    fn wait_line(
        &mut self,
        mut pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let rx = self.lines.as_ref().context("vfabric is not running")?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if pred(&l) => return Ok(l),
                Ok(_) => continue,
                Err(_) => bail!("timed out after {timeout:?} waiting for vfabric output"),
            }
        }
    }

    /// vfabric's pid, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, as a crash would; sockets stay behind as stale files.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.lines = None;
    }

    /// Starts vfabric again with the same topology and `env` (replacing the environment
    /// variables of earlier starts); stale sockets are replaced.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) -> Result<()> {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.restart()
    }

    /// Starts vfabric again with these `vfabric run` options (kept for later restarts).
    pub fn restart_with_args(&mut self, args: &[&str]) -> Result<()> {
        self.run_args = args.iter().map(|a| a.to_string()).collect();
        self.restart()
    }

    /// Starts vfabric again with the same topology (stale sockets are replaced).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.launch()
    }

    /// SIGTERM and wait: a clean shutdown. Returns the exit status code.
    pub fn terminate(&mut self) -> Result<Option<i32>> {
        let Some(mut c) = self.child.take() else {
            return Ok(None);
        };
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let st = c.wait()?;
        self.lines = None;
        Ok(st.code())
    }

    /// Per-port counters (and the switch's `fdb_*` figures under the key "lab").
    pub fn stats(&mut self) -> Result<HashMap<String, serde_json::Value>> {
        let pid = self.pid().context("vfabric is not running")?;
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let _g = ONE_AT_A_TIME.lock();
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(pid as i32, libc::SIGUSR1) };
        let mut out = HashMap::new();
        let want = self.ports.len();
        let mut ports_seen = 0;
        while ports_seen < want || !out.contains_key("lab") {
            let l = self.wait_line(|l| l.starts_with('{'), Duration::from_secs(10))?;
            let v: serde_json::Value = serde_json::from_str(&l)?;
            if let Some(d) = v.get("disk").and_then(|p| p.as_str()) {
                out.insert(format!("disk:{d}"), v["counters"].clone());
            } else if let Some(p) = v.get("port").and_then(|p| p.as_str()) {
                out.insert(p.to_string(), v["counters"].clone());
                ports_seen += 1;
            } else if let Some(s) = v.get("switch").and_then(|p| p.as_str()) {
                out.insert(s.to_string(), v.clone());
            }
        }
        Ok(out)
    }

    /// One counter of one port.
    pub fn counter(&mut self, port: &str, name: &str) -> Result<u64> {
        let s = self.stats()?;
        s.get(port)
            .and_then(|c| c.get(name))
            .and_then(|v| v.as_u64())
            .with_context(|| format!("no counter {name} for port {port}"))
    }

    /// One counter of one disk.
    pub fn disk_counter(&mut self, disk: &str, name: &str) -> Result<u64> {
        let s = self.stats()?;
        s.get(&format!("disk:{disk}"))
            .and_then(|c| c.get(name))
            .and_then(|v| v.as_u64())
            .with_context(|| format!("no counter {name} for disk {disk}"))
    }

    /// The last lines of vfabric's log.
    pub fn log_tail(&self) -> String {
        let s = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        self.kill();
    }
}
