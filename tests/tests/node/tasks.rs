//! Running tasks on one node: kinds, retries, timeout, cancel, priorities
//! and the worker pool, all over HTTP.

use std::time::Duration;

use serde_json::{json, Value};
use troupe_tests::{wait_until, Cluster};

const FINISH: Duration = Duration::from_secs(20);

fn submit(cluster: &Cluster, body: Value) -> String {
    let reply = cluster.post("n1", "/v1/tasks", &body.to_string());
    assert_eq!(reply.status, 202, "{}", reply.text);
    reply.body["id"].as_str().expect("id").to_owned()
}

fn task(cluster: &Cluster, id: &str) -> Value {
    let reply = cluster.get("n1", &format!("/v1/tasks/{id}"));
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

fn await_state(cluster: &Cluster, id: &str, state: &str) -> Value {
    wait_until(FINISH, &format!("task {id} to be {state}"), || {
        task(cluster, id)["state"] == state
    });
    task(cluster, id)
}

fn outcomes(record: &Value) -> Vec<String> {
    record["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["outcome"].as_str().unwrap_or("-").to_owned())
        .collect()
}

fn put_workers(cluster: &Cluster, body: &str) -> troupe_tests::Reply {
    let url = format!("{}/v1/workers", cluster.url("n1"));
    match ureq::put(&url)
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            let text = r.into_string().unwrap_or_default();
            troupe_tests::Reply {
                status,
                body: serde_json::from_str(&text).unwrap_or(Value::Null),
                text,
            }
        }
        Err(e) => panic!("PUT /v1/workers: {e}"),
    }
}

#[test]
fn each_kind_reaches_its_terminal_state_with_its_attempts_recorded() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);
    let echo = submit(
        &cluster,
        json!({"kind": "echo", "input": {"hello": "world"}}),
    );
    let cpu = submit(
        &cluster,
        json!({"kind": "cpu", "input": {"iterations": 200000}}),
    );
    let fail = submit(
        &cluster,
        json!({"kind": "fail", "input": {"message": "boom"}, "max_retries": 2, "backoff": {"initial_ms": 10, "max_ms": 50}}),
    );
    let panic = submit(
        &cluster,
        json!({"kind": "panic", "max_retries": 1, "backoff": {"initial_ms": 10, "max_ms": 20}}),
    );
    let slow = submit(
        &cluster,
        json!({"kind": "sleep", "input": {"ms": 10000}, "timeout_ms": 200}),
    );

    let record = await_state(&cluster, &echo, "succeeded");
    assert_eq!(record["result"], json!({"hello": "world"}));
    assert_eq!(outcomes(&record), ["succeeded"]);
    assert_eq!(record["attempts"][0]["node"], "n1");

    let record = await_state(&cluster, &cpu, "succeeded");
    assert_eq!(record["result"]["iterations"], 200000);
    assert_eq!(record["result"]["digest"].as_str().map(str::len), Some(16));

    let record = await_state(&cluster, &fail, "failed");
    assert_eq!(outcomes(&record), ["failed: boom"; 3]);
    assert_eq!(record["error"], "boom");

    // The worker panicked each time; the pool replaced it and the retry ran.
    let record = await_state(&cluster, &panic, "failed");
    let crashed = outcomes(&record);
    assert_eq!(crashed.len(), 2, "{record}");
    assert!(crashed.iter().all(|o| o.starts_with("crashed")), "{record}");

    let record = await_state(&cluster, &slow, "timed_out");
    assert_eq!(outcomes(&record), ["timed_out"]);
    let attempt = &record["attempts"][0];
    let ran = attempt["finished_at_ms"].as_u64().unwrap_or(0)
        - attempt["started_at_ms"].as_u64().unwrap_or(0);
    assert!((200..2000).contains(&ran), "timed out after {ran} ms");

    // The pool still works after all that.
    let after = submit(&cluster, json!({"kind": "echo", "input": 1}));
    await_state(&cluster, &after, "succeeded");
    let metrics = cluster.get("n1", "/metrics").text;
    assert!(
        metrics.contains(r#"troupe_tasks_total{event="retried"} 3"#),
        "{metrics}"
    );
}

