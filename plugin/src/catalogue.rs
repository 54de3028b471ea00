//! Declared plugins, collected at link time, and the set a node loads.
//!
//! [`register_plugin!`](crate::register_plugin) submits a
//! [`PluginEntry`] to an `inventory` collection: a plugin in any crate
//! linked into the binary is found without a central list. A node loads
//! the declared plugins whose resources it holds into [`Plugins`], each
//! with its JSON Schema compiled once and its call statistics.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use futures::future::{BoxFuture, FutureExt};
use serde_json::Value;
use troupe_protocol::plugins::{PluginId, PluginInfo};

use crate::contract::{Context, Invalid, Plugin, PluginError};
use crate::names::{is_semver, is_valid_name};
use crate::stats::CallStats;

/// A plugin as the node drives it: JSON in, JSON out.
trait Erased: Send + Sync {
    fn decode_and_validate(&self, input: &Value) -> Result<(), Invalid>;
    fn run<'a>(
        &'a self,
        input: Value,
        cx: &'a Context,
    ) -> BoxFuture<'a, Result<Value, PluginError>>;
}

struct Typed<P>(P);

/// Decodes `input` as `T`, naming the field that does not fit.
fn decode<T: serde::de::DeserializeOwned>(input: &Value) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(input).map_err(|e| {
        let path = e.path().to_string();
        Invalid::new(
            if path == "." { String::new() } else { path },
            e.into_inner().to_string(),
        )
    })
}

impl<P: Plugin> Erased for Typed<P> {
    fn decode_and_validate(&self, input: &Value) -> Result<(), Invalid> {
        self.0.validate(&decode::<P::Input>(input)?)
    }

    fn run<'a>(
        &'a self,
        input: Value,
        cx: &'a Context,
    ) -> BoxFuture<'a, Result<Value, PluginError>> {
        async move {
            let input = decode::<P::Input>(&input).map_err(PluginError::new)?;
            let output = self.0.process(input, cx).await?;
            serde_json::to_value(output)
                .map_err(|e| PluginError::new(format!("output is not JSON: {e}")))
        }
        .boxed()
    }
}

/// One declared plugin. Built only by [`PluginEntry::of`], which checks
/// the name and version at compile time.
pub struct PluginEntry {
    name: &'static str,
    version: &'static str,
    description: &'static str,
    resources: &'static [&'static str],
    make: fn() -> Box<dyn Erased>,
    input_schema: fn() -> Value,
    output_schema: fn() -> Value,
}

inventory::collect!(PluginEntry);

fn make<P: Plugin>() -> Box<dyn Erased> {
    Box::new(Typed(P::default()))
}

fn schema_of<T: schemars::JsonSchema>() -> Value {
    schemars::SchemaGenerator::default()
        .into_root_schema_for::<T>()
        .to_value()
}

/// Carries the plugin type to [`PluginEntry::of`].
pub struct Declared<P>(PhantomData<P>);

impl PluginEntry {
    /// The entry for `P`. A `const fn`: used in a constant (as
    /// [`register_plugin!`](crate::register_plugin) does), a bad name or a
    /// version that is not semver stops the build.
    pub const fn of<P: Plugin>(_: Declared<P>) -> Self {
        assert!(
            is_valid_name(P::NAME),
            "plugin NAME must be 1-64 lowercase ASCII letters, digits, '.', '-' or '_', starting with a letter"
        );
        assert!(
            is_semver(P::VERSION),
            "plugin VERSION must be a semantic version such as 1.0.0 or 2.1.0-rc.1"
        );
        Self {
            name: P::NAME,
            version: P::VERSION,
            description: P::DESCRIPTION,
            resources: P::RESOURCES,
            make: make::<P>,
            input_schema: schema_of::<P::Input>,
            output_schema: schema_of::<P::Output>,
        }
    }

    /// Name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl<P> Declared<P> {
    /// The marker for `P`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<P> Default for Declared<P> {
    fn default() -> Self {
        Self::new()
    }
}

/// Every plugin declared in the binary, by name.
pub fn declared() -> impl Iterator<Item = &'static PluginEntry> {
    inventory::iter::<PluginEntry>.into_iter()
}

/// A plugin could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Two plugins declare one name.
    #[error("plugin {name} is declared twice (versions {first} and {second})")]
    Duplicate {
        /// The name.
        name: String,
        /// One version.
        first: String,
        /// The other.
        second: String,
    },
    /// Its derived schema does not compile.
    #[error("plugin {name}: its input schema is not valid JSON Schema: {reason}")]
    Schema {
        /// The plugin.
        name: String,
        /// The compiler's complaint.
        reason: String,
    },
}

/// One loaded plugin.
pub struct LoadedPlugin {
    entry: &'static PluginEntry,
    plugin: Box<dyn Erased>,
    input_schema: Value,
    output_schema: Value,
    validator: jsonschema::Validator,
    stats: CallStats,
}

