//! Pipelines over ingested events: tumbling windows with out-of-order and
//! late events, checked against values computed here; and exactly-once
//! results across a SIGKILL.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};
use troupe_tests::{wait_until, Cluster};

pub(crate) const PIPELINE: &str = r#"
[[pipelines]]
id = "temps"
event_type = "reading"
key_by = "source"
window = { kind = "tumbling", size_ms = 1000 }
aggregates = [{ op = "count" }, { op = "sum", field = "data.v" }, { op = "max", field = "data.v" }, { op = "avg", field = "data.v" }]
watermark_delay_ms = 300
"#;

pub(crate) const BASE: u64 = 1_767_225_600_000;

/// (id, source, event time, value): three sources, each out of order by up
/// to 250 ms (less than the watermark delay), over about 30 s.
pub(crate) fn readings() -> Vec<(String, String, u64, u64)> {
    readings_n(3000)
}

/// `n` readings, 10 ms of event time apart.
fn readings_n(n: u64) -> Vec<(String, String, u64, u64)> {
    (0..n)
        .map(|i| {
            let jitter = (i * 7919) % 250;
            let t = BASE + i * 10 + 250 - jitter;
            (format!("r-{i}"), format!("s{}", i % 3), t, i % 10)
        })
        .collect()
}

pub(crate) fn ndjson(events: &[(String, String, u64, u64)], event_type: &str) -> String {
    let mut body = String::new();
    for (id, source, t, v) in events {
        let _ = writeln!(
            body,
            r#"{{"event_id":"{id}","source":"{source}","event_type":"{event_type}","timestamp":{t},"data":{{"v":{v}}}}}"#
        );
    }
    body
}

/// Closed windows per (source, start) as the node should store them.
pub(crate) fn expected(
    events: &[(String, String, u64, u64)],
) -> BTreeMap<(String, u64), (u64, u64, u64)> {
    let mut windows: BTreeMap<(String, u64), (u64, u64, u64)> = BTreeMap::new();
    for (_, source, t, v) in events {
        let w = windows.entry((source.clone(), t - t % 1000)).or_default();
        w.0 += 1;
        w.1 += v;
        w.2 = w.2.max(*v);
    }
    windows
}

fn stored(cluster: &Cluster) -> Vec<Value> {
    let mut all = Vec::new();
    let mut path = "/v1/aggregates?pipeline=temps&limit=50".to_owned();
    loop {
        let page = cluster.get("n1", &path);
        assert_eq!(page.status, 200, "{}", page.text);
        all.extend(page.body["results"].as_array().cloned().unwrap_or_default());
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/aggregates?pipeline=temps&limit=50&cursor={c}"),
            None => return all,
        }
    }
}

pub(crate) fn send(cluster: &Cluster, body: &str) -> Value {
    let reply = cluster.post_as("n1", "/v1/events", "application/x-ndjson", body);
    assert_eq!(reply.status, 202, "{}", reply.text);
    reply.body
}

/// Moves every source's watermark to `at`, closing every earlier window.
pub(crate) fn close_at(cluster: &Cluster, at: u64) {
    let last: Vec<(String, String, u64, u64)> = (0..3)
        .map(|s| (format!("end-{at}-{s}"), format!("s{s}"), at, 0))
        .collect();
    send(cluster, &ndjson(&last, "reading"));
}

fn assert_results_match(cluster: &Cluster, events: &[(String, String, u64, u64)]) {
    let want = expected(events);
    wait_until(Duration::from_secs(20), "every window stored", || {
        stored(cluster).len() >= want.len()
    });
    let got = stored(cluster);
    assert_eq!(got.len(), want.len(), "one result per window, no more");
    for result in got {
        let key = (
            result["key"].as_str().unwrap_or_default().to_owned(),
            result["window_start_ms"].as_u64().unwrap_or_default(),
        );
        let (count, sum, max) = want[&key];
        assert_eq!(result["window_end_ms"], key.1 + 1000);
        assert_eq!(result["events"], count, "{result}");
        assert_eq!(result["values"]["count"], count as f64, "{result}");
        assert_eq!(result["values"]["sum(data.v)"], sum as f64, "{result}");
        assert_eq!(result["values"]["max(data.v)"], max as f64, "{result}");
        assert_eq!(
            result["values"]["avg(data.v)"],
            sum as f64 / count as f64,
            "{result}"
        );
    }
}

