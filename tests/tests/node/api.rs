//! The HTTP API's answers to good and bad input, and what it exposes.

use troupe_tests::Cluster;

#[test]
fn bad_task_input_gets_a_clear_error_and_loses_nothing() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);
    let good = cluster.post("n1", "/v1/tasks", r#"{"kind":"echo","input":[1,2]}"#);
    assert_eq!(good.status, 202, "{}", good.text);

    let cases: &[(&str, u16, &str, Option<&str>)] = &[
        (r#"{"kind":"echo","#, 400, "malformed", None),
        (r#"{"kind":"echo"} trailing"#, 400, "malformed", None),
        ("", 400, "malformed", None),
        (r#"{"kind":"teleport"}"#, 422, "invalid_field", Some("kind")),
        (r#"{"kind":""}"#, 422, "invalid_field", Some("kind")),
        (r#"{"input":{}}"#, 422, "invalid_field", Some("kind")),
        (
            r#"{"kind":"echo","priority":"urgent"}"#,
            422,
            "invalid_field",
            Some("priority"),
        ),
        (
            r#"{"kind":"echo","priority":3}"#,
            422,
            "invalid_field",
            Some("priority"),
        ),
        (
            r#"{"kind":"echo","key":""}"#,
            422,
            "invalid_field",
            Some("key"),
        ),
        (
            r#"{"kind":"echo","colour":"red"}"#,
            422,
            "invalid_field",
            Some("colour"),
        ),
        (r#"[1,2]"#, 422, "invalid_field", Some("[0]")),
        ("[]", 422, "invalid_field", Some("(body)")),
    ];
    for (body, status, error, field) in cases {
        let reply = cluster.post("n1", "/v1/tasks", body);
        assert_eq!(reply.status, *status, "{body}: {}", reply.text);
        assert_eq!(reply.body["error"], *error, "{body}: {}", reply.text);
        assert!(!reply.body["detail"].as_str().unwrap_or_default().is_empty());
        match field {
            Some(field) => assert_eq!(reply.body["field"], *field, "{body}: {}", reply.text),
            None => assert!(reply.body.get("field").is_none(), "{body}: {}", reply.text),
        }
    }
    let long_key = format!(r#"{{"kind":"echo","key":"{}"}}"#, "k".repeat(300));
    assert_eq!(cluster.post("n1", "/v1/tasks", &long_key).status, 422);

    let huge = format!(r#"{{"kind":"echo","input":"{}"}}"#, "x".repeat(1 << 20));
    let too_large = cluster.post("n1", "/v1/tasks", &huge);
    assert_eq!(
        (too_large.status, &too_large.body["error"]),
        (413, &"too_large".into()),
        "{}",
        too_large.text
    );

    let missing = cluster.get("n1", "/v1/tasks/no-such-task");
    assert_eq!(
        (missing.status, &missing.body["error"]),
        (404, &"not_found".into())
    );
    let unknown = cluster.get("n1", "/v2/whatever");
    assert_eq!(
        (unknown.status, &unknown.body["error"]),
        (404, &"not_found".into())
    );

    let id = good.body["id"].as_str().expect("id");
    troupe_tests::wait_until(
        std::time::Duration::from_secs(10),
        "the echo task to finish",
        || cluster.get("n1", &format!("/v1/tasks/{id}")).body["state"] == "succeeded",
    );
    let record = cluster.get("n1", &format!("/v1/tasks/{id}")).body;
    assert_eq!(
        (&record["input"], &record["result"]),
        (&serde_json::json!([1, 2]), &serde_json::json!([1, 2]))
    );
}

#[test]
fn health_ready_and_metrics_answer_as_documented() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);
    let health = cluster.get("n1", "/health");
    assert_eq!(
        (health.status, &health.body["status"], &health.body["node"]),
        (200, &"ok".into(), &"n1".into())
    );
    let ready = cluster.get("n1", "/ready");
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(
        (&ready.body["store"], &ready.body["actors"]),
        (&true.into(), &true.into())
    );

    let tree = cluster.get("n1", "/v1/actors").body;
    let names: Vec<&str> = tree["children"]
        .as_array()
        .expect("children")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["membership", "plugins", "schedules", "scheduler", "ingest"]
    );

    let metrics = cluster.get("n1", "/metrics");
    assert_eq!(metrics.status, 200);
    let value = |series: &str| -> f64 {
        metrics
            .text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("missing {series}:\n{}", metrics.text))
    };
    // The harness polled /health while the node started.
    assert!(value(r#"troupe_http_requests_total{route="/health",status="200"}"#) >= 1.0);
    assert_eq!(
        value(r#"troupe_http_requests_total{route="/v1/actors",status="200"}"#),
        1.0
    );
    assert_eq!(
        value(r#"troupe_http_request_duration_seconds_count{route="/ready"}"#),
        1.0
    );
    assert_eq!(
        value(r#"troupe_http_request_duration_seconds_bucket{route="/ready",le="+Inf"}"#),
        1.0
    );
    assert_eq!(
        value(r#"troupe_actor_restarts_total{actor="node/ingest/shard-1"}"#),
        0.0
    );
}
