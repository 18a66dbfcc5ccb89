//! The test guest: Debian's kernel, unpacked to an ELF `vmlinux` for a fast PVH boot, and a small
//! gzip initramfs (busybox-static, iperf3, the virtio-net/802.1Q modules, the /init and command agent
//! from `tests/guest/`).
//!
//! Both files are built once and cached under `<workspace>/target/vm-cache/`, keyed by the kernel
//! version and a hash of everything that goes into them (scripts, host file paths, sizes and mtimes),
//! so later calls only re-check that key. Several test processes may call [`guest_image`] at once:
//! builds are serialised with a lock file and land under their final name with an atomic rename.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow, bail, ensure};
use sha2::{Digest, Sha256};

/// The guest's /init (PID 1).
const INIT: &str = include_str!("../guest/init");
/// The guest's command agent on /dev/ttyS1, started by /init.
const AGENT: &str = include_str!("../guest/agent.sh");
/// Bump when the image layout changes in a way the cache key would not notice.
const FORMAT: &str = "vfabric-guest-image-v1";

/// Modules /init loads at boot (with their `modules.dep` dependencies, in dependency order).
const BOOT_MODULES: &[&str] = &["virtio_pci", "virtio_net", "8021q"];
/// Modules that are only put into the image; load them in the guest with `modprobe NAME` (or the
/// kernel argument `vf.modprobe=NAME`).
const EXTRA_MODULES: &[&str] = &[
    "virtio_blk",
    "dummy",
    "ext4",
    "crc32c_generic",
    "pktgen",
    "geneve",
];
/// Dynamically linked host programs copied in with their shared libraries (from `ldd`): (path
/// on the host, path in the guest). iproute2's `ip` goes in as `ip-full` (busybox's `ip`
/// stays `ip`), for what busybox's cannot do (a geneve link).
const PROGRAMS: &[(&str, &str)] = &[
    ("/usr/bin/iperf3", "/usr/bin/iperf3"),
    ("/bin/ip", "/usr/bin/ip-full"),
];
const BUSYBOX: &str = "/usr/bin/busybox";

const INSTALL_HINT: &str = "run scripts/install-deps.sh (as root) to install the guest's packages";

/// A bootable guest: pass `kernel` to QEMU's `-kernel` and `initrd` to `-initrd`.
#[derive(Clone, Debug)]
pub struct GuestImage {
    /// Uncompressed ELF `vmlinux` (booted through its PVH entry), or the bzImage itself when the
    /// kernel has no `CONFIG_PVH`.
    pub kernel: PathBuf,
    /// gzip-compressed newc cpio archive.
    pub initrd: PathBuf,
    /// `uname -r` of the guest kernel, e.g. `6.1.0-56-amd64`.
    pub kernel_version: String,
}

/// The Cargo workspace root (the parent of the `tests` crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Where built guest images are cached: `<workspace>/target/vm-cache`.
pub fn cache_dir() -> PathBuf {
    workspace_root().join("target").join("vm-cache")
}

/// Returns the cached guest image, building it first if its inputs changed.
///
/// The guest kernel is the newest `/boot/vmlinuz-*` with a `/lib/modules/<version>/modules.dep`
/// (Debian 12's `linux-image-amd64`: 6.1); set `VFABRIC_GUEST_KERNEL=<version>` to pick another.
/// Fails with a hint to run `scripts/install-deps.sh` when a package is missing.
pub fn guest_image() -> Result<GuestImage> {
    // Within one process the inputs are checked once (~40 ms in a debug build).
    static MEMO: Mutex<Option<GuestImage>> = Mutex::new(None);
    let mut memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(img) = memo
        .as_ref()
        .filter(|i| i.kernel.exists() && i.initrd.exists())
    {
        return Ok(img.clone());
    }
    let img = build_guest_image()?;
    *memo = Some(img.clone());
    Ok(img)
}

