//! Event ingestion over HTTP: one event, arrays, NDJSON streams; the
//! errors; deduplication; durability across SIGKILL.

use std::fmt::Write as _;

use serde_json::{json, Value};
use troupe_tests::{Cluster, Reply};

fn ndjson(cluster: &Cluster, path: &str, body: &str) -> Reply {
    cluster.post_as("n1", path, "application/x-ndjson", body)
}

fn lines(count: usize, source: impl Fn(usize) -> String) -> String {
    let mut body = String::new();
    for i in 0..count {
        let _ = writeln!(
            body,
            r#"{{"event_id":"e-{i}","source":"{}","event_type":"reading","timestamp":{},"data":{{"value":{i}}}}}"#,
            source(i),
            1_767_225_600_000u64 + i as u64
        );
    }
    body
}

fn stats(cluster: &Cluster) -> Value {
    cluster.get("n1", "/stats").body
}

#[test]
fn events_are_accepted_counted_and_deduplicated() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);

    // One event without id or time: both filled in, and the reply says so.
    let reply = cluster.post(
        "n1",
        "/v1/events",
        r#"{"source":"sensor-1","event_type":"reading","data":{"temperature":21.5}}"#,
    );
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(
        reply.body,
        json!({"accepted": 1, "duplicate": 0, "late": 0, "ids_assigned": 1, "timestamps_assigned": 1, "offsets": [1, 1]})
    );

    // An array; a repeated id (within it, and of an earlier request) is a duplicate.
    let batch = json!([
        {"event_id": "a", "source": "sensor-1", "event_type": "reading", "timestamp": "2026-01-01T00:00:00Z", "data": {}},
        {"event_id": "b", "source": "sensor-2", "event_type": "reading", "timestamp": 1767225600000u64, "data": {}},
        {"event_id": "a", "source": "sensor-1", "event_type": "reading", "data": {}},
    ]);
    let reply = cluster.post("n1", "/webhook/batch", &batch.to_string());
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(
        (&reply.body["accepted"], &reply.body["duplicate"]),
        (&json!(2), &json!(1))
    );
    let reply = cluster.post("n1", "/webhook/ingest", &batch[1].to_string());
    assert_eq!(
        (&reply.body["accepted"], &reply.body["duplicate"]),
        (&json!(0), &json!(1))
    );

    // NDJSON, streamed: 10,000 lines.
    let reply = ndjson(
        &cluster,
        "/v1/events",
        &lines(10_000, |i| format!("dev-{}", i % 4)),
    );
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.body["accepted"], 10_000);
    assert_eq!(reply.body["timestamps_assigned"], 0);

    let totals = stats(&cluster);
    assert_eq!(totals["events"], 10_003);
    assert_eq!(totals["duplicates"], 2);
    assert_eq!(totals["sources"]["sensor-1"], 2);
    assert_eq!(totals["sources"]["dev-0"], 2_500);

    // Read back lazily, by source and time, a page at a time.
    let mut seen = Vec::new();
    let mut path =
        "/v1/events?source=dev-3&limit=300&from=1767225600000&to=2026-01-01T00:00:04Z".to_owned();
    loop {
        let page = cluster.get("n1", &path).body;
        for event in page["events"].as_array().expect("events") {
            assert_eq!(event["source"], "dev-3");
            seen.push(event["data"]["value"].as_u64().expect("value"));
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/events?source=dev-3&limit=300&from=1767225600000&to=2026-01-01T00:00:04Z&cursor={c}"),
            None => break,
        }
    }
    // Times 0..4000 ms after the start: values 0..3999, every fourth.
    let expected: Vec<u64> = (0..4000).filter(|v| v % 4 == 3).collect();
    assert_eq!(seen, expected);

    // As NDJSON: the whole log streamed, page after page, in order.
    let (status, lines) = cluster.get_ndjson("n1", "/v1/events");
    assert_eq!(status, 200);
    assert_eq!(lines.len(), 10_003);
    let offsets: Vec<u64> = lines.iter().filter_map(|l| l["offset"].as_u64()).collect();
    assert_eq!(offsets, (1..=10_003).collect::<Vec<_>>());
    let (_, dev3) = cluster.get_ndjson("n1", "/v1/events?source=dev-3&cursor=5000");
    // NDJSON line i has offset 4 + i (three events came before).
    let after_5000 = (0..10_000u64)
        .filter(|i| 4 + i > 5000 && i % 4 == 3)
        .count();
    assert_eq!(dev3.len(), after_5000, "dev-3 events after offset 5000");
}

