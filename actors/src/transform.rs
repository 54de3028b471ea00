//! Pipeline transforms: a plugin rewrites each event's data before the
//! pipeline keys and windows it.
//!
//! The plugin is called with the pipeline's settings (`with`) and the
//! event's data as `input`, and returns `outputs`: the data of the events
//! to window in its place (none drops the event, several fan it out). Any
//! plugin with that shape is a transform; `json.transform` is the
//! built-in one. Derived events keep the original's id, source, type and
//! time, so watermarks and lateness are unchanged. A transform must be
//! deterministic: after a crash a shard recomputes windows from the log.

use std::sync::Arc;

use serde_json::{Map, Value};
use troupe_plugin::{Context, LoadedPlugin};
use troupe_protocol::{Event, Payload, TransformSpec};

use crate::placement::{compatible, version_req};
use crate::plugins::PluginHost;

/// The input field a transform's plugin gets the event's data in.
pub const DATA_FIELD: &str = "input";
/// The output field holding the events' new data.
pub const OUTPUTS_FIELD: &str = "outputs";

/// A pipeline's transform, ready to run.
pub struct EventTransform {
    plugin: Arc<LoadedPlugin>,
    with: Map<String, Value>,
}

impl std::fmt::Debug for EventTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventTransform")
            .field("plugin", &self.plugin.name())
            .finish_non_exhaustive()
    }
}

impl EventTransform {
    /// Checks `spec` against this node's plugins: the plugin exists in an
    /// accepted version, takes `input` and returns `outputs`, and `with`
    /// fits its schema. `Err((field path under transform, reason))`.
    pub fn new(spec: &TransformSpec, plugins: &PluginHost) -> Result<Self, (String, String)> {
        let bad = |field: &str, reason: String| Err((format!("transform.{field}"), reason));
        let wanted = match version_req(spec.version.as_deref()) {
            Ok(wanted) => wanted,
            Err(reason) => return bad("version", reason),
        };
        let Some(plugin) = plugins.get(&spec.plugin) else {
            return bad(
                "plugin",
                format!("this node does not run plugin {:?}", spec.plugin),
            );
        };
        if !compatible(plugin.version(), wanted.as_ref()) {
            return bad(
                "version",
                format!(
                    "this node runs {} {}, which does not match",
                    spec.plugin,
                    plugin.version()
                ),
            );
        }
        let info = plugin.info();
        if info.output_schema["properties"][OUTPUTS_FIELD]["type"] != "array"
            || info.input_schema["properties"][DATA_FIELD].is_null()
        {
            return bad(
                "plugin",
                format!(
                    "{} is not a transform: it must take `{DATA_FIELD}` and return a list `{OUTPUTS_FIELD}`",
                    spec.plugin
                ),
            );
        }
        if spec.with.contains_key(DATA_FIELD) {
            return bad(
                &format!("with.{DATA_FIELD}"),
                "is set to each event's data".into(),
            );
        }
        // The settings must fit the schema with some event's data.
        let sample = Self::input(&spec.with, Value::Object(Map::new()));
        if let Err(e) = plugin.check(&sample) {
            let field = e.field.strip_prefix("input.").unwrap_or(&e.field);
            return bad(&format!("with.{field}"), e.reason);
        }
        Ok(Self {
            plugin: Arc::clone(plugin),
            with: spec.with.clone(),
        })
    }

    fn input(with: &Map<String, Value>, data: Value) -> Value {
        let mut input = with.clone();
        input.insert(DATA_FIELD.to_owned(), data);
        Value::Object(input)
    }

    /// The events to window in place of `event`; an error if the plugin
    /// fails on it or returns something that is not a list of objects.
    pub async fn apply(&self, event: &Event, cx: &Context) -> Result<Vec<Event>, String> {
        let data: Value = serde_json::from_str(event.data.as_str()).map_err(|e| e.to_string())?;
        let output = self
            .plugin
            .process(Self::input(&self.with, data), cx)
            .await
            .map_err(|e| e.to_string())?;
        let Some(Value::Array(outputs)) = output.get(OUTPUTS_FIELD).cloned() else {
            return Err(format!(
                "{} returned no `{OUTPUTS_FIELD}` list",
                self.plugin.name()
            ));
        };
        outputs
            .into_iter()
            .map(|out| match out {
                Value::Object(map) => Ok(Event {
                    data: Payload::from(map),
                    ..event.clone()
                }),
                other => Err(format!("an output is not an object: {other}")),
            })
            .collect()
    }
}
