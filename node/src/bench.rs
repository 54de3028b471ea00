//! `troupe bench tasks`: task throughput and latency of a fresh local cluster.
//!
//! Starts N nodes of this binary on free loopback ports in a scratch
//! folder, submits no-op (`echo`) tasks in batches over HTTP from several
//! client threads, round-robin over the nodes, and waits until every task
//! has succeeded. Then it reads every task back (`GET /v1/tasks` pages) and
//! measures submit-to-finish latency from the moment the client sent the
//! task's batch to the task's `finished_at_ms`. Prints one report and stops
//! the cluster.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use troupe_protocol::TaskAccepted;

use crate::cli::{BenchEventsArgs, BenchTasksArgs, GlobalArgs, Output};
use crate::client::{Client, DEFAULT_TIMEOUT};
use crate::config::ClusterConfig;
use crate::local::{await_ready, for_each_task, metric, Launch, LocalNode};
use crate::output::print_json;
use crate::telemetry::LogFormat;
use troupe_protocol::now_ms;

/// How long the cluster may take to finish the tasks after the last submission.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// The figures of one run.
#[derive(Debug, Serialize)]
pub struct TaskBenchReport {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Replication factor.
    pub replication: usize,
    /// Workers per node.
    pub workers: usize,
    /// Tasks submitted (and succeeded).
    pub tasks: usize,
    /// Tasks per HTTP request.
    pub batch: usize,
    /// Concurrent client threads.
    pub clients: usize,
    /// Seconds from the first submission to the last acknowledgement.
    pub submit_secs: f64,
    /// Seconds from the first submission to the last task finished.
    pub total_secs: f64,
    /// Acknowledged tasks per second.
    pub submitted_per_sec: f64,
    /// Finished tasks per second, over the whole run.
    pub tasks_per_sec: f64,
    /// Submit-to-finish latency percentiles, ms.
    pub latency_p50_ms: u64,
    /// 99th percentile.
    pub latency_p99_ms: u64,
    /// Slowest task.
    pub latency_max_ms: u64,
    /// Highest peak RSS of any node, bytes.
    pub peak_rss_bytes: u64,
}

/// Loopback ports free for both TCP and UDP right now.
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < count {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
        held.push(listener);
    }
    Ok(ports)
}

/// A scratch folder removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh local cluster in a scratch folder; stopped and removed when
/// dropped (nodes first: fields drop in order).
struct BenchCluster {
    nodes: Vec<LocalNode>,
    _scratch: Scratch,
}

impl BenchCluster {
    fn start(
        nodes: usize,
        replication: usize,
        workers: usize,
        extra: &str,
        log_format: LogFormat,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(nodes >= 1, "--nodes must be at least 1");
        let scratch =
            Scratch(std::env::temp_dir().join(format!("troupe-bench-{}", std::process::id())));
        std::fs::create_dir_all(&scratch.0)?;
        let config_path = write_config(&scratch.0, nodes, replication, workers, extra)?;
        let config = ClusterConfig::load(&config_path)?;
        let launch = Launch::this_binary(&config_path, log_format)?;
        let nodes = config
            .nodes
            .iter()
            .map(|entry| launch.start(&config, entry))
            .collect::<anyhow::Result<Vec<_>>>()?;
        await_ready(&nodes, Duration::from_secs(30))?;
        Ok(Self {
            nodes,
            _scratch: scratch,
        })
    }

    fn stop(&mut self) {
        for node in &mut self.nodes {
            node.stop(Duration::from_secs(15));
        }
    }
}