/// Turns a JSON pointer to an instance location into a field path under
/// `input` (`/items/0/name` → `input.items[0].name`).
fn field_path(pointer: &str, child: Option<&str>) -> String {
    let mut path = String::from("input");
    let segments = pointer.split('/').skip(1).filter(|s| !s.is_empty());
    for segment in segments.map(str::to_owned).chain(child.map(str::to_owned)) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.bytes().all(|b| b.is_ascii_digit()) && !segment.is_empty() {
            path.push('[');
            path.push_str(&segment);
            path.push(']');
        } else {
            path.push('.');
            path.push_str(&segment);
        }
    }
    path
}

impl LoadedPlugin {
    fn load(entry: &'static PluginEntry) -> Result<Self, LoadError> {
        let input_schema = (entry.input_schema)();
        let validator =
            jsonschema::validator_for(&input_schema).map_err(|e| LoadError::Schema {
                name: entry.name.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            entry,
            plugin: (entry.make)(),
            input_schema,
            output_schema: (entry.output_schema)(),
            validator,
            stats: CallStats::default(),
        })
    }

    /// Name.
    pub fn name(&self) -> &'static str {
        self.entry.name
    }

    /// Version.
    pub fn version(&self) -> &'static str {
        self.entry.version
    }

    /// Checks `input` against the schema, then decodes it and runs the
    /// plugin's `validate`. The error's field is a path under `input`.
    pub fn check(&self, input: &Value) -> Result<(), Invalid> {
        if let Some(error) = self.validator.iter_errors(input).next() {
            let child = match error.kind() {
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    property.as_str().map(str::to_owned)
                }
                jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                    unexpected.first().cloned()
                }
                _ => None,
            };
            return Err(Invalid::new(
                field_path(error.instance_path().as_str(), child.as_deref()),
                error.to_string(),
            ));
        }
        self.plugin.decode_and_validate(input).map_err(|e| {
            let field = if e.field.is_empty() {
                "input".to_owned()
            } else {
                format!("input.{}", e.field)
            };
            Invalid::new(field, e.reason)
        })
    }

    /// Runs one attempt, counting it.
    pub async fn process(&self, input: Value, cx: &Context) -> Result<Value, PluginError> {
        let started = Instant::now();
        let result = self.plugin.run(input, cx).await;
        let elapsed = started.elapsed();
        self.stats.record(elapsed, result.is_err());
        let labels = [("plugin", self.entry.name)];
        metrics::counter!("troupe_plugin_calls_total", &labels).increment(1);
        if result.is_err() {
            metrics::counter!("troupe_plugin_errors_total", &labels).increment(1);
        }
        metrics::histogram!("troupe_plugin_call_seconds", &labels).record(elapsed.as_secs_f64());
        result
    }

    /// Its catalogue entry, with schemas and figures.
    pub fn info(&self) -> PluginInfo {
        PluginInfo {
            name: self.entry.name.to_owned(),
            version: self.entry.version.to_owned(),
            description: self.entry.description.to_owned(),
            resources: self
                .entry
                .resources
                .iter()
                .map(|r| (*r).to_owned())
                .collect(),
            input_schema: self.input_schema.clone(),
            output_schema: self.output_schema.clone(),
            metrics: self.stats.snapshot(),
        }
    }

    /// `name@version`.
    pub fn id(&self) -> PluginId {
        PluginId {
            name: self.entry.name.to_owned(),
            version: self.entry.version.to_owned(),
        }
    }
}

/// The plugins this node runs.
pub struct Plugins {
    by_name: BTreeMap<&'static str, Arc<LoadedPlugin>>,
}

impl Plugins {
    /// Loads every declared plugin whose resources are all in `resources`.
    pub fn load(resources: &[&str]) -> Result<Self, LoadError> {
        let mut by_name: BTreeMap<&'static str, Arc<LoadedPlugin>> = BTreeMap::new();
        for entry in declared() {
            if let Some(seen) = by_name.get(entry.name) {
                return Err(LoadError::Duplicate {
                    name: entry.name.to_owned(),
                    first: seen.version().to_owned(),
                    second: entry.version.to_owned(),
                });
            }
            if entry.resources.iter().all(|r| resources.contains(r)) {
                by_name.insert(entry.name, Arc::new(LoadedPlugin::load(entry)?));
            } else {
                tracing::info!(
                    plugin = entry.name,
                    needs = ?entry.resources,
                    "not offered: this node lacks a resource it needs"
                );
            }
        }
        Ok(Self { by_name })
    }

    /// The plugin named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.by_name.get(name)
    }

    /// Every loaded plugin, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.by_name.values()
    }

    /// `name@version` of each, as gossiped.
    pub fn catalogue(&self) -> Vec<PluginId> {
        self.iter().map(|p| p.id()).collect()
    }
}

#[cfg(test)]
mod tests {
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::register_plugin;

    #[derive(Default)]
    struct Resize;

    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Size {
        /// Pixels across.
        #[schemars(range(min = 1, max = 10000))]
        width: u32,
        height: u32,
        #[serde(default)]
        tags: Vec<Tag>,
    }

    #[derive(Deserialize, JsonSchema)]
    struct Tag {
        name: String,
    }

