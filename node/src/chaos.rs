//! `troupe chaos`: kill nodes under load and count what was lost.
//!
//! Starts every node of the config as a local process, submits N short
//! tasks spread over the run (batches to random nodes; a batch that fails
//! because its node died is sent again elsewhere under the same idempotency
//! keys, so a retry never makes a second task), and SIGKILLs K random nodes
//! at random moments. For each kill it measures how long until every other
//! node declares the victim dead and until the survivors have re-queued its
//! tasks, then restarts it. When the submissions are done it waits for the
//! cluster to settle and reads every acknowledged task back: a task no node
//! knows is lost. Duplicate runs are the attempts recorded as `interrupted`
//! (cut short by a kill, then run again).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::ProgressBar;
use serde::Serialize;
use troupe_protocol::{ClusterView, MemberState, TaskAccepted, TaskRecord};

use crate::cli::{ChaosArgs, GlobalArgs, Output};
use crate::client::{token_for, Client, ClientError, DEFAULT_TIMEOUT};
use crate::config::ClusterConfig;
use crate::local::{await_ready, for_each_task, metric, Launch, LocalNode};
use crate::output::{print_json, progress_bar};

/// Tasks per submission request.
const BATCH: usize = 50;
/// How long the cluster may take to finish everything after the run.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one submission request may take.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a killed node may take to be declared dead before we give up.
const DEATH_TIMEOUT: Duration = Duration::from_secs(15);
/// Re-queueing is over when no more tasks were adopted for this long.
const REQUEUE_QUIET: Duration = Duration::from_millis(1500);

/// What happened to one killed node.
#[derive(Debug, Clone, Serialize)]
pub struct KillReport {
    /// The node.
    pub node: String,
    /// Seconds into the run when it was killed.
    pub at_secs: f64,
    /// Kill → every other node declares it dead, ms.
    pub declared_dead_ms: Option<u64>,
    /// Kill → the survivors had re-queued its unfinished tasks, ms (none
    /// when it had none).
    pub requeued_ms: Option<u64>,
    /// Tasks re-queued by the survivors.
    pub requeued: u64,
}

/// The summary of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    /// Tasks acknowledged.
    pub submitted: usize,
    /// Acknowledged tasks that succeeded.
    pub succeeded: usize,
    /// Acknowledged tasks that ended otherwise (failed, timed out, cancelled).
    pub failed: usize,
    /// Acknowledged tasks still unfinished when the wait ended.
    pub unfinished: usize,
    /// Acknowledged tasks no node knows.
    pub lost: usize,
    /// Attempts cut short by a kill and run again.
    pub duplicate_runs: usize,
    /// Submission requests sent again after a node failed them.
    pub resubmitted_batches: usize,
    /// Each kill.
    pub kills: Vec<KillReport>,
    /// Seconds from the first submission to a settled cluster.
    pub total_secs: f64,
}

struct Nodes {
    nodes: Mutex<Vec<LocalNode>>,
    down: Mutex<HashSet<String>>,
}

