//! The plugin contract that task kinds implement, and resource scopes.
//!
//! A plugin implements [`Plugin`] and is declared with
//! [`register_plugin!`]: that is all it takes for every node built with it
//! to list it in `GET /v1/plugins`, gossip it, and run tasks of its kind.
//! Name and version are checked when the plugin is compiled; input is
//! checked against the JSON Schema derived from its input type when a task
//! is submitted. [`scope`] holds the node resources plugins and actors
//! use (PostgreSQL, HTTP client), acquired in parallel and released in
//! reverse order.
#![deny(missing_docs)]

pub mod catalogue;
pub mod contract;
pub mod names;
pub mod scope;
mod stats;

pub use catalogue::{declared, Declared, LoadError, LoadedPlugin, PluginEntry, Plugins};
pub use contract::{Context, Invalid, Plugin, PluginError};
pub use scope::{Scope, ScopeBuilder, ScopeError};

#[doc(hidden)]
pub use inventory;
pub use schemars;

/// Declares a plugin: the type must implement [`Plugin`] and `Default`.
/// Its `NAME` and `VERSION` are checked at compile time — a name outside
/// `[a-z][a-z0-9._-]*` or a version that is not semver stops the build.
///
/// ```compile_fail
/// # use troupe_plugin::{register_plugin, Context, Plugin, PluginError};
/// #[derive(Default)]
/// struct Bad;
/// impl Plugin for Bad {
///     const NAME: &'static str = "bad";
///     const VERSION: &'static str = "1.0"; // not semver
///     const DESCRIPTION: &'static str = "";
///     type Input = ();
///     type Output = ();
///     async fn process(&self, _: (), _: &Context) -> Result<(), PluginError> { Ok(()) }
/// }
/// register_plugin!(Bad);
/// ```
#[macro_export]
macro_rules! register_plugin {
    ($plugin:ty) => {
        $crate::inventory::submit! {
            $crate::PluginEntry::of($crate::Declared::<$plugin>::new())
        }
    };
}
