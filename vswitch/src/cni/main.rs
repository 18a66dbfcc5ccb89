//! `vfabric-cni`: a CNI plugin (spec 1.0.0 and 1.1.0) that attaches a container to a port of
//! a running vfabric. The container runtime runs it with CNI_COMMAND, CNI_CONTAINERID,
//! CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH in the environment and the network
//! configuration on stdin:
//!
//! ```json
//! { "cniVersion": "1.0.0", "name": "lab", "type": "vfabric-cni",
//!   "topology": "/etc/vfabric/lab.toml",      (or "control_socket": "/run/vfabric/....ctl")
//!   "switch": "lab",
//!   "vlan": 10, "isolated": false, "max_macs": 4, "storm_limit": "1000pps",   (optional)
//!   "ipam": { "type": "host-local", "subnet": "10.0.0.0/24" } }
//! ```
//!
//! - ADD asks the fabric over its control socket for a TAP port created inside the
//!   container's namespace (`port add SWITCH cni-<id>-<ifname> type=tap netns=<CNI_NETNS>
//!   ifname=<CNI_IFNAME> ...`, as `vfabric ctl port add` does), runs the IPAM plugin (any:
//!   host-local, static, dhcp) through the standard delegation, puts its addresses and routes
//!   on the interface, and prints the result. Without `ipam` the interface is only up (the
//!   addresses then come from elsewhere, e.g. DHCP from the fabric's NAT port).
//! - DEL removes the port (its TAP goes with it) and releases the addresses; it succeeds when
//!   they are already gone. CHECK verifies the port, the interface and IPAM. VERSION, and
//!   for 1.1.0 STATUS (the fabric answers) and GC (ports of attachments the runtime no longer
//!   knows are removed).
//! - Errors are the spec's JSON on stdout ({cniVersion, code, msg, details}) with exit 1:
//!   code 1 incompatible version, 4 bad environment, 6 bad configuration, 7 try again later,
//!   11 (our) fabric refused, 50 plugin not available (STATUS).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use serde_json::{Value, json};

/// Result formats of 1.0.0 and later only (0.x results differ).
const SUPPORTED: &[&str] = &["1.0.0", "1.1.0"];

/// A CNI error: the spec's code, message and details.
struct CniError {
    code: u32,
    msg: String,
    details: String,
}

fn err(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError {
        code,
        msg: msg.into(),
        details: details.into(),
    }
}

fn main() -> ExitCode {
    let mut input = String::new();
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    if command != "VERSION" {
        let _ = std::io::stdin().read_to_string(&mut input);
    }
    let version = serde_json::from_str::<Value>(&input)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .unwrap_or_else(|| "1.0.0".into());
    match run(&command, &input) {
        Ok(Some(out)) => {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{}", serde_json::to_string(&out).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let out =
                json!({"cniVersion": version, "code": e.code, "msg": e.msg, "details": e.details});
            let _ = writeln!(std::io::stdout(), "{out}");
            ExitCode::FAILURE
        }
    }
}

/// The plugin's part of the network configuration.
struct Conf {
    raw: Value,
    version: String,
    switch: String,
    socket: PathBuf,
    port_keys: Vec<String>,
    ipam: Option<String>,
}

fn run(command: &str, input: &str) -> Result<Option<Value>, CniError> {
    if command == "VERSION" {
        return Ok(Some(json!({
            "cniVersion": "1.1.0",
            "supportedVersions": SUPPORTED,
        })));
    }
    let conf = parse_conf(input)?;
    match command {
        "ADD" => add(&conf).map(Some),
        "DEL" => del(&conf).map(|_| None),
        "CHECK" => check(&conf).map(|_| None),
        "STATUS" if conf.version == "1.1.0" => status(&conf).map(|_| None),
        "GC" if conf.version == "1.1.0" => gc(&conf).map(|_| None),
        "" => Err(err(4, "CNI_COMMAND is not set", "")),
        other => Err(err(
            4,
            format!("unknown CNI_COMMAND `{other}`"),
            "ADD, DEL, CHECK, VERSION (and STATUS, GC with cniVersion 1.1.0)",
        )),
    }
}

