//! `json.transform`: reshapes JSON with a jq filter, run by jaq.
//!
//! Pipelines often need to pick, rename or flatten fields between two
//! steps; a jq filter says that in one line instead of a plugin. The
//! filter is compiled at submission (`validate`), so a typo is a 422
//! naming `input.filter` and the byte offset, not a failed task later.
//!
//! jaq values are reference-counted with `Rc` and so cannot cross
//! threads: all jaq work happens inside `transform`, a synchronous
//! function run on a blocking thread, and only `serde_json` values go in
//! and come out. The filter runs until it ends, fails, produces more than
//! [`MAX_OUTPUTS`] values or the task is cancelled (checked between
//! outputs: a filter that loops without producing anything, such as
//! `until(false; .)`, holds its blocking thread until it ends).
//!
//! `env` is withheld: it would hand the node's environment (database
//! URLs, tokens) to whoever submits a filter. `halt` ends the filter (as
//! a success with exit code 0, else as an error), never the node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{compile, data, native, Ctx, Exn, Vars};
use jaq_json::{Num, Val};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use troupe_plugin::{register_plugin, Context, Invalid, Plugin, PluginError};

/// Most values one run may produce.
pub const MAX_OUTPUTS: usize = 10_000;

/// Deepest nesting of an output value (deeper ones are refused rather
/// than risking the blocking thread's stack).
const MAX_DEPTH: usize = 256;

/// Native filters not offered to submitted programs.
const WITHHELD: &[&str] = &["env"];

/// What jaq runs on: plain JSON values and nothing else.
type Data = data::JustLut<Val>;
type Filter = jaq_core::Filter<Data>;

/// Input of `json.transform`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformInput {
    /// The jq program, e.g. `.items[] | select(.n > 1) | .name`.
    pub filter: String,
    /// The JSON value the filter runs on (default `null`).
    #[serde(default)]
    pub input: Value,
}

/// Output of `json.transform`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TransformOutput {
    /// Every value the filter produced, in order.
    pub outputs: Vec<Value>,
}

/// Compiled filters kept for reuse.
const CACHED_FILTERS: usize = 64;

/// `json.transform`: runs a jq filter on a JSON value.
#[derive(Default)]
pub struct Transform {
    /// Compiled filters by their text: compiling loads jq's standard
    /// library (about 0.4 ms), and a pipeline transform runs one filter
    /// on every event. Emptied when full; a compiled filter is plain
    /// data (`Send + Sync`).
    compiled: Mutex<HashMap<String, Arc<Filter>>>,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transform").finish_non_exhaustive()
    }
}

impl Transform {
    /// `code` compiled, from the cache when it was seen before.
    fn filter(&self, code: &str) -> Result<Arc<Filter>, PluginError> {
        if let Some(filter) = self.compiled.lock().ok().and_then(|c| c.get(code).cloned()) {
            return Ok(filter);
        }
        let filter = Arc::new(compile(code).map_err(|e| PluginError::new(format!("filter: {e}")))?);
        if let Ok(mut cache) = self.compiled.lock() {
            if cache.len() >= CACHED_FILTERS {
                cache.clear();
            }
            cache.insert(code.to_owned(), Arc::clone(&filter));
        }
        Ok(filter)
    }
}

impl Plugin for Transform {
    const NAME: &'static str = "json.transform";
    const VERSION: &'static str = "1.0.0";
    const DESCRIPTION: &'static str =
        "Runs the jq program `filter` on `input` and returns every value it produces.";
    type Input = TransformInput;
    type Output = TransformOutput;

    fn validate(&self, input: &TransformInput) -> Result<(), Invalid> {
        compile(&input.filter)
            .map(drop)
            .map_err(|reason| Invalid::new("filter", reason))
    }

