//! The client side of the control socket: one JSON request line, one JSON answer line.
//! Used by `vfabric ctl` and by `vfabric-cni`.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::Request;

/// Why a request got no data back.
#[derive(Debug)]
pub enum CallError {
    /// The socket could not be reached, or the exchange broke off.
    Unreachable(String),
    /// vfabric answered, and refused (its reason), or answered something that is not JSON.
    Refused(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(s) | CallError::Refused(s) => f.write_str(s),
        }
    }
}

/// Sends one request to the control socket at `path` and returns the answer's data;
/// `timeout` bounds the wait for the answer.
pub fn call(path: &Path, cmd: &[String], timeout: Option<Duration>) -> Result<Value, CallError> {
    let io = |e: std::io::Error| CallError::Unreachable(e.to_string());
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        CallError::Unreachable(format!(
            "{}: {e} (is vfabric running with this topology?)",
            path.display()
        ))
    })?;
    s.set_read_timeout(timeout).map_err(io)?;
    let mut line = serde_json::to_string(&Request { cmd: cmd.to_vec() })
        .map_err(|e| CallError::Refused(e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    std::io::BufReader::new(s)
        .read_line(&mut answer)
        .map_err(io)?;
    let v: Value = serde_json::from_str(&answer)
        .map_err(|e| CallError::Refused(format!("bad answer: {e}")))?;
    if v["ok"] == Value::Bool(true) {
        Ok(v["data"].clone())
    } else {
        Err(CallError::Refused(
            v["error"].as_str().unwrap_or("failed").to_string(),
        ))
    }
}