#[test]
fn tumbling_windows_match_values_computed_independently_and_late_events_are_kept() {
    let mut cluster = Cluster::new(1, PIPELINE);
    cluster.start("n1", &[]);
    let events = readings();
    send(&cluster, &ndjson(&events, "reading"));
    // Other event types do not count.
    send(
        &cluster,
        &ndjson(&[("x".into(), "s0".into(), BASE + 500, 1000)], "other"),
    );
    close_at(&cluster, BASE + 100_000);
    assert_results_match(&cluster, &events);

    // Now long past: late, counted and retrievable, and no window changes.
    let reply = send(
        &cluster,
        &ndjson(
            &[
                ("late-1".into(), "s1".into(), BASE + 20, 5),
                ("on-time".into(), "s1".into(), BASE + 100_500, 5),
            ],
            "reading",
        ),
    );
    assert_eq!(
        (&reply["accepted"], &reply["late"]),
        (&json!(2), &json!(1)),
        "the reply says which arrived late: {reply}"
    );
    wait_until(Duration::from_secs(10), "the late event counted", || {
        cluster.get("n1", "/v1/pipelines").body[0]["counters"]["late"] == 1
    });
    let late = cluster.get("n1", "/v1/pipelines/temps/late").body;
    assert_eq!(late["events"][0]["event_id"], "late-1");
    assert_results_match(&cluster, &events);

    let (status, lines) = cluster.get_ndjson("n1", "/v1/aggregates?pipeline=temps");
    assert_eq!(status, 200);
    assert_eq!(lines, stored(&cluster), "the same results, streamed");

    let checkpoint = cluster.post("n1", "/v1/checkpoint", "");
    assert_eq!(checkpoint.status, 200, "{}", checkpoint.text);
    let shard = cluster.get("n1", "/v1/pipelines/temps/stats").body["shard"].clone();
    assert_eq!(
        checkpoint.body["checkpointed"][format!("node/ingest/shard-{shard}")],
        cluster.get("n1", "/stats").body["events"],
        "the shard running the pipeline covers the whole log"
    );

    let marks = cluster.get("n1", "/v1/watermarks").body;
    assert_eq!(marks["temps"]["watermark_ms"], BASE + 100_000 - 300);
    assert_eq!(marks["temps"]["sources"]["s2"], BASE + 100_000 - 300);
    let open = cluster.get("n1", "/v1/windows").body;
    assert_eq!(
        open,
        json!([{"pipeline": "temps", "open_windows": 3, "watermark_ms": BASE + 100_000 - 300}])
    );
    assert_eq!(
        cluster.get("n1", "/v1/aggregates").status,
        422,
        "pipeline is required"
    );
    let no_db = cluster.get("n1", "/v1/aggregates?pipeline=temps&source=postgres");
    assert_eq!(
        (no_db.status, &no_db.body["field"]),
        (422, &json!("source")),
        "{}",
        no_db.text
    );
}

#[test]
fn each_window_is_stored_exactly_once_across_a_sigkill_and_a_resend() {
    let mut cluster = Cluster::new(1, PIPELINE);
    cluster.start("n1", &[]);
    let events = readings();
    let (first, _) = events.split_at(1800);
    send(&cluster, &ndjson(first, "reading"));
    // Killed while the shard works through the first part.
    cluster.kill("n1");
    cluster.start("n1", &[]);
    // The client resends everything it is unsure of: duplicates are dropped.
    let reply = send(&cluster, &ndjson(&events, "reading"));
    assert_eq!(
        (&reply["accepted"], &reply["duplicate"]),
        (&json!(1200), &json!(1800))
    );
    close_at(&cluster, BASE + 100_000);
    assert_results_match(&cluster, &events);
}

#[test]
fn a_bad_pipeline_in_the_config_is_refused_with_its_key() {
    let cluster = Cluster::new(
        1,
        "[[pipelines]]\nid = \"p\"\nwindow = { kind = \"sliding\", size_ms = 10, slide_ms = 20 }\naggregates = [{ op = \"count\" }]\n",
    );
    let output = std::process::Command::new(troupe_tests::binary())
        .args(["node", "--id", "n1", "--config"])
        .arg(cluster.config_path())
        .output()
        .expect("run troupe");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pipelines[0].window.slide_ms"), "{stderr}");
}

