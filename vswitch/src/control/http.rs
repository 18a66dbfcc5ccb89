//! The web console and the metrics endpoint: HTTP/1.1, GET only, read-only by design.
//!
//! `vfabric run --http ADDR` serves a single-page console (three static files embedded in the
//! binary: `web/`) and its data as JSON, from the same commands `vfabric ctl` sends to the
//! control socket (`Control::handle`), restricted to the ones that only read:
//!
//! | path                         | command                  |
//! |------------------------------|--------------------------|
//! | `/api/ports`                 | `ports`                  |
//! | `/api/stats`                 | `stats`                  |
//! | `/api/fdb`                   | `fdb show`               |
//! | `/api/graph`                 | `graph` (Graphviz dot)   |
//! | `/api/port/NAME`             | `port show NAME`         |
//! | `/api/trace?port=&src=&dst=&vlan=&ethertype=&ip_src=&ip_dst=` | `trace PORT FRAME` |
//! | `/api/capture?port=&count=&seconds=&vlan=` | a pcap download (the `capture` stream) |
//! | `/metrics`                   | Prometheus text          |
//!
//! Changes (impairments, ports, FDB) stay with `vfabric ctl` and its access-checked socket.
//! Nothing runs unless a client asks: the page polls while it is visible, the server keeps
//! no history. Served on the control thread's runtime; one connection per request
//! (`Connection: close`). On a loopback address, the console's pages and data only answer
//! requests that name their host by address or as `localhost`, so a web page elsewhere
//! cannot read them through DNS rebinding (`/metrics` answers any host, as before).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::trace::{DEFAULT_SRC, FrameSpec, synth_frame, to_hex};
use super::{Control, Request};

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const APP_CSS: &str = include_str!("web/app.css");

/// The longest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// A download's bounds: it always ends by itself.
const MAX_CAPTURE_FRAMES: u64 = 1_000_000;
const MAX_CAPTURE_SECONDS: u64 = 600;

/// Serves HTTP on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, control: Arc<Control>) {
    let local = listener.local_addr().ok();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let control = control.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &control, local).await {
                tracing::debug!("http connection: {e}");
            }
        });
    }
}

/// An answer: status, content type, body.
struct Answer {
    status: &'static str,
    ctype: &'static str,
    body: Vec<u8>,
}

impl Answer {
    fn json(status: &'static str, v: &Value) -> Answer {
        Answer {
            status,
            ctype: "application/json",
            body: v.to_string().into_bytes(),
        }
    }

    fn error(status: &'static str, msg: impl Into<String>) -> Answer {
        Answer::json(status, &json!({"error": msg.into()}))
    }

    fn text(ctype: &'static str, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status: "200 OK",
            ctype,
            body: body.into(),
        }
    }
}

/// Whether `host` (a Host header) names its server by address (or as `localhost`), not by
/// a name a DNS server could point anywhere.
fn ip_or_localhost(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((a, _)) => a,
            None => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

async fn connection(
    mut stream: TcpStream,
    control: &Control,
    local: Option<SocketAddr>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut got = 0;
    let head = loop {
        let n = match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf[got..]))
            .await
        {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        got += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..got]) {
            Ok(httparse::Status::Complete(_)) => {
                let host = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("host"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned());
                break Ok((
                    req.method.unwrap_or("").to_string(),
                    req.path.unwrap_or("").to_string(),
                    host,
                ));
            }
            Ok(httparse::Status::Partial) if got < buf.len() => continue,
            Ok(httparse::Status::Partial) => break Err("request head too long"),
            Err(_) => break Err("malformed request"),
        }
    };
    let (method, target, host) = match head {
        Ok(h) => h,
        Err(e) => return respond(&mut stream, &Answer::error("400 Bad Request", e), false).await,
    };
    let is_head = method == "HEAD";
    if method != "GET" && !is_head {
        let a = Answer::error(
            "405 Method Not Allowed",
            "the console is read-only: changes go through `vfabric ctl`",
        );
        return respond(&mut stream, &a, false).await;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    // The console's pages and data (not /metrics: scrapers name hosts as they like).
    let console =
        matches!(path, "/" | "/index.html" | "/app.js" | "/app.css") || path.starts_with("/api/");
    let guarded = console && local.is_some_and(|l| l.ip().is_loopback());
    if guarded && !host.as_deref().is_some_and(ip_or_localhost) {
        let a = Answer::error(
            "403 Forbidden",
            "this console answers requests for a loopback host only",
        );
        return respond(&mut stream, &a, false).await;
    }
    let q: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if path == "/api/capture" && !is_head {
        return capture(&mut stream, control, &q).await;
    }
    let a = route(control, path, &q);
    respond(&mut stream, &a, is_head).await
}

async fn respond(stream: &mut TcpStream, a: &Answer, head_only: bool) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        a.status,
        a.ctype,
        a.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(&a.body).await?;
    }
    stream.shutdown().await
}

fn param<'q>(q: &'q [(String, String)], k: &str) -> Option<&'q str> {
    q.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// A read-only command's answer as JSON (400 with the command's error).
fn command(control: &Control, cmd: &[&str]) -> Answer {
    let req = Request {
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
    };
    match control.handle(&req) {
        Ok(v) => Answer::json("200 OK", &v),
        Err(e) if e.starts_with("no port") || e.starts_with("no switch") => {
            Answer::error("404 Not Found", e)
        }
        Err(e) => Answer::error("400 Bad Request", e),
    }
}

