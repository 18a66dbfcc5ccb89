//! Network namespaces a test creates for itself (the only place besides the guests and
//! loopback where tests may send traffic), and small servers and clients run inside them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// A network namespace `vft-<tag>-<pid>`, deleted (with everything in it) on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings its loopback up.
    pub fn new(tag: &str) -> Result<Netns> {
        let name = format!("vft-{tag}-{}", std::process::id());
        // A namespace of the same name left by a killed earlier run of this pid is ours.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace; error (with its output) unless it succeeds.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args))
    }

    /// Runs a shell command line inside the namespace.
    pub fn sh(&self, line: &str) -> Result<String> {
        self.exec(&["sh", "-c", line])
    }

    /// Runs `f` on a thread that entered the namespace, and returns its result.
    pub fn run_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> std::thread::JoinHandle<Result<T>> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path)?;
            f()
        })
    }

    /// Serves `data` once over HTTP/1.0 at `addr` inside the namespace (a thread; the
    /// listener exists when this returns). The thread ends after one response, or after
    /// `timeout` without a client.
    pub fn serve_http_once(
        &self,
        addr: SocketAddr,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<std::thread::JoinHandle<Result<()>>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let data = std::sync::Arc::new(data);
        let h = self.run_in(move || {
            let l = TcpListener::bind(addr);
            let _ = tx.send(l.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            serve_http(l?, data, 1, timeout)
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(h),
            Ok(Err(e)) => bail!("listening on {addr} in {}: {e}", self.name),
            Err(_) => bail!("the server thread in {} did not start", self.name),
        }
    }

    /// Fetches `http://addr/path` from inside the namespace (bounded by `timeout`) and
    /// returns (body length, SHA-256 of the body in hex).
    pub fn http_get(
        &self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<(usize, String)> {
        let path = path.to_string();
        self.run_in(move || {
            let body = http_get(addr, &path, timeout)?;
            Ok((body.len(), sha256_hex(&body)))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Serves `data` over HTTP/1.0 to `clients` clients (each on a thread of its own) on
/// `listener`, then returns; an error if a client does not come within `timeout` or a
/// transfer fails.
pub fn serve_http(
    listener: TcpListener,
    data: std::sync::Arc<Vec<u8>>,
    clients: usize,
    timeout: Duration,
) -> Result<()> {
    listener.set_nonblocking(true)?;
    let mut served = Vec::new();
    for _ in 0..clients {
        let mut client = None;
        crate::wait_until(
            timeout,
            || match listener.accept() {
                Ok((c, _)) => {
                    client = Some(c);
                    Ok(true)
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
                Err(e) => Err(e.into()),
            },
            || "no client came".into(),
        )?;
        let s = client.context("accepted a client")?;
        let data = data.clone();
        served.push(std::thread::spawn(move || -> Result<()> {
            let mut s = s;
            s.set_nonblocking(false)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b)?;
                if n == 0 {
                    bail!("the client closed before its request ended");
                }
                req.extend_from_slice(&b[..n]);
            }
            write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                data.len()
            )?;
            s.write_all(&data)?;
            s.shutdown(std::net::Shutdown::Write)?;
            Ok(())
        }));
    }
    for t in served {
        t.join()
            .map_err(|_| anyhow::anyhow!("a server thread panicked"))??;
    }
    Ok(())
}

/// A DNS server for tests on `socket`: answers A queries for `name` with `ip`, every other
/// query with no answer (NOERROR) or NXDOMAIN for other names, until `stop` is set (it looks
/// every 100 ms). Returns how many queries it answered.
pub fn serve_dns(
    socket: std::net::UdpSocket,
    name: &str,
    ip: std::net::Ipv4Addr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<usize> {
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let want: Vec<String> = name.split('.').map(|l| l.to_ascii_lowercase()).collect();
    let mut answered = 0;
    let mut b = [0u8; 1500];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok((n, peer)) = socket.recv_from(&mut b) else {
            continue;
        };
        let q = &b[..n];
        if n < 12 {
            continue;
        }
        // The question: labels, then type and class.
        let mut i = 12;
        let mut labels = Vec::new();
        while i < n && q[i] != 0 {
            let l = usize::from(q[i]);
            if i + 1 + l > n {
                break;
            }
            labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + l]).to_ascii_lowercase());
            i += 1 + l;
        }
        if i + 5 > n {
            continue;
        }
        let qend = i + 5;
        let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
        let ours = labels == want;
        let mut r = Vec::with_capacity(qend + 16);
        r.extend_from_slice(&q[..2]);
        let rcode = if ours { 0 } else { 3 };
        r.extend_from_slice(&[0x81, 0x80 | rcode]);
        r.extend_from_slice(&[0, 1]);
        let answer = ours && qtype == 1;
        r.extend_from_slice(&[0, u8::from(answer), 0, 0, 0, 0]);
        r.extend_from_slice(&q[12..qend]);
        if answer {
            r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            r.extend_from_slice(&ip.octets());
        }
        if socket.send_to(&r, peer).is_ok() {
            answered += 1;
        }
    }
    Ok(answered)
}

/// GET `http://addr/path` (bounded by `timeout`): the body of a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)?;
    let at = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the response head")?;
    let head = String::from_utf8_lossy(&all[..at]);
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {head}");
    }
    Ok(all.split_off(at + 4))
}

/// SHA-256 in lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `n` bytes that do not compress or repeat (xorshift), the same for the same seed.
pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Moves this thread into the network namespace at `path`.
fn enter(path: &str) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| path.to_string())?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns(2) on a namespace file we hold open; it changes only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {path}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs a command; error (with its output) unless it succeeds.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
