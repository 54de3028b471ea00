//! The plugins a node runs, over HTTP: the catalogue with schemas and
//! figures, the built-in transform, webhook and SQL plugins end to end,
//! input checked against each plugin's schema (a 422 naming the field),
//! and a bad resource refused at start-up with its name.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use troupe_tests::{binary, wait_until, Cluster};

use crate::postgres::Schema;

fn plugin(cluster: &Cluster, name: &str) -> Option<Value> {
    let list = cluster.get("n1", "/v1/plugins");
    assert_eq!(list.status, 200, "{}", list.text);
    list.body["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

/// Submits `task` on n1 and waits for it to finish; the final record.
fn run(cluster: &Cluster, task: &Value) -> Value {
    let reply = cluster.post("n1", "/v1/tasks", &task.to_string());
    assert_eq!(reply.status, 202, "{}", reply.text);
    let path = format!("/v1/tasks/{}", reply.body["id"].as_str().expect("id"));
    wait_until(Duration::from_secs(20), "the task to finish", || {
        matches!(
            cluster.get("n1", &path).body["state"].as_str(),
            Some("succeeded" | "failed")
        )
    });
    cluster.get("n1", &path).body
}

fn refused(cluster: &Cluster, task: &Value) -> Value {
    let reply = cluster.post("n1", "/v1/tasks", &task.to_string());
    assert_eq!(reply.status, 422, "{}", reply.text);
    reply.body
}

#[test]
fn the_catalogue_lists_every_plugin_with_its_schema_and_figures() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);
    let list = cluster.get("n1", "/v1/plugins").body;
    let names: Vec<&str> = list["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for expected in [
        "cpu",
        "echo",
        "fail",
        "hang",
        "http.webhook",
        "json.transform",
        "panic",
        "sleep",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    assert!(
        !names.contains(&"sql.query"),
        "no PostgreSQL configured, no SQL plugin: {names:?}"
    );
    assert_eq!(list["node"], "n1");
    let sleep = plugin(&cluster, "sleep").expect("sleep");
    assert_eq!(sleep["input_schema"]["properties"]["ms"]["type"], "integer");
    assert!(sleep["version"]
        .as_str()
        .is_some_and(|v| v.split('.').count() == 3));

    // The transform, end to end; calls, errors and latency are counted.
    let done = run(
        &cluster,
        &json!({"kind": "json.transform", "input": {
            "filter": ".items[] | select(.n > 1) | .name",
            "input": {"items": [{"name": "a", "n": 1}, {"name": "b", "n": 2}, {"name": "c", "n": 3}]}
        }}),
    );
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["outputs"], json!(["b", "c"]));
    let failed = run(
        &cluster,
        &json!({"kind": "json.transform", "input": {"filter": ".a + 1", "input": {"a": "text"}}}),
    );
    assert_eq!(failed["state"], "failed", "{failed}");
    let metrics = &plugin(&cluster, "json.transform").expect("listed")["metrics"];
    assert_eq!(
        (metrics["calls"].as_u64(), metrics["errors"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(
        metrics["latency_ms"]["max"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0),
        "{metrics}"
    );
    let prometheus = cluster.get("n1", "/metrics").text;
    assert!(
        prometheus.contains(r#"troupe_plugin_calls_total{plugin="json.transform"} 2"#),
        "{prometheus}"
    );

    // Input that breaks the schema or the plugin's own rules: 422 naming
    // the field, nothing stored.
    let before = cluster.get("n1", "/v1/tasks").body["tasks"]
        .as_array()
        .map(Vec::len);
    for (task, field) in [
        (
            json!({"kind": "json.transform", "input": {"filter": ".[", "input": 1}}),
            "input.filter",
        ),
        (
            json!({"kind": "json.transform", "input": {"filter": "nosuchfn", "input": 1}}),
            "input.filter",
        ),
        (
            json!({"kind": "json.transform", "input": {"input": 1}}),
            "input.filter",
        ),
        (
            json!({"kind": "json.transform", "input": {"filter": ".", "input": 1, "extra": 2}}),
            "input.extra",
        ),
        (
            json!({"kind": "sleep", "input": {"ms": "soon"}}),
            "input.ms",
        ),
        (
            json!({"kind": "http.webhook", "input": {"url": "ftp://example.com"}}),
            "input.url",
        ),
        (
            json!({"kind": "sql.query", "input": {"sql": "SELECT 1"}}),
            "kind",
        ),
        (json!({"kind": "echo", "version": ">=99"}), "version"),
    ] {
        let body = refused(&cluster, &task);
        assert_eq!(body["field"], field, "{task}: {body}");
    }
    let after = cluster.get("n1", "/v1/tasks").body["tasks"]
        .as_array()
        .map(Vec::len);
    assert_eq!(before, after, "nothing refused was stored");
}

/// Answers one HTTP request with `status` and a JSON body; sends what it
/// received (request line, headers and body) to the test.
fn one_shot_server(status: u16) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream);
        let mut request = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
            request.push_str(&line);
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        request.push_str(&String::from_utf8_lossy(&body));
        let reply = r#"{"received":true}"#;
        let _ = write!(
            reader.get_mut(),
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
            reply.len()
        );
        let _ = tx.send(request);
    });
    (url, rx)
}

