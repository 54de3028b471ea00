//! Alert rules over window aggregates: `avg(data.temperature) > 30 for 5m`.
//!
//! The `node/alerts` actor watches the windows this node's shards commit
//! (the [`ResultsFeed`]). For each rule and key it tracks the run of
//! consecutive windows meeting the condition; once the run covers the
//! rule's duration of *event time* the alert fires, and the first window
//! of that key that no longer meets it resolves it. A gap between windows
//! (a key with no events for a while) starts the run again: no evidence is
//! not a breach.
//!
//! Notifications go to the [`AlertBoard`], which `GET /v1/alerts` and the
//! dashboard read, and to the rule's webhook, through one queue per URL
//! (so a receiver gets a key's firing before its resolution, and a slow
//! one never holds up evaluation). After a firing is notified, the rule's
//! `suppress_minutes` of wall-clock time hold back further firings of that
//! key: they are on the board, marked suppressed, and not sent; a
//! resolution is sent when the firing it ends was.
//!
//! What a restart loses: runs in progress, which keys are firing and when
//! each was last notified (rebuilt from the next windows, so a key still
//! breaching fires again once its run is long enough); the board keeps its
//! history, as it lives outside the actor. Keys with nothing in progress
//! and nothing to suppress are forgotten, so memory follows the keys that
//! matter now, not every key ever seen.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use troupe_protocol::alerts::{
    AlertEvent, AlertLevel, AlertRule, AlertState, AlertsView, RuleStatus,
};
use troupe_protocol::{now_ms, PipelineSpec, WindowResult};

use crate::results::ResultsFeed;

/// Notifications the board keeps.
pub const RECENT: usize = 100;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

/// A rule's `when`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    aggregate: String,
    op: Op,
    threshold: f64,
    for_ms: u64,
}

fn duration_ms(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {text:?} needs a unit: ms, s, m or h"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} must start with a whole number"))?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("duration {text:?}: unit must be ms, s, m or h")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("duration {text:?} is too long"))
}

impl Condition {
    /// Parses `<aggregate> <op> <number> [for <duration>]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let form = "expected `<aggregate> <op> <number> [for <duration>]`, \
                    e.g. `avg(data.temperature) > 30 for 5m`";
        let (aggregate, op, threshold, rest) = match words.as_slice() {
            [aggregate, op, threshold, rest @ ..] => (*aggregate, *op, *threshold, rest),
            _ => return Err(form.to_owned()),
        };
        let op = match op {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            other => {
                return Err(format!(
                    "unknown comparison {other:?}: use >, >=, <, <=, == or !="
                ))
            }
        };
        let threshold: f64 = threshold
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite())
            .ok_or_else(|| format!("threshold {threshold:?} is not a number"))?;
        let for_ms = match rest {
            [] => 0,
            ["for", duration] => duration_ms(duration)?,
            _ => return Err(form.to_owned()),
        };
        Ok(Self {
            aggregate: aggregate.to_owned(),
            op,
            threshold,
            for_ms,
        })
    }

    /// The aggregate it reads, as results name it.
    pub fn aggregate(&self) -> &str {
        &self.aggregate
    }

    fn holds(&self, value: f64) -> bool {
        let t = self.threshold;
        match self.op {
            Op::Gt => value > t,
            Op::Ge => value >= t,
            Op::Lt => value < t,
            Op::Le => value <= t,
            Op::Eq => value == t,
            Op::Ne => value != t,
        }
    }
}

/// Checks rules against each other and against the pipelines known now;
/// errors are `(field, reason)` with fields like `alerts[0].when`. A rule
/// on a pipeline not among `pipelines` is accepted (it may be created over
/// the API later).
pub fn validate(rules: &[AlertRule], pipelines: &[PipelineSpec]) -> Result<(), (String, String)> {
    let mut names = std::collections::HashSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let field = |name: &str| format!("alerts[{i}].{name}");
        if rule.name.trim().is_empty() {
            return Err((field("name"), "must not be empty".into()));
        }
        if !names.insert(rule.name.as_str()) {
            return Err((
                field("name"),
                format!("another rule is named {:?}", rule.name),
            ));
        }
        let condition = Condition::parse(&rule.when).map_err(|reason| (field("when"), reason))?;
        if let Some(pipeline) = pipelines.iter().find(|p| p.id == rule.pipeline) {
            let names: Vec<String> = pipeline.aggregates.iter().map(|a| a.name()).collect();
            if !names.iter().any(|n| n == condition.aggregate()) {
                return Err((
                    field("when"),
                    format!(
                        "pipeline {} has no aggregate {}; it has {}",
                        pipeline.id,
                        condition.aggregate(),
                        names.join(", ")
                    ),
                ));
            }
        }
        if let Some(url) = &rule.webhook {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err((
                    field("webhook"),
                    "must be an http:// or https:// URL".into(),
                ));
            }
        }
    }
    Ok(())
}

