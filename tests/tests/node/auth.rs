//! Client authentication: with `[auth] required`, every route that
//! changes something answers 401 without a token or with a bad one, 403
//! to a read-only token, and works with an admin token — static or a JWT
//! minted by `troupe token` with the cluster secret. Reads stay open
//! unless `protect_reads`; probes are always open.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use troupe_tests::{binary, Cluster};

const AUTH: &str = r#"
[auth]
required = true
tokens = [
  { name = "ops", token = "static-admin-token", role = "admin" },
  { name = "viewer", token = "static-read-token", role = "read" },
]
"#;

/// Every route that changes something, with a body it accepts.
const MUTATING: &[(&str, &str, &str)] = &[
    ("POST", "/v1/tasks", r#"{"kind":"echo"}"#),
    (
        "DELETE",
        "/v1/tasks/0190a0a0-0000-7000-8000-000000000000",
        "",
    ),
    ("PUT", "/v1/workers", r#"{"count":4}"#),
    (
        "POST",
        "/v1/events",
        r#"{"source":"s","event_type":"t","data":{}}"#,
    ),
    ("DELETE", "/v1/events?older_than=3650d", ""),
    (
        "POST",
        "/webhook/ingest",
        r#"{"source":"s","event_type":"t","data":{}}"#,
    ),
    (
        "POST",
        "/webhook/batch",
        r#"[{"source":"s","event_type":"t","data":{}}]"#,
    ),
    (
        "POST",
        "/v1/pipelines",
        r#"{"id":"p","window":{"kind":"tumbling","size_ms":1000},"aggregates":[{"op":"count"}]}"#,
    ),
    ("POST", "/v1/pipelines/p/stop", ""),
    ("POST", "/v1/pipelines/p/start", ""),
    ("POST", "/v1/checkpoint", ""),
    (
        "POST",
        "/v1/schedules",
        r#"{"cron":"0 0 * * *","task":{"kind":"echo"}}"#,
    ),
    ("DELETE", "/v1/schedules/nope", ""),
    ("POST", "/v1/actors/node/schedules/crash", ""),
];

/// (status, WWW-Authenticate, body) of `method path` with `token`.
fn call(
    cluster: &Cluster,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut request = ureq::request(method, &format!("{}{path}", cluster.url("n1")))
        .set("Content-Type", "application/json");
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    let response = match request.send_string(body) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = response.status();
    let challenge = response.header("WWW-Authenticate").map(str::to_owned);
    (
        status,
        challenge,
        response.into_json().unwrap_or(Value::Null),
    )
}

/// A JWT from `troupe token` for the cluster of `config`.
fn mint(config: &Path, role: &str) -> String {
    let out = Command::new(binary())
        .args(["token", "--config"])
        .arg(config)
        .args(["--role", role, "--subject", "test"])
        .output()
        .expect("run troupe token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[test]
fn every_mutating_route_needs_a_token_that_allows_it() {
    let mut cluster = Cluster::new(1, AUTH);
    cluster.start("n1", &["--fault-injection"]);
    let admin_jwt = mint(cluster.config_path(), "admin");
    let read_jwt = mint(cluster.config_path(), "read");
    let foreign = cluster.config_variant("foreign", |c| c.replace("test-secret", "another-secret"));
    let foreign_jwt = mint(&foreign, "admin");

    for &(method, path, body) in MUTATING {
        let what = format!("{method} {path}");
        let (status, challenge, reply) = call(&cluster, method, path, body, None);
        assert_eq!(status, 401, "{what} without a token: {reply}");
        assert_eq!(challenge.as_deref(), Some("Bearer"), "{what}");
        assert_eq!(reply["error"], "unauthorized", "{what}: {reply}");
        for wrong in ["wrong", foreign_jwt.as_str()] {
            let (status, _, reply) = call(&cluster, method, path, body, Some(wrong));
            assert_eq!(status, 401, "{what} with a bad token: {reply}");
            assert!(
                reply["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("invalid token")),
                "{reply}"
            );
        }
        for reader in ["static-read-token", read_jwt.as_str()] {
            let (status, _, reply) = call(&cluster, method, path, body, Some(reader));
            assert_eq!(status, 403, "{what} with a read token: {reply}");
            assert!(
                reply["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("may only read")),
                "{reply}"
            );
        }
        for admin in ["static-admin-token", admin_jwt.as_str()] {
            let (status, _, reply) = call(&cluster, method, path, body, Some(admin));
            assert!(
                status != 401 && status != 403,
                "{what} with an admin token: {status} {reply}"
            );
        }
    }
    // Reads and probes stay open (`/ready` may say 503 while the crashed
    // actor restarts: that is readiness, not a refusal).
    for path in [
        "/v1/tasks",
        "/v1/cluster",
        "/v1/plugins",
        "/health",
        "/ready",
        "/metrics",
    ] {
        let status = cluster.get("n1", path).status;
        assert!(status != 401 && status != 403, "{path}: {status}");
    }
}

#[test]
fn protect_reads_puts_reads_behind_a_token_too() {
    let mut cluster = Cluster::new(1, &format!("{AUTH}protect_reads = true\n"));
    cluster.start("n1", &[]);
    let (status, _, reply) = call(&cluster, "GET", "/v1/tasks", "", None);
    assert_eq!(status, 401, "{reply}");
    let (status, _, reply) = call(&cluster, "GET", "/v1/tasks", "", Some("static-read-token"));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(cluster.get("n1", "/health").status, 200, "probes stay open");
}
