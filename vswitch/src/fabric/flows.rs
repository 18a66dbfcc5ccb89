//! What lets a batch be forwarded without the switch's lock: the switch's decision version,
//! published for the per-thread flow caches (`core::FlowCache`) by the guard every user of
//! the core's lock holds (`CoreGuard`), and the decision counters of batches decided from a
//! cache, kept per port outside the lock and added to the core's on reading.
//!
//! Invariant: the published version is stored while the lock is still held, so versions are
//! published in lock order and a cache never trusts a state older than the last release.

use std::ops::{Deref, DerefMut};
use std::sync::MutexGuard;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::{PortId, Switch, SwitchPortStats};

/// The locked switch core; publishes the core's version when released.
pub struct CoreGuard<'a> {
    pub(super) guard: MutexGuard<'a, Switch>,
    pub(super) version: &'a AtomicU64,
}

impl Deref for CoreGuard<'_> {
    type Target = Switch;
    fn deref(&self) -> &Switch {
        &self.guard
    }
}

impl DerefMut for CoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut Switch {
        &mut self.guard
    }
}

impl Drop for CoreGuard<'_> {
    fn drop(&mut self) {
        // Before the lock goes (the guard field is dropped after this body).
        self.version.store(self.guard.version(), Ordering::Release);
    }
}

/// Decisions of one port taken from flow caches (one cache line each: poll threads forward
/// for different ports without sharing lines).
#[repr(align(64))]
#[derive(Default)]
pub(super) struct CachedStats {
    unicast: AtomicU64,
    flooded: AtomicU64,
}

impl CachedStats {
    pub(super) fn add(&self, unicast: u64, flooded: u64) {
        if unicast != 0 {
            self.unicast.fetch_add(unicast, Ordering::Relaxed);
        }
        if flooded != 0 {
            self.flooded.fetch_add(flooded, Ordering::Relaxed);
        }
    }

    pub(super) fn reset(&self) {
        self.unicast.store(0, Ordering::Relaxed);
        self.flooded.store(0, Ordering::Relaxed);
    }
}

impl super::SwitchRuntime {
    /// A port's decision counters: the core's plus those of batches decided from caches.
    pub fn port_stats(&self, port: PortId) -> Option<SwitchPortStats> {
        let mut s = self.core().port_stats(port)?;
        self.add_cached(port, &mut s);
        Some(s)
    }

    /// Decisions for frames from `port` taken from flow caches (without the lock).
    pub fn flow_cache_hits(&self, port: PortId) -> u64 {
        self.cached.get(port.index()).map_or(0, |c| {
            c.unicast.load(Ordering::Relaxed) + c.flooded.load(Ordering::Relaxed)
        })
    }

    /// Adds the decisions `port` took from flow caches to `s` (the core's counters: a
    /// caller that holds the core's lock reads them there and adds these).
    pub fn add_cached(&self, port: PortId, s: &mut SwitchPortStats) {
        if let Some(c) = self.cached.get(port.index()) {
            s.unicast += c.unicast.load(Ordering::Relaxed);
            s.flooded += c.flooded.load(Ordering::Relaxed);
        }
    }
}
