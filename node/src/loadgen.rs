//! `troupe events send`: a load generator for event ingestion.
//!
//! Sends `--count` generated readings (unique ids, `--sources` sources,
//! event time = send time) as NDJSON requests of up to `--batch` events,
//! paced to `--rate` events per second, with a progress bar; prints what
//! the node acknowledged.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use troupe_protocol::IngestReply;

use crate::cli::{EventsSendArgs, Output};
use crate::client::Client;
use crate::output::{print_json, progress_bar};

/// What a run sent and what came back.
#[derive(Debug, Serialize)]
pub struct SendReport {
    /// Events sent.
    pub sent: u64,
    /// Acknowledged as new.
    pub accepted: u64,
    /// Acknowledged as already known.
    pub duplicate: u64,
    /// Seconds the run took.
    pub secs: f64,
    /// Events acknowledged per second.
    pub events_per_sec: f64,
}

/// Runs the generator against the node of `client`.
pub fn send(args: &EventsSendArgs, client: &Client, output: Output) -> anyhow::Result<SendReport> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let bar = progress_bar(
        args.count,
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} events  {per_sec}",
        output,
    );
    let began = Instant::now();
    let mut total = IngestReply::default();
    let mut next = 0u64;
    while next < args.count {
        let len = args.batch.min(args.count - next);
        let mut body = String::with_capacity(len as usize * 140);
        let at = troupe_protocol::now_ms();
        for i in next..next + len {
            let _ = writeln!(
                body,
                r#"{{"event_id":"{run}-{i}","source":"source-{}","event_type":"reading","timestamp":{at},"data":{{"temperature":{:.1},"seq":{i}}}}}"#,
                i % args.sources,
                15.0 + fastrand::f64() * 20.0
            );
        }
        let reply: IngestReply = client
            .post("/v1/events", "application/x-ndjson", &body)
            .with_context(|| format!("sending events {next}..{}", next + len))?;
        total.absorb(reply);
        next += len;
        bar.set_position(next);
        // Pace: event n is due at n / rate seconds.
        let due = began + Duration::from_secs_f64(next as f64 / args.rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    bar.finish();
    let secs = began.elapsed().as_secs_f64();
    let report = SendReport {
        sent: args.count,
        accepted: total.accepted,
        duplicate: total.duplicate,
        secs,
        events_per_sec: (total.accepted + total.duplicate) as f64 / secs.max(1e-9),
    };
    match output {
        Output::Json => print_json(&report)?,
        Output::Table => println!(
            "sent {}  accepted {}  duplicate {}  in {:.2} s ({:.0} events/s)",
            report.sent, report.accepted, report.duplicate, report.secs, report.events_per_sec
        ),
    }
    Ok(report)
}