    #[derive(Serialize, JsonSchema)]
    struct Area {
        area: u64,
        tags: Vec<String>,
    }

    impl Plugin for Resize {
        const NAME: &'static str = "test.resize";
        const VERSION: &'static str = "1.2.3";
        const DESCRIPTION: &'static str = "Multiplies width by height.";
        type Input = Size;
        type Output = Area;

        fn validate(&self, input: &Size) -> Result<(), Invalid> {
            if input.height > input.width {
                return Err(Invalid::new("height", "must not exceed width"));
            }
            Ok(())
        }

        async fn process(&self, input: Size, _cx: &Context) -> Result<Area, PluginError> {
            if input.width == 13 {
                return Err("unlucky".into());
            }
            Ok(Area {
                area: u64::from(input.width) * u64::from(input.height),
                tags: input.tags.into_iter().map(|t| t.name).collect(),
            })
        }
    }

    register_plugin!(Resize);

    #[derive(Default)]
    struct NeedsDatabase;

    impl Plugin for NeedsDatabase {
        const NAME: &'static str = "test.needs-database";
        const VERSION: &'static str = "0.1.0";
        const DESCRIPTION: &'static str = "Offered only with a database.";
        const RESOURCES: &'static [&'static str] = &["database"];
        type Input = ();
        type Output = ();

        async fn process(&self, (): (), cx: &Context) -> Result<(), PluginError> {
            cx.resource::<String>("database").map(|_| ())
        }
    }

    register_plugin!(NeedsDatabase);

    fn resize() -> Arc<LoadedPlugin> {
        let plugins = Plugins::load(&[]).expect("loads");
        Arc::clone(plugins.get("test.resize").expect("declared in this module"))
    }

    #[test]
    fn declared_plugins_are_collected_with_their_schemas() {
        let p = resize();
        let info = p.info();
        assert_eq!(
            (info.name.as_str(), info.version.as_str()),
            ("test.resize", "1.2.3")
        );
        assert_eq!(info.input_schema["properties"]["width"]["type"], "integer");
        assert_eq!(info.input_schema["properties"]["width"]["maximum"], 10000);
        assert_eq!(info.output_schema["properties"]["area"]["type"], "integer");
        assert!(declared().any(|e| e.name() == "test.needs-database"));
    }

    #[test]
    fn a_plugin_is_offered_only_where_its_resources_are() {
        assert!(Plugins::load(&[])
            .expect("loads")
            .get("test.needs-database")
            .is_none());
        let with = Plugins::load(&["database"]).expect("loads");
        assert!(with.get("test.needs-database").is_some());
        assert!(with
            .catalogue()
            .iter()
            .any(|id| id.to_string() == "test.needs-database@0.1.0"));
    }

    #[test]
    fn bad_input_names_the_field_path() {
        let p = resize();
        let field = |input: Value| p.check(&input).expect_err("invalid").field;
        assert!(p.check(&json!({"width": 4, "height": 3})).is_ok());
        assert_eq!(field(json!({"width": "4", "height": 3})), "input.width");
        assert_eq!(field(json!({"width": 0, "height": 0})), "input.width");
        assert_eq!(field(json!({"width": 4})), "input.height");
        assert_eq!(
            field(json!({"width": 4, "height": 3, "depth": 1})),
            "input.depth"
        );
        assert_eq!(
            field(json!({"width": 4, "height": 3, "tags": [{"name": "a"}, {"name": 5}]})),
            "input.tags[1].name"
        );
        assert_eq!(field(json!([])), "input");
        let custom = p
            .check(&json!({"width": 2, "height": 3}))
            .expect_err("rule");
        assert_eq!(
            (custom.field.as_str(), custom.reason.as_str()),
            ("input.height", "must not exceed width")
        );
        let reason = p
            .check(&json!({"width": 0, "height": 0}))
            .expect_err("min")
            .reason;
        assert!(reason.contains("minimum"), "{reason}");
    }

    #[tokio::test]
    async fn calls_and_errors_are_counted() {
        let p = resize();
        let cx = Context::new(CancellationToken::new(), None);
        assert_eq!(
            p.process(json!({"width": 4, "height": 3}), &cx).await,
            Ok(json!({"area": 12, "tags": []}))
        );
        assert_eq!(
            p.process(json!({"width": 13, "height": 1}), &cx).await,
            Err(PluginError::new("unlucky"))
        );
        let m = p.info().metrics;
        assert_eq!((m.calls, m.errors), (2, 1));
        let needs = Plugins::load(&["database"]).expect("loads");
        let err = needs
            .get("test.needs-database")
            .expect("offered")
            .process(json!(null), &cx)
            .await
            .expect_err("no scope");
        assert!(err.0.contains("resource database"), "{err}");
    }

    #[test]
    fn pointers_become_field_paths() {
        assert_eq!(field_path("", None), "input");
        assert_eq!(field_path("", Some("ms")), "input.ms");
        assert_eq!(field_path("/items/0/name", None), "input.items[0].name");
        assert_eq!(field_path("/a~1b/2", Some("c")), "input.a/b[2].c");
    }
}