fn write_config(
    dir: &std::path::Path,
    nodes: usize,
    replication: usize,
    workers: usize,
    extra: &str,
) -> anyhow::Result<PathBuf> {
    let ports = free_ports(nodes * 3)?;
    let mut text = format!(
        "[cluster]\nname = \"bench-{}\"\nreplication = {replication}\nsecret = \"bench\"\n\n[workers]\ncount = {workers}\n",
        std::process::id(),
    );
    for (i, ports) in ports.chunks(3).enumerate() {
        let _ = write!(
            text,
            "\n[[nodes]]\nid = \"n{n}\"\nhttp = \"127.0.0.1:{}\"\ncluster = \"127.0.0.1:{}\"\ngossip = \"127.0.0.1:{}\"\ndata_dir = \"n{n}\"\n",
            ports[0],
            ports[1],
            ports[2],
            n = i + 1
        );
    }
    text.push_str(extra);
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Tasks finished on all nodes: the succeeded ones (the bench's tasks
/// cannot fail).
fn finished_tasks(nodes: &[LocalNode]) -> u64 {
    nodes
        .iter()
        .map(|node| metric(&node.metrics(), "troupe_tasks_total{event=\"succeeded\"}") as u64)
        .sum()
}

fn batch_body(start: usize, len: usize) -> String {
    let mut body = String::with_capacity(len * 32);
    body.push('[');
    for i in start..start + len {
        if i > start {
            body.push(',');
        }
        let _ = write!(body, r#"{{"kind":"echo","input":{i}}}"#);
    }
    body.push(']');
    body
}

/// Submits every batch; returns the send time (ms) of each task id.
fn submit_all(nodes: &[LocalNode], args: &BenchTasksArgs) -> anyhow::Result<HashMap<String, u64>> {
    let batches = args.tasks.div_ceil(args.batch);
    let next = AtomicUsize::new(0);
    let sent: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::with_capacity(args.tasks));
    let clients: Vec<Client> = nodes
        .iter()
        .map(|node| node.client(Duration::from_secs(60)))
        .collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..args.clients)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let batch = next.fetch_add(1, Ordering::Relaxed);
                        if batch >= batches {
                            return Ok(());
                        }
                        let start = batch * args.batch;
                        let len = args.batch.min(args.tasks - start);
                        let node = batch % nodes.len();
                        let at = now_ms();
                        let accepted: Vec<TaskAccepted> = clients[node]
                            .post("/v1/tasks", "application/json", &batch_body(start, len))
                            .with_context(|| {
                                format!("submitting batch {batch} to {}", nodes[node].id)
                            })?;
                        anyhow::ensure!(accepted.len() == len, "batch {batch}: short reply");
                        let mut sent = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                        sent.extend(accepted.into_iter().map(|a| (a.id, at)));
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
        })
    })?;
    sent.into_inner()
        .map_err(|_| anyhow::anyhow!("a client thread panicked"))
}

