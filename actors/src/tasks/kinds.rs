//! The built-in task kinds, for real use and for testing the machinery:
//! `echo`, `sleep {ms}`, `cpu {iterations}`, `fail {message}`, `panic`, and
//! `hang {ms}` (ignores its timeout and cancellation: a stuck worker, for
//! testing the pool's stuck-worker check). Each is a [`Plugin`], declared
//! like any other.
//!
//! Input is checked at submission against the schema derived from the
//! input types (a 422 names the field); running honours the cancellation
//! token, so timeouts and `DELETE` stop work promptly.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use troupe_plugin::{register_plugin, Context, Plugin, PluginError};

/// Longest `sleep` accepted.
pub const MAX_SLEEP_MS: u64 = 3_600_000;
/// Most `cpu` iterations accepted.
pub const MAX_CPU_ITERATIONS: u64 = 10_000_000_000;

/// The kind that ties up its worker, deaf to timeout and cancel.
pub const HANG: &str = "hang";

/// Version of every built-in kind: the node's own.
const BUILTIN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `echo`: returns its input.
#[derive(Debug, Default)]
pub struct Echo;

impl Plugin for Echo {
    const NAME: &'static str = "echo";
    const VERSION: &'static str = BUILTIN_VERSION;
    const DESCRIPTION: &'static str = "Returns its input unchanged.";
    type Input = Value;
    type Output = Value;

    async fn process(&self, input: Value, _cx: &Context) -> Result<Value, PluginError> {
        Ok(input)
    }
}

register_plugin!(Echo);

/// Input of `sleep` and `hang`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Millis {
    /// How long, in milliseconds.
    #[schemars(range(max = MAX_SLEEP_MS))]
    pub ms: u64,
}

/// Output of `sleep`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Slept {
    /// How long it slept.
    pub slept_ms: u64,
}

/// `sleep`: waits, honouring cancellation.
#[derive(Debug, Default)]
pub struct Sleep;

impl Plugin for Sleep {
    const NAME: &'static str = "sleep";
    const VERSION: &'static str = BUILTIN_VERSION;
    const DESCRIPTION: &'static str = "Waits `ms` milliseconds (stops early when cancelled).";
    type Input = Millis;
    type Output = Slept;

    async fn process(&self, input: Millis, _cx: &Context) -> Result<Slept, PluginError> {
        tokio::time::sleep(Duration::from_millis(input.ms)).await;
        Ok(Slept { slept_ms: input.ms })
    }
}

register_plugin!(Sleep);

/// Output of `hang`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Hung {
    /// How long it held its worker.
    pub hung_ms: u64,
}

/// `hang`: holds its worker `ms` milliseconds, deaf to its timeout and
/// to cancellation, like a plugin stuck in a call (the worker runs it
/// outside the usual race; only the stuck-worker check ends it).
#[derive(Debug, Default)]
pub struct Hang;

impl Plugin for Hang {
    const NAME: &'static str = HANG;
    const VERSION: &'static str = BUILTIN_VERSION;
    const DESCRIPTION: &'static str =
        "Holds its worker `ms` milliseconds, ignoring timeout and cancellation (tests the stuck-worker check).";
    type Input = Millis;
    type Output = Hung;

    async fn process(&self, input: Millis, _cx: &Context) -> Result<Hung, PluginError> {
        tokio::time::sleep(Duration::from_millis(input.ms)).await;
        Ok(Hung { hung_ms: input.ms })
    }
}

register_plugin!(Hang);

/// Input of `cpu`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Work {
    /// Rounds of hashing.
    #[schemars(range(max = MAX_CPU_ITERATIONS))]
    pub iterations: u64,
}

/// Output of `cpu`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Digest {
    /// Rounds done.
    pub iterations: u64,
    /// The final hash, in hex: the same for the same `iterations`.
    pub digest: String,
}

/// `cpu`: burns CPU on a blocking thread, checking for cancellation.
#[derive(Debug, Default)]
pub struct Cpu;

