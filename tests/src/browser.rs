//! A real browser for the web console's tests: Debian's headless Chromium, driven over the
//! Chrome DevTools Protocol (JSON over a WebSocket: navigate, evaluate JavaScript in the
//! page, take screenshots, let downloads land in a directory).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::{Value, json};

type Socket = tungstenite::WebSocket<TcpStream>;

/// A headless Chromium with one page, ended (by its pid) when dropped.
pub struct Browser {
    child: Child,
    page: Socket,
    browser: Socket,
    next: u64,
    _profile: tempfile::TempDir,
}

/// The Chromium binary, if installed.
pub fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// One GET to Chromium's DevTools HTTP endpoint (which keeps connections open: the body is
/// read by its Content-Length).
fn http_get(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut r = BufReader::new(s);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            bail!("devtools {path}: connection closed in the header");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse()?;
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(String::from_utf8(body)?)
}

fn connect(port: u16, path: &str) -> Result<Socket> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let url = format!("ws://127.0.0.1:{port}{path}");
    let (ws, _) = tungstenite::client::client(url.as_str(), stream)
        .map_err(|e| anyhow::anyhow!("devtools websocket {url}: {e}"))?;
    Ok(ws)
}

impl Browser {
    /// Starts Chromium (window `width` x `height`) on a blank page.
    pub fn start(width: u32, height: u32) -> Result<Browser> {
        let bin = chromium().context("chromium is not installed (scripts/install-deps.sh)")?;
        let profile = tempfile::Builder::new().prefix("vf-chromium").tempdir()?;
        let mut child = Command::new(bin)
            .args([
                "--headless=new",
                // Root in a test machine's container: Chromium's sandbox needs user
                // namespaces it may not have.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                // No crash reporter processes left behind.
                "--disable-crash-reporter",
                "--disable-breakpad",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting chromium")?;
        // Chromium writes its DevTools port and browser target into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let mut found = None;
        let opened = crate::wait_until(
            Duration::from_secs(60),
            || {
                if let Ok(text) = std::fs::read_to_string(&port_file) {
                    let mut lines = text.lines();
                    if let (Some(p), Some(b)) = (lines.next(), lines.next())
                        && let Ok(p) = p.parse::<u16>()
                    {
                        found = Some((p, b.to_string()));
                        return Ok(true);
                    }
                }
                if let Ok(Some(st)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(e) = child.stderr.as_mut() {
                        let _ = e.read_to_string(&mut err);
                    }
                    bail!("chromium exited ({st}): {err}");
                }
                Ok(false)
            },
            || "chromium did not open its DevTools port".into(),
        );
        let Some((port, browser_path)) = found else {
            crate::reap(&mut child, Duration::ZERO);
            return Err(opened
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("no DevTools port")));
        };
        // Its stderr is drained so that it never blocks on a full pipe.
        if let Some(e) = child.stderr.take() {
            std::thread::spawn(move || for _ in BufReader::new(e).lines() {});
        }
        let targets: Value = serde_json::from_str(&http_get(port, "/json/list")?)?;
        let page_url = targets
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .context("chromium has no page target")?
            .to_string();
        let page_path = page_url
            .split_once(&format!("127.0.0.1:{port}"))
            .map(|(_, p)| p.to_string())
            .context("page target url")?;
        let mut b = Browser {
            page: connect(port, &page_path)?,
            browser: connect(port, &browser_path)?,
            child,
            next: 1,
            _profile: profile,
        };
        b.call("Page.enable", json!({}))?;
        b.call("Runtime.enable", json!({}))?;
        Ok(b)
    }

    fn call_on(next: &mut u64, ws: &mut Socket, method: &str, params: Value) -> Result<Value> {
        let id = *next;
        *next += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        ws.send(tungstenite::Message::text(msg))
            .with_context(|| format!("devtools {method}"))?;
        loop {
            let m = ws.read().with_context(|| format!("devtools {method}"))?;
            let tungstenite::Message::Text(t) = m else {
                continue;
            };
            let v: Value = serde_json::from_str(t.as_str())?;
            if v["id"] != json!(id) {
                continue; // an event
            }
            if let Some(e) = v.get("error") {
                bail!("devtools {method}: {e}");
            }
            return Ok(v["result"].clone());
        }
    }

    /// One DevTools command on the page; its result.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        Self::call_on(&mut self.next, &mut self.page, method, params)
    }

