//! Alert rules over window aggregates (`[[alerts]]` in `cluster.toml`) and
//! the notifications they raise, as delivered to a webhook and served by
//! `GET /v1/alerts` and the dashboard.

use serde::{Deserialize, Serialize};

/// `[[alerts]]`: one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Unique name.
    pub name: String,
    /// The pipeline whose closed windows it watches.
    pub pipeline: String,
    /// `<aggregate> <op> <number> [for <duration>]`, e.g.
    /// `avg(data.temperature) > 30 for 5m`: the aggregate as the pipeline
    /// names it; op one of `>`, `>=`, `<`, `<=`, `==`, `!=`; the duration of
    /// event time the condition must hold over consecutive windows of one
    /// key (`ms`, `s`, `m`, `h`; none: the first window that breaches).
    pub when: String,
    /// How serious.
    #[serde(default)]
    pub level: AlertLevel,
    /// After a notification for a key, further ones for it are suppressed
    /// this many minutes (counted, not delivered).
    #[serde(default = "default_suppress_minutes")]
    pub suppress_minutes: u64,
    /// Where notifications are POSTed as JSON, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

fn default_suppress_minutes() -> u64 {
    10
}

/// Severity of a rule.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    /// Worth knowing.
    Info,
    /// Needs attention soon.
    #[default]
    Warning,
    /// Needs attention now.
    Critical,
}

/// Whether a notification starts or ends an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition has held for the rule's duration.
    Firing,
    /// A window of the key no longer meets the condition.
    Resolved,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertEvent {
    /// The rule.
    pub rule: String,
    /// Its level.
    pub level: AlertLevel,
    /// Firing or resolved.
    pub state: AlertState,
    /// The node whose windows raised it.
    pub node: String,
    /// The pipeline.
    pub pipeline: String,
    /// The key whose windows met the condition.
    pub key: String,
    /// The rule's condition, as written.
    pub when: String,
    /// The aggregate's value in the window that decided.
    pub value: f64,
    /// Start of the first window of the run that met the condition (for
    /// `resolved`: of the window that no longer did), ms since the epoch.
    pub since_ms: u64,
    /// End of the window that decided.
    pub window_end_ms: u64,
    /// When it was raised, ms since the epoch (wall clock).
    pub at_ms: u64,
    /// Whether delivery was held back by the rule's suppression.
    pub suppressed: bool,
}

/// `GET /v1/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertsView {
    /// The rules and what each is doing now.
    pub rules: Vec<RuleStatus>,
    /// The latest notifications, newest first (suppressed ones included).
    pub recent: Vec<AlertEvent>,
}

/// A rule and its keys' state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RuleStatus {
    /// The rule as configured.
    pub rule: AlertRule,
    /// Keys firing now.
    pub firing: Vec<String>,
    /// Notifications raised (firing and resolved), delivered or not.
    pub raised: u64,
    /// Of those, held back by suppression.
    pub suppressed: u64,
    /// Webhook deliveries that failed after their retries.
    pub delivery_failures: u64,
}