/// What the rules have raised, shared by the actor (writes) and the HTTP
/// API (reads); it outlives the actor's restarts.
pub struct AlertBoard {
    inner: Mutex<Board>,
}

struct Board {
    rules: Vec<RuleStatus>,
    recent: VecDeque<AlertEvent>,
}

impl AlertBoard {
    /// A board for `rules`, nothing raised yet.
    pub fn new(rules: &[AlertRule]) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Board {
                rules: rules
                    .iter()
                    .map(|rule| RuleStatus {
                        rule: rule.clone(),
                        firing: Vec::new(),
                        raised: 0,
                        suppressed: 0,
                        delivery_failures: 0,
                    })
                    .collect(),
                recent: VecDeque::with_capacity(RECENT),
            }),
        })
    }

    fn update<T>(&self, change: impl FnOnce(&mut Board) -> T) -> T {
        change(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn record(&self, rule: usize, event: &AlertEvent) {
        self.update(|board| {
            if let Some(status) = board.rules.get_mut(rule) {
                status.raised += 1;
                status.suppressed += u64::from(event.suppressed);
                status.firing.retain(|k| *k != event.key);
                if event.state == AlertState::Firing {
                    status.firing.push(event.key.clone());
                    status.firing.sort();
                }
            }
            if board.recent.len() == RECENT {
                board.recent.pop_back();
            }
            board.recent.push_front(event.clone());
        });
    }

    /// Counts a webhook delivery that failed for good.
    pub fn delivery_failed(&self, rule: &str) {
        metrics::counter!("troupe_alert_delivery_failures_total", "rule" => rule.to_owned())
            .increment(1);
        self.update(|board| {
            if let Some(status) = board.rules.iter_mut().find(|s| s.rule.name == rule) {
                status.delivery_failures += 1;
            }
        });
    }

    /// Keys no longer known to be firing (after a restart).
    fn forget_firing(&self) {
        self.update(|board| board.rules.iter_mut().for_each(|s| s.firing.clear()));
    }

    /// The rules' state and the latest notifications.
    pub fn view(&self) -> AlertsView {
        self.update(|board| AlertsView {
            rules: board.rules.clone(),
            recent: board.recent.iter().cloned().collect(),
        })
    }

    /// The latest notifications, newest first.
    pub fn recent(&self, limit: usize) -> Vec<AlertEvent> {
        self.update(|board| board.recent.iter().take(limit).cloned().collect())
    }
}

/// Delivers a notification to a webhook URL; answers whether it arrived.
pub type Deliver = Arc<dyn Fn(String, AlertEvent) -> BoxFuture<'static, bool> + Send + Sync>;

/// Notifications waiting for one webhook; more are counted as failed.
const QUEUE: usize = 1_024;

/// Webhook deliveries: one ordered queue per URL, each drained by its own
/// task, so one slow receiver holds up only its own notifications. It
/// outlives the alerts actor's restarts.
pub struct Outbox {
    deliver: Deliver,
    board: Arc<AlertBoard>,
    queues: Mutex<HashMap<String, mpsc::Sender<AlertEvent>>>,
}

impl Outbox {
    /// Delivers with `deliver`; failures are counted on `board`.
    pub fn new(deliver: Deliver, board: Arc<AlertBoard>) -> Arc<Self> {
        Arc::new(Self {
            deliver,
            board,
            queues: Mutex::new(HashMap::new()),
        })
    }

    /// Queues `event` for `url` (call from within the runtime).
    fn send(&self, url: &str, event: AlertEvent) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let queue = queues.entry(url.to_owned()).or_insert_with(|| {
            let (sender, mut queued) = mpsc::channel::<AlertEvent>(QUEUE);
            let (deliver, board, url) = (
                Arc::clone(&self.deliver),
                Arc::clone(&self.board),
                url.to_owned(),
            );
            tokio::spawn(async move {
                while let Some(event) = queued.recv().await {
                    let rule = event.rule.clone();
                    if !deliver(url.clone(), event).await {
                        board.delivery_failed(&rule);
                    }
                }
            });
            sender
        });
        if let Err(refused) = queue.try_send(event) {
            let event = match refused {
                mpsc::error::TrySendError::Full(event)
                | mpsc::error::TrySendError::Closed(event) => event,
            };
            tracing::warn!(rule = %event.rule, %url, "alert webhook queue is full; notification dropped");
            self.board.delivery_failed(&event.rule);
        }
    }
}