    /// Opens `url` in the page.
    pub fn navigate(&mut self, url: &str) -> Result<()> {
        let r = self.call("Page.navigate", json!({"url": url}))?;
        if let Some(e) = r.get("errorText") {
            bail!("navigating to {url}: {e}");
        }
        Ok(())
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub fn eval(&mut self, expr: &str) -> Result<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("`{expr}` threw: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `expr` until it is truthy (not null, false, 0 or ""), at most `timeout`;
    /// returns that value. An expression that throws (the page still loading) counts as
    /// not yet.
    pub fn wait_for(&mut self, expr: &str, timeout: Duration) -> Result<Value> {
        let mut last: Result<Value> = Ok(Value::Null);
        let done = crate::wait_until(
            timeout,
            || {
                last = self.eval(expr);
                Ok(match &last {
                    Ok(Value::Null) | Err(_) => false,
                    Ok(Value::Bool(b)) => *b,
                    Ok(Value::Number(n)) => n.as_f64() != Some(0.0),
                    Ok(Value::String(s)) => !s.is_empty(),
                    Ok(_) => true,
                })
            },
            String::new,
        );
        match (done, last) {
            (Ok(()), Ok(v)) => Ok(v),
            (_, Err(e)) => Err(e),
            (Err(_), Ok(v)) => bail!("`{expr}` still {v} after {timeout:?}"),
        }
    }

    /// A PNG of the page as shown.
    pub fn screenshot(&mut self, file: &Path) -> Result<()> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().context("screenshot data")?)?;
        std::fs::write(file, png)?;
        Ok(())
    }

    /// Downloads land in `dir` under their own names.
    pub fn download_to(&mut self, dir: &Path) -> Result<()> {
        Self::call_on(
            &mut self.next,
            &mut self.browser,
            "Browser.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": dir.display().to_string(), "eventsEnabled": true}),
        )?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = Self::call_on(
            &mut self.next,
            &mut self.browser,
            "Browser.close",
            json!({}),
        );
        crate::reap(&mut self.child, Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The driver itself: a page opened, its DOM read and clicked, a screenshot taken, a
    /// download landing in its directory.
    #[test]
    fn drives_a_page() -> Result<()> {
        let mut b = Browser::start(640, 480)?;
        let dir = tempfile::tempdir()?;
        b.download_to(dir.path())?;
        b.navigate("data:text/html,<p id=x>hello</p><button onclick=\"document.getElementById('x').textContent='clicked'\">b</button><a id=d download=f.txt href='data:text/plain,abc'>d</a>")?;
        b.wait_for(
            "document.getElementById('x') !== null",
            Duration::from_secs(30),
        )?;
        assert_eq!(
            b.eval("document.getElementById('x').textContent")?,
            json!("hello")
        );
        b.eval("document.querySelector('button').click()")?;
        assert_eq!(
            b.wait_for(
                "document.getElementById('x').textContent === 'clicked'",
                Duration::from_secs(5)
            )?,
            json!(true)
        );
        let png = dir.path().join("p.png");
        b.screenshot(&png)?;
        assert_eq!(&std::fs::read(&png)?[..4], b"\x89PNG");
        b.eval("document.getElementById('d').click()")?;
        let f = dir.path().join("f.txt");
        crate::wait_until(
            Duration::from_secs(30),
            || Ok(f.exists()),
            || "no download".into(),
        )?;
        assert_eq!(std::fs::read_to_string(&f)?, "abc");
        Ok(())
    }
}