#[test]
fn the_webhook_plugin_calls_out_and_reports_the_answer() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);
    let (url, received) = one_shot_server(200);
    let done = run(
        &cluster,
        &json!({"kind": "http.webhook", "input": {
            "url": url, "method": "PUT", "headers": {"X-Token": "t1"}, "body": {"alert": "hot"}
        }}),
    );
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["status"], 200);
    assert_eq!(done["result"]["body"], json!({"received": true}));
    let request = received
        .recv_timeout(Duration::from_secs(5))
        .expect("the server was called");
    assert!(request.starts_with("PUT /hook"), "{request}");
    assert!(
        request.to_ascii_lowercase().contains("x-token: t1"),
        "{request}"
    );
    assert!(request.ends_with(r#"{"alert":"hot"}"#), "{request}");

    let (url, _received) = one_shot_server(503);
    let failed = run(
        &cluster,
        &json!({"kind": "http.webhook", "input": {"url": url}}),
    );
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["error"].as_str().is_some_and(|e| e.contains("503")),
        "{failed}"
    );
}

#[test]
fn the_sql_plugin_queries_the_configured_database() {
    let schema = Schema::create();
    let mut cluster = Cluster::new(
        1,
        &format!("[storage]\npostgres_url = \"{}\"\n", schema.url()),
    );
    cluster.start("n1", &[]);
    schema
        .client()
        .batch_execute("CREATE TABLE readings (id INT PRIMARY KEY, sensor TEXT, celsius FLOAT8)")
        .expect("create table");
    assert!(
        plugin(&cluster, "sql.query").is_some(),
        "offered with PostgreSQL"
    );
    let inserted = run(
        &cluster,
        &json!({"kind": "sql.query", "input": {
            "sql": "INSERT INTO readings VALUES ($1, $2, $3), ($4, $5, $6)",
            "params": [1, "kitchen", 21.5, 2, "attic", 31.0]
        }}),
    );
    assert_eq!(inserted["state"], "succeeded", "{inserted}");
    assert_eq!(inserted["result"]["row_count"], 2);
    let selected = run(
        &cluster,
        &json!({"kind": "sql.query", "input": {
            "sql": "SELECT sensor, celsius FROM readings WHERE celsius > $1 ORDER BY id",
            "params": [25]
        }}),
    );
    assert_eq!(selected["state"], "succeeded", "{selected}");
    assert_eq!(
        selected["result"]["rows"],
        json!([{"sensor": "attic", "celsius": 31.0}])
    );
    let missing = run(
        &cluster,
        &json!({"kind": "sql.query", "input": {"sql": "SELECT * FROM nowhere"}}),
    );
    assert_eq!(missing["state"], "failed");
    assert!(
        missing["error"]
            .as_str()
            .is_some_and(|e| e.contains("nowhere")),
        "{missing}"
    );
    // What was written is in the database, as a user would check.
    let count: i64 = schema
        .client()
        .query_one("SELECT count(*) FROM readings", &[])
        .expect("count")
        .get(0);
    assert_eq!(count, 2);
}

