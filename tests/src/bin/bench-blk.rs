//! Disk benchmark: libblkio (the `blkio` crate, driver virtio-blk-vhost-user) as a VM-less
//! client against vfabric and against qemu-storage-daemon serving the same image, alternating
//! rounds. Server on CPU 0, client on CPU 1, one queue. Workloads: 4 KiB random read and
//! write at QD1 and QD32, 1 MiB sequential read and write (QD4); image on tmpfs, and a null
//! backend for the transport cost.
//!
//! Usage: bench-blk [ROUNDS] [SECONDS-PER-WORKLOAD]   (defaults 3 and 3). Needs
//! `VFABRIC_BIN`, `qemu-storage-daemon`. Every run is bounded in time and stops by itself.

use std::fs;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use blkio::{Blkio, Completion, ReqFlags};
use vfabric_tests::dpdk::wait_for_paths;
use vfabric_tests::median;

const IMAGE_SIZE: u64 = 1 << 30;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    Vfabric,
    Qsd,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Tmpfs,
    Null,
}

#[derive(Clone, Copy, Debug)]
struct Workload {
    name: &'static str,
    write: bool,
    random: bool,
    bs: usize,
    qd: usize,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "4k-randread-qd1",
        write: false,
        random: true,
        bs: 4096,
        qd: 1,
    },
    Workload {
        name: "4k-randread-qd32",
        write: false,
        random: true,
        bs: 4096,
        qd: 32,
    },
    Workload {
        name: "4k-randwrite-qd1",
        write: true,
        random: true,
        bs: 4096,
        qd: 1,
    },
    Workload {
        name: "4k-randwrite-qd32",
        write: true,
        random: true,
        bs: 4096,
        qd: 32,
    },
    Workload {
        name: "1m-seqread-qd4",
        write: false,
        random: false,
        bs: 1 << 20,
        qd: 4,
    },
    Workload {
        name: "1m-seqwrite-qd4",
        write: true,
        random: false,
        bs: 1 << 20,
        qd: 4,
    },
];

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(server: Server, backend: Backend, dir: &Path, image: &Path) -> Result<Proc> {
    let sock = dir.join("blk.sock");
    let _ = fs::remove_file(&sock);
    let log = fs::File::create(dir.join(format!("{server:?}.log")))?;
    let child = match server {
        Server::Vfabric => {
            let disk = match backend {
                Backend::Tmpfs => format!("path = \"{}\"\nformat = \"raw\"\n", image.display()),
                Backend::Null => format!("format = \"null\"\nsize = \"{}\"\n", IMAGE_SIZE),
            };
            let topo = dir.join("t.toml");
            fs::write(
                &topo,
                format!(
                    "[[disk]]\nname = \"bench\"\nsocket = \"{}\"\n{disk}",
                    sock.display()
                ),
            )?;
            let bin =
                std::env::var("VFABRIC_BIN").unwrap_or_else(|_| "target/release/vfabric".into());
            Command::new("taskset")
                .args(["-c", "0"])
                .arg(bin)
                .arg("run")
                .arg(&topo)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?
        }
        Server::Qsd => {
            let blockdev = match backend {
                Backend::Tmpfs => format!(
                    "driver=file,node-name=disk,filename={},cache.direct=off,aio=io_uring",
                    image.display()
                ),
                Backend::Null => format!("driver=null-co,node-name=disk,size={IMAGE_SIZE}"),
            };
            Command::new("taskset")
                .args(["-c", "0", "qemu-storage-daemon", "--blockdev", &blockdev, "--export"])
                .arg(format!(
                    "type=vhost-user-blk,id=exp,node-name=disk,addr.type=unix,addr.path={},writable=on,num-queues=1",
                    sock.display()
                ))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?
        }
    };
    let p = Proc(child);
    wait_for_paths(std::slice::from_ref(&sock), &format!("{server:?}"))?;
    Ok(p)
}

struct Result1 {
    iops: f64,
    mean_lat_us: f64,
}

/// xorshift64*: deterministic offsets.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn pin_to_cpu1() {
    // SAFETY: sched_setaffinity on this thread with a zeroed, then filled, cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(1, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Runs every workload over one connection; returns one result per workload.