/// Every task's finish time, read back page by page (any node lists the
/// whole cluster's tasks).
fn finish_times(node: &LocalNode) -> anyhow::Result<HashMap<String, u64>> {
    let mut finished = HashMap::new();
    for_each_task(
        &node.client(DEFAULT_TIMEOUT),
        "limit=1000&state=succeeded",
        |task| {
            if let Some(at) = task.finished_at_ms {
                finished.insert(task.id, at);
            }
        },
    )?;
    Ok(finished)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Runs the benchmark and prints its report.
pub fn tasks(args: &BenchTasksArgs, global: &GlobalArgs) -> anyhow::Result<TaskBenchReport> {
    let mut cluster = BenchCluster::start(
        args.nodes,
        args.replication,
        args.workers,
        "",
        global.log_format,
    )?;
    let nodes = &cluster.nodes;
    eprintln!(
        "{} nodes ready; submitting {} tasks in batches of {} from {} clients",
        nodes.len(),
        args.tasks,
        args.batch,
        args.clients
    );

    let began = Instant::now();
    let sent = submit_all(nodes, args)?;
    let submit_secs = began.elapsed().as_secs_f64();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while finished_tasks(nodes) < args.tasks as u64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "tasks did not finish within {DRAIN_TIMEOUT:?} of the last submission"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let total_secs = began.elapsed().as_secs_f64();
    let peak_rss_bytes = nodes
        .iter()
        .filter_map(LocalNode::peak_rss)
        .max()
        .unwrap_or(0);

    let finished = finish_times(&nodes[0])?;
    let mut latencies: Vec<u64> = sent
        .iter()
        .filter_map(|(id, at)| finished.get(id).map(|done| done.saturating_sub(*at)))
        .collect();
    anyhow::ensure!(
        latencies.len() == args.tasks,
        "{} of {} tasks were read back as succeeded",
        latencies.len(),
        args.tasks
    );
    latencies.sort_unstable();
    cluster.stop();
    let report = TaskBenchReport {
        nodes: args.nodes,
        replication: args.replication,
        workers: args.workers,
        tasks: args.tasks,
        batch: args.batch,
        clients: args.clients,
        submit_secs,
        total_secs,
        submitted_per_sec: args.tasks as f64 / submit_secs,
        tasks_per_sec: args.tasks as f64 / total_secs,
        latency_p50_ms: percentile(&latencies, 0.50),
        latency_p99_ms: percentile(&latencies, 0.99),
        latency_max_ms: latencies.last().copied().unwrap_or(0),
        peak_rss_bytes,
    };
    match global.output {
        Output::Json => print_json(&report)?,
        Output::Table => print!("{}", render(&report)),
    }
    Ok(report)
}

fn render(r: &TaskBenchReport) -> String {
    format!(
        "tasks: {} no-op tasks on {} nodes (R={}, {} workers each), batches of {}, {} clients\n\
         submitted:  {:>9.0} tasks/s  ({:.2} s to acknowledge all)\n\
         finished:   {:>9.0} tasks/s  ({:.2} s from first submit to last finish)\n\
         latency:    p50 {} ms  p99 {} ms  max {} ms  (client send → finished_at)\n\
         peak RSS:   {:.1} MiB (largest node)\n",
        r.tasks,
        r.nodes,
        r.replication,
        r.workers,
        r.batch,
        r.clients,
        r.submitted_per_sec,
        r.submit_secs,
        r.tasks_per_sec,
        r.total_secs,
        r.latency_p50_ms,
        r.latency_p99_ms,
        r.latency_max_ms,
        r.peak_rss_bytes as f64 / (1024.0 * 1024.0)
    )
}

/// The figures of an ingestion run.
#[derive(Debug, Serialize)]
pub struct EventBenchReport {
    /// Events sent (one NDJSON request).
    pub events: u64,
    /// Body size, bytes.
    pub bytes: u64,
    /// Seconds from the first byte sent to the 202.
    pub secs: f64,
    /// Events accepted per second.
    pub events_per_sec: f64,
    /// Seconds from the first byte until the pipeline's windows covered
    /// every event.
    pub windowed_secs: f64,
    /// Events per second through ingestion and windowing.
    pub windowed_events_per_sec: f64,
    /// Body bytes per second, MiB.
    pub mib_per_sec: f64,
    /// The node's peak RSS until the ingestion was acknowledged, bytes.
    pub ingest_peak_rss_bytes: u64,
    /// The node's peak RSS until the pipeline caught up too, bytes.
    pub peak_rss_bytes: u64,
}

/// The pipeline the events bench feeds: 1 s tumbling windows per source.
const PIPELINE: &str = "\n[[pipelines]]\nid = \"bench\"\nevent_type = \"reading\"\nkey_by = \"source\"\n\
window = { kind = \"tumbling\", size_ms = 1000 }\n\
aggregates = [{ op = \"count\" }, { op = \"avg\", field = \"data.temperature\" }, { op = \"max\", field = \"data.temperature\" }]\n\
watermark_delay_ms = 500\n";

/// An NDJSON body made as it is read, so the client holds none of it.
struct EventStream {
    next: u64,
    count: u64,
    sources: u64,
    line: Vec<u8>,
    at: usize,
    sent: u64,
}

impl std::io::Read for EventStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut written = 0;
        while written < buf.len() {
            if self.at == self.line.len() {
                if self.next == self.count {
                    break;
                }
                let i = self.next;
                // Written piecewise (the client shares the two cores with
                // the node; formatting each line took 3% of the run).
                let mut n = itoa::Buffer::new();
                let line = &mut self.line;
                line.clear();
                line.extend_from_slice(br#"{"event_id":"bench-"#);
                line.extend_from_slice(n.format(i).as_bytes());
                line.extend_from_slice(br#"","source":"sensor-"#);
                line.extend_from_slice(n.format(i % self.sources).as_bytes());
                line.extend_from_slice(br#"","event_type":"reading","timestamp":"#);
                line.extend_from_slice(n.format(1_767_225_600_000 + i).as_bytes());
                line.extend_from_slice(br#","data":{"temperature":"#);
                line.extend_from_slice(n.format(i % 40).as_bytes());
                line.extend_from_slice(br#".5,"seq":"#);
                line.extend_from_slice(n.format(i).as_bytes());
                line.extend_from_slice(b"}}\n");
                self.at = 0;
                self.next += 1;
            }
            let n = (self.line.len() - self.at).min(buf.len() - written);
            buf[written..written + n].copy_from_slice(&self.line[self.at..self.at + n]);
            self.at += n;
            written += n;
        }
        self.sent += written as u64;
        Ok(written)
    }
}

/// Streams one NDJSON request of `--events` events into a fresh node and
/// reports the rate and the node's peak memory.
pub fn events(args: &BenchEventsArgs, global: &GlobalArgs) -> anyhow::Result<EventBenchReport> {
    let pipeline = match &args.transform {
        Some(filter) => format!(
            "{PIPELINE}transform = {{ plugin = \"json.transform\", with = {{ filter = {} }} }}\n",
            toml::Value::String(filter.clone())
        ),
        None => PIPELINE.to_owned(),
    };
    let mut cluster = BenchCluster::start(1, 1, 1, &pipeline, global.log_format)?;
    let node = &cluster.nodes[0];
    eprintln!(
        "node ready; streaming {} events in one NDJSON request",
        args.events
    );
    let mut body = EventStream {
        next: 0,
        count: args.events,
        sources: args.sources,
        line: Vec::new(),
        at: 0,
        sent: 0,
    };
    let began = Instant::now();
    let reply: troupe_protocol::IngestReply = node
        .client(Duration::from_secs(3600))
        .post_reader("/v1/events", "application/x-ndjson", &mut body)
        .context("streaming the events")?;
    let secs = began.elapsed().as_secs_f64();
    let ingest_peak_rss = node.peak_rss().unwrap_or(0);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let client = node.client(DEFAULT_TIMEOUT);
    loop {
        let covered = client
            .get::<serde_json::Value>("/v1/pipelines")
            .ok()
            .and_then(|v| v[0]["offset"].as_u64())
            .unwrap_or(0);
        if covered >= args.events {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the pipeline did not catch up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let windowed_secs = began.elapsed().as_secs_f64();
    anyhow::ensure!(
        reply.accepted == args.events,
        "{} of {} events accepted",
        reply.accepted,
        args.events
    );
    let report = EventBenchReport {
        events: args.events,
        bytes: body.sent,
        secs,
        events_per_sec: args.events as f64 / secs,
        windowed_secs,
        windowed_events_per_sec: args.events as f64 / windowed_secs,
        mib_per_sec: body.sent as f64 / secs / (1024.0 * 1024.0),
        ingest_peak_rss_bytes: ingest_peak_rss,
        peak_rss_bytes: node.peak_rss().unwrap_or(0),
    };
    cluster.stop();
    match global.output {
        Output::Json => print_json(&report)?,
        Output::Table => println!(
            "events: {} in one NDJSON request ({:.1} MiB) to one node\n\
             ingested: {:>9.0} events/s  ({:.1} MiB/s, {:.2} s, in the event log, flushed)\n\
             windowed: {:>9.0} events/s  ({:.2} s until a 1 s tumbling pipeline covered them all)\n\
             peak RSS: {:.1} MiB while ingesting, {:.1} MiB until windowed",
            report.events,
            report.bytes as f64 / (1024.0 * 1024.0),
            report.events_per_sec,
            report.mib_per_sec,
            report.secs,
            report.windowed_events_per_sec,
            report.windowed_secs,
            report.ingest_peak_rss_bytes as f64 / (1024.0 * 1024.0),
            report.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        ),
    }
    Ok(report)
}
