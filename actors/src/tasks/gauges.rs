//! Live figures of the worker pool: its size, busy workers, queued
//! attempts. The pool and its queue keep them; `/metrics` exports them
//! (`troupe_workers`, `troupe_workers_busy`, whose ratio is the pool's
//! utilization) and membership gossips them, so every node sees every
//! other node's queue depth and worker count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The pool's figures, shared by everyone who reads or updates them.
#[derive(Debug, Default)]
pub struct PoolGauges {
    size: AtomicUsize,
    busy: AtomicUsize,
    queued: AtomicUsize,
}

impl PoolGauges {
    /// A pool of `size` workers, idle and with nothing queued.
    pub fn new(size: usize) -> Arc<Self> {
        let gauges = Arc::new(Self::default());
        gauges.set_size(size);
        gauges
    }

    /// Workers in the pool (as last asked for).
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// Attempts waiting for a worker.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Records a new pool size.
    pub fn set_size(&self, size: usize) {
        self.size.store(size, Ordering::Relaxed);
        metrics::gauge!("troupe_workers").set(size as f64);
    }

    pub(crate) fn set_queued(&self, queued: usize) {
        self.queued.store(queued, Ordering::Relaxed);
    }

    /// Counts a worker as busy until the guard is dropped (also when the
    /// worker panics or is killed mid-attempt).
    pub(crate) fn busy_while(self: &Arc<Self>) -> BusyGuard {
        let now = self.busy.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("troupe_workers_busy").set(now as f64);
        BusyGuard(Arc::clone(self))
    }
}

/// See [`PoolGauges::busy_while`].
pub(crate) struct BusyGuard(Arc<PoolGauges>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let now = self
            .0
            .busy
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        metrics::gauge!("troupe_workers_busy").set(now as f64);
    }
}
