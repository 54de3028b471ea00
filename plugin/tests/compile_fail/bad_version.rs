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
    const VERSION: &'static str = "1.0";
    const DESCRIPTION: &'static str = "Greets.";
    type Input = Name;
    type Output = Greeting;

    async fn process(&self, input: Name, _cx: &Context) -> Result<Greeting, PluginError> {
        Ok(Greeting { text: format!("hello {}", input.name) })
    }
}

register_plugin!(Greet);

fn main() {}
