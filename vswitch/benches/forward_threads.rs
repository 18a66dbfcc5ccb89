//! Forwarding decisions on more cores: batches of 32 frames (from a host port's or a slow guest's batch) forwarded by `Fabric::forward`
//! (the data path's entry, decisions and delivery) from one thread, then from two threads
//! at once on one switch, each for its own pair of ports. Decisions are read without a
//! global lock (the per-thread flow cache, `core::FlowCache`), so two threads should decide
//! about twice the frames of one. Receivers have no guest connected: delivery ends in the
//! link-down count, the same for every thread count.
//!
//! Each thread is pinned to a CPU of its own. `cargo bench -p vswitch --bench
//! forward_threads`; compare the two throughputs (frames/s).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vhost_backends::frame::{FrameInfo, SegStore, TxFrame, parse_host_frame};
use vhost_backends::offload::Offloads;
use vswitch::fabric::Fabric;
use vswitch::topology;

const BATCH: usize = 32;

/// Four ports: p0 -> p1 and p2 -> p3 (p1 and p3 known by static address).
fn fabric(dir: &std::path::Path) -> std::sync::Arc<Fabric> {
    let mut src = String::from("[[switch]]\nname = \"bench\"\n");
    for p in 0..4 {
        src += &format!(
            "[[switch.port]]\nname = \"p{p}\"\ntype = \"vhost-user-net\"\nsocket = \"p{p}.sock\"\n"
        );
        if p % 2 == 1 {
            src += &format!("static_macs = [\"02:00:00:00:00:0{p}\"]\n");
        }
    }
    let topo = topology::parse(&dir.join("t.toml"), &src).expect("topology");
    Fabric::new(&topo).expect("fabric")
}

/// Pins the calling thread to CPU `cpu` (modulo the CPUs there are), so that the threads
/// neither share a core nor migrate during a sample.
fn pin(cpu: usize) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it; the call only
    // reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Forwards `iters` batches from port `from` to port `from + 1`.
fn run(fabric: &Fabric, from: usize, iters: u64) {
    let mut bufs: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| {
            let mut f = vec![0u8; 60];
            f[..6].copy_from_slice(&[2, 0, 0, 0, 0, from as u8 + 1]);
            f[6..12].copy_from_slice(&[2, 0, 0, 0, 1, from as u8]);
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            f
        })
        .collect();
    let mut store = SegStore::new();
    let infos: Vec<FrameInfo> = bufs
        .iter_mut()
        .map(|b| parse_host_frame([0; 12], b, Offloads::default(), &mut store).expect("frame"))
        .collect();
    let frames: Vec<TxFrame<'_>> = infos.iter().map(|i| TxFrame::new(i, &store)).collect();
    for _ in 0..iters {
        fabric.forward(0, from, 0, &frames);
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fabric = fabric(dir.path());
    let mut g = c.benchmark_group("forward_threads");
    g.measurement_time(Duration::from_secs(5));
    for threads in [1usize, 2] {
        g.throughput(Throughput::Elements((BATCH * threads) as u64));
        g.bench_function(BenchmarkId::from_parameter(threads), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let f = &fabric;
                        s.spawn(move || {
                            pin(t);
                            run(f, 2 * t, iters)
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
