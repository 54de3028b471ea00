//! The per-task cost of the plugin contract: checking a submission's
//! input against the derived schema (every submission, on the node that
//! takes it and on the owner) and one call through the erased plugin.
//!
//! `cargo bench -p troupe-plugin --bench calls`

use criterion::{criterion_group, criterion_main, Criterion};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use troupe_plugin::{register_plugin, Context, Plugin, PluginError, Plugins};

#[derive(Default)]
struct Resize;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Size {
    #[schemars(range(min = 1, max = 10000))]
    width: u32,
    #[schemars(range(min = 1, max = 10000))]
    height: u32,
    #[serde(default)]
    label: Option<String>,
}

#[derive(Serialize, JsonSchema)]
struct Area {
    area: u64,
}

impl Plugin for Resize {
    const NAME: &'static str = "bench.resize";
    const VERSION: &'static str = "1.0.0";
    const DESCRIPTION: &'static str = "Multiplies width by height.";
    type Input = Size;
    type Output = Area;

    async fn process(&self, input: Size, _cx: &Context) -> Result<Area, PluginError> {
        let _ = input.label;
        Ok(Area {
            area: u64::from(input.width) * u64::from(input.height),
        })
    }
}

register_plugin!(Resize);

fn calls(c: &mut Criterion) {
    let plugins = Plugins::load(&[]).expect("plugins load");
    let plugin = plugins.get("bench.resize").expect("declared above");
    let input = json!({"width": 640, "height": 480, "label": "vga"});
    c.bench_function("check input (schema, decode, validate)", |b| {
        b.iter(|| plugin.check(&input).expect("valid"));
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let cx = Context::new(CancellationToken::new(), None);
    c.bench_function("process (decode, call, encode, count)", |b| {
        b.iter(|| {
            runtime
                .block_on(plugin.process(input.clone(), &cx))
                .expect("runs")
        });
    });
}

criterion_group!(benches, calls);
criterion_main!(benches);
