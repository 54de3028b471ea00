//! One attempt of one task, run by a worker of ractor's factory.
//!
//! The worker reports to the task table — started, then how it ended —
//! through an [`AttemptReport`] that also reports when dropped unsent: a
//! worker that panics (the `panic` kind, or a bug in a plugin) still tells the table
//! its attempt crashed, and the factory replaces the worker. Timeout and
//! cancellation race the work in a `select!`, so `DELETE` reaches a
//! running task without messaging a busy worker.

use std::sync::Arc;
use std::time::Duration;

use ractor::factory::{FactoryMessage, Job, Worker, WorkerId};
use ractor::{ActorProcessingErr, ActorRef};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use troupe_protocol::Priority;

use super::gauges::PoolGauges;
use super::kinds;
use crate::directory::ActorDirectory;
use crate::plugins::PluginHost;
use crate::scheduler::SchedulerMsg;
use crate::tree::SCHEDULER;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// With this result.
    Succeeded(Value),
    /// The task reported an error.
    Failed(String),
    /// The worker died under it.
    Crashed(String),
    /// It ran past its timeout.
    TimedOut,
    /// It was cancelled.
    Cancelled,
}

/// Tells the task table about one attempt; reports a crash if dropped
/// without a final outcome.
pub struct AttemptReport {
    directory: ActorDirectory,
    id: String,
    attempt: u32,
    done: bool,
}

impl AttemptReport {
    /// A report for attempt `attempt` of task `id`.
    pub fn new(directory: ActorDirectory, id: String, attempt: u32) -> Self {
        Self {
            directory,
            id,
            attempt,
            done: false,
        }
    }

    fn send(&self, message: SchedulerMsg) {
        // Resolved on each use: the table may have restarted since dispatch.
        if let Some(table) = self.directory.get::<SchedulerMsg>(SCHEDULER) {
            let _ = table.send_message(message);
        }
    }

    fn started(&self) {
        self.send(SchedulerMsg::AttemptStarted {
            id: self.id.clone(),
            attempt: self.attempt,
        });
    }

    fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.send(SchedulerMsg::AttemptDone {
            id: self.id.clone(),
            attempt: self.attempt,
            outcome,
        });
    }
}

impl Drop for AttemptReport {
    fn drop(&mut self) {
        if !self.done {
            self.send(SchedulerMsg::AttemptDone {
                id: self.id.clone(),
                attempt: self.attempt,
                outcome: Outcome::Crashed("the worker running it crashed".into()),
            });
        }
    }
}

/// One attempt to run, as queued in the pool.
pub struct TaskJob {
    /// Plugin name.
    pub kind: String,
    /// Plugin input.
    pub input: Value,
    /// Queue lane.
    pub priority: Priority,
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// Fired by `DELETE` or the timeout.
    pub cancel: CancellationToken,
    /// Where the attempt's fate goes.
    pub report: Option<AttemptReport>,
}

impl TaskJob {
    /// A job with nothing to report to, for queue tests.
    pub fn for_test(key: &str, priority: Priority) -> Job<String, TaskJob> {
        Job::new(
            key.to_owned(),
            TaskJob {
                kind: "echo".into(),
                input: Value::Null,
                priority,
                timeout: None,
                cancel: CancellationToken::new(),
                report: None,
            },
        )
    }
}

/// A worker of the task pool.
#[derive(Debug, Clone)]
pub struct TaskWorker {
    /// Counts this worker busy while it runs an attempt.
    pub gauges: Arc<PoolGauges>,
    /// The plugins that run attempts.
    pub host: Arc<PluginHost>,
}

impl Worker for TaskWorker {
    type Key = String;
    type Message = TaskJob;
    type Arguments = ();
    type State = ();

    async fn pre_start(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<String, TaskJob>>,
        _: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<String, TaskJob>>,
        Job { key, msg, .. }: Job<String, TaskJob>,
        _state: &mut (),
    ) -> Result<String, ActorProcessingErr> {
        let TaskJob {
            kind,
            input,
            timeout,
            cancel,
            report,
            ..
        } = msg;
        let _busy = self.gauges.busy_while();
        if let Some(report) = &report {
            report.started();
        }
        let plugin = self.host.get(&kind).cloned();
        let outcome = match plugin {
            _ if cancel.is_cancelled() => Outcome::Cancelled,
            None => Outcome::Failed(format!("this node does not run plugin {kind:?}")),
            Some(plugin) => {
                let cx = self.host.context(cancel.clone());
                if kind == kinds::HANG {
                    // Deaf to its timeout and to cancellation, like a plugin
                    // stuck in a call: only the stuck-worker check ends it.
                    match plugin.process(input, &cx).await {
                        Ok(value) => Outcome::Succeeded(value),
                        Err(error) => Outcome::Failed(error.to_string()),
                    }
                } else {
                    let deadline = async {
                        match timeout {
                            Some(limit) => tokio::time::sleep(limit).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        result = plugin.process(input, &cx) => match result {
                            _ if cancel.is_cancelled() => Outcome::Cancelled,
                            Ok(value) => Outcome::Succeeded(value),
                            Err(error) => Outcome::Failed(error.to_string()),
                        },
                        () = cancel.cancelled() => Outcome::Cancelled,
                        () = deadline => {
                            cancel.cancel();
                            Outcome::TimedOut
                        }
                    }
                }
            }
        };
        if let Some(report) = report {
            report.finish(outcome);
        }
        Ok(key)
    }
}