#[test]
fn a_node_with_a_bad_database_url_refuses_to_start_naming_the_resource() {
    let cluster = Cluster::new(
        1,
        "[storage]\npostgres_url = \"postgres://postgres@127.0.0.1:1/test\"\n",
    );
    let mut child = Command::new(binary())
        .args(["node", "--config"])
        .arg(cluster.config_path())
        .args(["--id", "n1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn troupe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node kept running with an unreachable database");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(!status.success());
    assert!(
        stderr.contains("resource postgres") && stderr.contains("127.0.0.1:1"),
        "{stderr}"
    );
}

const ROOMS: &str = r#"
[[pipelines]]
id = "rooms"
event_type = "batch"
key_by = "data.room"
window = { kind = "tumbling", size_ms = 1000 }
aggregates = [{ op = "count" }, { op = "avg", field = "data.celsius" }]
transform = { plugin = "json.transform", with = { filter = '.readings[] | select(.unit == "F") | {room, celsius: ((.value - 32) * 5 / 9)}' } }
"#;

fn event(id: &str, t: u64, data: &Value) -> String {
    format!(
        "{}\n",
        json!({"event_id": id, "source": "gateway", "event_type": "batch", "timestamp": t, "data": data})
    )
}

#[test]
fn a_pipeline_transform_reshapes_fans_out_and_drops_events_before_windowing() {
    const T: u64 = 1_767_225_600_000;
    let mut cluster = Cluster::new(1, ROOMS);
    cluster.start("n1", &[]);
    let readings = |items: Value| json!({ "readings": items });
    let body = [
        event(
            "b1",
            T + 100,
            &readings(json!([
                {"room": "a", "unit": "F", "value": 212},
                {"room": "b", "unit": "F", "value": 32},
                {"room": "a", "unit": "C", "value": 5}
            ])),
        ),
        event(
            "b2",
            T + 200,
            &readings(json!([{"room": "a", "unit": "F", "value": 32}])),
        ),
        // Not a list: the filter fails on it; counted, skipped.
        event("b3", T + 300, &json!({"readings": "none"})),
        // Only Celsius: dropped, but it still moves the watermark on.
        event(
            "b4",
            T + 5_000,
            &readings(json!([{"room": "c", "unit": "C", "value": 1}])),
        ),
    ]
    .concat();
    let reply = cluster.post_as("n1", "/v1/events", "application/x-ndjson", &body);
    assert_eq!(reply.status, 202, "{}", reply.text);

    let path = "/v1/aggregates?pipeline=rooms";
    wait_until(Duration::from_secs(20), "the first window closed", || {
        cluster.get("n1", path).body["results"]
            .as_array()
            .is_some_and(|r| r.len() == 2)
    });
    let mut results: Vec<(String, Value, Value)> = cluster.get("n1", path).body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap_or_default().to_owned(),
                r["values"]["count"].clone(),
                r["values"]["avg(data.celsius)"].clone(),
            )
        })
        .collect();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        results,
        [
            ("a".to_owned(), json!(2.0), json!(50.0)),
            ("b".to_owned(), json!(1.0), json!(0.0)),
        ]
    );
    let pipelines = cluster.get("n1", "/v1/pipelines").body;
    let rooms = pipelines
        .as_array()
        .and_then(|p| p.iter().find(|p| p["spec"]["id"] == "rooms"))
        .unwrap_or_else(|| panic!("rooms in {pipelines}"));
    assert_eq!(rooms["counters"]["transform_errors"], 1, "{rooms}");
    assert_eq!(rooms["counters"]["added"], 3, "{rooms}");

    // A transform is checked when the pipeline is created: the plugin,
    // its kind (takes input, returns outputs) and its settings.
    let pipeline = |transform: Value| {
        json!({"id": "p2", "window": {"kind": "tumbling", "size_ms": 1000},
               "aggregates": [{"op": "count"}], "transform": transform})
        .to_string()
    };
    for (transform, field) in [
        (
            json!({"plugin": "json.transform", "with": {"filter": ".["}}),
            "transform.with.filter",
        ),
        (
            json!({"plugin": "json.transform", "with": {"filter": ".", "input": 1}}),
            "transform.with.input",
        ),
        (
            json!({"plugin": "json.transform", "version": "^9", "with": {"filter": "."}}),
            "transform.version",
        ),
        (json!({"plugin": "echo"}), "transform.plugin"),
        (json!({"plugin": "nope"}), "transform.plugin"),
    ] {
        let reply = cluster.post("n1", "/v1/pipelines", &pipeline(transform.clone()));
        assert_eq!(reply.status, 422, "{transform}: {}", reply.text);
        assert_eq!(reply.body["field"], field, "{transform}: {}", reply.text);
    }
}

fn metric(cluster: &Cluster, line_start: &str) -> Option<f64> {
    cluster
        .get("n1", "/metrics")
        .text
        .lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

#[test]
fn a_restarted_registry_releases_its_resources_and_acquires_them_again() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &["--fault-injection"]);
    let held = r#"troupe_resource_held{resource="http"}"#;
    assert_eq!(metric(&cluster, held), Some(1.0));
    let crash = cluster.post("n1", "/v1/actors/node/plugins/crash", "");
    assert_eq!(crash.status, 202, "{}", crash.text);
    wait_until(
        Duration::from_secs(10),
        "the registry back with its resources",
        || {
            metric(
                &cluster,
                r#"troupe_resource_released_total{resource="http"}"#,
            ) == Some(1.0)
                && metric(
                    &cluster,
                    r#"troupe_resource_acquired_total{resource="http"}"#,
                ) == Some(2.0)
        },
    );
    assert_eq!(
        metric(&cluster, held),
        Some(1.0),
        "one client held, not two"
    );
    // And the plugins that use it still work.
    let (url, _received) = one_shot_server(200);
    let done = run(
        &cluster,
        &json!({"kind": "http.webhook", "input": {"url": url}}),
    );
    assert_eq!(done["state"], "succeeded", "{done}");
}
