//! The `troupe` CLI against a real node, as an operator uses it: submit,
//! wait, list, get and cancel tasks, list members, send events, in tables
//! and in JSON (parsed here, as a script would), with the exit codes a
//! script relies on (0 done, 1 refused or failed, 2 bad usage) and bearer
//! tokens for nodes that require them.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use troupe_tests::{binary, wait_until, Cluster};

/// Tokens required for everything but probes.
const AUTH: &str = "[auth]\nrequired = true\nprotect_reads = true\n";

/// A finished `troupe` run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Stdout as the one JSON document `--output json` promises.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `troupe args…` against node n1 of `cluster`, with `token` (if
/// any) in `TROUPE_TOKEN` and none inherited from the environment.
fn troupe(cluster: &Cluster, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env("TROUPE_NODE", cluster.url("n1"))
        .env_remove("TROUPE_TOKEN")
        .env_remove("TROUPE_OUTPUT");
    if let Some(token) = token {
        command.env("TROUPE_TOKEN", token);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run troupe");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A JWT from `troupe token` for the cluster of `config`.
fn mint(config: &Path, role: &str) -> String {
    let out = Command::new(binary())
        .args(["token", "--config"])
        .arg(config)
        .args(["--role", role])
        .output()
        .expect("run troupe token");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One node, `extra` appended to its config, started.
fn one_node(extra: &str) -> Cluster {
    let mut cluster = Cluster::new(1, extra);
    cluster.start("n1", &[]);
    cluster
}

fn await_state(cluster: &Cluster, id: &str, state: &str) {
    wait_until(
        Duration::from_secs(20),
        &format!("task {id} {state}"),
        || cluster.get("n1", &format!("/v1/tasks/{id}")).body["state"] == state,
    );
}

#[test]
fn submit_get_and_list_round_trip_in_tables_and_json() {
    let cluster = one_node("");

    let run = troupe(
        &cluster,
        None,
        &[
            "submit",
            "--kind",
            "echo",
            "--input",
            r#"{"n":1}"#,
            "--priority",
            "high",
            "--key",
            "cli-1",
            "--output",
            "json",
        ],
    );
    assert_eq!(run.code, Some(0), "{run}");
    let accepted = run.json();
    let json_id = accepted["id"].as_str().expect("id").to_owned();
    assert_eq!(accepted["owner"], "n1", "{run}");
    assert_eq!(accepted["created"], true, "{run}");

    // Table output of a submission is the id alone, for `id=$(troupe submit …)`.
    let run = troupe(
        &cluster,
        None,
        &["submit", "--kind", "echo", "--input", r#""hello""#],
    );
    assert_eq!(run.code, Some(0), "{run}");
    let table_id = run.stdout.trim().to_owned();
    assert!(!table_id.is_empty() && !table_id.contains(' '), "{run}");
    await_state(&cluster, &json_id, "succeeded");
    await_state(&cluster, &table_id, "succeeded");

    let run = troupe(
        &cluster,
        None,
        &["tasks", "get", &json_id, "--output", "json"],
    );
    assert_eq!(run.code, Some(0), "{run}");
    let record = run.json();
    assert_eq!(record["id"], json_id.as_str());
    assert_eq!(record["kind"], "echo");
    assert_eq!(record["state"], "succeeded");
    assert_eq!(record["priority"], "high");
    assert_eq!(record["key"], "cli-1");
    assert_eq!(record["result"], serde_json::json!({"n": 1}));
    assert_eq!(record["attempts"][0]["outcome"], "succeeded", "{record}");

    let run = troupe(&cluster, None, &["tasks", "get", &table_id]);
    assert_eq!(run.code, Some(0), "{run}");
    for expected in ["state", "succeeded", "\"hello\"", "ATTEMPT", "n1"] {
        assert!(run.stdout.contains(expected), "{expected}:\n{run}");
    }

    // One page of one, then every page with --all.
    let run = troupe(
        &cluster,
        None,
        &["tasks", "list", "--limit", "1", "--output", "json"],
    );
    assert_eq!(run.code, Some(0), "{run}");
    let page = run.json();
    assert_eq!(page["tasks"].as_array().map(Vec::len), Some(1), "{page}");
    assert!(page["next_cursor"].is_string(), "{page}");
    let run = troupe(
        &cluster,
        None,
        &[
            "tasks",
            "list",
            "--state",
            "succeeded",
            "--limit",
            "1",
            "--all",
            "--output",
            "json",
        ],
    );
    assert_eq!(run.code, Some(0), "{run}");
    let all = run.json();
    let ids: Vec<&str> = all["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{all}");
    assert!(
        ids.contains(&json_id.as_str()) && ids.contains(&table_id.as_str()),
        "{all}"
    );
    assert!(
        all.get("next_cursor").is_none(),
        "--all follows every cursor"
    );

    let run = troupe(&cluster, None, &["tasks", "list"]);
    assert_eq!(run.code, Some(0), "{run}");
    let mut lines = run.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["ID", "KIND", "STATE", "PRIORITY", "OWNER", "ATTEMPTS", "AGE"],
        "{run}"
    );
    let row = lines
        .find(|l| l.starts_with(&json_id))
        .unwrap_or_else(|| panic!("a row for {json_id}:\n{run}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[1..6],
        ["echo", "succeeded", "high", "n1", "1"],
        "{row}"
    );

    // A finished task cannot be cancelled: the node's refusal, exit 1.
    let run = troupe(&cluster, None, &["tasks", "cancel", &json_id]);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.starts_with("error: 409 "), "{run}");
    let run = troupe(
        &cluster,
        None,
        &["tasks", "get", "0190a0a0-0000-7000-8000-000000000000"],
    );
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.starts_with("error: 404 not_found: "), "{run}");

    let run = troupe(&cluster, None, &["cluster", "members"]);
    assert_eq!(run.code, Some(0), "{run}");
    let row = run
        .stdout
        .lines()
        .find(|l| l.starts_with("n1 "))
        .unwrap_or_else(|| panic!("a row for n1:\n{run}"));
    assert!(row.contains("alive") && row.contains("echo@"), "{row}");
}

#[test]
fn wait_exits_zero_when_the_task_succeeds_and_one_when_it_fails() {
    let cluster = one_node("");

    let run = troupe(
        &cluster,
        None,
        &[
            "submit",
            "--kind",
            "echo",
            "--input",
            r#"{"x":1}"#,
            "--wait",
        ],
    );
    assert_eq!(run.code, Some(0), "{run}");
    let result: Value = serde_json::from_str(&run.stdout).expect("the result, as JSON");
    assert_eq!(result, serde_json::json!({"x": 1}));

    let run = troupe(
        &cluster,
        None,
        &[
            "submit",
            "--kind",
            "fail",
            "--input",
            r#"{"message":"boom"}"#,
            "--wait",
            "--output",
            "json",
        ],
    );
    assert_eq!(run.code, Some(1), "{run}");
    let record = run.json();
    assert_eq!(record["state"], "failed", "{record}");
    assert!(
        run.stderr.contains("failed") && run.stderr.contains("boom"),
        "{run}"
    );

    // A task waited on here and given up on from another terminal:
    // cancelled is not success.
    let waiting = Command::new(binary())
        .args(["submit", "--kind", "sleep", "--input", r#"{"ms":60000}"#])
        .args(["--wait", "--output", "json"])
        .env("TROUPE_NODE", cluster.url("n1"))
        .env_remove("TROUPE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn troupe submit --wait");
    let mut id = String::new();
    wait_until(Duration::from_secs(20), "the waited-on task to run", || {
        let running = cluster.get("n1", "/v1/tasks?state=running").body;
        id = running["tasks"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        !id.is_empty()
    });
    let run = troupe(
        &cluster,
        None,
        &["tasks", "cancel", &id, "--output", "json"],
    );
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.json()["id"], id.as_str(), "{run}");
    let waited = waiting
        .wait_with_output()
        .expect("troupe submit --wait ends");
    let run = Run {
        code: waited.status.code(),
        stdout: String::from_utf8_lossy(&waited.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&waited.stderr).into_owned(),
    };
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(run.json()["state"], "cancelled", "{run}");
    assert!(run.stderr.contains("cancelled"), "{run}");
}

#[test]
fn bad_input_is_named_with_the_right_exit_code() {
    let cluster = one_node("");
    // (arguments, exit code, how stderr starts)
    let refused: [(&[&str], i32, &str); 5] = [
        // Refused by the node: its error body, exit 1.
        (
            &["submit", "--kind", "teleport"],
            1,
            "error: 422 invalid_field: kind: no live node runs plugin \"teleport\"",
        ),
        (
            &["submit", "--kind", "sleep", "--input", "{}"],
            1,
            "error: 422 invalid_field: input.ms: \"ms\" is a required property",
        ),
        // Found before anything is sent: bad usage, exit 2.
        (
            &["submit", "--kind", "echo", "--input", "not json"],
            2,
            "error: --input is not JSON",
        ),
        (
            &[
                "submit",
                "--kind",
                "echo",
                "--input",
                "@/nonexistent/input.json",
            ],
            2,
            "error: --input: cannot read /nonexistent/input.json",
        ),
        // No node there: exit 1, saying where it looked.
        (
            &["status", "--node", "http://127.0.0.1:9"],
            1,
            "error: cannot reach http://127.0.0.1:9/health",
        ),
    ];
    for (args, code, says) in refused {
        let run = troupe(&cluster, None, args);
        assert_eq!(run.code, Some(code), "{args:?}: {run}");
        assert!(run.stderr.starts_with(says), "{args:?}: {run}");
    }
    for args in [
        &["submit"][..],
        &["submit", "--kind", "echo", "--priority", "urgent"],
        &["tasks", "list", "--state", "done"],
    ] {
        let run = troupe(&cluster, None, args);
        assert_eq!(run.code, Some(2), "{args:?}: {run}");
        assert!(run.stdout.is_empty(), "{args:?}: {run}");
    }
    let listed = cluster.get("n1", "/v1/tasks").body;
    assert_eq!(
        listed["tasks"],
        serde_json::json!([]),
        "nothing was submitted"
    );
}

#[test]
fn a_node_that_requires_tokens_gets_the_cli_token_and_says_how_to_get_one() {
    let cluster = one_node(AUTH);

    let run = troupe(&cluster, None, &["submit", "--kind", "echo"]);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.starts_with("error: 401 unauthorized: "), "{run}");
    assert!(
        run.stderr.contains("pass --token or set TROUPE_TOKEN")
            && run.stderr.contains("troupe token --config"),
        "{run}"
    );
    let run = troupe(&cluster, None, &["tasks", "list"]);
    assert_eq!(run.code, Some(1), "reads are protected too: {run}");
    assert!(run.stderr.contains("TROUPE_TOKEN"), "{run}");

    let read = mint(cluster.config_path(), "read");
    let run = troupe(&cluster, Some(&read), &["submit", "--kind", "echo"]);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.starts_with("error: 403 forbidden: "), "{run}");
    assert!(run.stderr.contains("--role admin"), "{run}");

    let admin = mint(cluster.config_path(), "admin");
    let run = troupe(
        &cluster,
        Some(&admin),
        &["submit", "--kind", "echo", "--input", "1", "--wait"],
    );
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.stdout.trim(), "1", "{run}");
    // --token works like the variable.
    let run = troupe(
        &cluster,
        None,
        &["tasks", "list", "--output", "json", "--token", &read],
    );
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.json()["tasks"][0]["state"], "succeeded", "{run}");

    let run = troupe(
        &cluster,
        Some(&admin),
        &[
            "events", "send", "--count", "10", "--batch", "4", "--rate", "10000", "--output",
            "json",
        ],
    );
    assert_eq!(run.code, Some(0), "{run}");
    let report = run.json();
    assert_eq!(report["sent"], 10, "{report}");
    assert_eq!(report["accepted"], 10, "{report}");
    assert_eq!(report["duplicate"], 0, "{report}");

    for args in [&["status"][..], &["cluster", "members"]] {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        let run = troupe(&cluster, Some(&read), &args);
        assert_eq!(run.code, Some(0), "{args:?}: {run}");
        let doc = run.json();
        let node = if args[0] == "status" {
            &doc["health"]["node"]
        } else {
            &doc["members"][0]["id"]
        };
        assert_eq!(node, "n1", "{args:?}: {doc}");
    }
}

