//! Link impairments (`vfabric ctl impair`): loss, a rate ceiling, delay and jitter on a
//! port, both directions, like netem on both ends of a cable. For test networks.
//!
//! Invariants: frames that are delayed keep their order per port (the delay line is ordered
//! by due time, then arrival); a delayed frame is held as the plain frames the receiving
//! port would put on its wire, so it no longer refers to the sender's memory; the switch
//! looks at impairments only while one is set (`SwitchRuntime::impaired` is non-zero).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ports::Port;

/// A link impairment on a port, applied to every frame into or out of it (like netem on
/// both ends of a cable): random loss, a rate ceiling (frames beyond it are dropped), and a
/// delay with random jitter (frames stay in order). For test networks.
pub struct Impairment {
    /// Probability of losing a frame, 0..=1.
    pub loss: f64,
    pub delay: Duration,
    pub jitter: Duration,
    /// Bits per second; `None`: no ceiling.
    pub rate_bps: Option<u64>,
    state: Mutex<ImpairState>,
    pub lost: std::sync::atomic::AtomicU64,
    pub over_rate: std::sync::atomic::AtomicU64,
    pub delayed: std::sync::atomic::AtomicU64,
}

struct ImpairState {
    rng: u64,
    tokens_bits: f64,
    last: Instant,
}

impl Impairment {
    pub fn new(loss: f64, delay: Duration, jitter: Duration, rate_bps: Option<u64>) -> Impairment {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Impairment {
            loss: loss.clamp(0.0, 1.0),
            delay,
            jitter,
            rate_bps,
            state: Mutex::new(ImpairState {
                rng: seed,
                tokens_bits: 0.0,
                last: Instant::now(),
            }),
            lost: Default::default(),
            over_rate: Default::default(),
            delayed: Default::default(),
        }
    }

    /// Decides one frame of `len` bytes: `None` = dropped, else the extra delay.
    pub(super) fn judge(&self, len: usize) -> Option<Duration> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // xorshift64*: uniform numbers for loss and jitter.
        let mut next = || {
            st.rng ^= st.rng >> 12;
            st.rng ^= st.rng << 25;
            st.rng ^= st.rng >> 27;
            (st.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        };
        if self.loss > 0.0 && next() < self.loss {
            self.lost.fetch_add(1, Relaxed);
            return None;
        }
        let jitter = self.jitter.mul_f64(next());
        if let Some(bps) = self.rate_bps {
            let now = Instant::now();
            let burst = (bps as f64 / 10.0).max(16.0 * 1518.0 * 8.0);
            st.tokens_bits = (st.tokens_bits
                + now.duration_since(st.last).as_secs_f64() * bps as f64)
                .min(burst);
            st.last = now;
            let bits = (len * 8) as f64;
            if st.tokens_bits < bits {
                self.over_rate.fetch_add(1, Relaxed);
                return None;
            }
            st.tokens_bits -= bits;
        }
        Some(self.delay + jitter)
    }
}

/// Held-back frames by (due time, arrival number): the receiving port and the frame.
type Held = std::collections::BTreeMap<(Instant, u64), (Port, Vec<u8>)>;

/// Frames held back by impairments, delivered when due by one thread per fabric.
#[derive(Default)]
pub(super) struct DelayLine {
    queue: Mutex<Held>,
    wake: std::sync::Condvar,
    seq: std::sync::atomic::AtomicU64,
    started: std::sync::OnceLock<()>,
}

impl DelayLine {
    pub(super) fn push(self: &Arc<Self>, due: Instant, port: Port, frame: Vec<u8>) {
        self.started.get_or_init(|| {
            let me = self.clone();
            let started = crate::privs::spawn_confined(
                "delay-line".into(),
                crate::privs::ThreadKind::DataPath,
                move || me.run(),
            );
            if let Err(e) = started {
                tracing::error!("delay line: {e}; impaired frames are lost");
            }
        });
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.insert((due, seq), (port, frame));
        self.wake.notify_one();
    }

    fn run(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            let wait = match q.keys().next() {
                Some(&(due, _)) if due <= now => Duration::ZERO,
                Some(&(due, _)) => due - now,
                None => Duration::from_secs(3600),
            };
            if !wait.is_zero() {
                q = self
                    .wake
                    .wait_timeout(q, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
                continue;
            }
            let mut due: Vec<(Port, Vec<u8>)> = Vec::new();
            while let Some(entry) = q.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            drop(q);
            for (port, frame) in &due {
                port.deliver_bytes(std::slice::from_ref(frame), 0);
            }
            q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use super::Impairment;

    #[test]
    fn total_loss_drops_every_frame_and_counts_it() {
        let imp = Impairment::new(1.0, Duration::ZERO, Duration::ZERO, None);
        assert!((0..100).all(|_| imp.judge(64).is_none()));
        assert_eq!(imp.lost.load(Relaxed), 100);
    }

    #[test]
    fn delay_without_jitter_is_exact_and_loses_nothing() {
        let d = Duration::from_millis(7);
        let imp = Impairment::new(0.0, d, Duration::ZERO, None);
        assert!((0..100).all(|_| imp.judge(1500) == Some(d)));
        assert_eq!(imp.lost.load(Relaxed), 0);
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let (d, j) = (Duration::from_millis(5), Duration::from_millis(3));
        let imp = Impairment::new(0.0, d, j, None);
        for _ in 0..1000 {
            let got = imp.judge(64).unwrap();
            assert!(got >= d && got <= d + j, "{got:?}");
        }
    }

    #[test]
    fn a_rate_ceiling_drops_what_exceeds_its_burst() {
        // 1 Mbit/s: the burst is the larger of 0.1 s of rate and 16 full frames, so 1000
        // back-to-back 1500-byte frames cannot all pass.
        let imp = Impairment::new(0.0, Duration::ZERO, Duration::ZERO, Some(1_000_000));
        let passed = (0..1000).filter(|_| imp.judge(1500).is_some()).count();
        assert!(passed < 1000);
        assert_eq!(imp.over_rate.load(Relaxed), (1000 - passed) as u64);
    }
}
