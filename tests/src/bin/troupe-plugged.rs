//! `troupe` with one more plugin, `test.reverse`, declared in this crate:
//! the tests show that declaring a plugin is all it takes for a node to
//! list it, gossip it and run its tasks — and that tasks of it are placed
//! only on nodes built with it.

use std::process::ExitCode;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use troupe_plugin::{register_plugin, Context, Invalid, Plugin, PluginError};

/// Reverses a text.
#[derive(Debug, Default)]
struct Reverse;

/// Input of `test.reverse`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Text {
    /// What to reverse.
    text: String,
    /// How many times to repeat the result.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10))]
    times: u32,
}

fn one() -> u32 {
    1
}

/// Output of `test.reverse`.
#[derive(Debug, Serialize, JsonSchema)]
struct Reversed {
    /// The text, reversed and repeated.
    text: String,
}

impl Plugin for Reverse {
    const NAME: &'static str = "test.reverse";
    const VERSION: &'static str = "1.4.0";
    const DESCRIPTION: &'static str = "Reverses a text (a plugin declared outside the node crate).";
    type Input = Text;
    type Output = Reversed;

    fn validate(&self, input: &Text) -> Result<(), Invalid> {
        if input.text.trim().is_empty() {
            return Err(Invalid::new("text", "must not be blank"));
        }
        Ok(())
    }

    async fn process(&self, input: Text, _cx: &Context) -> Result<Reversed, PluginError> {
        let reversed: String = input.text.chars().rev().collect();
        Ok(Reversed {
            text: reversed.repeat(input.times as usize),
        })
    }
}

register_plugin!(Reverse);

#[tokio::main]
async fn main() -> ExitCode {
    troupe_node::commands::main().await
}