/// Runs `events` through a one-pipeline node with `window` and returns
/// the stored results as (key, start, end, events, sum).
fn windows_of(
    window: &str,
    events: &[(String, String, u64, u64)],
) -> Vec<(String, u64, u64, u64, f64)> {
    let mut cluster = Cluster::new(
        1,
        &format!(
            "[[pipelines]]\nid = \"temps\"\nkey_by = \"source\"\nwindow = {window}\n\
             aggregates = [{{ op = \"count\" }}, {{ op = \"sum\", field = \"data.v\" }}]\nwatermark_delay_ms = 300\n"
        ),
    );
    cluster.start("n1", &[]);
    send(&cluster, &ndjson(events, "reading"));
    close_at(&cluster, BASE + 100_000);
    wait_until(
        Duration::from_secs(20),
        "the shard to reach the end",
        || {
            cluster.get("n1", "/v1/watermarks").body["temps"]["watermark_ms"]
                == BASE + 100_000 - 300
        },
    );
    stored(&cluster)
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap_or_default().to_owned(),
                r["window_start_ms"].as_u64().unwrap_or_default(),
                r["window_end_ms"].as_u64().unwrap_or_default(),
                r["events"].as_u64().unwrap_or_default(),
                r["values"]["sum(data.v)"].as_f64().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn sliding_windows_hold_every_event_of_their_span() {
    let events = readings();
    let got = windows_of(
        "{ kind = \"sliding\", size_ms = 2000, slide_ms = 500 }",
        &events,
    );
    // Independently: every [k*500, k*500+2000) with at least one event.
    let mut want = Vec::new();
    for source in ["s0", "s1", "s2"] {
        let first = events.iter().map(|e| e.2).min().unwrap_or(0);
        let last = events.iter().map(|e| e.2).max().unwrap_or(0);
        let mut start = first - first % 500 - 1500;
        while start <= last {
            let inside: Vec<u64> = events
                .iter()
                .filter(|e| e.1 == source && (start..start + 2000).contains(&e.2))
                .map(|e| e.3)
                .collect();
            if !inside.is_empty() {
                want.push((
                    source.to_owned(),
                    start,
                    start + 2000,
                    inside.len() as u64,
                    inside.iter().sum::<u64>() as f64,
                ));
            }
            start += 500;
        }
    }
    want.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let mut got = got;
    got.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    assert_eq!(got, want);
}

#[test]
fn session_windows_split_on_gaps_out_of_order_events_included() {
    // Bursts per source with 2 s pauses, each burst sent shuffled.
    let mut events = Vec::new();
    for burst in 0..5u64 {
        for i in 0..40u64 {
            let t = BASE + burst * 5_000 + (i * 37) % 40 * 20;
            let source = format!("s{}", i % 2);
            events.push((format!("b{burst}-{i}"), source, t, i));
        }
    }
    let got = windows_of("{ kind = \"session\", gap_ms = 500 }", &events);
    // Independently: per source, sort by time and cut where the gap is >= 500.
    let mut want = Vec::new();
    for source in ["s0", "s1"] {
        let mut mine: Vec<(u64, u64)> = events
            .iter()
            .filter(|e| e.1 == source)
            .map(|e| (e.2, e.3))
            .collect();
        mine.sort();
        let mut session: Vec<(u64, u64)> = Vec::new();
        for (t, v) in mine {
            if session.last().is_some_and(|(last, _)| t >= last + 500) {
                let start = session[0].0;
                let end = session.last().map_or(0, |l| l.0) + 500;
                want.push((
                    source.to_owned(),
                    start,
                    end,
                    session.len() as u64,
                    session.iter().map(|s| s.1).sum::<u64>() as f64,
                ));
                session.clear();
            }
            session.push((t, v));
        }
        let start = session[0].0;
        let end = session.last().map_or(0, |l| l.0) + 500;
        want.push((
            source.to_owned(),
            start,
            end,
            session.len() as u64,
            session.iter().map(|s| s.1).sum::<u64>() as f64,
        ));
    }
    want.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let mut got = got;
    got.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    assert_eq!(
        got.len(),
        10,
        "five bursts for each of two sources: {got:?}"
    );
    assert_eq!(got, want);
}

#[test]
fn pipelines_created_over_the_api_run_stop_resume_and_survive_a_restart() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);
    let events = readings();
    let (first, second) = events.split_at(1500);
    send(&cluster, &ndjson(first, "reading"));

    let spec = json!({
        "id": "temps",
        "event_type": "reading",
        "key_by": "source",
        "window": {"kind": "tumbling", "size_ms": 1000},
        "aggregates": [{"op": "count"}, {"op": "sum", "field": "data.v"}, {"op": "max", "field": "data.v"}, {"op": "avg", "field": "data.v"}],
        "watermark_delay_ms": 300
    });
    let mut bad = spec.clone();
    bad["window"]["size_ms"] = json!(0);
    let reply = cluster.post("n1", "/v1/pipelines", &bad.to_string());
    assert_eq!(
        (reply.status, &reply.body["field"]),
        (422, &json!("window.size_ms")),
        "{}",
        reply.text
    );
    // Over the log from its start (the default).
    let reply = cluster.post("n1", "/v1/pipelines", &spec.to_string());
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.body["running"], true);
    assert_eq!(
        cluster
            .post("n1", "/v1/pipelines", &spec.to_string())
            .status,
        409
    );

    // Paused, it takes nothing; the events wait in the log.
    assert_eq!(
        cluster.post("n1", "/v1/pipelines/temps/stop", "").status,
        200
    );
    assert_eq!(
        cluster.post("n1", "/v1/pipelines/nope/stop", "").status,
        404
    );
    let paused_at = cluster.get("n1", "/v1/pipelines/temps/stats").body["offset"].clone();
    send(&cluster, &ndjson(second, "reading"));
    assert_eq!(cluster.post("n1", "/v1/checkpoint", "").status, 200);
    assert_eq!(
        cluster.get("n1", "/v1/pipelines/temps/stats").body["offset"],
        paused_at
    );

    // It survives a SIGKILL (created over the API, not in the config),
    // resumes where it stopped, and its windows are exactly right.
    cluster.kill("n1");
    cluster.start("n1", &[]);
    let status = cluster.get("n1", "/v1/pipelines/temps/stats").body;
    assert_eq!(
        (&status["running"], &status["offset"]),
        (&json!(false), &paused_at)
    );
    assert_eq!(
        cluster.post("n1", "/v1/pipelines/temps/start", "").status,
        200
    );
    close_at(&cluster, BASE + 100_000);
    assert_results_match(&cluster, &events);
}

