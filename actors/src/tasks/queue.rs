//! The worker pool's queue: priorities without starvation.
//!
//! Strict priority (ractor's `PriorityQueue`) lets a steady stream of
//! critical work starve everything else. This queue serves its four lanes
//! by weighted round robin — of every 15 tasks taken while all lanes are
//! busy, 8 are critical, 4 high, 2 normal and 1 low — FIFO within a lane,
//! and an idle lane's share goes to the others. So higher priorities go
//! first, and low priority still makes progress under sustained load.

use std::collections::VecDeque;
use std::sync::Arc;

use ractor::factory::queues::Queue;
use ractor::factory::{DiscardHandler, Job};
use troupe_protocol::Priority;

use super::gauges::{PoolGauges, LANE_ORDER};
use super::worker::TaskJob;

/// Each lane's weight, lanes in serving order ([`LANE_ORDER`]).
const WEIGHTS: [u32; 4] = [8, 4, 2, 1];

fn lane(priority: Priority) -> usize {
    LANE_ORDER.iter().position(|p| *p == priority).unwrap_or(2)
}

fn label(index: usize) -> &'static str {
    match LANE_ORDER[index] {
        Priority::Critical => "critical",
        Priority::High => "high",
        Priority::Normal => "normal",
        Priority::Low => "low",
    }
}

/// Weighted-fair priority queue of task attempts.
pub struct FairQueue {
    lanes: [VecDeque<Job<String, TaskJob>>; 4],
    credits: [u32; 4],
    gauges: Arc<PoolGauges>,
}

impl FairQueue {
    /// An empty queue that keeps the pool's `queued` figure.
    pub fn new(gauges: Arc<PoolGauges>) -> Self {
        Self {
            lanes: Default::default(),
            credits: WEIGHTS,
            gauges,
        }
    }

    /// The lane the next pop takes from.
    fn next_lane(&self) -> Option<usize> {
        let busy = |i: &usize| !self.lanes[*i].is_empty();
        (0..4)
            .filter(busy)
            .find(|&i| self.credits[i] > 0)
            // No busy lane has credit left: a new round starts.
            .or_else(|| (0..4).find(busy))
    }

    fn publish_depth(&self, index: usize) {
        metrics::gauge!("troupe_task_queue_depth", "priority" => label(index))
            .set(self.lanes[index].len() as f64);
        self.gauges
            .set_queued(index, self.lanes[index].len(), self.len());
    }
}

impl Queue<String, TaskJob> for FairQueue {
    fn len(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }

    fn is_empty(&self) -> bool {
        self.lanes.iter().all(VecDeque::is_empty)
    }

    fn pop_front(&mut self) -> Option<Job<String, TaskJob>> {
        let index = self.next_lane()?;
        if self.credits[index] == 0 {
            self.credits = WEIGHTS;
        }
        self.credits[index] -= 1;
        let job = self.lanes[index].pop_front();
        self.publish_depth(index);
        job
    }

    fn discard_oldest(&mut self) -> Option<Job<String, TaskJob>> {
        // Under overload, shed the lowest priority first.
        let index = (0..4).rev().find(|&i| !self.lanes[i].is_empty())?;
        let job = self.lanes[index].pop_front();
        self.publish_depth(index);
        job
    }

    fn peek(&self) -> Option<&Job<String, TaskJob>> {
        self.lanes[self.next_lane()?].front()
    }

    fn push_back(&mut self, job: Job<String, TaskJob>) {
        let index = lane(job.msg.priority);
        self.lanes[index].push_back(job);
        self.publish_depth(index);
    }

    fn remove_expired_items(
        &mut self,
        _discard_handler: &Option<Arc<dyn DiscardHandler<String, TaskJob>>>,
    ) -> usize {
        // Jobs carry no TTL: timeouts apply to running attempts, not queueing.
        0
    }

    fn is_job_discardable(&self, _key: &String) -> bool {
        // The pool never sheds accepted work; back-pressure is at submission.
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::worker::TaskJob;

    fn push(queue: &mut FairQueue, priority: Priority, n: usize) {
        for i in 0..n {
            queue.push_back(TaskJob::for_test(&format!("{priority:?}-{i}"), priority));
        }
    }

    fn drain(queue: &mut FairQueue, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let peeked = queue.peek().map(|j| j.key.clone());
                let job = queue.pop_front().expect("queued");
                assert_eq!(peeked.as_ref(), Some(&job.key), "peek agrees with pop");
                job.key
            })
            .collect()
    }

    #[test]
    fn higher_priorities_go_first_fifo_within_a_lane() {
        let gauges = PoolGauges::new(0);
        let mut queue = FairQueue::new(Arc::clone(&gauges));
        push(&mut queue, Priority::Low, 2);
        push(&mut queue, Priority::Critical, 2);
        push(&mut queue, Priority::Normal, 1);
        assert_eq!((gauges.lanes(), gauges.queued()), ([2, 0, 1, 2], 5));
        assert_eq!(
            drain(&mut queue, 5),
            ["Critical-0", "Critical-1", "Normal-0", "Low-0", "Low-1"]
        );
        assert!(queue.is_empty());
        assert_eq!((gauges.lanes(), gauges.queued()), ([0; 4], 0));
    }

    #[test]
    fn sustained_load_serves_every_lane_by_weight() {
        let mut queue = FairQueue::new(PoolGauges::new(0));
        for priority in [
            Priority::Critical,
            Priority::High,
            Priority::Normal,
            Priority::Low,
        ] {
            push(&mut queue, priority, 100);
        }
        let served = drain(&mut queue, 150);
        let count = |p: &str| served.iter().filter(|k| k.starts_with(p)).count();
        assert_eq!(
            (
                count("Critical"),
                count("High"),
                count("Normal"),
                count("Low")
            ),
            (80, 40, 20, 10)
        );
        assert_eq!(queue.len(), 250);
    }

    #[test]
    fn overload_sheds_the_lowest_priority_first() {
        let mut queue = FairQueue::new(PoolGauges::new(0));
        push(&mut queue, Priority::High, 1);
        push(&mut queue, Priority::Low, 1);
        assert_eq!(queue.discard_oldest().map(|j| j.key), Some("Low-0".into()));
    }
}