#[test]
fn bad_events_get_clear_errors_and_nothing_half_applied() {
    let mut cluster = Cluster::new(1, "[ingest]\nmax_body_mb = 1\n");
    cluster.start("n1", &[]);
    let ok = r#"{"source":"s","event_type":"t","data":{}}"#;

    for (body, status, field) in [
        (
            r#"{"source":"s","event_type":"t"}"#.to_owned(),
            422,
            Some("data"),
        ),
        (
            r#"{"source":"s","event_type":"t","data":[1,2]}"#.to_owned(),
            422,
            Some("data"),
        ),
        (
            r#"{"source":"","event_type":"t","data":{}}"#.to_owned(),
            422,
            Some("source"),
        ),
        (
            r#"{"source":"s","event_type":"t","data":{},"timestamp":"noon"}"#.to_owned(),
            422,
            Some("timestamp"),
        ),
        (
            r#"{"source":"s","event_type":"t","data":{},"colour":1}"#.to_owned(),
            422,
            Some("colour"),
        ),
        (
            format!("[{ok},{ok},{{\"source\":7,\"event_type\":\"t\",\"data\":{{}}}}]"),
            422,
            Some("[2].source"),
        ),
        ("[]".to_owned(), 422, Some("(body)")),
        (format!("[{ok},"), 400, None),
        (
            format!(
                "{{\"source\":\"{}\",\"event_type\":\"t\",\"data\":{{}}}}",
                "x".repeat(2 << 20)
            ),
            413,
            None,
        ),
    ] {
        let reply = cluster.post("n1", "/v1/events", &body);
        assert_eq!(
            reply.status,
            status,
            "{}: {}",
            &body[..body.len().min(80)],
            reply.text
        );
        assert_eq!(reply.body["field"].as_str(), field, "{}", reply.text);
        assert!(reply.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    assert_eq!(
        stats(&cluster)["events"],
        0,
        "nothing of a refused document was kept"
    );

    // NDJSON: a malformed line 4 is a 400 naming line and byte offset; the
    // three lines before it are kept, and the reply says so.
    let body = format!("{ok}\n{ok}\n\n{{\"source\": oops}}\n{ok}\n");
    let reply = ndjson(&cluster, "/v1/events", &body);
    assert_eq!(reply.status, 400, "{}", reply.text);
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    let offset = body.find("{\"source\": oops").expect("bad line");
    assert!(detail.contains("line 4"), "{detail}");
    assert!(
        detail.contains(&format!("byte offset {offset}")),
        "{detail}"
    );
    assert!(
        detail.contains("2 events before it were accepted"),
        "{detail}"
    );
    assert_eq!(stats(&cluster)["events"], 2);

    // A bad event in NDJSON: 422 with the field and the line.
    let reply = ndjson(
        &cluster,
        "/v1/events",
        &format!("{ok}\n{{\"source\":\"s\",\"data\":{{}}}}\n"),
    );
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert_eq!(reply.body["field"], "event_type");
    assert!(reply.text.contains("line 2"), "{}", reply.text);

    // A bad line after several chunks (the node writes one chunk while it
    // parses the next): every line before it is kept, in order.
    let before = stats(&cluster)["events"].as_u64().unwrap_or_default();
    let body = format!(
        "{}{{\"source\": oops}}\n",
        lines(5_000, |_| "chunked".into())
    );
    let reply = ndjson(&cluster, "/v1/events", &body);
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.text.contains("line 5001"), "{}", reply.text);
    assert!(
        reply.text.contains("5000 events before it were accepted"),
        "{}",
        reply.text
    );
    assert_eq!(stats(&cluster)["events"], before + 5_000);
    let page = cluster.get("n1", "/v1/events?source=chunked&limit=1000");
    let values: Vec<u64> = page.body["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["data"]["value"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(values, (0..1_000).collect::<Vec<_>>());

    // Over the configured limit, streamed: 413.
    let reply = ndjson(&cluster, "/v1/events", &lines(20_000, |_| "big".into()));
    assert_eq!(reply.status, 413, "{}", reply.text);

    // The webhook aliases insist on their shape.
    assert_eq!(
        cluster
            .post("n1", "/webhook/ingest", &format!("[{ok}]"))
            .status,
        422
    );
    assert_eq!(cluster.post("n1", "/webhook/batch", ok).status, 422);
    assert_eq!(cluster.get("n1", "/v1/events?limit=0").status, 422);
    assert_eq!(cluster.get("n1", "/v1/events?from=noon").status, 422);
}

#[test]
fn acknowledged_events_survive_sigkill() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);
    let reply = ndjson(
        &cluster,
        "/v1/events",
        &lines(5_000, |i| format!("s{}", i % 2)),
    );
    assert_eq!(reply.status, 202, "{}", reply.text);
    cluster.kill("n1");
    cluster.start("n1", &[]);
    let totals = stats(&cluster);
    assert_eq!(totals["events"], 5_000);
    assert_eq!(totals["sources"]["s1"], 2_500);
    // The ids are remembered: resending the same stream adds nothing.
    let again = ndjson(
        &cluster,
        "/v1/events",
        &lines(5_000, |i| format!("s{}", i % 2)),
    );
    assert_eq!(
        (&again.body["accepted"], &again.body["duplicate"]),
        (&json!(0), &json!(5_000))
    );
    let last = cluster.get("n1", "/v1/events?cursor=4999").body;
    assert_eq!(last["events"][0]["offset"], 5_000);
    assert!(last["next_cursor"].is_null());
}

