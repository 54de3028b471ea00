//! Tasks across real nodes: placement, replication, and nothing lost when
//! a node is killed mid-run.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use troupe_tests::{wait_until, Cluster};

use crate::{start_converged, IDS};

fn state_of(cluster: &Cluster, on: &str, id: &str) -> Option<String> {
    let reply = cluster.get(on, &format!("/v1/tasks/{id}"));
    (reply.status == 200).then(|| reply.body["state"].as_str().unwrap_or_default().to_owned())
}

/// Submits `count` tasks in batches spread over `nodes`; returns id → owner.
fn submit_batches(
    cluster: &Cluster,
    nodes: &[&str],
    count: usize,
    task: impl Fn(usize) -> Value,
) -> BTreeMap<String, String> {
    let mut accepted = BTreeMap::new();
    let batch_size = 50;
    for (b, start) in (0..count).step_by(batch_size).enumerate() {
        let on = nodes[b % nodes.len()];
        let batch: Vec<Value> = (start..(start + batch_size).min(count))
            .map(&task)
            .collect();
        let reply = cluster.post(on, "/v1/tasks", &Value::Array(batch).to_string());
        assert_eq!(reply.status, 202, "batch {b} on {on}: {}", reply.text);
        for a in reply.body.as_array().expect("acceptances") {
            accepted.insert(
                a["id"].as_str().expect("id").to_owned(),
                a["owner"].as_str().expect("owner").to_owned(),
            );
        }
    }
    accepted
}

#[test]
fn tasks_spread_over_the_cluster_and_are_readable_from_any_node() {
    let mut cluster = Cluster::new(3, "");
    start_converged(&mut cluster);
    // Each node gossips its pool: size, queue depth and the kinds it runs.
    wait_until(Duration::from_secs(10), "pool figures gossiped", || {
        let view = cluster.get("n1", "/v1/cluster").body;
        view["members"].as_array().is_some_and(|members| {
            members.iter().all(|m| {
                m["workers"] == 4
                    && m["queue_depth"].is_u64()
                    && m["plugins"]
                        .as_array()
                        .is_some_and(|p| p.iter().any(|k| k["name"] == "sleep"))
            })
        })
    });
    let accepted = submit_batches(&cluster, &IDS, 300, |i| json!({"kind": "echo", "input": i}));
    let owners: HashSet<&String> = accepted.values().collect();
    assert_eq!(owners.len(), 3, "every node owns some tasks");
    // Any node answers for any task.
    for (n, (id, owner)) in accepted.iter().enumerate().step_by(37) {
        let on = IDS[n % 3];
        let deadline = Instant::now() + Duration::from_secs(10);
        while state_of(&cluster, on, id).as_deref() != Some("succeeded") {
            let views: Vec<String> = IDS
                .iter()
                .map(|n| format!("{n}: {}", cluster.get(n, &format!("/v1/tasks/{id}")).text))
                .collect();
            assert!(
                Instant::now() < deadline,
                "task {id} (owner {owner}) not succeeded via {on}:\n{}",
                views.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let record = cluster.get(on, &format!("/v1/tasks/{id}")).body;
        assert_eq!(&record["owner"], owner);
        assert_eq!(
            record["attempts"][0]["node"],
            json!(owner),
            "the owner ran it"
        );
    }
    // Any node lists every task of the cluster, in pages, once each.
    let mut listed = Vec::new();
    let mut path = "/v1/tasks?limit=70".to_owned();
    loop {
        let page = cluster.get("n2", &path).body;
        for task in page["tasks"].as_array().expect("tasks") {
            listed.push(task["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/tasks?limit=70&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = accepted.keys().cloned().collect();
    assert_eq!(
        listed, expected,
        "in submission order, none twice, none missing"
    );

    // An idempotency key names one task cluster-wide, whichever node is asked.
    let first = cluster
        .post("n1", "/v1/tasks", r#"{"kind":"echo","key":"k-cluster"}"#)
        .body;
    for on in ["n2", "n3"] {
        let again = cluster
            .post(on, "/v1/tasks", r#"{"kind":"echo","key":"k-cluster"}"#)
            .body;
        assert_eq!(
            (&again["id"], &again["created"]),
            (&first["id"], &json!(false)),
            "via {on}"
        );
    }
}

#[test]
fn no_acknowledged_task_is_lost_when_a_node_is_killed_mid_run() {
    let mut cluster = Cluster::new(3, "[workers]\ncount = 8\n");
    start_converged(&mut cluster);
    // 1,000 tasks, some long enough to be running or queued at the kill.
    let accepted = submit_batches(
        &cluster,
        &IDS,
        1000,
        |i| json!({"kind": "sleep", "input": {"ms": if i % 10 == 0 { 300 } else { 5 }}, "key": format!("chaos-{i}")}),
    );
    assert_eq!(accepted.len(), 1000);
    let victim = "n2";
    let victim_owned = accepted.values().filter(|o| *o == victim).count();
    assert!(
        victim_owned > 100,
        "the victim owns a share: {victim_owned}"
    );

    cluster.kill(victim);
    let killed = Instant::now();
    let survivors = ["n1", "n3"];
    let mut unfinished: Vec<&String> = accepted.keys().collect();
    let deadline = Duration::from_secs(60);
    while !unfinished.is_empty() {
        assert!(
            killed.elapsed() < deadline,
            "{} tasks not finished {deadline:?} after the kill, e.g. {:?}",
            unfinished.len(),
            unfinished
                .iter()
                .take(3)
                .map(|id| (id, state_of(&cluster, "n1", id)))
                .collect::<Vec<_>>()
        );
        unfinished.retain(|id| {
            let on = survivors[id.len() % 2];
            state_of(&cluster, on, id).as_deref() != Some("succeeded")
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "all 1000 acknowledged tasks succeeded {:?} after SIGKILL of {victim} (which owned {victim_owned})",
        killed.elapsed()
    );
    let adopted: f64 = survivors
        .iter()
        .filter_map(|on| {
            cluster.get(on, "/metrics").text.lines().find_map(|l| {
                l.strip_prefix("troupe_tasks_adopted_total ")?
                    .parse::<f64>()
                    .ok()
            })
        })
        .sum();
    println!("tasks adopted by survivors: {adopted}");
}
