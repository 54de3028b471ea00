//! `GET /openapi.json` on a real node, and the one error shape on every
//! kind of refusal: each bad request below gets `{error, detail, field?}`,
//! with a status the document lists for that operation.

use serde_json::Value;
use troupe_tests::Cluster;

/// Asserts `body` is the error body: `error` and `detail` strings, and
/// nothing but those and an optional `field` string.
fn assert_error_shape(what: &str, body: &Value, text: &str) {
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not a JSON object: {text}"));
    assert!(object["error"].is_string(), "{what}: {text}");
    assert!(
        object["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}: {text}"
    );
    for (key, value) in object {
        match key.as_str() {
            "error" | "detail" => {}
            "field" => assert!(value.is_string(), "{what}: {text}"),
            other => panic!("{what}: unexpected key {other}: {text}"),
        }
    }
}

/// A bad request: method, path, content type, body, the status expected,
/// and the path of its operation in the document (none for a request no
/// operation takes).
type Case<'a> = (&'a str, &'a str, &'a str, &'a str, u16, Option<&'a str>);

/// A request with a method the harness has no helper for.
fn other_method(base: &str, method: &str, path: &str, body: &str) -> troupe_tests::Reply {
    let response = match ureq::request(&method.to_uppercase(), &format!("{base}{path}"))
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = response.status();
    let allow = response.header("Allow").map(str::to_owned);
    let text = response.into_string().unwrap_or_default();
    if status == 405 {
        assert!(
            allow.is_some_and(|a| !a.is_empty()),
            "{method} {path}: 405 without Allow"
        );
    }
    troupe_tests::Reply {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

#[test]
fn the_document_is_served_and_every_refusal_has_the_error_shape() {
    let mut cluster = Cluster::new(1, "");
    cluster.start("n1", &[]);

    let doc = cluster.get("n1", "/openapi.json");
    assert_eq!(doc.status, 200, "{}", doc.text);
    assert!(doc.body["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));
    let paths = doc.body["paths"].as_object().expect("paths");
    assert!(paths.len() >= 25, "{} paths", paths.len());
    let documented = |method: &str, path: &str, status: u16| {
        doc.body["paths"][path][method]["responses"][status.to_string()].is_object()
    };

    let huge = format!(r#"{{"kind":"echo","input":"{}"}}"#, "x".repeat(1 << 20));
    let cases: &[Case] = &[
        (
            "post",
            "/v1/tasks",
            "application/json",
            "{",
            400,
            Some("/v1/tasks"),
        ),
        (
            "post",
            "/v1/tasks",
            "application/json",
            &huge,
            413,
            Some("/v1/tasks"),
        ),
        (
            "post",
            "/v1/tasks",
            "application/json",
            "[]",
            422,
            Some("/v1/tasks"),
        ),
        (
            "post",
            "/v1/events",
            "application/x-ndjson",
            "{\"source\":\"s\",\"event_type\":\"t\",\"data\":{}}\n{oops\n",
            400,
            Some("/v1/events"),
        ),
        (
            "post",
            "/v1/events",
            "application/x-ndjson",
            "{\"source\":\"\",\"event_type\":\"t\",\"data\":{}}\n",
            422,
            Some("/v1/events"),
        ),
        (
            "post",
            "/webhook/ingest",
            "application/json",
            "[]",
            422,
            Some("/webhook/ingest"),
        ),
        (
            "post",
            "/v1/actors/node/ingestor/crash",
            "application/json",
            "",
            403,
            Some("/v1/actors/{path}/crash"),
        ),
        (
            "post",
            "/v1/pipelines/nope/start",
            "application/json",
            "",
            404,
            Some("/v1/pipelines/{id}/start"),
        ),
        ("get", "/v1/tasks?limit=0", "", "", 422, Some("/v1/tasks")),
        (
            "get",
            "/v1/tasks?colour=red",
            "",
            "",
            422,
            Some("/v1/tasks"),
        ),
        ("get", "/v1/tasks/nope", "", "", 404, Some("/v1/tasks/{id}")),
        ("get", "/v1/aggregates", "", "", 422, Some("/v1/aggregates")),
        (
            "delete",
            "/v1/events?older_than=soon",
            "",
            "",
            422,
            Some("/v1/events"),
        ),
        ("get", "/v1/nothing-here", "", "", 404, None),
        ("put", "/health", "application/json", "{}", 405, None),
        ("patch", "/v1/checkpoint", "", "", 405, None),
    ];
    for (method, path, content_type, body, status, doc_path) in cases {
        let what = format!("{method} {path}");
        let reply = match *method {
            "get" => cluster.get("n1", path),
            "delete" => cluster.delete("n1", path),
            "post" => cluster.post_as("n1", path, content_type, body),
            other => other_method(&cluster.url("n1"), other, path, body),
        };
        assert_eq!(reply.status, *status, "{what}: {}", reply.text);
        assert_error_shape(&what, &reply.body, &reply.text);
        if let Some(doc_path) = doc_path {
            assert!(
                documented(method, doc_path, *status),
                "{what}: {status} is not in the document"
            );
        }
    }
}