/// A key's run of windows under one rule.
#[derive(Debug, Default)]
struct Run {
    /// Start of the first window of the current run that met the condition.
    since_ms: Option<u64>,
    /// End of the last window seen.
    last_end_ms: Option<u64>,
    /// Firing now, and whether that firing was notified (not suppressed).
    firing: Option<bool>,
    /// When a firing of this key was last notified.
    notified_at: Option<Instant>,
}

impl Run {
    /// Takes the next window of the key; answers a firing or resolution
    /// (state, start of the run or of the deciding window, suppressed).
    fn step(
        &mut self,
        condition: &Condition,
        window: &WindowResult,
        value: f64,
        now: Instant,
        quiet: Duration,
    ) -> Option<(AlertState, u64, bool)> {
        // Tumbling windows follow on, sliding ones overlap; a later start
        // is a gap (no events), which ends the run.
        let follows = self
            .last_end_ms
            .is_some_and(|end| window.window_start_ms <= end);
        self.last_end_ms = Some(window.window_end_ms);
        if !condition.holds(value) {
            self.since_ms = None;
            let notified = self.firing.take()?;
            return Some((AlertState::Resolved, window.window_start_ms, !notified));
        }
        let since = match self.since_ms {
            Some(since) if follows => since,
            _ => window.window_start_ms,
        };
        self.since_ms = Some(since);
        if self.firing.is_some() || window.window_end_ms.saturating_sub(since) < condition.for_ms {
            return None;
        }
        let suppressed = self
            .notified_at
            .is_some_and(|at| now.duration_since(at) < quiet);
        if !suppressed {
            self.notified_at = Some(now);
        }
        self.firing = Some(!suppressed);
        Some((AlertState::Firing, since, suppressed))
    }

    /// No run in progress, not firing, and nothing left to suppress.
    fn idle(&self, now: Instant, quiet: Duration) -> bool {
        self.since_ms.is_none()
            && self.firing.is_none()
            && self
                .notified_at
                .is_none_or(|at| now.duration_since(at) >= quiet)
    }
}

/// The rules' evaluation, apart from the actor so it can be tested alone.
pub struct Evaluator {
    node: String,
    rules: Vec<(AlertRule, Condition)>,
    runs: HashMap<(usize, String), Run>,
}

impl Evaluator {
    /// Evaluates `rules` (already validated) for node `node`.
    pub fn new(node: &str, rules: &[AlertRule]) -> Result<Self, String> {
        let rules = rules
            .iter()
            .map(|rule| {
                Condition::parse(&rule.when)
                    .map(|c| (rule.clone(), c))
                    .map_err(|e| format!("alert {}: {e}", rule.name))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            node: node.to_owned(),
            rules,
            runs: HashMap::new(),
        })
    }

