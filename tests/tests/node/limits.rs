//! Per-client rate limits: over its rate a client gets 429 with
//! Retry-After and the usual error body; probes are never limited; the
//! client gets through again once the wait has passed.

use std::time::Duration;

use serde_json::Value;
use troupe_tests::{wait_until, Cluster};

/// GET `path` on n1: status, Retry-After header, body.
fn get(cluster: &Cluster, path: &str) -> (u16, Option<String>, Value) {
    let url = format!("{}{path}", cluster.url("n1"));
    let response = match ureq::get(&url).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let status = response.status();
    let retry_after = response.header("Retry-After").map(str::to_owned);
    let body = response.into_json().unwrap_or(Value::Null);
    (status, retry_after, body)
}

#[test]
fn a_client_over_its_rate_gets_429_with_retry_after_and_probes_are_exempt() {
    let mut cluster = Cluster::new(1, "[limits]\nrequests_per_second = 1\nburst = 3\n");
    // The harness waits on /health, which is never limited.
    cluster.start("n1", &[]);
    let statuses: Vec<u16> = (0..5).map(|_| get(&cluster, "/v1/cluster").0).collect();
    assert_eq!(&statuses[..3], [200, 200, 200], "the burst: {statuses:?}");
    assert_eq!(statuses[3..], [429, 429], "then limited: {statuses:?}");

    let (status, retry_after, body) = get(&cluster, "/v1/tasks");
    assert_eq!(status, 429, "every route, by client: {body}");
    assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
    assert_eq!(body["error"], "rate_limited");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("127.0.0.1")),
        "{body}"
    );
    let submit = cluster.post("n1", "/v1/tasks", r#"{"kind":"echo"}"#);
    assert_eq!(submit.status, 429, "nothing accepted: {}", submit.text);

    for probe in ["/health", "/ready", "/metrics"] {
        assert_eq!(get(&cluster, probe).0, 200, "{probe} is never limited");
    }
    let metrics = cluster.get("n1", "/metrics").text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("troupe_http_rate_limited_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // The rate refills: one request a second gets through again.
    wait_until(
        Duration::from_secs(5),
        "the client let through again",
        || get(&cluster, "/v1/cluster").0 == 200,
    );
}