fn parse_conf(input: &str) -> Result<Conf, CniError> {
    let raw: Value = serde_json::from_str(input)
        .map_err(|e| err(6, "the network configuration is not JSON", e.to_string()))?;
    let version = raw["cniVersion"]
        .as_str()
        .ok_or_else(|| err(6, "cniVersion is missing", ""))?
        .to_string();
    if !SUPPORTED.contains(&version.as_str()) {
        return Err(err(
            1,
            format!("incompatible CNI version {version}"),
            format!("vfabric-cni supports {}", SUPPORTED.join(", ")),
        ));
    }
    let switch = raw["switch"]
        .as_str()
        .ok_or_else(|| {
            err(
                6,
                "`switch` is missing",
                "the name of the vfabric switch to join",
            )
        })?
        .to_string();
    let socket = match (raw["control_socket"].as_str(), raw["topology"].as_str()) {
        (Some(s), _) => PathBuf::from(s),
        (None, Some(t)) => {
            let topo = vswitch::topology::load(Path::new(t))
                .map_err(|e| err(6, format!("topology `{t}` cannot be read"), e.to_string()))?;
            vswitch::control::server::client_socket_path(Path::new(t), &topo.control, None)
        }
        (None, None) => {
            return Err(err(
                6,
                "`topology` or `control_socket` is missing",
                "which running vfabric to ask",
            ));
        }
    };
    let mut port_keys = Vec::new();
    if let Some(v) = raw.get("vlan").filter(|v| !v.is_null()) {
        let v = v
            .as_u64()
            .filter(|v| (1..=4094).contains(v))
            .ok_or_else(|| err(6, "`vlan` must be a VLAN id (1-4094)", v.to_string()))?;
        port_keys.push(format!("vlan={v}"));
    }
    if let Some(v) = raw.get("isolated").filter(|v| !v.is_null()) {
        let v = v
            .as_bool()
            .ok_or_else(|| err(6, "`isolated` must be true or false", v.to_string()))?;
        port_keys.push(format!("isolated={v}"));
    }
    if let Some(v) = raw.get("max_macs").filter(|v| !v.is_null()) {
        let v = v
            .as_u64()
            .ok_or_else(|| err(6, "`max_macs` must be a number", v.to_string()))?;
        port_keys.push(format!("max_macs={v}"));
    }
    if let Some(v) = raw.get("storm_limit").filter(|v| !v.is_null()) {
        let v = v.as_str().ok_or_else(|| {
            err(
                6,
                "`storm_limit` must be a string such as \"1000pps\"",
                v.to_string(),
            )
        })?;
        port_keys.push(format!("storm_limit={v}"));
    }
    let ipam = match raw.get("ipam") {
        None | Some(Value::Null) => None,
        Some(i) => Some(
            i["type"]
                .as_str()
                .filter(|t| !t.is_empty() && !t.contains('/'))
                .ok_or_else(|| err(6, "`ipam.type` is missing", "the IPAM plugin to run"))?
                .to_string(),
        ),
    };
    Ok(Conf {
        raw,
        version,
        switch,
        socket,
        port_keys,
        ipam,
    })
}

fn env(name: &str) -> Result<String, CniError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| err(4, format!("{name} is not set"), ""))
}

/// The port of an attachment: `cni-` + the container id's first 12 characters + `-` + the
/// interface name (unique per attachment, as the spec keys them).
fn port_name(container: &str, ifname: &str) -> String {
    let id: String = container
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    format!("cni-{id}-{ifname}")
}

