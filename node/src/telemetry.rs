//! Logs and metrics for one process.
//!
//! Logs go through `tracing` (human-readable or JSON). Panics, which in an
//! actor system are supervision events rather than process deaths, are
//! logged as one structured line instead of the default stderr dump.
//! Metrics use the `metrics` facade, so actors record them without knowing
//! the exposition format; this module installs the Prometheus recorder
//! whose text `/metrics` serves.

use std::time::Duration;

use clap::ValueEnum;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Sets up tracing (level from `RUST_LOG`, default `info`) and the panic hook.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests calling `run` twice) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        let thread = std::thread::current();
        tracing::error!(%location, thread = thread.name().unwrap_or("?"), "panic: {message}");
    }));
}

/// Latency buckets in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder and describes our metrics.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    metrics::describe_counter!(
        "troupe_actor_restarts_total",
        "Restarts of each supervised actor since the node started"
    );
    metrics::describe_histogram!(
        "troupe_actor_restart_seconds",
        metrics::Unit::Seconds,
        "Time from a child's failure to its new incarnation running"
    );
    metrics::describe_counter!(
        "troupe_http_requests_total",
        "HTTP requests by route pattern and status code"
    );
    metrics::describe_histogram!(
        "troupe_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency by route pattern"
    );
    Ok(handle)
}

/// Keeps histogram memory bounded; without the exporter's own HTTP listener
/// nobody else calls upkeep.
pub async fn metrics_upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}
