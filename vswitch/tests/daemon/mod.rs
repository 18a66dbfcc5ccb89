//! Running `vfabric run` in a test: started until it is ready, asked over `vfabric ctl`,
//! stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_vfabric");

/// `vfabric run FILE` until it prints "vfabric ready"; returns it and the lines before.
pub fn run_ready(topo: &Path) -> (std::process::Child, Vec<String>) {
    run_ready_with(&[], topo)
}

/// `run_ready` with options of `vfabric run` before the file.
pub fn run_ready_with(opts: &[&str], topo: &Path) -> (std::process::Child, Vec<String>) {
    let mut child = Command::new(BIN)
        .arg("run")
        .args(opts)
        .arg(topo)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for l in BufReader::new(child.stdout.take().unwrap()).lines() {
        let l = l.unwrap();
        if l == "vfabric ready" {
            break;
        }
        seen.push(l);
    }
    (child, seen)
}

/// SIGTERM, then the exit status.
pub fn stop(mut child: std::process::Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap()
}

/// `vfabric ctl` with `args` against the control socket `sock`: (exit code, stdout, stderr).
pub fn ctl(sock: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("-s")
        .arg(sock)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