fn route(control: &Control, path: &str, q: &[(String, String)]) -> Answer {
    match path {
        "/" | "/index.html" => Answer::text("text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => Answer::text("text/javascript; charset=utf-8", APP_JS),
        "/app.css" => Answer::text("text/css; charset=utf-8", APP_CSS),
        "/metrics" => Answer::text(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            super::metrics::render(&control.stats_lines(None)),
        ),
        "/api/ports" => command(control, &["ports"]),
        "/api/stats" => command(control, &["stats"]),
        "/api/fdb" => command(control, &["fdb", "show"]),
        "/api/graph" => command(control, &["graph"]),
        "/api/trace" => trace(control, q),
        _ => match path.strip_prefix("/api/port/") {
            Some(name) => {
                let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
                command(control, &["port", "show", &name])
            }
            None => Answer::error("404 Not Found", format!("nothing at {path}")),
        },
    }
}

fn trace(control: &Control, q: &[(String, String)]) -> Answer {
    let Some(port) = param(q, "port") else {
        return Answer::error("400 Bad Request", "trace: port= is missing");
    };
    let vlan = match param(q, "vlan").map(str::parse::<u16>) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return Answer::error("400 Bad Request", "vlan: not a number"),
    };
    let ip = match (param(q, "ip_src"), param(q, "ip_dst")) {
        (Some(a), Some(b)) => Some((a.to_string(), b.to_string())),
        (None, None) => None,
        _ => return Answer::error("400 Bad Request", "give both ip_src and ip_dst, or neither"),
    };
    let spec = FrameSpec {
        src: param(q, "src").unwrap_or(DEFAULT_SRC).to_string(),
        dst: param(q, "dst").unwrap_or("").to_string(),
        vlan,
        ethertype: param(q, "ethertype").map(str::to_string),
        ip,
    };
    match synth_frame(&spec) {
        Ok(frame) => command(control, &["trace", port, &to_hex(&frame)]),
        Err(e) => Answer::error("400 Bad Request", e),
    }
}

/// A `Write` that appends to a buffer shared with the async loop that sends it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// `/api/capture?port=P[&count=N][&seconds=S][&vlan=V]`: the port's frames as a pcap
/// download, until N frames (default 100), S seconds (default 10) or the client leaves.
async fn capture(
    stream: &mut TcpStream,
    control: &Control,
    q: &[(String, String)],
) -> std::io::Result<()> {
    let num = |k: &str, default: u64, max: u64| -> Result<u64, String> {
        match param(q, k) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| format!("{k}: `{v}` is not a number from 1 to {max}")),
        }
    };
    let args = (|| {
        let port = param(q, "port").ok_or("capture: port= is missing")?;
        let count = num("count", 100, MAX_CAPTURE_FRAMES)?;
        let secs = num("seconds", 10, MAX_CAPTURE_SECONDS)?;
        let vlan = match param(q, "vlan") {
            None => None,
            Some(v) => Some(
                v.parse::<u32>()
                    .ok()
                    .and_then(|v| vlan::VlanId::new(v).ok())
                    .ok_or_else(|| format!("vlan: `{v}` is not a VLAN id (1-4094)"))?,
            ),
        };
        Ok::<_, String>((port.to_string(), count, secs, vlan))
    })();
    let (port, count, secs, vlan) = match args {
        Ok(a) => a,
        Err(e) => return respond(stream, &Answer::error("400 Bad Request", e), false).await,
    };
    let mut tap = match control.open_capture(&port, vlan) {
        Ok(t) => t,
        Err(e) if e.starts_with("no port") => {
            return respond(stream, &Answer::error("404 Not Found", e), false).await;
        }
        Err(e) => return respond(stream, &Answer::error("409 Conflict", e), false).await,
    };
    let file: String = port
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.tcpdump.pcap\r\nContent-Disposition: attachment; filename=\"{file}.pcap\"\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let buf = Shared::default();
    let mut w = super::capture::pcap_writer(buf.clone()).map_err(std::io::Error::other)?;
    stream.write_all(&buf.take()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let (mut rd, mut wr) = stream.split();
    let mut gone = [0u8; 64];
    let mut sent = 0u64;
    while sent < count {
        tokio::select! {
            f = tap.next() => {
                let Some((ns, bytes)) = f else { break };
                super::capture::pcap_frame(&mut w, ns, &bytes)
                    .map_err(std::io::Error::other)?;
                wr.write_all(&buf.take()).await?;
                sent += 1;
            }
            _ = tokio::time::sleep_until(deadline) => break,
            // The client left (or sent something after its request): stop.
            r = rd.read(&mut gone) => {
                if matches!(r, Ok(0) | Err(_)) {
                    break;
                }
            }
        }
    }
    drop(tap);
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::ip_or_localhost;

    #[test]
    fn only_ip_or_localhosts_pass_the_rebinding_guard() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:1",
            "LOCALHOST",
            "[::1]:80",
            "10.1.2.3",
        ] {
            assert!(ip_or_localhost(ok), "{ok}");
        }
        for bad in ["evil.example:8080", "", "[::1", "127.0.0.1.nip.io:80"] {
            assert!(!ip_or_localhost(bad), "{bad}");
        }
    }
}
