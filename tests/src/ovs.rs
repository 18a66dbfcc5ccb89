//! A private Open vSwitch for interoperability tests: Debian's `ovs-vswitchd` with the
//! userspace (`netdev`) datapath, so no kernel module is needed, its database, sockets and
//! logs in a directory of the test's, run inside a namespace the test made. Ended (by the
//! PIDs it wrote) on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::netns::{Netns, run};

pub struct Ovs {
    dir: PathBuf,
    db: String,
}

impl Ovs {
    /// Starts ovsdb-server (on the host) and ovs-vswitchd inside `ns`, keeping their state in
    /// `dir`.
    pub fn start(ns: &Netns, dir: &Path) -> Result<Ovs> {
        let d = dir.display().to_string();
        let db = format!("unix:{d}/db.sock");
        run(Command::new("ovsdb-tool").args([
            "create",
            &format!("{d}/conf.db"),
            "/usr/share/openvswitch/vswitch.ovsschema",
        ]))?;
        let ovs = Ovs {
            dir: dir.to_path_buf(),
            db: db.clone(),
        };
        run(Command::new("ovsdb-server")
            .arg(format!("--remote=punix:{d}/db.sock"))
            .arg(format!("--pidfile={d}/ovsdb.pid"))
            .arg("--detach")
            .arg(format!("--log-file={d}/ovsdb.log"))
            .arg(format!("{d}/conf.db"))
            .env("OVS_RUNDIR", &d))?;
        ovs.vsctl(&["--no-wait", "init"])?;
        run(Command::new("ip")
            .args(["netns", "exec", ns.name(), "ovs-vswitchd", &db])
            .arg(format!("--pidfile={d}/vswitchd.pid"))
            .arg("--detach")
            .arg(format!("--log-file={d}/vswitchd.log"))
            .env("OVS_RUNDIR", &d))?;
        Ok(ovs)
    }

    /// `ovs-vsctl ARGS` against this OVS's database.
    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ovs-vsctl")
            .arg(format!("--db={}", self.db))
            .args(args))
    }

    /// `ovs-appctl ARGS` to this ovs-vswitchd.
    pub fn appctl(&self, args: &[&str]) -> Result<String> {
        let pid = std::fs::read_to_string(self.dir.join("vswitchd.pid"))?;
        let target = self.dir.join(format!("ovs-vswitchd.{}.ctl", pid.trim()));
        run(Command::new("ovs-appctl").arg("-t").arg(target).args(args))
    }

    /// The ovs-vswitchd log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vswitchd.log")).unwrap_or_default()
    }
}

impl Drop for Ovs {
    /// SIGTERM to both daemons, then up to 5 s for them to go, then SIGKILL.
    fn drop(&mut self) {
        for pidfile in ["vswitchd.pid", "ovsdb.pid"] {
            let Some(pid) = std::fs::read_to_string(self.dir.join(pidfile))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            else {
                continue;
            };
            // SAFETY: kill(2) on a daemon this test started (its pidfile is ours).
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let gone = crate::wait_until(
                std::time::Duration::from_secs(5),
                || Ok(!Path::new(&format!("/proc/{pid}")).exists()),
                || format!("OVS daemon {pid} still running"),
            );
            if gone.is_err() {
                // SAFETY: as above; it did not end on SIGTERM.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}
