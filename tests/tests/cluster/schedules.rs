//! Recurring tasks: one task per tick cluster-wide, and the schedule moves
//! to another holder when its owner is killed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use troupe_protocol::now_ms;
use troupe_tests::{wait_until, Cluster};

use crate::{start_converged, IDS};

/// Tick time → (task state, how many tasks) of a schedule's tasks, as the
/// cluster lists them (asked of node `on`).
fn ticks(cluster: &Cluster, on: &str, schedule: &str) -> BTreeMap<u64, (String, usize)> {
    let prefix = format!("schedule:{schedule}:");
    let mut ticks: BTreeMap<u64, (String, usize)> = BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let page = cluster
            .get(on, &format!("/v1/tasks?limit=1000{cursor}"))
            .body;
        for task in page["tasks"].as_array().into_iter().flatten() {
            let key = task["key"].as_str().unwrap_or_default();
            if let Some(tick) = key.strip_prefix(&prefix).and_then(|t| t.parse().ok()) {
                let entry = ticks.entry(tick).or_insert((String::new(), 0));
                entry.0 = task["state"].as_str().unwrap_or_default().to_owned();
                entry.1 += 1;
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    ticks
}

#[test]
fn a_schedule_fires_once_per_tick_and_moves_when_its_owner_dies() {
    let mut cluster = Cluster::new(3, "");
    start_converged(&mut cluster);

    // Bad schedules are refused with the field that is wrong.
    for (body, field) in [
        (
            json!({"cron": "61 * * * *", "task": {"kind": "echo"}}),
            "cron",
        ),
        (
            json!({"cron": "every minute", "task": {"kind": "echo"}}),
            "cron",
        ),
        (
            json!({"cron": "* * * * *", "task": {"kind": "echo", "key": "k"}}),
            "task.key",
        ),
        (
            json!({"cron": "* * * * *", "task": {"kind": ""}}),
            "task.kind",
        ),
        (
            json!({"cron": "* * * * *", "task": {"kind": "sleep", "input": {"ms": "x"}}}),
            "task.input.ms",
        ),
        (json!({"cron": "* * * * *"}), "task"),
    ] {
        let reply = cluster.post("n1", "/v1/schedules", &body.to_string());
        assert_eq!(reply.status, 422, "{body}: {}", reply.text);
        assert_eq!(reply.body["field"], field, "{body}: {}", reply.text);
    }
    assert_eq!(cluster.get("n1", "/v1/schedules").body, json!([]));

    let reply = cluster.post(
        "n2",
        "/v1/schedules",
        &json!({"name": "heartbeat", "cron": "* * * * * *", "task": {"kind": "echo", "input": "tick"}})
            .to_string(),
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    let id = reply.body["id"].as_str().expect("schedule id").to_owned();
    let holders: Vec<String> = reply.body["holders"]
        .as_array()
        .expect("holders")
        .iter()
        .filter_map(|h| h.as_str().map(str::to_owned))
        .collect();
    assert_eq!(holders.len(), 2, "R=2 holders: {}", reply.text);
    let owner = holders[0].clone();

    // Every node lists it, and agrees who fires it.
    for on in IDS {
        let listed = cluster.get(on, &format!("/v1/schedules/{id}"));
        assert_eq!(listed.status, 200, "{}", listed.text);
        assert_eq!(listed.body["owner"], owner.as_str(), "{}", listed.text);
        assert_eq!(listed.body["cron"], "* * * * * *");
    }
    wait_until(Duration::from_secs(15), "three ticks fired", || {
        ticks(&cluster, "n1", &id).len() >= 3
    });

    cluster.kill(&owner);
    let killed_at = now_ms();
    let survivors: Vec<&str> = IDS.iter().copied().filter(|n| *n != owner).collect();
    wait_until(
        Duration::from_secs(30),
        "four ticks after the kill, fired by the next holder",
        || {
            ticks(&cluster, survivors[0], &id)
                .range(killed_at + 1000..)
                .count()
                >= 4
        },
    );
    let listed = cluster.get(survivors[0], &format!("/v1/schedules/{id}"));
    assert_eq!(listed.body["owner"], holders[1].as_str(), "{}", listed.text);

    // One task per second, with no tick missed across the failover and
    // none run twice as two tasks; all of them ran.
    wait_until(Duration::from_secs(20), "tick tasks to finish", || {
        ticks(&cluster, survivors[0], &id)
            .values()
            .all(|(state, _)| state == "succeeded")
    });
    let seen = ticks(&cluster, survivors[0], &id);
    let first = *seen.keys().next().expect("ticks");
    let last = *seen.keys().last().expect("ticks");
    let expected: Vec<u64> = (first..=last).step_by(1000).collect();
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        expected,
        "{seen:?}"
    );
    assert!(seen.values().all(|(_, n)| *n == 1), "{seen:?}");

    // Deleting stops it everywhere.
    let reply = cluster.delete(survivors[1], &format!("/v1/schedules/{id}"));
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert_eq!(
        cluster
            .get(survivors[0], &format!("/v1/schedules/{id}"))
            .status,
        404
    );
    assert_eq!(
        cluster
            .delete(survivors[0], &format!("/v1/schedules/{id}"))
            .status,
        404
    );
}