    async fn process(
        &self,
        input: TransformInput,
        cx: &Context,
    ) -> Result<TransformOutput, PluginError> {
        let cancel = cx.cancelled().clone();
        let filter = self.filter(&input.filter)?;
        let job = tokio::task::spawn_blocking({
            let cancel = cancel.clone();
            move || transform(&filter, input.input, &cancel)
        });
        tokio::select! {
            joined = job => {
                let outputs = joined
                    .map_err(|e| PluginError::new(format!("the filter's thread failed: {e}")))??;
                Ok(TransformOutput { outputs })
            }
            () = cancel.cancelled() => Err(PluginError::new("cancelled while the filter ran")),
        }
    }
}

register_plugin!(Transform);

/// Runs `filter` on `input`, synchronously; every jaq value lives and
/// dies in here.
fn transform(
    filter: &Filter,
    input: Value,
    cancel: &CancellationToken,
) -> Result<Vec<Value>, PluginError> {
    let input: Val = serde_json::from_value(input)
        .map_err(|e| PluginError::new(format!("input is not JSON jq can read: {e}")))?;
    let ctx = Ctx::<Data>::new(&filter.lut, Vars::new([]));
    let mut outputs = Vec::new();
    for produced in filter.id.run((ctx, input)) {
        if cancel.is_cancelled() {
            return Err(PluginError::new("cancelled while the filter ran"));
        }
        let value = match produced {
            Ok(value) => value,
            Err(e) => match stop(e) {
                None => break,
                Some(error) => return Err(error),
            },
        };
        if outputs.len() == MAX_OUTPUTS {
            return Err(PluginError::new(format!(
                "the filter produced more than {MAX_OUTPUTS} outputs"
            )));
        }
        outputs.push(to_json(&value, 0).map_err(PluginError::new)?);
    }
    Ok(outputs)
}

/// Parses and compiles `code` with jq's standard library, or says what is
/// wrong and where.
fn compile(code: &str) -> Result<Filter, String> {
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let arena = Arena::default();
    let modules = Loader::new(defs)
        .load(&arena, File { code, path: () })
        .map_err(|errors| load_errors(&errors))?;
    compile::Compiler::default()
        .with_funs(funs())
        .compile(modules)
        .map_err(|errors| undefined(&errors))
}

/// The native filters a submitted program may call.
fn funs() -> impl Iterator<Item = native::Fun<Data>> {
    jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .filter(|(name, _, _)| !WITHHELD.contains(name))
}

/// Byte offset of `part` in `code`, if it is a slice of it.
fn offset(code: &str, part: &str) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(code.as_ptr() as usize)?;
    (start <= code.len()).then_some(start)
}

/// "at offset N", or nothing when the position is unknown.
fn at(code: &str, part: &str) -> String {
    offset(code, part).map_or_else(String::new, |n| format!(" at offset {n}"))
}

/// Why the program did not parse: what was expected, where.
fn load_errors(errors: &load::Errors<&str, ()>) -> String {
    let mut messages = Vec::new();
    for (file, error) in errors {
        let code = file.code;
        match error {
            load::Error::Io(failures) => {
                for (path, reason) in failures {
                    messages.push(format!(
                        "cannot load module {path}{}: {reason}",
                        at(code, path)
                    ));
                }
            }
            load::Error::Lex(failures) => {
                for (expected, rest) in failures {
                    let expected = match expected {
                        load::lex::Expect::Delim(open) => format!("closing delimiter for {open}"),
                        other => other.as_str().to_owned(),
                    };
                    messages.push(format!("expected {expected}{}", at(code, rest)));
                }
            }
            load::Error::Parse(failures) => {
                for (expected, found) in failures {
                    let position = at(code, found);
                    let found = if found.is_empty() {
                        " (end of filter)".to_owned()
                    } else {
                        format!(", found `{found}`")
                    };
                    messages.push(format!("expected {}{position}{found}", expected.as_str()));
                }
            }
        }
    }
    messages.join("; ")
}

/// Which names the program uses but nothing defines, where.
fn undefined(errors: &compile::Errors<&str, ()>) -> String {
    let mut messages = Vec::new();
    for (file, failures) in errors {
        for (name, what) in failures {
            let shown = match what {
                compile::Undefined::Filter(arity) => format!("{name}/{arity}"),
                _ => (*name).to_owned(),
            };
            let position = at(file.code, name);
            messages.push(format!("undefined {} `{shown}`{position}", what.as_str()));
        }
    }
    messages.join("; ")
}

