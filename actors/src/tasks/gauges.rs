//! Live figures of the worker pool: its size, busy workers, queued
//! attempts (per priority lane) and attempts finished. The pool and its
//! queue keep them; the dashboard reads them; `/metrics` exports them
//! (`troupe_workers`, `troupe_workers_busy`, whose ratio is the pool's
//! utilization) and membership gossips them, so every node sees every
//! other node's queue depth and worker count.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use troupe_protocol::Priority;

/// The pool's figures, shared by everyone who reads or updates them.
#[derive(Debug, Default)]
pub struct PoolGauges {
    size: AtomicUsize,
    busy: AtomicUsize,
    queued: AtomicUsize,
    /// Queued per lane, in [`LANE_ORDER`].
    lanes: [AtomicUsize; 4],
    finished: AtomicU64,
}

/// The priority lanes, highest first: the order of [`PoolGauges::lanes`].
pub const LANE_ORDER: [Priority; 4] = [
    Priority::Critical,
    Priority::High,
    Priority::Normal,
    Priority::Low,
];

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

    /// Attempts waiting for a worker, per lane in [`LANE_ORDER`].
    pub fn lanes(&self) -> [usize; 4] {
        self.lanes
            .each_ref()
            .map(|lane| lane.load(Ordering::Relaxed))
    }

    /// Attempts that have ended (any outcome) since the node started.
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// Records a new pool size.
    pub fn set_size(&self, size: usize) {
        self.size.store(size, Ordering::Relaxed);
        metrics::gauge!("troupe_workers").set(size as f64);
    }

    pub(crate) fn set_queued(&self, lane: usize, in_lane: usize, queued: usize) {
        if let Some(figure) = self.lanes.get(lane) {
            figure.store(in_lane, Ordering::Relaxed);
        }
        self.queued.store(queued, Ordering::Relaxed);
    }

    /// Counts a worker as busy until the guard is dropped (also when the
    /// worker panics or is killed mid-attempt), and the attempt as finished
    /// then.
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
        self.0.finished.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("troupe_workers_busy").set(now as f64);
    }
}