#[test]
fn cancel_reaches_a_running_task() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);
    let id = submit(&cluster, json!({"kind": "sleep", "input": {"ms": 30000}}));
    await_state(&cluster, &id, "running");
    let url = format!("{}/v1/tasks/{id}", cluster.url("n1"));
    let cancelled = ureq::delete(&url).call().expect("DELETE");
    assert_eq!(cancelled.status(), 200);
    let record = await_state(&cluster, &id, "cancelled");
    wait_until(
        Duration::from_secs(5),
        "the running attempt to stop",
        || outcomes(&task(&cluster, &id)) == ["cancelled"],
    );
    assert_eq!(record["error"], "cancelled on request");

    // Finished tasks cannot be cancelled; unknown ones are not found.
    let done = submit(&cluster, json!({"kind": "echo"}));
    await_state(&cluster, &done, "succeeded");
    for (id, status) in [(done.as_str(), 409), ("no-such-task", 404)] {
        let url = format!("{}/v1/tasks/{id}", cluster.url("n1"));
        match ureq::delete(&url).call() {
            Err(ureq::Error::Status(code, _)) => assert_eq!(code, status, "{id}"),
            other => panic!("{id}: expected {status}, got {other:?}"),
        }
    }
}

#[test]
fn queued_critical_tasks_run_before_queued_low_ones() {
    let mut cluster = Cluster::new(1, "[workers]\ncount = 1\n");
    cluster.start("n1", &[]);
    // Occupy the only worker so the rest queue up.
    let blocker = submit(&cluster, json!({"kind": "sleep", "input": {"ms": 500}}));
    await_state(&cluster, &blocker, "running");
    let low: Vec<String> = (0..3)
        .map(|_| {
            submit(
                &cluster,
                json!({"kind": "sleep", "input": {"ms": 5}, "priority": "low"}),
            )
        })
        .collect();
    let critical: Vec<String> = (0..3)
        .map(|_| {
            submit(
                &cluster,
                json!({"kind": "sleep", "input": {"ms": 5}, "priority": "critical"}),
            )
        })
        .collect();
    let started = |id: &String| -> u64 {
        await_state(&cluster, id, "succeeded")["attempts"][0]["started_at_ms"]
            .as_u64()
            .expect("start time")
    };
    let last_critical = critical.iter().map(started).max().unwrap_or(0);
    let first_low = low.iter().map(started).min().unwrap_or(0);
    assert!(
        last_critical <= first_low,
        "critical started by {last_critical}, low from {first_low}"
    );
}

