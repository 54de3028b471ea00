//! Alert rules over window aggregates, end to end: readings go in over
//! HTTP, windows close, and a rule that held for its duration is delivered
//! to a real webhook receiver once — a repeat within the suppression
//! minutes is recorded but not delivered — then resolved; the rules'
//! state is in `GET /v1/alerts` and on the dashboard. A rule that cannot
//! work keeps the node from starting, naming it.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use troupe_tests::{binary, free_port, wait_until, Cluster};

const BASE: u64 = 1_767_225_600_000;

/// A webhook receiver: every POST body it gets, as JSON, on the channel.
fn receiver() -> (u16, mpsc::Receiver<Value>) {
    let port = free_port();
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind receiver");
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if sender
                .send(serde_json::from_slice(&body).unwrap_or(Value::Null))
                .is_err()
            {
                return;
            }
        }
    });
    (port, received)
}

fn config(webhook_port: u16) -> String {
    format!(
        r#"
[[pipelines]]
id = "temps"
event_type = "reading"
key_by = "source"
window = {{ kind = "tumbling", size_ms = 1000 }}
aggregates = [{{ op = "count" }}, {{ op = "avg", field = "data.temperature" }}]
watermark_delay_ms = 0

[[alerts]]
name = "hot"
pipeline = "temps"
when = "avg(data.temperature) > 30 for 3s"
level = "critical"
suppress_minutes = 10
webhook = "http://127.0.0.1:{webhook_port}/alerts"

[[alerts]]
name = "freezing"
pipeline = "temps"
when = "avg(data.temperature) < 0"
level = "info"
"#
    )
}

/// Two readings a second per source; `s1` follows `hot`, `s2` stays mild;
/// a last reading at second 20 closes every window before it.
fn readings(hot: &[f64]) -> String {
    let mut body = String::new();
    let mut line = |id: String, source: &str, t: u64, temperature: f64| {
        let _ = writeln!(
            body,
            r#"{{"event_id":"{id}","source":"{source}","event_type":"reading","timestamp":{t},"data":{{"temperature":{temperature}}}}}"#
        );
    };
    for (second, temperature) in hot.iter().enumerate() {
        let t = BASE + second as u64 * 1000;
        for half in 0..2 {
            line(
                format!("s1-{second}-{half}"),
                "s1",
                t + half * 500,
                *temperature,
            );
            line(format!("s2-{second}-{half}"), "s2", t + half * 500, 20.0);
        }
    }
    for source in ["s1", "s2"] {
        line(format!("{source}-end"), source, BASE + 20_000, 20.0);
    }
    body
}

#[test]
fn a_rule_fires_once_when_its_condition_held_long_enough_suppresses_repeats_and_resolves() {
    let (port, delivered) = receiver();
    let mut cluster = Cluster::new(1, &config(port));
    cluster.start("n1", &[]);
    // s1: hot 2 s (too short), cool, hot 4 s (fires at the third),
    // cool (resolves), hot 3 s again (within the suppression minutes), cool.
    let temperatures = [
        31.0, 35.0, 20.0, 31.0, 31.0, 31.0, 40.0, 25.0, 31.0, 33.0, 31.0, 10.0,
    ];
    let reply = cluster.post_as(
        "n1",
        "/v1/events",
        "application/x-ndjson",
        &readings(&temperatures),
    );
    assert_eq!(reply.status, 202, "{}", reply.text);

    wait_until(
        Duration::from_secs(20),
        "four notifications of rule hot",
        || cluster.get("n1", "/v1/alerts").body["rules"][0]["raised"] == 4,
    );
    let view = cluster.get("n1", "/v1/alerts").body;
    let hot = &view["rules"][0];
    assert_eq!(hot["rule"]["name"], "hot");
    assert_eq!(hot["suppressed"], 2, "{hot}");
    assert_eq!(hot["firing"], serde_json::json!([]), "{hot}");
    assert_eq!(view["rules"][1]["raised"], 0, "s2 never froze: {view}");
    let recent: Vec<(String, bool, u64)> = view["recent"]
        .as_array()
        .expect("recent")
        .iter()
        .map(|e| {
            (
                e["state"].as_str().unwrap_or_default().to_owned(),
                e["suppressed"].as_bool().unwrap_or_default(),
                e["since_ms"].as_u64().unwrap_or_default() - BASE,
            )
        })
        .collect();
    assert_eq!(
        recent,
        [
            ("resolved".into(), true, 11_000),
            ("firing".into(), true, 8_000),
            ("resolved".into(), false, 7_000),
            ("firing".into(), false, 3_000),
        ],
        "newest first: {view}"
    );

    // The webhook got the delivered two, in order, and nothing else.
    let first = delivered
        .recv_timeout(Duration::from_secs(10))
        .expect("firing delivered");
    assert_eq!(
        (
            &first["rule"],
            &first["state"],
            &first["level"],
            &first["key"],
            &first["node"]
        ),
        (
            &"hot".into(),
            &"firing".into(),
            &"critical".into(),
            &"s1".into(),
            &"n1".into()
        ),
        "{first}"
    );
    assert_eq!(first["value"], 31.0);
    assert_eq!(first["window_end_ms"], BASE + 6_000);
    let second = delivered
        .recv_timeout(Duration::from_secs(10))
        .expect("resolution delivered");
    assert_eq!(
        (&second["state"], &second["value"]),
        (&"resolved".into(), &25.0.into()),
        "{second}"
    );
    assert!(
        delivered.recv_timeout(Duration::from_secs(2)).is_err(),
        "suppressed notifications must not be delivered"
    );

    // The dashboard carries them too.
    let snapshot = cluster.get("n1", "/v1/dashboard").body;
    assert_eq!(
        snapshot["alerts"].as_array().map(Vec::len),
        Some(4),
        "{snapshot}"
    );
    assert_eq!(snapshot["alerts"][3]["rule"], "hot");
}

#[test]
fn a_rule_that_cannot_work_keeps_the_node_from_starting() {
    for (rule, field, says) in [
        (
            r#"when = "max(data.temperature) > 30""#,
            "alerts[0].when",
            "has count, avg(data.temperature)",
        ),
        (
            r#"when = "avg(data.temperature) > 30 for 5 minutes""#,
            "alerts[0].when",
            "expected",
        ),
        (
            "when = \"count > 1\"\nwebhook = \"ftp://example.com\"",
            "alerts[0].webhook",
            "http",
        ),
    ] {
        let extra = config(1).replace(r#"when = "avg(data.temperature) > 30 for 3s""#, rule);
        let extra = extra.replace(r#"webhook = "http://127.0.0.1:1/alerts""#, "");
        let cluster = Cluster::new(1, &extra);
        let out = Command::new(binary())
            .args(["node", "--config"])
            .arg(cluster.config_path())
            .args(["--id", "n1"])
            .output()
            .expect("run troupe");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{rule}: {stderr}");
        assert!(
            stderr.contains(field) && stderr.contains(says),
            "{rule}: {stderr}"
        );
    }
}