/// One request to the fabric's control socket: unreachable is "try again later" (7), a
/// refusal is ours (11).
fn ctl(socket: &Path, cmd: &[String]) -> Result<Value, CniError> {
    use vswitch::control::client::{CallError, call};
    call(socket, cmd, Some(std::time::Duration::from_secs(30))).map_err(|e| match e {
        CallError::Unreachable(d) => err(
            7,
            format!("vfabric is not reachable at {}", socket.display()),
            d,
        ),
        CallError::Refused(d) => err(11, format!("vfabric refused `{}`", cmd.join(" ")), d),
    })
}

/// Runs the IPAM plugin with `command` (CNI delegation: same environment, same
/// configuration on stdin); its result for ADD.
fn ipam(conf: &Conf, plugin: &str, command: &str) -> Result<Value, CniError> {
    let path = std::env::var("CNI_PATH").unwrap_or_default();
    let exe = path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            err(
                6,
                format!("IPAM plugin `{plugin}` not found in CNI_PATH"),
                path.clone(),
            )
        })?;
    let mut child = Command::new(&exe)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(11, format!("running {}", exe.display()), e.to_string()))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(conf.raw.to_string().as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(11, format!("running {}", exe.display()), e.to_string()))?;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if !out.status.success() {
        // The delegate's own error, passed on.
        return Err(CniError {
            code: v["code"].as_u64().unwrap_or(11) as u32,
            msg: format!(
                "IPAM plugin {plugin}: {}",
                v["msg"].as_str().unwrap_or("failed")
            ),
            details: v["details"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned()),
        });
    }
    Ok(v)
}