#[test]
fn a_node_killed_mid_stream_then_sent_the_whole_stream_again_stores_exact_windows() {
    let mut cluster = Cluster::new(1, PIPELINE);
    cluster.start("n1", &[]);
    let events = readings_n(200_000);
    let body = ndjson(&events, "reading");
    let url = format!("{}/v1/events", cluster.url("n1"));
    let upload = std::thread::spawn(move || {
        ureq::post(&url)
            .set("Content-Type", "application/x-ndjson")
            .send_string(&body)
            .map(|reply| reply.status())
            .ok()
    });
    wait_until(
        Duration::from_secs(30),
        "part of the stream in the log",
        || {
            cluster.get("n1", "/stats").body["events"]
                .as_u64()
                .unwrap_or(0)
                >= 20_000
        },
    );
    cluster.kill("n1");
    assert_eq!(
        upload.join().expect("upload thread"),
        None,
        "the kill came while the stream was still being ingested"
    );
    cluster.start("n1", &[]);
    let kept = cluster.get("n1", "/stats").body["events"]
        .as_u64()
        .unwrap_or(0);
    // Unacknowledged, some may be gone (only an acknowledgement promises
    // durability); whatever survived must not be counted twice.
    assert!(kept < 200_000, "{kept} events survived the kill");
    // Not acknowledged, so the client sends it all again.
    let reply = send(&cluster, &ndjson(&events, "reading"));
    assert_eq!(
        (&reply["accepted"], &reply["duplicate"]),
        (&json!(200_000 - kept), &json!(kept))
    );
    close_at(&cluster, BASE + 10_000_000);
    assert_results_match(&cluster, &events);
}
