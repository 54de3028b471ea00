//! Restart policy: strategy, intensity window and backoff, as plain logic.
//!
//! The supervisor actor asks this module two questions when a child fails —
//! "have we restarted too often?" and "how long do we wait?" — so both can be
//! tested without actors or clocks.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// Which children a failure takes down with it (Erlang/OTP semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Restart only the failed child.
    OneForOne,
    /// Stop every other child, then restart all of them in start order.
    OneForAll,
    /// Stop the children started after the failed one, then restart the
    /// failed child and those, in start order.
    RestForOne,
}

impl Strategy {
    /// Indices (in start order) of the children to restart when child
    /// `failed` of `count` fails.
    pub fn affected(self, failed: usize, count: usize) -> std::ops::Range<usize> {
        match self {
            Strategy::OneForOne => failed..failed + 1,
            Strategy::OneForAll => 0..count,
            Strategy::RestForOne => failed..count,
        }
    }
}

/// Restart intensity and backoff for one supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// More than this many restarts within `within` and the supervisor gives
    /// up and escalates to its parent.
    pub max_restarts: u32,
    /// The sliding window for `max_restarts`.
    pub within: Duration,
    /// Delay before the second restart of a child inside the window; doubled
    /// for each further one. The first restart is immediate.
    pub backoff_min: Duration,
    /// Upper bound of the backoff delay.
    pub backoff_max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 10,
            within: Duration::from_secs(60),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_secs(5),
        }
    }
}

impl RestartPolicy {
    /// Backoff before a restart, given how many failures this child had in
    /// the window including this one: 0 for the first, then `backoff_min`,
    /// doubling up to `backoff_max`.
    pub fn backoff(&self, failures_in_window: usize) -> Duration {
        if failures_in_window <= 1 {
            return Duration::ZERO;
        }
        let doublings = u32::try_from(failures_in_window - 2)
            .unwrap_or(u32::MAX)
            .min(20);
        self.backoff_min
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max)
    }
}

/// Timestamps of recent events inside a sliding window.
#[derive(Debug, Default, Clone)]
pub struct EventWindow {
    times: VecDeque<Instant>,
}

impl EventWindow {
    /// Records an event at `now`, forgets those older than `within`, and
    /// returns how many remain (this one included).
    pub fn record(&mut self, now: Instant, within: Duration) -> usize {
        self.times.push_back(now);
        while let Some(&oldest) = self.times.front() {
            if now.duration_since(oldest) > within {
                self.times.pop_front();
            } else {
                break;
            }
        }
        self.times.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_pick_the_documented_children() {
        assert_eq!(Strategy::OneForOne.affected(1, 4), 1..2);
        assert_eq!(Strategy::OneForAll.affected(1, 4), 0..4);
        assert_eq!(Strategy::RestForOne.affected(1, 4), 1..4);
        assert_eq!(Strategy::RestForOne.affected(3, 4), 3..4);
    }

    #[test]
    fn backoff_is_immediate_then_doubles_up_to_the_cap() {
        let policy = RestartPolicy {
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            ..RestartPolicy::default()
        };
        let delays: Vec<u128> = (1..=6).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(delays, vec![0, 10, 20, 40, 50, 50]);
        assert_eq!(policy.backoff(10_000), Duration::from_millis(50));
    }

    #[test]
    fn window_forgets_events_older_than_its_span() {
        let start = Instant::now();
        let within = Duration::from_secs(10);
        let mut window = EventWindow::default();
        assert_eq!(window.record(start, within), 1);
        assert_eq!(window.record(start + Duration::from_secs(5), within), 2);
        assert_eq!(window.record(start + Duration::from_secs(10), within), 3);
        // The first event is now 11 s old.
        assert_eq!(window.record(start + Duration::from_secs(11), within), 3);
        assert_eq!(window.record(start + Duration::from_secs(30), within), 1);
    }
}