#[test]
fn a_saturated_node_answers_429_with_retry_after_and_writes_nothing() {
    use std::io::{Read, Write};
    let mut cluster = Cluster::new(1, "[ingest]\nmax_concurrent_requests = 1\n");
    cluster.start("n1", &[]);
    let event = r#"{"source":"s","event_type":"t","data":{}}"#;
    // A slow client holds the one place: headers sent, body not yet.
    let address = cluster.url("n1").trim_start_matches("http://").to_owned();
    let mut slow = std::net::TcpStream::connect(&address).expect("connect");
    write!(
        slow,
        "POST /v1/events HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        event.len(),
        &event[..10]
    )
    .expect("send head");
    troupe_tests::wait_until(
        std::time::Duration::from_secs(10),
        "the slow request to hold its place",
        || {
            cluster
                .get("n1", "/metrics")
                .text
                .contains("troupe_ingest_requests_in_flight 1")
        },
    );
    match ureq::post(&format!("{}/v1/events", cluster.url("n1"))).send_string(event) {
        Err(ureq::Error::Status(429, reply)) => {
            assert_eq!(reply.header("retry-after"), Some("1"));
            let body: Value = reply.into_json().expect("error body");
            assert_eq!(body["error"], "saturated");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    assert_eq!(
        stats(&cluster)["events"],
        0,
        "the refused request wrote nothing"
    );
    // The slow request completes normally.
    slow.write_all(&event.as_bytes()[10..]).expect("send rest");
    let mut answer = [0u8; 12];
    slow.read_exact(&mut answer).expect("status line");
    assert_eq!(&answer, b"HTTP/1.1 202");
    assert_eq!(stats(&cluster)["events"], 1);
}

#[test]
fn retention_deletes_old_events_by_event_time_and_keeps_offsets_moving() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let day = 86_400_000;
    let mut body = String::new();
    for i in 0..3000u64 {
        // Every third event is 40 days old.
        let t = if i % 3 == 0 { now - 40 * day } else { now - i };
        let _ = writeln!(
            body,
            r#"{{"event_id":"k-{i}","source":"s{}","event_type":"t","timestamp":{t},"data":{{}}}}"#,
            i % 2
        );
    }
    assert_eq!(ndjson(&cluster, "/v1/events", &body).body["accepted"], 3000);

    assert_eq!(
        cluster.delete("n1", "/v1/events?older_than=soon").status,
        422
    );
    assert_eq!(cluster.delete("n1", "/v1/events").status, 422);
    let reply = cluster.delete("n1", "/v1/events?older_than=30d");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["deleted"], 1000);
    let totals = stats(&cluster);
    assert_eq!(totals["events"], 2000);
    assert_eq!(totals["sources"]["s0"], 1000);
    let (_, left) = cluster.get_ndjson("n1", "/v1/events");
    assert_eq!(left.len(), 2000);
    assert!(left
        .iter()
        .all(|e| e["timestamp_ms"].as_u64().unwrap_or(0) > now - day));

    // A deleted event's id is forgotten; offsets are never handed out twice,
    // across a restart too.
    cluster.kill("n1");
    cluster.start("n1", &[]);
    let again = ndjson(
        &cluster,
        "/v1/events",
        body.lines().next().unwrap_or_default(),
    );
    assert_eq!(again.body["accepted"], 1);
    assert_eq!(again.body["offsets"], json!([3001, 3001]));
    assert_eq!(stats(&cluster)["events"], 2001);
}

#[test]
fn events_send_generates_paced_load_and_reports_what_was_acknowledged() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);
    let started = std::time::Instant::now();
    let output = std::process::Command::new(troupe_tests::binary())
        .args([
            "events",
            "send",
            "--count",
            "3000",
            "--rate",
            "6000",
            "--sources",
            "5",
        ])
        .args(["--batch", "500", "--output", "json", "--node"])
        .arg(cluster.url("n1"))
        .output()
        .expect("run troupe events send");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let report: Value = serde_json::from_str(&text).expect("JSON report");
    assert_eq!(
        (&report["sent"], &report["accepted"]),
        (&json!(3000), &json!(3000))
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(450),
        "3000 events at 6000/s take half a second"
    );
    let totals = stats(&cluster);
    assert_eq!(totals["events"], 3000);
    assert_eq!(totals["sources"].as_object().map(|s| s.len()), Some(5));
}
