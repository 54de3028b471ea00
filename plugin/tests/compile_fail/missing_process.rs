use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use troupe_plugin::{register_plugin, Context, Plugin, PluginError};

#[derive(Default)]
struct Greet;

#[derive(Deserialize, JsonSchema)]
struct Name {
    name: String,
}

#[derive(Serialize, JsonSchema)]
struct Greeting {
    text: String,
}

impl Plugin for Greet {
    const NAME: &'static str = "greet";
    const VERSION: &'static str = "1.0.0";
    const DESCRIPTION: &'static str = "Greets.";
    type Input = Name;
    type Output = Greeting;

}

register_plugin!(Greet);

fn main() {}