#[test]
fn chaos_mints_its_own_token_for_a_cluster_that_requires_one() {
    // The harness only writes the config; `troupe chaos` runs the node and
    // must sign its submissions and reads with the config's secret.
    let cluster = Cluster::new(1, AUTH);
    let out = Command::new(binary())
        .args(["chaos", "--tasks", "40", "--kill", "0", "--duration", "1"])
        .args(["--task-ms", "5", "--output", "json", "--config"])
        .arg(cluster.config_path())
        .env_remove("TROUPE_TOKEN")
        .output()
        .expect("run troupe chaos");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&text).expect("one JSON report");
    assert_eq!(report["submitted"], 40, "{report}");
    assert_eq!(report["succeeded"], 40, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
}

#[test]
fn submit_file_sends_every_task_of_an_ndjson_or_array_file() {
    let cluster = one_node("");
    let dir = tempfile::tempdir().expect("temp dir");
    let ndjson = dir.path().join("tasks.ndjson");
    std::fs::write(
        &ndjson,
        "{\"kind\":\"echo\",\"input\":1}\n{\"kind\":\"echo\",\"input\":2,\"key\":\"k2\"}\n\n{\"kind\":\"sleep\",\"input\":{\"ms\":1}}\n",
    )
    .expect("write tasks");
    let path = ndjson.to_string_lossy();
    let run = troupe(
        &cluster,
        None,
        &["submit", "--file", &path, "--output", "json"],
    );
    assert_eq!(run.code, Some(0), "{run}");
    let accepted = run.json();
    let ids: Vec<&str> = accepted
        .as_array()
        .expect("an array of acceptances")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 3, "{accepted}");
    for id in &ids {
        await_state(&cluster, id, "succeeded");
    }

    // The same keyed task again, as a JSON array, in a table: not new.
    let array = dir.path().join("tasks.json");
    std::fs::write(&array, r#"[{"kind":"echo","input":2,"key":"k2"}]"#).expect("write");
    let run = troupe(
        &cluster,
        None,
        &["submit", "--file", &array.to_string_lossy()],
    );
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout.contains(ids[1]) && run.stdout.contains("no (same key)"),
        "{run}"
    );

    // A line that is no submission: nothing is sent, exit 2, naming it.
    std::fs::write(
        &ndjson,
        "{\"kind\":\"echo\"}\n{\"kind\":\"echo\",\"colour\":1}\n",
    )
    .expect("write");
    let run = troupe(&cluster, None, &["submit", "--file", &path]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr.contains("task 1: unknown field `colour`"),
        "{run}"
    );
    let listed = cluster.get("n1", "/v1/tasks").body;
    assert_eq!(
        listed["tasks"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );
}
