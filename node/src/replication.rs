//! State changes on their way to replicas, batched per peer.
//!
//! The task table hands over every change (started, finished, retrying)
//! without waiting. Each peer has one queue and one sender loop: while a
//! batch is on the wire, the next one gathers, and a task that changed
//! twice in that time travels once, in its latest state. So under load a
//! replica sees one request per round trip rather than one per change, and
//! the table never waits on a peer. A replica keeps these without flushing
//! (the owner does not flush its own copy of them either); only the first
//! copy of a submission is flushed on both sides before it is acknowledged.
//! A change that cannot be delivered (the peer is down) is dropped: the
//! replica has the submission, and the owner has the latest state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use troupe_actors::scheduler::ReplicateFn;
use troupe_protocol::wire::PeerRequest;
use troupe_protocol::TaskRecord;

use crate::transport::Peers;

/// Most records in one replication request.
const MAX_BATCH: usize = 4_096;
/// How long a replica may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps the latest record of each task, in first-seen order.
fn latest_per_task(records: Vec<TaskRecord>) -> Vec<TaskRecord> {
    let mut index: HashMap<String, usize> = HashMap::with_capacity(records.len());
    let mut out: Vec<TaskRecord> = Vec::with_capacity(records.len());
    for record in records {
        match index.get(&record.id) {
            Some(&at) => out[at] = record,
            None => {
                index.insert(record.id.clone(), out.len());
                out.push(record);
            }
        }
    }
    out
}

async fn send_loop(
    peers: Arc<Peers>,
    node: String,
    mut queue: mpsc::UnboundedReceiver<TaskRecord>,
) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let records = latest_per_task(std::mem::take(&mut batch));
        let count = records.len();
        if let Err(e) = peers
            .call(&node, PeerRequest::Update { records }, TIMEOUT)
            .await
        {
            tracing::debug!(peer = %node, count, "state changes not replicated: {e}");
        }
    }
}

/// Starts one sender loop per peer; the returned function queues a record
/// for a peer. Must be called inside the runtime.
pub fn start(peers: &Arc<Peers>, nodes: impl IntoIterator<Item = String>) -> ReplicateFn {
    let queues: HashMap<String, mpsc::UnboundedSender<TaskRecord>> = nodes
        .into_iter()
        .map(|node| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(send_loop(Arc::clone(peers), node.clone(), rx));
            (node, tx)
        })
        .collect();
    Arc::new(move |node: &str, record: TaskRecord| {
        if let Some(queue) = queues.get(node) {
            let _ = queue.send(record);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_protocol::{SubmitTask, TaskState};

    fn record(id: &str, state: TaskState) -> TaskRecord {
        let mut record =
            TaskRecord::from_submission(id.into(), SubmitTask::default(), "n1".into(), 0);
        record.state = state;
        record
    }

    #[test]
    fn a_task_changed_twice_travels_once_in_its_latest_state() {
        let batch = latest_per_task(vec![
            record("a", TaskState::Running),
            record("b", TaskState::Running),
            record("a", TaskState::Succeeded),
        ]);
        let got: Vec<(&str, TaskState)> = batch.iter().map(|r| (r.id.as_str(), r.state)).collect();
        assert_eq!(
            got,
            [("a", TaskState::Succeeded), ("b", TaskState::Running)]
        );
    }
}