fn client(sock: &Path, secs: f64) -> Result<Vec<Result1>> {
    let mut b = Blkio::new("virtio-blk-vhost-user").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let e = |e: blkio::Error| anyhow::anyhow!("blkio: {}", e.message());
    b.set_str("path", &sock.to_string_lossy()).map_err(e)?;
    b.connect().map_err(e)?;
    b.set_i32("num-queues", 1).map_err(e)?;
    b.set_i32("queue-size", 256).map_err(e)?;
    let mut out = b.start().map_err(e)?;
    let capacity = b.get_u64("capacity").map_err(e)?;
    let max_bs = WORKLOADS.iter().map(|w| w.bs * w.qd).max().unwrap_or(4096);
    let align = b.get_u64("mem-region-alignment").map_err(e)? as usize;
    let len = max_bs.div_ceil(align) * align;
    let region = b.alloc_mem_region(len).map_err(e)?;
    b.map_mem_region(&region).map_err(e)?;
    let q = out.queues.first_mut().context("no queue")?;
    let mut results = Vec::new();
    let mut comps: Vec<MaybeUninit<Completion>> = (0..64).map(|_| MaybeUninit::uninit()).collect();
    for w in WORKLOADS {
        let blocks = capacity / w.bs as u64;
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut seq = 0u64;
        let mut start_times = vec![Instant::now(); w.qd];
        let mut submit = |q: &mut blkio::Blkioq, slot: usize, starts: &mut Vec<Instant>| {
            let blk = if w.random {
                next(&mut rng) % blocks
            } else {
                seq = (seq + 1) % blocks;
                seq
            };
            let buf = region.addr + slot * w.bs;
            starts[slot] = Instant::now();
            if w.write {
                q.write(
                    blk * w.bs as u64,
                    buf as *const u8,
                    w.bs,
                    slot,
                    ReqFlags::empty(),
                );
            } else {
                q.read(
                    blk * w.bs as u64,
                    buf as *mut u8,
                    w.bs,
                    slot,
                    ReqFlags::empty(),
                );
            }
        };
        for slot in 0..w.qd {
            submit(q, slot, &mut start_times);
        }
        let warm = Instant::now() + Duration::from_millis(500);
        let mut measuring = false;
        let mut t0 = Instant::now();
        let (mut done, mut lat_sum) = (0u64, 0f64);
        loop {
            let n = q.do_io(&mut comps, 1, None, None).map_err(e)?;
            let now = Instant::now();
            if !measuring && now >= warm {
                measuring = true;
                t0 = now;
            }
            for c in &comps[..n] {
                // SAFETY: do_io initialised the first `n` completions.
                let c = unsafe { c.assume_init_read() };
                if c.ret != 0 {
                    bail!("{}: request failed: {}", w.name, c.ret);
                }
                if measuring {
                    done += 1;
                    lat_sum += now.duration_since(start_times[c.user_data]).as_secs_f64();
                }
                submit(q, c.user_data, &mut start_times);
            }
            if measuring && now.duration_since(t0).as_secs_f64() >= secs {
                let el = now.duration_since(t0).as_secs_f64();
                // Drain what is still in flight.
                let mut left = w.qd;
                while left > 0 {
                    left -= q.do_io(&mut comps, 1, None, None).map_err(e)?.min(left);
                }
                results.push(Result1 {
                    iops: done as f64 / el,
                    mean_lat_us: lat_sum / done.max(1) as f64 * 1e6,
                });
                break;
            }
        }
    }
    Ok(results)
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--client") {
        // Against a server someone else started (profiling): bench-blk --client SOCK [SECS]
        let sock = PathBuf::from(std::env::args().nth(2).context("socket path")?);
        let secs = std::env::args()
            .nth(3)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(3.0);
        pin_to_cpu1();
        for (w, r) in WORKLOADS.iter().zip(client(&sock, secs)?) {
            println!(
                "{:<18} {:>10.0} IOPS {:>8.1} us",
                w.name, r.iops, r.mean_lat_us
            );
        }
        return Ok(());
    }
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let secs: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3.0);
    pin_to_cpu1();
    let dir = tempfile::Builder::new()
        .prefix("vfbb")
        .tempdir_in("/dev/shm")?;
    let image: PathBuf = dir.path().join("img.raw");
    {
        // A fully written image, so reads touch real pages.
        use std::io::Write;
        let mut f = fs::File::create(&image)?;
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..(IMAGE_SIZE >> 20) {
            f.write_all(&chunk)?;
        }
    }
    // (backend, server, workload) -> samples
    let mut iops: std::collections::HashMap<(u8, u8, usize), Vec<f64>> = Default::default();
    let mut lat: std::collections::HashMap<(u8, u8, usize), Vec<f64>> = Default::default();
    for r in 0..rounds {
        for backend in [Backend::Tmpfs, Backend::Null] {
            for server in [Server::Vfabric, Server::Qsd] {
                let p = start(server, backend, dir.path(), &image)?;
                let res = client(&dir.path().join("blk.sock"), secs)
                    .with_context(|| format!("{server:?} {backend:?}"))?;
                drop(p);
                for (i, x) in res.iter().enumerate() {
                    println!(
                        "round {r} {backend:?} {server:?} {:<18} {:>10.0} IOPS {:>8.1} us",
                        WORKLOADS[i].name, x.iops, x.mean_lat_us
                    );
                    iops.entry((backend as u8, server as u8, i))
                        .or_default()
                        .push(x.iops);
                    lat.entry((backend as u8, server as u8, i))
                        .or_default()
                        .push(x.mean_lat_us);
                }
            }
        }
    }
    println!();
    println!(
        "| image | workload | vfabric IOPS | QSD IOPS | vfabric/QSD | vfabric lat us | QSD lat us |"
    );
    println!(
        "|-------|----------|--------------|----------|-------------|----------------|------------|"
    );
    for backend in [Backend::Tmpfs, Backend::Null] {
        for (i, w) in WORKLOADS.iter().enumerate() {
            let m = |s: Server, h: &std::collections::HashMap<(u8, u8, usize), Vec<f64>>| {
                median(
                    h.get(&(backend as u8, s as u8, i))
                        .cloned()
                        .unwrap_or_default(),
                )
            };
            let (vi, qi) = (m(Server::Vfabric, &iops), m(Server::Qsd, &iops));
            println!(
                "| {:?} | {} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} |",
                backend,
                w.name,
                vi,
                qi,
                vi / qi,
                m(Server::Vfabric, &lat),
                m(Server::Qsd, &lat)
            );
        }
    }
    Ok(())
}
