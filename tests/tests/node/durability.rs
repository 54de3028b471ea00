//! What a node acknowledged survives SIGKILL and SIGTERM.

use std::time::Duration;

use serde_json::{json, Value};
use troupe_tests::Cluster;

fn submit(cluster: &Cluster, body: &Value) -> Value {
    let reply = cluster.post("n1", "/v1/tasks", &body.to_string());
    assert_eq!(reply.status, 202, "{}", reply.text);
    reply.body
}

#[test]
fn acknowledged_tasks_survive_sigkill_and_restart() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);
    let mut stored = Vec::new();
    for i in 0..40 {
        let priority = ["low", "normal", "high", "critical"][i % 4];
        let mut body = json!({"kind": "sleep", "input": {"ms": i}, "priority": priority});
        if i % 5 == 0 {
            body["key"] = json!(format!("order-{i}"));
        }
        let accepted = submit(&cluster, &body);
        assert_eq!(accepted["created"], true);
        let id = accepted["id"].as_str().expect("id").to_owned();
        let record = cluster.get("n1", &format!("/v1/tasks/{id}"));
        assert_eq!(record.status, 200);
        stored.push((id, body, record.body));
    }

    cluster.kill("n1");
    cluster.start("n1", &[]);

    for (id, body, before) in &stored {
        let after = cluster.get("n1", &format!("/v1/tasks/{id}"));
        assert_eq!(after.status, 200, "task {id} lost: {}", after.text);
        for field in ["id", "key", "kind", "input", "priority", "submitted_at_ms"] {
            assert_eq!(after.body[field], before[field], "{field} of {id}");
        }
        assert_eq!(after.body["input"], body["input"]);
    }
    // Unfinished ones were taken back and run: every acknowledged task finishes.
    troupe_tests::wait_until(
        Duration::from_secs(20),
        "all acknowledged tasks to succeed",
        || {
            stored.iter().all(|(id, _, _)| {
                cluster.get("n1", &format!("/v1/tasks/{id}")).body["state"] == "succeeded"
            })
        },
    );
    // Idempotency keys survive too: the same key names the same task.
    let (id, body, _) = &stored[5];
    let again = submit(&cluster, body);
    assert_eq!(
        (&again["id"], &again["created"]),
        (&json!(id), &json!(false))
    );
}

#[test]
fn sigterm_stops_gracefully_with_exit_0_and_keeps_data() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);
    let accepted = submit(&cluster, &json!({"kind": "echo", "input": "hello"}));
    let (status, took) = cluster.terminate("n1", Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", cluster.log("n1"));
    assert!(
        took < Duration::from_secs(15),
        "graceful stop took {took:?}"
    );
    assert!(cluster.log("n1").contains("stopped cleanly"));

    cluster.start("n1", &[]);
    let id = accepted["id"].as_str().expect("id");
    let record = cluster.get("n1", &format!("/v1/tasks/{id}"));
    assert_eq!(
        (record.status, &record.body["input"]),
        (200, &json!("hello"))
    );
}
