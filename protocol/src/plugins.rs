//! The plugin catalogue (`GET /v1/plugins`) and its gossiped form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A plugin name and the version a node runs, written `name@version` in
/// the gossiped catalogue.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct PluginId {
    /// Plugin (task kind) name.
    pub name: String,
    /// Its semantic version.
    pub version: String,
}

impl fmt::Display for PluginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl FromStr for PluginId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('@') {
            Some((name, version)) if !name.is_empty() && !version.is_empty() => Ok(Self {
                name: name.to_owned(),
                version: version.to_owned(),
            }),
            _ => Err(format!("{s:?} is not name@version")),
        }
    }
}

/// The catalogue as published over gossip: `name@version` joined by commas.
pub fn encode_catalogue(ids: &[PluginId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads a gossiped catalogue, skipping entries that do not parse.
pub fn decode_catalogue(text: &str) -> Vec<PluginId> {
    text.split(',').filter_map(|s| s.parse().ok()).collect()
}

/// Latency of a plugin's calls, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LatencyMs {
    /// Mean over every call.
    pub mean: f64,
    /// Median (upper bound of its power-of-two bucket).
    pub p50: f64,
    /// 99th percentile (likewise).
    pub p99: f64,
    /// Slowest call.
    pub max: f64,
}

/// What a plugin has done on this node since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginMetrics {
    /// Calls to `process`.
    pub calls: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// How long calls took.
    pub latency_ms: LatencyMs,
}

/// One plugin this node runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginInfo {
    /// Name: the task `kind` that runs it.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// Node resources it uses (`postgres`, `http`).
    pub resources: Vec<String>,
    /// JSON Schema of its input, derived from the input type.
    pub input_schema: Value,
    /// JSON Schema of its output.
    pub output_schema: Value,
    /// Calls, errors and latency on this node.
    pub metrics: PluginMetrics,
}

/// The plugins one node runs, as gossiped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodePlugins {
    /// Node id.
    pub node: String,
    /// Whether the node is live (placement uses only live nodes).
    pub live: bool,
    /// Its plugins and their versions.
    pub plugins: Vec<PluginId>,
}

/// Reply of `GET /v1/plugins`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginList {
    /// The node that answered.
    pub node: String,
    /// Its plugins, by name.
    pub plugins: Vec<PluginInfo>,
    /// Every known node's catalogue, by node id.
    pub cluster: Vec<NodePlugins>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gossiped_catalogue_round_trips_and_skips_garbage() {
        let ids = vec![
            PluginId {
                name: "echo".into(),
                version: "1.0.0".into(),
            },
            PluginId {
                name: "json.transform".into(),
                version: "2.1.0-rc.1".into(),
            },
        ];
        let text = encode_catalogue(&ids);
        assert_eq!(text, "echo@1.0.0,json.transform@2.1.0-rc.1");
        assert_eq!(decode_catalogue(&text), ids);
        assert_eq!(decode_catalogue("echo,@1,x@,y@2")[0].name, "y");
        assert!(decode_catalogue("").is_empty());
    }
}