impl Plugin for Cpu {
    const NAME: &'static str = "cpu";
    const VERSION: &'static str = BUILTIN_VERSION;
    const DESCRIPTION: &'static str = "Hashes `iterations` times on a blocking thread.";
    type Input = Work;
    type Output = Digest;

    async fn process(&self, input: Work, cx: &Context) -> Result<Digest, PluginError> {
        let iterations = input.iterations;
        let cancel = cx.cancelled().clone();
        // Hashing is CPU-bound: keep it off the async worker threads.
        let digest = tokio::task::spawn_blocking(move || hash_rounds(iterations, &cancel))
            .await
            .map_err(|e| PluginError::new(format!("cpu task aborted: {e}")))??;
        Ok(Digest {
            iterations,
            digest: format!("{digest:016x}"),
        })
    }
}

register_plugin!(Cpu);

/// Input of `fail`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailWith {
    /// The error to fail with.
    #[serde(default)]
    pub message: Option<String>,
}

/// `fail`: fails with the given message.
#[derive(Debug, Default)]
pub struct Fail;

impl Plugin for Fail {
    const NAME: &'static str = "fail";
    const VERSION: &'static str = BUILTIN_VERSION;
    const DESCRIPTION: &'static str = "Fails with `message`.";
    type Input = FailWith;
    type Output = ();

    async fn process(&self, input: FailWith, _cx: &Context) -> Result<(), PluginError> {
        Err(PluginError::new(
            input.message.as_deref().unwrap_or("failed on request"),
        ))
    }
}

register_plugin!(Fail);

/// `panic`: panics its worker (the pool replaces it).
#[derive(Debug, Default)]
pub struct Panic;

impl Plugin for Panic {
    const NAME: &'static str = "panic";
    const VERSION: &'static str = BUILTIN_VERSION;
    const DESCRIPTION: &'static str = "Panics the worker running it (tests supervision).";
    type Input = Value;
    type Output = ();

    async fn process(&self, _: Value, _cx: &Context) -> Result<(), PluginError> {
        panic!("a panic task asked its worker to panic");
    }
}

register_plugin!(Panic);

fn hash_rounds(iterations: u64, cancel: &CancellationToken) -> Result<u64, PluginError> {
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
    use serde_json::json;
    use troupe_plugin::Plugins;

    use super::*;

    #[test]
    fn inputs_are_checked_with_the_field_named() {
        let plugins = Plugins::load(&[]).expect("loads");
        let field = |kind: &str, input: Value| {
            plugins
                .get(kind)
                .expect("built in")
                .check(&input)
                .expect_err("invalid")
                .field
        };
        assert!(plugins
            .get("sleep")
            .expect("sleep")
            .check(&json!({"ms": 5}))
            .is_ok());
        assert_eq!(field("sleep", json!({})), "input.ms");
        assert_eq!(field("sleep", json!({"ms": -1})), "input.ms");
        assert_eq!(field("sleep", json!({"ms": MAX_SLEEP_MS + 1})), "input.ms");
        assert_eq!(
            field("cpu", json!({"iterations": "many"})),
            "input.iterations"
        );
        assert_eq!(field("fail", json!({"message": 3})), "input.message");
    }

    #[tokio::test]
    async fn kinds_produce_their_results() {
        let plugins = Plugins::load(&[]).expect("loads");
        let token = CancellationToken::new();
        let cx = Context::new(token.clone(), None);
        let run = |kind: &'static str, input: Value| {
            let plugin = std::sync::Arc::clone(plugins.get(kind).expect("built in"));
            let cx = cx.clone();
            async move { plugin.process(input, &cx).await }
        };
        assert_eq!(run("echo", json!({"a": 1})).await, Ok(json!({"a": 1})));
        assert_eq!(
            run("fail", json!({"message": "no"})).await,
            Err(PluginError::new("no"))
        );
        let a = run("cpu", json!({"iterations": 1000})).await.expect("cpu");
        let b = run("cpu", json!({"iterations": 1000})).await.expect("cpu");
        assert_eq!(a, b, "deterministic digest");
        token.cancel();
        assert!(run("cpu", json!({"iterations": 1_000_000})).await.is_err());
    }
}