    /// Offers a closed window at wall-clock `now`; answers the
    /// notifications it raises, each with its rule's index.
    pub fn observe(&mut self, result: &WindowResult, now: Instant) -> Vec<(usize, AlertEvent)> {
        let mut raised = Vec::new();
        for (index, (rule, condition)) in self.rules.iter().enumerate() {
            if rule.pipeline != result.pipeline {
                continue;
            }
            let Some(&value) = result.values.get(condition.aggregate()) else {
                continue;
            };
            let quiet = Duration::from_secs(rule.suppress_minutes.saturating_mul(60));
            let slot = (index, result.key.clone());
            let run = self.runs.entry(slot.clone()).or_default();
            let change = run.step(condition, result, value, now, quiet);
            if run.idle(now, quiet) {
                // Nothing in progress, nothing to suppress: forget the key,
                // so keys that come and go do not pile up.
                self.runs.remove(&slot);
            }
            let Some((state, since_ms, suppressed)) = change else {
                continue;
            };
            raised.push((
                index,
                AlertEvent {
                    rule: rule.name.clone(),
                    level: rule.level,
                    state,
                    node: self.node.clone(),
                    pipeline: result.pipeline.clone(),
                    key: result.key.clone(),
                    when: rule.when.clone(),
                    value,
                    since_ms,
                    window_end_ms: result.window_end_ms,
                    at_ms: now_ms(),
                    suppressed,
                },
            ));
        }
        raised
    }

    /// Keys tracked now, over all rules.
    pub fn tracked(&self) -> usize {
        self.runs.len()
    }

    fn rule(&self, index: usize) -> Option<&AlertRule> {
        self.rules.get(index).map(|(rule, _)| rule)
    }
}

/// Messages of the alerts actor.
pub enum AlertsMsg {
    /// A window was committed.
    Closed(WindowResult),
    /// The feed moved on without this many results (the actor fell behind).
    Missed(u64),
    /// Panic with this reason.
    InjectedFault(String),
}

crate::fault_injection!(AlertsMsg);

/// The `node/alerts` actor.
#[derive(Clone)]
pub struct Alerts {
    /// This node's id, named in notifications.
    pub node_id: Arc<str>,
    /// The rules.
    pub rules: Vec<AlertRule>,
    /// Committed windows.
    pub results: Arc<ResultsFeed>,
    /// What has been raised.
    pub board: Arc<AlertBoard>,
    /// Webhook delivery.
    pub outbox: Arc<Outbox>,
}

/// The actor's state: the evaluation and the task feeding it.
pub struct AlertsState {
    evaluator: Evaluator,
    _feed: AbortOnDrop,
}

/// Ends the feeding task with the state, also when the actor panics
/// (ractor runs `post_stop` only on a clean stop).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Actor for Alerts {
    type Msg = AlertsMsg;
    type State = AlertsState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let evaluator = Evaluator::new(&self.node_id, &self.rules)?;
        self.board.forget_firing();
        let mut results = self.results.subscribe();
        let feed = tokio::spawn(async move {
            loop {
                let message = match results.recv().await {
                    Ok(result) => AlertsMsg::Closed(result),
                    Err(RecvError::Lagged(missed)) => AlertsMsg::Missed(missed),
                    Err(RecvError::Closed) => return,
                };
                if myself.send_message(message).is_err() {
                    return;
                }
            }
        });
        Ok(AlertsState {
            evaluator,
            _feed: AbortOnDrop(feed),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AlertsMsg::Closed(result) => {
                for (index, event) in state.evaluator.observe(&result, Instant::now()) {
                    self.raise(&state.evaluator, index, event);
                }
            }
            AlertsMsg::Missed(missed) => {
                tracing::warn!(
                    missed,
                    "alerts fell behind the window results; some were not evaluated"
                );
                metrics::counter!("troupe_alert_results_missed_total").increment(missed);
            }
            AlertsMsg::InjectedFault(reason) => panic!("injected fault: {reason}"),
        }
        Ok(())
    }
}