impl Nodes {
    /// The HTTP APIs of the nodes not killed now.
    fn up(&self, timeout: Duration) -> Vec<Client> {
        let down = self.down.lock().map(|d| d.clone()).unwrap_or_default();
        self.nodes
            .lock()
            .map(|nodes| {
                nodes
                    .iter()
                    .filter(|n| !down.contains(&n.id))
                    .map(|n| n.client(timeout))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn submit_all(
    args: &ChaosArgs,
    nodes: &Nodes,
    run: &str,
    bar: &ProgressBar,
) -> anyhow::Result<(Vec<String>, usize)> {
    let batches = args.tasks.div_ceil(BATCH);
    let spacing = Duration::from_secs_f64(args.duration as f64 * 0.8 / batches.max(1) as f64);
    let began = Instant::now();
    let mut acked = Vec::with_capacity(args.tasks);
    let mut resubmitted = 0;
    for b in 0..batches {
        let due = began + spacing * b as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let body: Vec<serde_json::Value> = (b * BATCH..((b + 1) * BATCH).min(args.tasks))
            .map(|i| {
                serde_json::json!({
                    "kind": "sleep",
                    "input": {"ms": fastrand::u64(1..=args.task_ms.max(1))},
                    "key": format!("chaos-{run}-{i}"),
                    "max_retries": 3,
                })
            })
            .collect();
        let body = serde_json::Value::Array(body).to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = nodes.up(SUBMIT_TIMEOUT);
            anyhow::ensure!(!up.is_empty(), "no node is up to submit to");
            let node = &up[fastrand::usize(..up.len())];
            match node.post::<Vec<TaskAccepted>>("/v1/tasks", "application/json", &body) {
                Ok(accepted) => {
                    bar.inc(accepted.len() as u64);
                    acked.extend(accepted.into_iter().map(|a| a.id));
                    break;
                }
                // Retrying would not change these.
                Err(
                    e @ (ClientError::Unreadable { .. }
                    | ClientError::Refused {
                        status: 401 | 403 | 422,
                        ..
                    }),
                ) => return Err(e.into()),
                Err(e) => {
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "batch {b} was refused for a minute; last error: {e}"
                    );
                    resubmitted += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
    // Keys were retried, ids may repeat: one entry per task.
    acked.sort();
    acked.dedup();
    Ok((acked, resubmitted))
}

/// Kills `victim`, measures death and re-queueing, restarts it.
fn kill_one(
    nodes: &Nodes,
    config: &ClusterConfig,
    launch: &Launch,
    victim: usize,
    began: Instant,
) -> anyhow::Result<KillReport> {
    let (id, survivors) = {
        let guard = nodes
            .nodes
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let id = guard[victim].id.clone();
        let survivors: Vec<Client> = guard
            .iter()
            .filter(|n| n.id != id)
            .map(|n| n.client(DEFAULT_TIMEOUT))
            .collect();
        (id, survivors)
    };
    let adopted = || -> f64 {
        survivors
            .iter()
            .filter_map(|node| node.get_raw("/metrics").ok())
            .map(|(_, text)| metric(&text, "troupe_tasks_adopted_total"))
            .sum()
    };
    let before = adopted();
    nodes
        .down
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .insert(id.clone());
    let killed = Instant::now();
    {
        let mut guard = nodes
            .nodes
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        guard[victim].signal(libc::SIGKILL);
        guard[victim].wait(Duration::from_secs(5));
    }
    let dead_everywhere = || {
        survivors.iter().all(|node| {
            node.get::<ClusterView>("/v1/cluster")
                .ok()
                .is_some_and(|view| {
                    view.members
                        .iter()
                        .any(|m| m.id == id && m.state == MemberState::Dead)
                })
        })
    };
    let mut declared_dead_ms = None;
    while killed.elapsed() < DEATH_TIMEOUT {
        if dead_everywhere() {
            declared_dead_ms = Some(killed.elapsed().as_millis() as u64);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Re-queueing follows the death; it is over once adoptions stop.
    let mut last = before;
    let mut last_change = None;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < REQUEUE_QUIET {
        let now = adopted();
        if now > last {
            last = now;
            last_change = Some(killed.elapsed());
            quiet_since = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let entry = config
        .nodes
        .iter()
        .find(|n| n.id == id)
        .context("killed node is not in the config")?;
    let restarted = launch.start(config, entry)?;
    await_ready(std::slice::from_ref(&restarted), Duration::from_secs(30))?;
    nodes
        .nodes
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?[victim] = restarted;
    nodes
        .down
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .remove(&id);
    Ok(KillReport {
        node: id,
        at_secs: (killed - began).as_secs_f64(),
        declared_dead_ms,
        requeued_ms: last_change.map(|d| d.as_millis() as u64),
        requeued: (last - before) as u64,
    })
}

/// Every task the cluster lists (any node lists them all); empty when the
/// node asked cannot list now, and the caller asks again.
fn read_back(nodes: &Nodes) -> HashMap<String, TaskRecord> {
    let mut records: HashMap<String, TaskRecord> = HashMap::new();
    let up = nodes.up(DEFAULT_TIMEOUT);
    let Some(node) = up.get(fastrand::usize(..up.len().max(1))) else {
        return records;
    };
    if for_each_task(node, "limit=1000", |task| {
        records.insert(task.id.clone(), task);
    })
    .is_err()
    {
        records.clear();
    }
    records
}

/// Runs the chaos test and prints its summary.
pub fn run(
    args: &ChaosArgs,
    config: &ClusterConfig,
    global: &GlobalArgs,
) -> anyhow::Result<ChaosReport> {
    anyhow::ensure!(
        args.kill == 0 || config.nodes.len() > 1,
        "--kill needs a cluster of at least two nodes"
    );
    for entry in &config.nodes {
        anyhow::ensure!(
            Client::new(&entry.http.to_string(), None, DEFAULT_TIMEOUT)
                .get_raw("/health")
                .is_err(),
            "node {} already answers on {}; stop the cluster first (`troupe cluster down`)",
            entry.id,
            entry.http
        );
    }
    let mut launch = Launch::this_binary(&args.config, global.log_format)?;
    launch.token = token_for(config, global.token.as_deref())?;
    let output = global.output;
    let started = config
        .nodes
        .iter()
        .map(|entry| launch.start(config, entry))
        .collect::<anyhow::Result<Vec<_>>>()?;
    await_ready(&started, Duration::from_secs(30))?;
    let nodes = Arc::new(Nodes {
        nodes: Mutex::new(started),
        down: Mutex::new(HashSet::new()),
    });
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let bar = progress_bar(
        args.tasks as u64,
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} acknowledged  {msg}",
        output,
    );

    let began = Instant::now();
    let duration = Duration::from_secs(args.duration);
    let mut moments: Vec<Duration> = (0..args.kill)
        .map(|_| duration.mul_f64(0.1 + 0.6 * fastrand::f64()))
        .collect();
    moments.sort();
    let (submitted, kills) = std::thread::scope(|scope| {
        let killer = scope.spawn(|| -> anyhow::Result<Vec<KillReport>> {
            let mut reports = Vec::new();
            for at in &moments {
                if let Some(wait) = (began + *at).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let count = nodes.nodes.lock().map(|n| n.len()).unwrap_or(0);
                let victim = fastrand::usize(..count);
                bar.set_message(format!("killing node {}", victim + 1));
                let report = kill_one(&nodes, config, &launch, victim, began)?;
                bar.set_message(format!(
                    "{} killed, declared dead in {} ms, restarted",
                    report.node,
                    report.declared_dead_ms.unwrap_or(0)
                ));
                reports.push(report);
            }
            Ok(reports)
        });
        let submitted = submit_all(args, &nodes, &run_id, &bar);
        let kills = killer
            .join()
            .map_err(|_| anyhow::anyhow!("the killer thread panicked"))?;
        Ok::<_, anyhow::Error>((submitted?, kills?))
    })?;
    let (acked, resubmitted_batches) = submitted;
    bar.finish_with_message("all submitted; waiting for the cluster to settle");

    let settle = progress_bar(
        acked.len() as u64,
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} finished",
        output,
    );
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let records = loop {
        let records = read_back(&nodes);
        let finished = acked
            .iter()
            .filter(|id| records.get(*id).is_some_and(|r| r.state.is_terminal()))
            .count();
        settle.set_position(finished as u64);
        if finished == acked.len() || Instant::now() >= deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    settle.finish();
    let total_secs = began.elapsed().as_secs_f64();

    let mut report = ChaosReport {
        submitted: acked.len(),
        succeeded: 0,
        failed: 0,
        unfinished: 0,
        lost: 0,
        duplicate_runs: 0,
        resubmitted_batches,
        kills,
        total_secs,
    };
    for id in &acked {
        match records.get(id) {
            None => report.lost += 1,
            Some(record) => {
                report.duplicate_runs += record
                    .attempts
                    .iter()
                    .filter(|a| a.outcome.as_deref() == Some("interrupted"))
                    .count();
                match record.state {
                    troupe_protocol::TaskState::Succeeded => report.succeeded += 1,
                    state if state.is_terminal() => report.failed += 1,
                    _ => report.unfinished += 1,
                }
            }
        }
    }
    if let Ok(mut guard) = nodes.nodes.lock() {
        for node in guard.iter_mut() {
            node.stop(Duration::from_secs(15));
        }
    }
    match output {
        Output::Json => print_json(&report)?,
        Output::Table => print!("{}", render(&report)),
    }
    Ok(report)
}

fn render(r: &ChaosReport) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "submitted {}  succeeded {}  failed {}  unfinished {}  lost {}  duplicate runs {}  (resubmitted batches {}, {:.1} s)\n",
        r.submitted,
        r.succeeded,
        r.failed,
        r.unfinished,
        r.lost,
        r.duplicate_runs,
        r.resubmitted_batches,
        r.total_secs
    );
    let ms = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"));
    for k in &r.kills {
        let _ = writeln!(
            out,
            "kill {:<6} at {:>5.1} s: declared dead after {}, {} tasks re-queued after {}",
            k.node,
            k.at_secs,
            ms(k.declared_dead_ms),
            k.requeued,
            ms(k.requeued_ms)
        );
    }
    out
}