/// `ip ARGS` inside the network namespace `netns`.
fn ip_in(netns: &str, args: &[&str]) -> Result<String, CniError> {
    let out = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .arg("ip")
        .args(args)
        .output()
        .map_err(|e| err(11, "running nsenter ip", e.to_string()))?;
    if !out.status.success() {
        return Err(err(
            11,
            format!("ip {} in {netns}", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn add(conf: &Conf) -> Result<Value, CniError> {
    let (container, netns, ifname) = (
        env("CNI_CONTAINERID")?,
        env("CNI_NETNS")?,
        env("CNI_IFNAME")?,
    );
    let name = port_name(&container, &ifname);
    let mut cmd: Vec<String> = vec![
        "port".into(),
        "add".into(),
        conf.switch.clone(),
        name.clone(),
        "type=tap".into(),
        format!("ifname={ifname}"),
        format!("netns={netns}"),
    ];
    cmd.extend(conf.port_keys.iter().cloned());
    ctl(&conf.socket, &cmd)?;
    // From here on a failure takes the port away again.
    let undo = |e: CniError| {
        let _ = ctl(&conf.socket, &["port".into(), "del".into(), name.clone()]);
        e
    };
    let result = match &conf.ipam {
        Some(plugin) => ipam(conf, plugin, "ADD").map_err(undo)?,
        None => json!({}),
    };
    let configured = configure(&netns, &ifname, &result).map_err(|e| {
        if let Some(plugin) = &conf.ipam {
            let _ = ipam(conf, plugin, "DEL");
        }
        undo(e)
    })?;
    let mut out = json!({
        "cniVersion": conf.version,
        "interfaces": [{"name": ifname, "mac": configured, "sandbox": netns}],
        "ips": result["ips"].as_array().cloned().unwrap_or_default().into_iter().map(|mut i| {
            if let Some(o) = i.as_object_mut() { o.insert("interface".into(), json!(0)); }
            i
        }).collect::<Vec<_>>(),
        "dns": result.get("dns").cloned().unwrap_or(json!({})),
    });
    if let Some(r) = result.get("routes").filter(|r| r.is_array()) {
        out["routes"] = r.clone();
    }
    Ok(out)
}

/// Puts the IPAM result's addresses and routes on `ifname` in `netns` and brings it up;
/// returns its MAC address.
fn configure(netns: &str, ifname: &str, result: &Value) -> Result<String, CniError> {
    ip_in(netns, &["link", "set", ifname, "up"])?;
    for i in result["ips"].as_array().into_iter().flatten() {
        if let Some(a) = i["address"].as_str() {
            ip_in(netns, &["addr", "add", a, "dev", ifname])?;
        }
    }
    for r in result["routes"].as_array().into_iter().flatten() {
        let Some(dst) = r["dst"].as_str() else {
            continue;
        };
        let gw = r["gw"].as_str().map(str::to_string).or_else(|| {
            // The gateway of the address of the same family, as plugins do.
            let v6 = dst.contains(':');
            result["ips"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["gateway"].as_str())
                .find(|g| g.contains(':') == v6)
                .map(str::to_string)
        });
        let mut args = vec!["route", "replace", dst];
        if let Some(g) = &gw {
            args.extend(["via", g.as_str()]);
        }
        args.extend(["dev", ifname]);
        ip_in(netns, &args)?;
    }
    let link: Value = serde_json::from_str(&ip_in(netns, &["-j", "link", "show", ifname])?)
        .unwrap_or(Value::Null);
    Ok(link[0]["address"].as_str().unwrap_or_default().to_string())
}

fn del(conf: &Conf) -> Result<(), CniError> {
    let (container, ifname) = (env("CNI_CONTAINERID")?, env("CNI_IFNAME")?);
    let name = port_name(&container, &ifname);
    match ctl(&conf.socket, &["port".into(), "del".into(), name.clone()]) {
        Ok(_) => {}
        // Already gone: DEL succeeds.
        Err(e) if e.details.contains("no port") => {}
        Err(e) => return Err(e),
    }
    if let Some(plugin) = &conf.ipam {
        ipam(conf, plugin, "DEL")?;
    }
    Ok(())
}

fn check(conf: &Conf) -> Result<(), CniError> {
    let (container, netns, ifname) = (
        env("CNI_CONTAINERID")?,
        env("CNI_NETNS")?,
        env("CNI_IFNAME")?,
    );
    let name = port_name(&container, &ifname);
    let ports = ctl(&conf.socket, &["ports".into()])?;
    let port = ports
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"] == name.as_str())
        .ok_or_else(|| err(11, format!("port {name} is missing"), ""))?;
    if port["switch"] != conf.switch.as_str() {
        return Err(err(
            11,
            format!("port {name} is on switch {}", port["switch"]),
            "",
        ));
    }
    let link = ip_in(&netns, &["-j", "addr", "show", &ifname])?;
    let prev = &conf.raw["prevResult"];
    for i in prev["ips"].as_array().into_iter().flatten() {
        if let Some(a) = i["address"].as_str()
            && let Some((addr, _)) = a.split_once('/')
            && !link.contains(&format!("\"local\":\"{addr}\""))
        {
            return Err(err(11, format!("{ifname} lacks address {a}"), link));
        }
    }
    if let Some(plugin) = &conf.ipam {
        ipam(conf, plugin, "CHECK")?;
    }
    Ok(())
}

fn status(conf: &Conf) -> Result<(), CniError> {
    ctl(&conf.socket, &["ports".into()])
        .map(|_| ())
        .map_err(|e| {
            err(
                50,
                "vfabric is not available",
                format!("{}: {}", e.msg, e.details),
            )
        })
}

/// GC: removes this network's `cni-` ports on the switch whose attachment is not in
/// `cni.dev/valid-attachments`.
fn gc(conf: &Conf) -> Result<(), CniError> {
    let valid: Vec<String> = conf.raw["cni.dev/valid-attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some(port_name(a["containerID"].as_str()?, a["ifname"].as_str()?)))
        .collect();
    let ports = ctl(&conf.socket, &["ports".into()])?;
    for p in ports.as_array().into_iter().flatten() {
        let (Some(name), Some(sw)) = (p["port"].as_str(), p["switch"].as_str()) else {
            continue;
        };
        if sw == conf.switch && name.starts_with("cni-") && !valid.iter().any(|v| v == name) {
            ctl(
                &conf.socket,
                &["port".into(), "del".into(), name.to_string()],
            )?;
        }
    }
    Ok(())
}