fn build_guest_image() -> Result<GuestImage> {
    let kver = pick_kernel()?;
    let vmlinuz = PathBuf::from(format!("/boot/vmlinuz-{kver}"));
    let plan = plan_initramfs(&kver)?;

    let dir = cache_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let pvh = kernel_has_pvh(&kver);
    let kernel = if pvh {
        let meta = fs::metadata(&vmlinuz).with_context(|| format!("stat {}", vmlinuz.display()))?;
        let key = short_hash(&format!(
            "{FORMAT}\n{}\n{}\n{}",
            vmlinuz.display(),
            meta.len(),
            meta.mtime()
        ));
        dir.join(format!("vmlinux-{kver}-{key}"))
    } else {
        vmlinuz.clone()
    };
    let initrd = dir.join(format!("initrd-{kver}-{}.cpio.gz", plan.key));

    if kernel.exists() && initrd.exists() {
        return Ok(GuestImage {
            kernel,
            initrd,
            kernel_version: kver,
        });
    }

    // Serialise builders; whoever comes second finds the files ready.
    let lock_path = dir.join(".lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;

    if !kernel.exists() {
        let elf = extract_vmlinux(&vmlinuz)?;
        write_atomically(&kernel, |f| f.write_all(&elf).map_err(Into::into))?;
    }
    if !initrd.exists() {
        let cpio = plan.build_cpio()?;
        write_atomically(&initrd, |f| gzip_into(&cpio, f))?;
    }
    drop(lock);
    Ok(GuestImage {
        kernel,
        initrd,
        kernel_version: kver,
    })
}

/// Writes `path` through a temporary sibling and renames it into place.
fn write_atomically(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        write(&mut f)?;
        f.sync_all()?;
        fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn pick_kernel() -> Result<String> {
    let have_modules = |v: &str| Path::new(&format!("/lib/modules/{v}/modules.dep")).exists();
    if let Ok(v) = std::env::var("VFABRIC_GUEST_KERNEL") {
        ensure!(
            Path::new(&format!("/boot/vmlinuz-{v}")).exists() && have_modules(&v),
            "VFABRIC_GUEST_KERNEL={v}: /boot/vmlinuz-{v} or /lib/modules/{v}/modules.dep missing"
        );
        return Ok(v);
    }
    let mut versions: Vec<String> = fs::read_dir("/boot")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_prefix("vmlinuz-")
                        .map(str::to_owned)
                })
                .filter(|v| have_modules(v))
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|v| version_key(v));
    versions.pop().ok_or_else(|| {
        anyhow!("no /boot/vmlinuz-* with matching /lib/modules/*/modules.dep: {INSTALL_HINT} (package linux-image-amd64)")
    })
}

/// Sort key for kernel versions like `6.1.0-56-amd64`: the numbers in order.
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn kernel_has_pvh(kver: &str) -> bool {
    match fs::read_to_string(format!("/boot/config-{kver}")) {
        Ok(config) => config.lines().any(|l| l.trim() == "CONFIG_PVH=y"),
        // No config to check: Debian's x86-64 kernels have had PVH for years.
        Err(_) => true,
    }
}

