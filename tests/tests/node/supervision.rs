//! Supervision seen from outside: crash actors over HTTP, watch them come back.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use troupe_tests::{binary, wait_until, Cluster};

const SETTLE: Duration = Duration::from_secs(10);

fn restarts(cluster: &Cluster, path: &str) -> Option<(u64, String)> {
    let actor = cluster.actor("n1", path)?;
    Some((
        actor["restarts"].as_u64()?,
        actor["status"].as_str()?.to_owned(),
    ))
}

fn await_running_with(cluster: &Cluster, path: &str, count: u64) -> Value {
    wait_until(
        SETTLE,
        &format!("{path} running with {count} restarts"),
        || restarts(cluster, path) == Some((count, "running".into())),
    );
    cluster.actor("n1", path).expect("actor present")
}

#[test]
fn a_crashed_actor_is_restarted_counted_and_serves_again() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &["--fault-injection"]);
    let before = cluster.post("n1", "/v1/tasks", r#"{"kind":"echo","input":{"n":1}}"#);
    assert_eq!(before.status, 202, "{}", before.text);

    let crash = cluster.post("n1", "/v1/actors/node/scheduler/table/crash", "");
    assert_eq!(crash.status, 202, "{}", crash.text);
    let scheduler = await_running_with(&cluster, "node/scheduler/table", 1);
    let reason = scheduler["last_failure"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("fault injected"), "{scheduler}");
    assert!(scheduler["last_failure"]["at_ms"]
        .as_u64()
        .is_some_and(|t| t > 0));

    // The new incarnation re-opened the task table and serves from it.
    let id = before.body["id"].as_str().expect("task id");
    assert_eq!(cluster.get("n1", &format!("/v1/tasks/{id}")).status, 200);
    let after = cluster.post("n1", "/v1/tasks", r#"{"kind":"echo","input":{"n":2}}"#);
    assert_eq!(after.status, 202, "{}", after.text);

    let metrics = cluster.get("n1", "/metrics").text;
    assert!(
        metrics.contains(r#"troupe_actor_restarts_total{actor="node/scheduler/table"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"troupe_actor_restarts_total{actor="node/plugins"} 0"#));
    let log = cluster.log("n1");
    assert!(
        log.lines()
            .any(|l| l.contains("actor restarted") && l.contains("node/scheduler")),
        "restart is logged with the actor path:\n{log}"
    );

    // `troupe status` shows the same tree with the restart.
    let status = Command::new(binary())
        .args(["status", "--node", &cluster.url("n1")])
        .output()
        .expect("run troupe status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    let row = text
        .lines()
        .find(|l| l.contains("└── table"))
        .unwrap_or_default();
    assert!(
        row.contains("running") && row.contains(" 1  injected fault"),
        "{text}"
    );
}

#[test]
fn too_many_restarts_escalate_to_the_parent_supervisor() {
    let mut cluster = Cluster::new(
        1,
        "[supervision]\nmax_restarts = 2\nwithin_secs = 60\nbackoff_min_ms = 1\nbackoff_max_ms = 5\n",
    );
    cluster.start("n1", &["--fault-injection"]);
    for count in 1..=2 {
        let crash = cluster.post("n1", "/v1/actors/node/ingest/shard-0/crash", "");
        assert_eq!(crash.status, 202, "{}", crash.text);
        await_running_with(&cluster, "node/ingest/shard-0", count);
    }
    // One restart too many for `ingest`: it gives up and `node` restarts it.
    let crash = cluster.post("n1", "/v1/actors/node/ingest/shard-0/crash", "");
    assert_eq!(crash.status, 202, "{}", crash.text);
    let ingest = await_running_with(&cluster, "node/ingest", 1);
    let reason = ingest["last_failure"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("restart intensity exceeded"), "{ingest}");
    // The fresh `ingest` started its children afresh.
    let shard = cluster
        .actor("n1", "node/ingest/shard-0")
        .expect("shard is back");
    assert_eq!(
        (shard["restarts"].as_u64(), shard["status"].as_str()),
        (Some(0), Some("running"))
    );
    let node = cluster.actor("n1", "node").expect("root");
    assert_eq!(node["restarts"], 0, "the root did not fail");
    assert!(cluster.log("n1").contains("escalating to parent"));
    wait_until(SETTLE, "node ready again", || {
        cluster.get("n1", "/ready").status == 200
    });
}

#[test]
fn fault_injection_is_refused_unless_enabled_and_checks_the_path() {
    let mut cluster = Cluster::new(2, "");
    cluster.start("n1", &[]);
    let refused = cluster.post("n1", "/v1/actors/node/scheduler/table/crash", "");
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(refused.body["error"], "forbidden");
    assert!(refused.body["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("--fault-injection"));
    assert_eq!(
        restarts(&cluster, "node/scheduler"),
        Some((0, "running".into()))
    );

    cluster.start("n2", &["--fault-injection"]);
    for path in [
        "node/nope",
        "node/scheduler/table/deeper",
        "other/scheduler",
    ] {
        let reply = cluster.post("n2", &format!("/v1/actors/{path}/crash"), "");
        assert_eq!(reply.status, 404, "{path}: {}", reply.text);
        assert_eq!(reply.body["error"], "not_found");
    }
}

#[test]
fn json_logs_carry_restarts_with_path_and_cause() {
    let mut cluster = Cluster::new(1, "[debug]\nfault_injection = true\n");
    cluster.start("n1", &["--log-format", "json"]);
    let crash = cluster.post("n1", "/v1/actors/node/ingest/ingestor/crash", "");
    assert_eq!(crash.status, 202, "{}", crash.text);
    await_running_with(&cluster, "node/ingest/ingestor", 1);
    let log = cluster.log("n1");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failed = lines
        .iter()
        .find(|l| l["message"] == "actor failed")
        .expect("failure logged");
    assert_eq!(failed["actor"], "node/ingest/ingestor");
    assert!(failed["cause"]
        .as_str()
        .unwrap_or_default()
        .contains("fault injected"));
    assert!(lines
        .iter()
        .any(|l| l["message"] == "actor restarted" && l["actor"] == "node/ingest/ingestor"));
}

#[test]
fn a_failed_root_supervisor_takes_the_node_down_with_exit_1() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &["--fault-injection"]);
    let crash = cluster.post("n1", "/v1/actors/node/crash", "");
    assert_eq!(crash.status, 202, "{}", crash.text);
    // Like an OTP node whose top supervisor dies: nothing above it to restart it.
    let (status, _) = cluster.wait_exit("n1", SETTLE);
    assert_eq!(status.code(), Some(1), "{}", cluster.log("n1"));
    assert!(cluster.log("n1").contains("the root supervisor failed"));
    // What it stored is still there for the next incarnation.
    cluster.start("n1", &[]);
    assert_eq!(cluster.get("n1", "/ready").status, 200);
}