/// A jq exception as the task's error, or `None` for `halt` with exit
/// code 0, which ends the program successfully as in jq.
fn stop(e: Exn<'_, Val>) -> Option<PluginError> {
    match e.get_err() {
        Ok(error) => Some(PluginError::new(format!("filter failed: {error}"))),
        Err(e) => match e.get_halt() {
            Ok(0) => None,
            Ok(code) => Some(PluginError::new(format!(
                "the filter halted with exit code {code}"
            ))),
            Err(_) => Some(PluginError::new("the filter ended abnormally")),
        },
    }
}

/// A jaq value as JSON. Strings that are not UTF-8 are converted lossily;
/// NaN becomes `null` and ±infinity the largest finite number, as jq does.
fn to_json(value: &Val, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "an output is nested more than {MAX_DEPTH} levels deep"
        ));
    }
    Ok(match value {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => number(n),
        Val::TStr(s) | Val::BStr(s) => Value::String(String::from_utf8_lossy(s).into_owned()),
        Val::Arr(items) => Value::Array(
            items
                .iter()
                .map(|item| to_json(item, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Val::Obj(entries) => {
            let mut object = Map::new();
            for (key, item) in entries.iter() {
                let key = match key {
                    Val::TStr(s) | Val::BStr(s) => String::from_utf8_lossy(s).into_owned(),
                    other => {
                        return Err(format!(
                            "an output has an object key that is not a string: {other}"
                        ))
                    }
                };
                object.insert(key, to_json(item, depth + 1)?);
            }
            Value::Object(object)
        }
    })
}

/// A jaq number as a JSON number.
fn number(n: &Num) -> Value {
    match n {
        Num::Int(i) => Value::from(*i),
        Num::Float(f) => float(*f),
        // Big integers and number literals jaq kept as text.
        Num::BigInt(_) | Num::Dec(_) => {
            let text = n.to_string();
            text.parse::<serde_json::Number>()
                .map_or_else(|_| float(text.parse().unwrap_or(f64::NAN)), Value::Number)
        }
    }
}

/// A float as JSON, mapping what JSON cannot hold as jq does.
fn float(f: f64) -> Value {
    if f.is_nan() {
        Value::Null
    } else if f.is_infinite() {
        Value::from(f64::MAX.copysign(f))
    } else {
        Value::from(f)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use troupe_plugin::{LoadedPlugin, Plugins};

    use super::*;

    fn plugin() -> Arc<LoadedPlugin> {
        let plugins = Plugins::load(&[]).expect("plugins load");
        Arc::clone(plugins.get(Transform::NAME).expect("needs no resource"))
    }

    async fn run(filter: &str, input: Value) -> Result<Value, PluginError> {
        let cx = Context::new(CancellationToken::new(), None);
        plugin()
            .process(json!({ "filter": filter, "input": input }), &cx)
            .await
    }

    fn invalid(filter: &str) -> Invalid {
        Transform::default()
            .validate(&TransformInput {
                filter: filter.to_owned(),
                input: Value::Null,
            })
            .expect_err("does not compile")
    }

    #[tokio::test]
    async fn every_output_is_returned_in_order() {
        let input = json!({"items": [
            {"name": "a", "n": 1},
            {"name": "b", "n": 2},
            {"name": "c", "n": 3},
        ]});
        assert_eq!(
            run(".items[] | select(.n > 1) | .name", input).await,
            Ok(json!({"outputs": ["b", "c"]}))
        );
        assert_eq!(
            run(
                "{total: (.xs | add), big: [.xs[] | . * 1.5]}",
                json!({"xs": [1, 2]})
            )
            .await,
            Ok(json!({"outputs": [{"total": 3, "big": [1.5, 3.0]}]}))
        );
        assert_eq!(run("empty", Value::Null).await, Ok(json!({"outputs": []})));
    }

    #[test]
    fn a_syntax_error_names_the_filter_and_the_offset() {
        let e = invalid(".a | | .b");
        assert_eq!(e.field, "filter");
        assert_eq!(e.reason, "expected term at offset 5, found `|`");
        assert_eq!(
            invalid("1 +").reason,
            "expected term at offset 3 (end of filter)"
        );
        assert_eq!(
            invalid("[1, 2").reason,
            "expected closing delimiter for [ at offset 5"
        );
    }

    #[test]
    fn undefined_filters_and_variables_are_refused() {
        let e = invalid("map(.) | nope");
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("filter", "undefined filter `nope/0` at offset 9")
        );
        assert_eq!(
            invalid(". + $x").reason,
            "undefined variable `$x` at offset 4"
        );
        // The node's environment stays out of reach.
        assert_eq!(
            invalid("env").reason,
            "undefined filter `env/0` at offset 0"
        );
    }

    #[tokio::test]
    async fn a_runtime_error_fails_with_jq_s_message() {
        let e = run(".a + 1", json!({"a": "x"}))
            .await
            .expect_err("string + number");
        assert_eq!(e.0, "filter failed: cannot calculate \"x\" + 1");
        let e = run("error(\"boom\")", Value::Null)
            .await
            .expect_err("error/1");
        assert!(e.0.contains("boom"), "{e}");
    }

    #[tokio::test]
    async fn halt_ends_the_filter_not_the_process() {
        assert_eq!(
            run("1, halt, 2", Value::Null).await,
            Ok(json!({"outputs": [1]}))
        );
        let e = run("halt_error(3)", Value::Null)
            .await
            .expect_err("non-zero");
        assert!(e.0.contains("exit code 3"), "{e}");
    }

    #[tokio::test]
    async fn endless_output_is_capped_and_cancellation_is_honoured() {
        let e = run("repeat(1)", Value::Null).await.expect_err("endless");
        assert_eq!(
            e.0,
            format!("the filter produced more than {MAX_OUTPUTS} outputs")
        );

        let cancelled = CancellationToken::new();
        cancelled.cancel();
        let filter = compile("range(3)").expect("compiles");
        let e = transform(&filter, Value::Null, &cancelled).expect_err("cancelled");
        assert_eq!(e.0, "cancelled while the filter ran");
        let cx = Context::new(cancelled, None);
        let e = plugin()
            .process(json!({"filter": "repeat(1)"}), &cx)
            .await
            .expect_err("cancelled");
        assert_eq!(e.0, "cancelled while the filter ran");
    }

    #[tokio::test]
    async fn values_without_a_json_form_are_mapped_like_jq() {
        assert_eq!(
            run("[nan, infinite, 100000000000000000000, 0.1]", Value::Null).await,
            Ok(json!({"outputs": [[null, f64::MAX, 1e20, 0.1]]}))
        );
        let e = run("{(1): 2}", Value::Null).await.expect_err("number key");
        assert!(e.0.contains("not a string"), "{e}");
        let e = run("reduce range(300) as $i (0; [.])", Value::Null)
            .await
            .expect_err("too deep");
        assert_eq!(
            e.0,
            format!("an output is nested more than {MAX_DEPTH} levels deep")
        );
    }

    #[test]
    fn the_input_schema_is_checked_at_submission() {
        let p = plugin();
        assert!(p.check(&json!({"filter": ".a", "input": {"a": 1}})).is_ok());
        assert!(
            p.check(&json!({"filter": "[range(3)]"})).is_ok(),
            "input defaults to null"
        );
        let field = |input: Value| p.check(&input).expect_err("invalid").field;
        assert_eq!(field(json!({"input": 1})), "input.filter");
        assert_eq!(field(json!({"filter": 1})), "input.filter");
        assert_eq!(field(json!({"filter": ".", "extra": 1})), "input.extra");
        assert_eq!(field(json!({"filter": ".a |"})), "input.filter");
        let schema = p.info().input_schema;
        assert!(
            schema["properties"]["filter"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("jq program")),
            "{schema}"
        );
    }
}