impl Alerts {
    fn raise(&self, evaluator: &Evaluator, index: usize, event: AlertEvent) {
        let level = match event.level {
            AlertLevel::Info => "info",
            AlertLevel::Warning => "warning",
            AlertLevel::Critical => "critical",
        };
        metrics::counter!(
            "troupe_alerts_total",
            "rule" => event.rule.clone(),
            "level" => level,
            "suppressed" => if event.suppressed { "true" } else { "false" }
        )
        .increment(1);
        tracing::warn!(
            rule = %event.rule, level, state = ?event.state, key = %event.key,
            value = event.value, suppressed = event.suppressed, "alert"
        );
        self.board.record(index, &event);
        let webhook = evaluator.rule(index).and_then(|r| r.webhook.as_deref());
        if let (Some(url), false) = (webhook, event.suppressed) {
            self.outbox.send(url, event);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn rule(when: &str) -> AlertRule {
        AlertRule {
            name: "hot".into(),
            pipeline: "temps".into(),
            when: when.into(),
            level: AlertLevel::Critical,
            suppress_minutes: 10,
            webhook: None,
        }
    }

    fn window(key: &str, second: u64, avg: f64) -> WindowResult {
        WindowResult {
            pipeline: "temps".into(),
            key: key.into(),
            window_start_ms: second * 1000,
            window_end_ms: (second + 1) * 1000,
            events: 3,
            values: BTreeMap::from([("avg(data.temperature)".to_owned(), avg)]),
        }
    }

    #[test]
    fn conditions_parse_and_bad_ones_say_why() {
        let c = Condition::parse("avg(data.temperature) > 30 for 5m").expect("parses");
        assert_eq!(
            (c.aggregate(), c.threshold, c.for_ms),
            ("avg(data.temperature)", 30.0, 300_000)
        );
        assert!(c.holds(30.5) && !c.holds(30.0));
        assert_eq!(Condition::parse("count <= 2").map(|c| c.for_ms), Ok(0));
        for (bad, says) in [
            ("avg(x) >", "expected"),
            ("avg(x) => 3", "unknown comparison"),
            ("avg(x) > hot", "not a number"),
            ("avg(x) > NaN", "not a number"),
            ("avg(x) > 3 for 5", "needs a unit"),
            ("avg(x) > 3 for 5d", "unit must be"),
            ("avg(x) > 3 during 5m", "expected"),
        ] {
            let error = Condition::parse(bad).expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn rules_are_checked_against_the_pipelines_aggregates() {
        let pipeline: PipelineSpec = serde_json::from_value(serde_json::json!({
            "id": "temps", "event_type": "reading", "key_by": "source",
            "window": {"kind": "tumbling", "size_ms": 1000},
            "aggregates": [{"op": "avg", "field": "data.temperature"}],
        }))
        .expect("a pipeline");
        assert_eq!(
            validate(
                &[rule("avg(data.temperature) > 30")],
                std::slice::from_ref(&pipeline)
            ),
            Ok(())
        );
        let (field, reason) = validate(
            &[rule("max(data.temperature) > 30")],
            std::slice::from_ref(&pipeline),
        )
        .expect_err("no max");
        assert_eq!(field, "alerts[0].when");
        assert!(reason.contains("has avg(data.temperature)"), "{reason}");
        let twice = [rule("count > 1"), rule("count > 2")];
        assert_eq!(
            validate(&twice, &[]).map_err(|e| e.0),
            Err("alerts[1].name".into())
        );
        let mut hook = rule("count > 1");
        hook.webhook = Some("ftp://x".into());
        assert_eq!(
            validate(&[hook], &[]).map_err(|e| e.0),
            Err("alerts[0].webhook".into())
        );
    }

    #[test]
    fn fires_once_the_condition_has_held_for_its_duration_then_suppresses_and_resolves() {
        let mut evaluator =
            Evaluator::new("n1", &[rule("avg(data.temperature) > 30 for 3s")]).expect("valid");
        let start = Instant::now();
        let mut states = |key: &str, second: u64, avg: f64, at: Duration| {
            evaluator
                .observe(&window(key, second, avg), start + at)
                .into_iter()
                .map(|(_, e)| (e.state, e.since_ms, e.suppressed))
                .collect::<Vec<_>>()
        };
        let t = Duration::ZERO;
        // Two hot seconds, a cool one: the run starts again.
        assert!(states("s1", 0, 31.0, t).is_empty());
        assert!(states("s1", 1, 35.0, t).is_empty());
        assert!(states("s1", 2, 20.0, t).is_empty());
        // Three hot seconds in a row: fires, from the run's first window.
        assert!(states("s1", 3, 31.0, t).is_empty());
        assert!(states("s1", 4, 31.0, t).is_empty());
        assert_eq!(
            states("s1", 5, 31.0, t),
            [(AlertState::Firing, 3000, false)]
        );
        // Still hot: already firing, nothing new; another key is apart.
        assert!(states("s1", 6, 40.0, t).is_empty());
        assert!(states("s2", 6, 40.0, t).is_empty());
        // Cool: resolved, notified like its firing.
        assert_eq!(
            states("s1", 7, 25.0, t),
            [(AlertState::Resolved, 7000, false)]
        );
        // Hot again within the suppression minutes: raised but suppressed,
        // and so is its resolution.
        let later = Duration::from_secs(60);
        assert!(states("s1", 8, 31.0, later).is_empty());
        assert!(states("s1", 9, 31.0, later).is_empty());
        assert_eq!(
            states("s1", 10, 31.0, later),
            [(AlertState::Firing, 8000, true)]
        );
        assert_eq!(
            states("s1", 11, 1.0, later),
            [(AlertState::Resolved, 11_000, true)]
        );
        // After the suppression minutes, notified again.
        let much_later = Duration::from_secs(11 * 60);
        for second in 12..14 {
            assert!(states("s1", second, 31.0, much_later).is_empty());
        }
        assert_eq!(
            states("s1", 14, 31.0, much_later),
            [(AlertState::Firing, 12_000, false)]
        );
    }

    #[test]
    fn a_gap_between_windows_restarts_the_run() {
        let mut evaluator =
            Evaluator::new("n1", &[rule("avg(data.temperature) > 30 for 2s")]).expect("valid");
        let now = Instant::now();
        let mut fired = |second, avg| {
            !evaluator
                .observe(&window("s1", second, avg), now)
                .is_empty()
        };
        assert!(!fired(0, 31.0));
        // No window for second 1: seconds 2 and 3 are a new run.
        assert!(!fired(2, 31.0));
        assert!(fired(3, 31.0));
    }

    #[test]
    fn overlapping_sliding_windows_continue_a_run() {
        let mut evaluator =
            Evaluator::new("n1", &[rule("avg(data.temperature) > 30 for 3s")]).expect("valid");
        let now = Instant::now();
        // Windows of 2 s sliding by 1 s: [0, 2), [1, 3) … — one run.
        let mut fired = |second: u64| {
            let mut w = window("s1", second, 31.0);
            w.window_end_ms = w.window_start_ms + 2_000;
            !evaluator.observe(&w, now).is_empty()
        };
        assert!(!fired(0));
        assert!(fired(1), "[0, 3 s) has held for 3 s");
    }

    #[test]
    fn keys_with_nothing_in_progress_or_to_suppress_are_forgotten() {
        let mut evaluator =
            Evaluator::new("n1", &[rule("avg(data.temperature) > 30")]).expect("valid");
        let now = Instant::now();
        for key in 0..1_000 {
            evaluator.observe(&window(&format!("cool-{key}"), 0, 20.0), now);
        }
        assert_eq!(evaluator.tracked(), 0, "cool keys leave nothing behind");
        assert_eq!(evaluator.observe(&window("hot", 0, 31.0), now).len(), 1);
        assert_eq!(evaluator.observe(&window("hot", 1, 20.0), now).len(), 1);
        assert_eq!(
            evaluator.tracked(),
            1,
            "resolved, but its repeats are still suppressed"
        );
        let later = now + Duration::from_secs(11 * 60);
        assert!(evaluator.observe(&window("hot", 2, 20.0), later).is_empty());
        assert_eq!(evaluator.tracked(), 0);
    }

    #[test]
    fn the_board_keeps_the_newest_and_counts_per_rule() {
        let rules = [rule("count > 1")];
        let board = AlertBoard::new(&rules);
        let mut evaluator = Evaluator::new("n1", &rules).expect("valid");
        let mut result = window("s1", 0, 0.0);
        result.values = BTreeMap::from([("count".to_owned(), 5.0)]);
        for (index, event) in evaluator.observe(&result, Instant::now()) {
            board.record(index, &event);
        }
        board.delivery_failed("hot");
        let view = board.view();
        assert_eq!(view.rules[0].firing, ["s1"]);
        assert_eq!(
            (view.rules[0].raised, view.rules[0].delivery_failures),
            (1, 1)
        );
        assert_eq!(board.recent(10).len(), 1);
    }
}
