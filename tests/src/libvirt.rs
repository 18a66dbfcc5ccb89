//! A private libvirtd for the tests: Debian's libvirt (from bookworm-backports, matching QEMU
//! 10) run by the test itself in its own mount namespace, with a /run of its own and
//! /run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt and /etc/libvirt bound
//! to directories of the test (several tests may each run one).
//! Nothing of the host's libvirt (if any) is seen or touched; `virsh` reaches this daemon
//! through its socket. QEMU runs as root without a security driver (`qemu.conf`), its
//! output goes to files (no virtlogd).
//!
//! Dropping it destroys the domains still running and ends the daemon; the namespace and its
//! mounts go with it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

/// A running private libvirtd.
pub struct Libvirtd {
    dir: PathBuf,
    child: Child,
}

/// How to run `virsh` against one daemon.
#[derive(Clone, Debug)]
pub struct Virsh {
    uri: String,
}

impl Virsh {
    /// Runs `virsh ARGS`; its stdout, or an error with its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("virsh")
            .arg("-c")
            .arg(&self.uri)
            .args(args)
            .output()
            .context("virsh (Debian package libvirt-clients)")?;
        if !out.status.success() {
            bail!(
                "virsh {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The connection URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }
}

impl Libvirtd {
    /// Starts libvirtd with its directories under `dir` (created), and waits for its socket.
    pub fn start(dir: &Path) -> Result<Libvirtd> {
        ensure!(
            Path::new("/usr/sbin/libvirtd").exists(),
            "libvirtd is missing: apt-get install -t bookworm-backports libvirt-daemon-system (scripts/install-deps.sh does)"
        );
        for d in ["run", "lib", "log", "cache", "etc"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        // The host's configuration, with QEMU run as root, unconfined, its output in files,
        // and no network autostarted.
        let etc = dir.join("etc");
        copy_dir(Path::new("/etc/libvirt"), &etc)?;
        let _ = std::fs::remove_dir_all(etc.join("qemu/networks/autostart"));
        let mut qemu_conf = std::fs::read_to_string(etc.join("qemu.conf")).unwrap_or_default();
        qemu_conf.push_str(
            "\nuser = \"+0\"\ngroup = \"+0\"\nsecurity_driver = \"none\"\nstdio_handler = \"file\"\n",
        );
        std::fs::write(etc.join("qemu.conf"), qemu_conf)?;
        let d = dir.display();
        let script = format!(
            "set -e\n\
             mount -t tmpfs -o mode=0755 tmpfs /run\n\
             mkdir /run/libvirt\n\
             mount --bind {d}/run /run/libvirt\n\
             mount --bind {d}/lib /var/lib/libvirt\n\
             mount --bind {d}/log /var/log/libvirt\n\
             mount --bind {d}/cache /var/cache/libvirt\n\
             mount --bind {d}/etc /etc/libvirt\n\
             exec /usr/sbin/libvirtd --pid-file {d}/libvirtd.pid\n"
        );
        let log = std::fs::File::create(dir.join("libvirtd.log"))?;
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("unshare")?;
        let mut lv = Libvirtd {
            dir: dir.to_path_buf(),
            child,
        };
        let (virsh, log) = (lv.virsh(), dir.join("libvirtd.log"));
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        let child = &mut lv.child;
        crate::wait_until(
            Duration::from_secs(30),
            || {
                if let Some(st) = child.try_wait()? {
                    bail!("libvirtd exited ({st}):\n{}", read_log());
                }
                Ok(virsh.run(&["version"]).is_ok())
            },
            || format!("libvirtd did not answer:\n{}", read_log()),
        )?;
        Ok(lv)
    }

    /// `virsh` for this daemon.
    pub fn virsh(&self) -> Virsh {
        Virsh {
            uri: format!(
                "qemu:///system?socket={}",
                self.dir.join("run/libvirt-sock").display()
            ),
        }
    }

    /// libvirtd's own output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("libvirtd.log")).unwrap_or_default()
    }

    /// QEMU's output for domain `name` (libvirt's log of it).
    pub fn qemu_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.qemu_log_path(name)).unwrap_or_default()
    }

    /// Where libvirt writes domain `name`'s QEMU output.
    pub fn qemu_log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("log/qemu/{name}.log"))
    }

    /// The process id of domain `name`'s QEMU, while it runs.
    pub fn qemu_pid(&self, name: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir.join(format!("run/qemu/{name}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// libvirt's version, as `virsh version` says it ("11.3.0").
    pub fn version(&self) -> Result<String> {
        let v = self.virsh().run(&["version"])?;
        v.lines()
            .find_map(|l| l.strip_prefix("Using library: libvirt "))
            .map(|s| s.trim().to_string())
            .context("virsh version")
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        let virsh = self.virsh();
        if let Ok(names) = virsh.run(&["list", "--name"]) {
            for n in names.lines().filter(|n| !n.trim().is_empty()) {
                let _ = virsh.run(&["destroy", n.trim()]);
            }
        }
        // SAFETY: kill(2) on the pid of our own child (the daemon), not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        crate::reap(&mut self.child, Duration::from_secs(10));
    }
}

/// Copies the directory tree `from` into `to` (files and directories; symlinks as links).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let t = e.file_type()?;
        if t.is_dir() {
            copy_dir(&src, &dst)?;
        } else if t.is_symlink() {
            let _ = std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst);
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}
