//! The contract every plugin implements.
//!
//! A plugin is a type with a name, a semantic version, a description, a
//! typed input and output (serde, with a JSON Schema derived by schemars),
//! an optional `validate` and an async `process`. What Rust can check is
//! checked by the compiler: the trait bounds, and — through
//! [`register_plugin!`](crate::register_plugin) — the name and version.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::scope::Scope;

/// A task kind or transform that nodes run.
///
/// ```
/// use schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
/// use troupe_plugin::{register_plugin, Context, Invalid, Plugin, PluginError};
///
/// #[derive(Default)]
/// struct Upper;
///
/// #[derive(Deserialize, JsonSchema)]
/// struct Text { text: String }
///
/// #[derive(Serialize, JsonSchema)]
/// struct Shout { text: String }
///
/// impl Plugin for Upper {
///     const NAME: &'static str = "upper";
///     const VERSION: &'static str = "1.0.0";
///     const DESCRIPTION: &'static str = "Upper-cases a text.";
///     type Input = Text;
///     type Output = Shout;
///
///     fn validate(&self, input: &Text) -> Result<(), Invalid> {
///         if input.text.is_empty() {
///             return Err(Invalid::new("text", "must not be empty"));
///         }
///         Ok(())
///     }
///
///     async fn process(&self, input: Text, _cx: &Context) -> Result<Shout, PluginError> {
///         Ok(Shout { text: input.text.to_uppercase() })
///     }
/// }
///
/// register_plugin!(Upper);
/// ```
pub trait Plugin: Default + Send + Sync + 'static {
    /// The task `kind` that runs this plugin: lowercase letters, digits,
    /// `.`, `-`, `_`, starting with a letter; checked at compile time.
    const NAME: &'static str;
    /// Semantic version (`1.2.0`, `2.0.0-rc.1`); checked at compile time.
    /// Submissions may ask for a compatible range (`^1.2`).
    const VERSION: &'static str;
    /// One line on what it does, shown in `GET /v1/plugins`.
    const DESCRIPTION: &'static str;
    /// Node resources it needs (`postgres`, `http`): a node offers the
    /// plugin only if it holds all of them.
    const RESOURCES: &'static [&'static str] = &[];

    /// Its input: checked against the derived JSON Schema, then decoded.
    type Input: DeserializeOwned + JsonSchema + Send + 'static;
    /// Its output, stored as the task's result.
    type Output: Serialize + JsonSchema + Send + 'static;

    /// Checks what the schema cannot express (cross-field rules, parsing
    /// an expression). Runs at submission, before anything is stored;
    /// the field path is relative to the input.
    fn validate(&self, input: &Self::Input) -> Result<(), Invalid> {
        let _ = input;
        Ok(())
    }

    /// Runs one attempt. Long work should watch `cx.cancelled()`, which
    /// fires on the task's timeout and on `DELETE`.
    fn process(
        &self,
        input: Self::Input,
        cx: &Context,
    ) -> impl Future<Output = Result<Self::Output, PluginError>> + Send;
}

/// An input that breaks a rule, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// Path of the field (`ms`, `items[2].name`); the node prefixes it
    /// with `input.` in its 422.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Invalid {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Why an attempt failed; becomes the task's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PluginError(pub String);

impl PluginError {
    /// An error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Self(message.to_string())
    }
}

impl From<String> for PluginError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<&str> for PluginError {
    fn from(message: &str) -> Self {
        Self(message.to_owned())
    }
}

/// What a plugin sees of the node while it runs one attempt.
#[derive(Clone)]
pub struct Context {
    cancel: CancellationToken,
    resources: Option<Arc<Scope>>,
}

impl Context {
    /// A context for one attempt; `resources` is the node's scope, or
    /// `None` while it is being acquired again.
    pub fn new(cancel: CancellationToken, resources: Option<Arc<Scope>>) -> Self {
        Self { cancel, resources }
    }

    /// Fires on the task's timeout and on cancellation.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The node resource `name` (declared in [`Plugin::RESOURCES`]).
    pub fn resource<T: Any + Send + Sync>(&self, name: &str) -> Result<&T, PluginError> {
        let scope = self.resources.as_deref().ok_or_else(|| {
            PluginError::new(format!(
                "resource {name}: not available (the node is acquiring its resources)"
            ))
        })?;
        scope
            .get::<T>(name)
            .ok_or_else(|| PluginError::new(format!("resource {name}: not held by this node")))
    }
}