fn short_hash(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Decompressors for a kernel payload or a module, picked by magic bytes: (magic, tool, args).
const DECOMPRESSORS: &[(&[u8], &str, &[&str])] = &[
    (
        &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
        "xz",
        &["-dc", "--single-stream"],
    ),
    (&[0x28, 0xb5, 0x2f, 0xfd], "zstd", &["-dcq"]),
    (&[0x1f, 0x8b], "gzip", &["-dc"]),
    (b"BZh", "bzip2", &["-dc"]),
    (&[0x02, 0x21, 0x4c, 0x18], "lz4", &["-dc"]),
    (&[0x89, b'L', b'Z', b'O'], "lzop", &["-dc"]),
    (&[0x5d, 0x00, 0x00], "xz", &["-dc", "--format=lzma"]),
];

/// Decompresses `data` with the system tool matching its magic bytes.
fn decompress(data: &[u8], what: &str) -> Result<Vec<u8>> {
    let (_, tool, args) = DECOMPRESSORS
        .iter()
        .find(|(magic, _, _)| data.starts_with(magic))
        .ok_or_else(|| {
            anyhow!(
                "{what}: unknown compression (first bytes {:02x?})",
                &data[..data.len().min(8)]
            )
        })?;
    filter(tool, args, data).with_context(|| format!("decompressing {what} with {tool}"))
}

/// Runs `tool args` with `input` on stdin and returns its stdout.
fn filter(tool: &str, args: &[&str], input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {tool}: {INSTALL_HINT}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let output = std::thread::scope(|s| {
        let writer = s.spawn(move || stdin.write_all(input));
        let output = child.wait_with_output();
        // A failed write (EPIPE) shows up as the tool's own error below.
        let _ = writer.join();
        output
    })?;
    ensure!(
        output.status.success(),
        "{tool} {}: {}: {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(output.stdout)
}

/// Extracts the uncompressed ELF vmlinux from a bzImage, using the boot header's payload fields.
fn extract_vmlinux(vmlinuz: &Path) -> Result<Vec<u8>> {
    let img = fs::read(vmlinuz)
        .with_context(|| format!("reading {} (are you root?)", vmlinuz.display()))?;
    let u16_at = |o: usize| img.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        img.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    ensure!(
        img.get(0x202..0x206) == Some(b"HdrS"),
        "{}: not a bzImage",
        vmlinuz.display()
    );
    let protocol = u16_at(0x206).unwrap_or(0);
    ensure!(
        protocol >= 0x208,
        "{}: boot protocol {protocol:#x} too old",
        vmlinuz.display()
    );
    let setup_sects = match img[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let payload_offset = u32_at(0x248).context("short header")? as usize;
    let payload_length = u32_at(0x24c).context("short header")? as usize;
    let start = (setup_sects + 1) * 512 + payload_offset;
    let payload = img
        .get(start..start + payload_length)
        .with_context(|| format!("{}: payload out of range", vmlinuz.display()))?;
    // Every kernel compressor appends the uncompressed size as a little-endian u32.
    let (stream, size) = payload.split_at(payload.len().saturating_sub(4));
    let size = u32::from_le_bytes(size.try_into().context("empty payload")?) as usize;
    let elf = decompress(stream, &format!("{} payload", vmlinuz.display()))?;
    ensure!(
        elf.starts_with(b"\x7fELF"),
        "{}: payload is not an ELF file",
        vmlinuz.display()
    );
    ensure!(
        elf.len() == size,
        "{}: decompressed {} bytes, header says {size}",
        vmlinuz.display(),
        elf.len()
    );
    Ok(elf)
}

/// gzip-compresses `data` into `out` with the system `gzip`.
fn gzip_into(data: &[u8], out: &mut File) -> Result<()> {
    let mut child = Command::new("gzip")
        .args(["-6", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(out.try_clone()?)
        .spawn()
        .with_context(|| format!("running gzip: {INSTALL_HINT}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let written = stdin.write_all(data);
    drop(stdin);
    let status = child.wait()?;
    written.context("writing to gzip")?;
    ensure!(status.success(), "gzip failed: {status}");
    Ok(())
}

/// One file in the initramfs.
#[derive(Debug)]
enum Source {
    /// Copy from the host (following symlinks).
    Host(PathBuf),
    /// A kernel module, decompressed if the host file is compressed.
    Module(PathBuf),
    Data(Vec<u8>),
    Symlink(String),
    CharDev(u32, u32),
}

#[derive(Debug)]
struct Entry {
    mode: u32,
    source: Source,
}

/// Everything that goes into the initramfs, before anything is read.
struct Plan {
    /// Image path (no leading '/') -> entry.
    entries: BTreeMap<String, Entry>,
    key: String,
}

impl Plan {
    fn add(&mut self, path: &str, mode: u32, source: Source) {
        self.entries.insert(
            path.trim_start_matches('/').to_owned(),
            Entry { mode, source },
        );
    }

    fn build_cpio(&self) -> Result<Vec<u8>> {
        let mut cpio = Cpio::default();
        // Parent directories first (BTreeMap order puts "a" before "a/b").
        let mut dirs = BTreeSet::new();
        for path in self.entries.keys() {
            let mut p = Path::new(path).parent();
            while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(d.to_string_lossy().into_owned());
                p = d.parent();
            }
        }
        for d in ["proc", "sys", "dev", "tmp", "run", "root", "mnt"] {
            dirs.insert(d.to_owned());
        }
        for d in &dirs {
            cpio.push(d, 0o040755, 0, &[]);
        }
        for (path, e) in &self.entries {
            match &e.source {
                Source::Host(src) => {
                    let data =
                        fs::read(src).with_context(|| format!("reading {}", src.display()))?;
                    cpio.push(path, 0o100000 | e.mode, 0, &data);
                }
                Source::Module(src) => {
                    let raw =
                        fs::read(src).with_context(|| format!("reading {}", src.display()))?;
                    let data = if src.extension().is_some_and(|x| x == "ko") {
                        raw
                    } else {
                        decompress(&raw, &src.display().to_string())?
                    };
                    cpio.push(path, 0o100000 | e.mode, 0, &data);
                }
                Source::Data(data) => cpio.push(path, 0o100000 | e.mode, 0, data),
                Source::Symlink(target) => cpio.push(path, 0o120000 | e.mode, 0, target.as_bytes()),
                Source::CharDev(major, minor) => {
                    cpio.push(path, 0o020000 | e.mode, (major << 8) | minor, &[])
                }
            }
        }
        Ok(cpio.finish())
    }
}

/// Collects the initramfs contents and computes the cache key.
fn plan_initramfs(kver: &str) -> Result<Plan> {
    let mut plan = Plan {
        entries: BTreeMap::new(),
        key: String::new(),
    };

    plan.add("init", 0o755, Source::Data(INIT.as_bytes().to_vec()));
    plan.add(
        "etc/vfabric/agent.sh",
        0o755,
        Source::Data(AGENT.as_bytes().to_vec()),
    );
    plan.add(
        "etc/passwd",
        0o644,
        Source::Data(b"root:x:0:0:root:/root:/bin/sh\n".to_vec()),
    );
    plan.add("etc/group", 0o644, Source::Data(b"root:x:0:\n".to_vec()));
    plan.add(
        "etc/hosts",
        0o644,
        Source::Data(b"127.0.0.1 localhost\n".to_vec()),
    );
    // The kernel opens /dev/console for /init's stdio before /init mounts devtmpfs.
    plan.add("dev/console", 0o600, Source::CharDev(5, 1));
    plan.add("dev/null", 0o666, Source::CharDev(1, 3));

    // busybox-static with its applets.
    ensure!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} not found: {INSTALL_HINT} (package busybox-static)"
    );
    ensure!(
        !elf_has_interp(&read_head(Path::new(BUSYBOX), 64 * 1024)?),
        "{BUSYBOX} is dynamically linked: the guest needs busybox-static; {INSTALL_HINT}"
    );
    plan.add("bin/busybox", 0o755, Source::Host(BUSYBOX.into()));
    let list = Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .context("busybox --list-full")?;
    ensure!(list.status.success(), "busybox --list-full failed");
    for applet in String::from_utf8_lossy(&list.stdout).lines().map(str::trim) {
        if !applet.is_empty() && applet != "bin/busybox" {
            plan.add(applet, 0o777, Source::Symlink("/bin/busybox".into()));
        }
    }

    // Dynamically linked programs and their libraries.
    for &(prog, at) in PROGRAMS {
        let name = Path::new(prog)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(prog);
        ensure!(
            Path::new(prog).exists(),
            "{prog} not found: {INSTALL_HINT} (package {name})"
        );
        plan.add(at, 0o755, Source::Host(prog.into()));
        for lib in shared_libraries(prog)? {
            plan.add(&lib, 0o755, Source::Host(lib.clone().into()));
        }
    }

    // Kernel modules.
    let mods = resolve_modules(kver)?;
    let mut load_list = String::new();
    let mut dep_file = String::new();
    for m in &mods.ordered {
        let rel = strip_compression(&m.rel);
        if BOOT_MODULES.contains(&m.name.as_str()) || mods.boot_deps.contains(&m.name) {
            load_list.push_str(&format!("/lib/modules/{kver}/{rel}\n"));
        }
        let deps: Vec<&str> = m.deps.iter().map(|d| strip_compression(d)).collect();
        dep_file.push_str(&format!("{rel}: {}\n", deps.join(" ")));
        plan.add(
            &format!("lib/modules/{kver}/{rel}"),
            0o644,
            Source::Module(m.path.clone()),
        );
    }
    plan.add(
        "etc/vfabric/modules",
        0o644,
        Source::Data(load_list.into_bytes()),
    );
    plan.add(
        &format!("lib/modules/{kver}/modules.dep"),
        0o644,
        Source::Data(dep_file.into_bytes()),
    );

    // Cache key: every input, with host files identified by path, size and mtime.
    let mut desc = format!("{FORMAT}\n{kver}\n");
    for (path, e) in &plan.entries {
        let what = match &e.source {
            Source::Host(p) | Source::Module(p) => {
                let m = fs::metadata(p).with_context(|| format!("stat {}", p.display()))?;
                format!("{} {} {}", p.display(), m.len(), m.mtime())
            }
            Source::Data(d) => {
                let h = Sha256::digest(d);
                h.iter().map(|b| format!("{b:02x}")).collect()
            }
            Source::Symlink(t) => t.clone(),
            Source::CharDev(a, b) => format!("c {a} {b}"),
        };
        desc.push_str(&format!("{path} {:o} {what}\n", e.mode));
    }
    plan.key = short_hash(&desc);
    Ok(plan)
}

fn strip_compression(rel: &str) -> &str {
    for ext in [".xz", ".zst", ".gz"] {
        if let Some(s) = rel.strip_suffix(ext) {
            return s;
        }
    }
    rel
}

/// The first `len` bytes of a file (less if it is shorter).
fn read_head(path: &Path, len: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|f| f.take(len).read_to_end(&mut buf))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(buf)
}

/// True if the ELF file has a PT_INTERP program header (is dynamically linked).
fn elf_has_interp(elf: &[u8]) -> bool {
    let rd = |o: usize, n: usize| -> u64 {
        elf.get(o..o + n)
            .map(|b| {
                b.iter()
                    .rev()
                    .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
            })
            .unwrap_or(0)
    };
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (phoff, phentsize, phnum) = (
        rd(0x20, 8) as usize,
        rd(0x36, 2) as usize,
        rd(0x38, 2) as usize,
    );
    (0..phnum).any(|i| rd(phoff + i * phentsize, 4) == 3)
}

/// The shared libraries `prog` loads (including the dynamic loader), as absolute host paths.
fn shared_libraries(prog: &str) -> Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(prog)
        .output()
        .with_context(|| format!("running ldd {prog} (package libc-bin)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "ldd {prog} failed: {text}");
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("not found") {
            bail!("{prog}: shared library missing on the host: {line}");
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(path.to_owned());
        }
    }
    Ok(libs)
}

struct Module {
    name: String,
    /// Path relative to /lib/modules/<kver>, as in modules.dep (maybe with .xz/.zst/.gz).
    rel: String,
    deps: Vec<String>,
    path: PathBuf,
}

struct Modules {
    /// BOOT_MODULES and EXTRA_MODULES with dependencies, dependencies first.
    ordered: Vec<Module>,
    /// Names of the dependencies of BOOT_MODULES.
    boot_deps: BTreeSet<String>,
}

fn module_name(rel: &str) -> String {
    let base = rel.rsplit('/').next().unwrap_or(rel);
    let base = strip_compression(base);
    base.strip_suffix(".ko").unwrap_or(base).replace('-', "_")
}

fn resolve_modules(kver: &str) -> Result<Modules> {
    let dir = PathBuf::from(format!("/lib/modules/{kver}"));
    let dep_text = fs::read_to_string(dir.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep: {INSTALL_HINT}", dir.display()))?;
    let builtin: BTreeSet<String> = fs::read_to_string(dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(module_name)
        .collect();
    let mut table: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in dep_text.lines() {
        if let Some((rel, deps)) = line.split_once(':') {
            let deps = deps.split_whitespace().map(str::to_owned).collect();
            table.insert(module_name(rel), (rel.to_owned(), deps));
        }
    }

    fn visit(
        name: &str,
        table: &HashMap<String, (String, Vec<String>)>,
        dir: &Path,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<Module>,
    ) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        let Some((rel, deps)) = table.get(name) else {
            return;
        };
        for d in deps {
            visit(&module_name(d), table, dir, seen, out);
        }
        out.push(Module {
            name: name.to_owned(),
            rel: rel.clone(),
            deps: deps.clone(),
            path: dir.join(rel),
        });
    }

    let mut seen = BTreeSet::new();
    let mut ordered = Vec::new();
    for name in BOOT_MODULES.iter().chain(EXTRA_MODULES) {
        if !table.contains_key(*name) {
            ensure!(
                builtin.contains(*name),
                "kernel module {name} is neither in {}/modules.dep nor built in",
                dir.display()
            );
            continue;
        }
        visit(name, &table, &dir, &mut seen, &mut ordered);
    }
    let mut boot_deps = BTreeSet::new();
    for name in BOOT_MODULES {
        if let Some((_, deps)) = table.get(*name) {
            boot_deps.extend(deps.iter().map(|d| module_name(d)));
        }
    }
    for m in &ordered {
        ensure!(
            m.path.exists(),
            "{} listed in modules.dep but missing",
            m.path.display()
        );
    }
    Ok(Modules { ordered, boot_deps })
}

/// A newc ("070701") cpio archive writer.
#[derive(Default)]
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn push(&mut self, name: &str, mode: u32, rdev: u32, data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev >> 8,
            rdev & 0xff,
            name.len() as u32 + 1,
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.push("TRAILER!!!", 0, 0, &[]);
        // The kernel reads the archive in 512-byte blocks; pad like cpio(1) does.
        while !self.buf.len().is_multiple_of(512) {
            self.buf.push(0);
        }
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert_eq!(module_name("kernel/net/8021q/8021q.ko"), "8021q");
        assert_eq!(
            module_name("kernel/drivers/virtio/virtio_pci.ko.xz"),
            "virtio_pci"
        );
        assert_eq!(module_name("kernel/drivers/foo/foo-bar.ko.zst"), "foo_bar");
    }

    #[test]
    fn cpio_layout() {
        let mut c = Cpio::default();
        c.push("a", 0o100644, 0, b"xyz");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        // header (110) + "a\0" padded to 112, data 3 padded to 4.
        assert_eq!(&out[110..112], b"a\0");
        assert_eq!(&out[112..115], b"xyz");
        assert_eq!(&out[116..122], b"070701");
        assert_eq!(out.len() % 512, 0);
    }

    #[test]
    fn kernel_version_order() {
        let mut v = [
            "6.1.0-9-amd64".to_owned(),
            "6.1.0-56-amd64".to_owned(),
            "5.10.0-1-amd64".to_owned(),
        ];
        v.sort_by_key(|v| version_key(v));
        assert_eq!(v.last().map(String::as_str), Some("6.1.0-56-amd64"));
    }
}
