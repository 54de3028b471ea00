//! The built-in task kinds, for real use and for testing the machinery:
//! `echo`, `sleep {ms}`, `cpu {iterations}`, `fail {message}`, `panic`, and
//! `hang {ms}` (ignores its timeout and cancellation: a stuck worker, for
//! testing the pool's stuck-worker check).
//!
//! Input is checked at submission (a 422 names the field); running honours
//! the cancellation token, so timeouts and `DELETE` stop work promptly.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Longest `sleep` accepted.
pub const MAX_SLEEP_MS: u64 = 3_600_000;
/// Most `cpu` iterations accepted.
pub const MAX_CPU_ITERATIONS: u64 = 10_000_000_000;

/// Names of the built-in kinds.
pub const BUILTIN: &[&str] = &["echo", "sleep", "cpu", "fail", "panic", "hang"];

/// The kind a worker turns into a panic (its supervisor replaces it).
pub const PANIC: &str = "panic";

/// The kind that ties up its worker, deaf to timeout and cancel.
pub const HANG: &str = "hang";

fn field_u64(input: &Value, name: &str, max: u64) -> Result<u64, (String, String)> {
    let field = format!("input.{name}");
    match input.get(name) {
        None => Err((field, "is required".into())),
        Some(v) => match v.as_u64() {
            Some(n) if n <= max => Ok(n),
            _ => Err((field, format!("must be an integer from 0 to {max}"))),
        },
    }
}

/// Checks `input` for `kind`; `Err((field path, reason))`.
pub fn validate(kind: &str, input: &Value) -> Result<(), (String, String)> {
    match kind {
        "sleep" | "hang" => field_u64(input, "ms", MAX_SLEEP_MS).map(|_| ()),
        "cpu" => field_u64(input, "iterations", MAX_CPU_ITERATIONS).map(|_| ()),
        "fail" => match input.get("message") {
            None | Some(Value::String(_)) => Ok(()),
            Some(_) => Err(("input.message".into(), "must be a string".into())),
        },
        "echo" | "panic" => Ok(()),
        other => Err(("kind".into(), format!("unknown task kind {other:?}"))),
    }
}

/// Runs one attempt of a validated task. `panic` is handled by the worker.
pub async fn run(kind: &str, input: Value, cancel: &CancellationToken) -> Result<Value, String> {
    match kind {
        "echo" => Ok(input),
        "sleep" => {
            let ms = input.get("ms").and_then(Value::as_u64).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(json!({ "slept_ms": ms }))
        }
        "cpu" => {
            let iterations = input.get("iterations").and_then(Value::as_u64).unwrap_or(0);
            let cancel = cancel.clone();
            // Hashing is CPU-bound: keep it off the async worker threads.
            tokio::task::spawn_blocking(move || hash_rounds(iterations, &cancel))
                .await
                .map_err(|e| format!("cpu task aborted: {e}"))?
                .map(|digest| json!({ "iterations": iterations, "digest": format!("{digest:016x}") }))
        }
        "fail" => Err(input
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("failed on request")
            .to_owned()),
        other => Err(format!("unknown task kind {other:?}")),
    }
}

fn hash_rounds(iterations: u64, cancel: &CancellationToken) -> Result<u64, String> {
    let mut digest = 0u64;
    for chunk_start in (0..iterations).step_by(65_536) {
        if cancel.is_cancelled() {
            return Err("cancelled".into());
        }
        for i in chunk_start..(chunk_start + 65_536).min(iterations) {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (digest, i).hash(&mut hasher);
            digest = hasher.finish();
        }
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_checked_with_the_field_named() {
        assert!(validate("sleep", &json!({"ms": 5})).is_ok());
        assert_eq!(validate("sleep", &json!({})).unwrap_err().0, "input.ms");
        assert_eq!(
            validate("sleep", &json!({"ms": -1})).unwrap_err().0,
            "input.ms"
        );
        assert_eq!(
            validate("cpu", &json!({"iterations": "many"}))
                .unwrap_err()
                .0,
            "input.iterations"
        );
        assert_eq!(
            validate("fail", &json!({"message": 3})).unwrap_err().0,
            "input.message"
        );
        assert_eq!(validate("teleport", &json!(null)).unwrap_err().0, "kind");
    }

    #[tokio::test]
    async fn kinds_produce_their_results() {
        let token = CancellationToken::new();
        assert_eq!(
            run("echo", json!({"a": 1}), &token).await,
            Ok(json!({"a": 1}))
        );
        assert_eq!(
            run("fail", json!({"message": "no"}), &token).await,
            Err("no".into())
        );
        let a = run("cpu", json!({"iterations": 1000}), &token)
            .await
            .expect("cpu");
        let b = run("cpu", json!({"iterations": 1000}), &token)
            .await
            .expect("cpu");
        assert_eq!(a, b, "deterministic digest");
        token.cancel();
        assert!(run("cpu", json!({"iterations": 1_000_000}), &token)
            .await
            .is_err());
    }
}
