//! Closed windows as they are committed, for whoever watches live: the
//! alert rules and the dashboard.
//!
//! A shard publishes its results only after they are committed with its
//! checkpoint, so a result is published once per commit — a shard that
//! restarts resumes after its checkpoint and does not publish what it
//! published before. Watchers get a broadcast: one that falls behind
//! loses the oldest results (and is told how many), it never slows a
//! shard. The last [`RECENT`] results are also kept for a new watcher's
//! first look.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::broadcast;
use troupe_protocol::WindowResult;

/// Results kept for [`ResultsFeed::recent`].
pub const RECENT: usize = 50;
/// Results a slow subscriber may be behind before it loses some.
const BACKLOG: usize = 4_096;

/// The node's feed of committed window results.
pub struct ResultsFeed {
    sender: broadcast::Sender<WindowResult>,
    recent: Mutex<VecDeque<WindowResult>>,
}

impl Default for ResultsFeed {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(BACKLOG).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        }
    }
}

impl ResultsFeed {
    /// Publishes committed results, oldest first.
    pub fn publish(&self, results: &[WindowResult]) {
        if results.is_empty() {
            return;
        }
        // Nobody subscribed (no alert rules): no copies to make.
        if self.sender.receiver_count() > 0 {
            for result in results {
                // A subscriber that left since is not an error.
                let _ = self.sender.send(result.clone());
            }
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        for result in results.iter().rev().take(RECENT).rev() {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(result.clone());
        }
    }

    /// Every result published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<WindowResult> {
        self.sender.subscribe()
    }

    /// The most recent results, newest first.
    pub fn recent(&self) -> Vec<WindowResult> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(start: u64) -> WindowResult {
        WindowResult {
            pipeline: "p".into(),
            key: "k".into(),
            window_start_ms: start,
            window_end_ms: start + 10,
            events: 1,
            values: Default::default(),
        }
    }

    #[test]
    fn subscribers_see_each_result_and_recent_keeps_the_newest() {
        let feed = ResultsFeed::default();
        let mut watcher = feed.subscribe();
        let batch: Vec<_> = (0..RECENT as u64 + 5).map(result).collect();
        feed.publish(&batch);
        for expected in &batch {
            assert_eq!(watcher.try_recv().ok().as_ref(), Some(expected));
        }
        let recent = feed.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].window_start_ms, RECENT as u64 + 4);
        assert_eq!(recent[RECENT - 1].window_start_ms, 5);
    }
}