#[test]
fn the_worker_pool_resizes_at_run_time() {
    let mut cluster = Cluster::new(1, "[workers]\ncount = 1\n");
    cluster.start("n1", &[]);
    assert_eq!(cluster.get("n1", "/v1/workers").body["count"], 1);
    for (body, field) in [
        (r#"{"count":0}"#, "count"),
        (r#"{"count":100000}"#, "count"),
        (r#"{"count":"x"}"#, "count"),
    ] {
        let reply = put_workers(&cluster, body);
        assert_eq!(
            (reply.status, &reply.body["field"]),
            (422, &json!(field)),
            "{body}: {}",
            reply.text
        );
    }
    let reply = put_workers(&cluster, r#"{"count":4}"#);
    assert_eq!(
        (reply.status, &reply.body["count"]),
        (200, &json!(4)),
        "{}",
        reply.text
    );
    assert_eq!(cluster.get("n1", "/v1/workers").body["count"], 4);

    // Four 600 ms sleeps on four workers overlap in time.
    let ids: Vec<String> = (0..4)
        .map(|_| submit(&cluster, json!({"kind": "sleep", "input": {"ms": 600}})))
        .collect();
    let spans: Vec<(u64, u64)> = ids
        .iter()
        .map(|id| {
            let a = await_state(&cluster, id, "succeeded")["attempts"][0].clone();
            (
                a["started_at_ms"].as_u64().unwrap_or(0),
                a["finished_at_ms"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let last_start = spans.iter().map(|s| s.0).max().unwrap_or(0);
    let first_end = spans.iter().map(|s| s.1).min().unwrap_or(0);
    assert!(last_start < first_end, "all four ran at once: {spans:?}");
}

#[test]
fn a_stuck_worker_is_replaced_and_its_attempt_counts_as_crashed() {
    let mut cluster = Cluster::new(1, "[workers]\ncount = 1\nstuck_after_secs = 1\n");
    cluster.start("n1", &[]);
    // `hang` ignores its timeout and cancellation: only the pool's
    // stuck-worker check can free the one worker.
    let stuck = submit(
        &cluster,
        json!({"kind": "hang", "input": {"ms": 600000}, "timeout_ms": 100}),
    );
    let waiting = submit(&cluster, json!({"kind": "echo", "input": "after"}));
    let metrics = cluster.get("n1", "/metrics").text;
    assert!(metrics.contains("troupe_workers 1"), "{metrics}");
    assert!(metrics.contains("troupe_workers_busy 1"), "{metrics}");

    // The pool's heartbeat (every 10 s) finds the worker unanswering for
    // over a second, kills it, and the attempt is reported crashed.
    let record = await_state(&cluster, &stuck, "failed");
    assert_eq!(
        outcomes(&record),
        ["crashed: the worker running it crashed"]
    );
    // The replacement worker serves the queue.
    let record = await_state(&cluster, &waiting, "succeeded");
    assert_eq!(record["result"], "after");
    assert!(cluster
        .get("n1", "/metrics")
        .text
        .contains("troupe_workers_busy 0"));
}

fn post(cluster: &Cluster, body: &Value) -> troupe_tests::Reply {
    cluster.post("n1", "/v1/tasks", &body.to_string())
}

fn delete(cluster: &Cluster, id: &str) -> u16 {
    cluster.delete("n1", &format!("/v1/tasks/{id}")).status
}

#[test]
fn dependencies_run_in_order_and_failures_and_cancels_propagate() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);
    let first = submit(&cluster, json!({"kind": "sleep", "input": {"ms": 300}}));
    let then = submit(
        &cluster,
        json!({"kind": "echo", "input": "after", "depends_on": [first]}),
    );
    assert_eq!(task(&cluster, &then)["state"], "waiting");
    let a = await_state(&cluster, &first, "succeeded");
    let b = await_state(&cluster, &then, "succeeded");
    assert!(
        b["attempts"][0]["started_at_ms"].as_u64() >= a["attempts"][0]["finished_at_ms"].as_u64(),
        "{a}\n{b}"
    );

    // A failure fails the whole chain below it.
    let failing = submit(
        &cluster,
        json!({"kind": "fail", "input": {"message": "no"}}),
    );
    let child = submit(&cluster, json!({"kind": "echo", "depends_on": [failing]}));
    let grandchild = submit(&cluster, json!({"kind": "echo", "depends_on": [child]}));
    await_state(&cluster, &failing, "failed");
    let record = await_state(&cluster, &grandchild, "failed");
    assert_eq!(
        record["error"],
        format!("dependency {child} did not succeed")
    );
    assert!(
        record["attempts"].as_array().is_some_and(Vec::is_empty),
        "never ran"
    );
    assert_eq!(
        task(&cluster, &child)["error"],
        format!("dependency {failing} did not succeed")
    );

    // A cancel cancels what waits for it.
    let long = submit(&cluster, json!({"kind": "sleep", "input": {"ms": 30000}}));
    let waiter = submit(&cluster, json!({"kind": "echo", "depends_on": [long]}));
    assert_eq!(delete(&cluster, &long), 200);
    let record = await_state(&cluster, &waiter, "cancelled");
    assert_eq!(record["error"], format!("dependency {long} was cancelled"));

    // Depending on something that does not exist is refused at the door.
    let reply = post(
        &cluster,
        &json!({"kind": "echo", "depends_on": [first, "nope"]}),
    );
    assert_eq!(
        (reply.status, &reply.body["field"]),
        (422, &json!("depends_on[1]")),
        "{}",
        reply.text
    );
}

#[test]
fn a_batch_is_accepted_whole_or_not_at_all() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);
    let bad = json!([{"kind": "echo"}, {"kind": "echo", "priority": "soon"}]);
    let reply = post(&cluster, &bad);
    assert_eq!(
        (reply.status, &reply.body["field"]),
        (422, &json!("[1].priority")),
        "{}",
        reply.text
    );
    let invalid_input = json!([{"kind": "echo"}, {"kind": "sleep", "input": {}}]);
    let reply = post(&cluster, &invalid_input);
    assert_eq!(
        (reply.status, &reply.body["field"]),
        (422, &json!("[1].input.ms")),
        "{}",
        reply.text
    );
    let listed = cluster.get("n1", "/v1/tasks").body;
    assert_eq!(listed["tasks"], json!([]), "nothing half-applied");

    let good = json!([
        {"kind": "echo", "input": 1, "key": "batch-a"},
        {"kind": "echo", "input": 2},
        {"kind": "echo", "input": 3, "key": "batch-a"}
    ]);
    let reply = post(&cluster, &good);
    assert_eq!(reply.status, 202, "{}", reply.text);
    let accepted = reply
        .body
        .as_array()
        .expect("one acceptance per task")
        .clone();
    assert_eq!(accepted.len(), 3);
    assert_eq!(accepted[0]["created"], true);
    assert_eq!(accepted[2]["created"], false, "same key, same task");
    assert_eq!(accepted[2]["id"], accepted[0]["id"]);
}

#[test]
fn tasks_are_listed_in_pages_with_a_cursor_and_a_state_filter() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);
    let batch: Vec<Value> = (0..25)
        .map(|i| json!({"kind": "echo", "input": i}))
        .collect();
    let reply = post(&cluster, &Value::Array(batch));
    assert_eq!(reply.status, 202, "{}", reply.text);
    let submitted: Vec<String> = reply
        .body
        .as_array()
        .expect("ids")
        .iter()
        .map(|a| a["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let blocked = submit(&cluster, json!({"kind": "sleep", "input": {"ms": 30000}}));
    await_state(&cluster, &blocked, "running");
    wait_until(FINISH, "the echo tasks to succeed", || {
        cluster
            .get("n1", "/v1/tasks?state=succeeded&limit=1000")
            .body["tasks"]
            .as_array()
            .map(Vec::len)
            == Some(25)
    });

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tasks?limit=10&cursor={c}"),
            None => "/v1/tasks?limit=10".to_owned(),
        };
        let page = cluster.get("n1", &path);
        assert_eq!(page.status, 200, "{}", page.text);
        let tasks = page.body["tasks"].as_array().expect("tasks").clone();
        assert!(tasks.len() <= 10);
        seen.extend(
            tasks
                .iter()
                .map(|t| t["id"].as_str().unwrap_or_default().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut expected = submitted.clone();
    expected.push(blocked.clone());
    assert_eq!(seen, expected, "every task once, in submission order");
    let running = cluster.get("n1", "/v1/tasks?state=running").body;
    assert_eq!(running["tasks"].as_array().map(Vec::len), Some(1));
    assert_eq!(running["tasks"][0]["id"], json!(blocked));

    for (query, field) in [
        ("state=sleepy", "state"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("colour=red", "colour"),
    ] {
        let reply = cluster.get("n1", &format!("/v1/tasks?{query}"));
        assert_eq!(
            (reply.status, &reply.body["field"]),
            (422, &json!(field)),
            "{query}: {}",
            reply.text
        );
    }
}

#[test]
fn not_before_holds_a_task_until_its_time() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let at = now_ms + 800;
    let id = submit(&cluster, json!({"kind": "echo", "not_before_ms": at}));
    assert_eq!(task(&cluster, &id)["state"], "pending");
    let record = await_state(&cluster, &id, "succeeded");
    let started = record["attempts"][0]["started_at_ms"]
        .as_u64()
        .expect("started");
    assert!(started >= at, "started at {started}, not before {at}");
}
