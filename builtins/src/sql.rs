//! `sql.query`: runs one PostgreSQL statement with bound parameters.
//!
//! Looking something up or recording a result in the node's database is
//! a step many pipelines need; this runs it on the node's pool (resource
//! [`POSTGRES`]) without a plugin of its own.
//!
//! The statement is prepared first, and each JSON parameter is bound as
//! the type PostgreSQL infers for it: never spliced into the SQL.
//! `bool`, the integer and float types, `json`/`jsonb` and the text types
//! are sent as such, after checking the JSON fits (a string where an
//! `int4` goes is refused, naming `$n`); every other type (`numeric`,
//! `timestamptz`, `uuid`, `interval`…) is sent in PostgreSQL's text form
//! and parsed by the server, which names what it cannot read. JSON `null`
//! is SQL `NULL`.
//!
//! Result columns become JSON by their type: booleans, numbers, text,
//! `json`/`jsonb` as JSON, `numeric` as a string (to keep every digit),
//! dates, times and timestamps as ISO 8601 strings, `uuid` as its string.
//! Other types are refused, naming the column: cast them in the SQL
//! (`SELECT period::text`). A row with two columns of one name keeps the
//! last.
//!
//! A statement that returns no columns (`INSERT` without `RETURNING`,
//! `UPDATE`, DDL) gives no rows and `row_count` = rows affected.

use std::error::Error;
use std::fmt::Write as _;

use bytes::BytesMut;
use deadpool_postgres::{Object, Pool};
use futures::TryStreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_postgres::types::{to_sql_checked, Format, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Column, NoTls, Row, Statement};
use troupe_plugin::{register_plugin, Context, Invalid, Plugin, PluginError};

use crate::resources::{pg_message, pool_message, POSTGRES};

/// Most rows one statement may return.
pub const MAX_ROWS: usize = 10_000;

/// Input of `sql.query`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlInput {
    /// One SQL statement, with parameters written `$1`, `$2`, …
    #[schemars(length(min = 1))]
    pub sql: String,
    /// The parameters' values, in order: `params[0]` is `$1`.
    #[serde(default)]
    pub params: Vec<Value>,
}

/// Output of `sql.query`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SqlOutput {
    /// The rows returned, each an object by column name.
    pub rows: Vec<Map<String, Value>>,
    /// Rows returned, or rows affected for a statement that returns none.
    pub row_count: u64,
}

/// `sql.query`: one statement on the node's PostgreSQL.
#[derive(Debug, Default)]
pub struct SqlQuery;

impl Plugin for SqlQuery {
    const NAME: &'static str = "sql.query";
    const VERSION: &'static str = "1.0.0";
    const DESCRIPTION: &'static str =
        "Runs one SQL statement on the node's PostgreSQL with `params` bound to $1, $2, …; returns the rows.";
    const RESOURCES: &'static [&'static str] = &[POSTGRES];
    type Input = SqlInput;
    type Output = SqlOutput;

    fn validate(&self, input: &SqlInput) -> Result<(), Invalid> {
        if input.sql.trim().is_empty() {
            return Err(Invalid::new("sql", "must not be empty"));
        }
        Ok(())
    }

    async fn process(&self, input: SqlInput, cx: &Context) -> Result<SqlOutput, PluginError> {
        // The node decodes but does not validate again before running.
        self.validate(&input).map_err(PluginError::new)?;
        let pool = cx.resource::<Pool>(POSTGRES)?;
        let cancelled = cx.cancelled();
        let client = tokio::select! {
            got = pool.get() => got.map_err(|e| {
                PluginError::new(format!("no database connection: {}", pool_message(&e)))
            })?,
            () = cancelled.cancelled() => {
                return Err(PluginError::new("cancelled while waiting for a database connection"));
            }
        };
        let server_side = client.cancel_token();
        tokio::select! {
            result = run(&client, &input) => result,
            () = cancelled.cancelled() => {
                if let Err(e) = server_side.cancel_query(NoTls).await {
                    tracing::debug!(error = %pg_message(&e), "could not cancel a statement");
                }
                // A late cancel request must not hit the next statement
                // on this connection: close it instead of pooling it.
                drop(Object::take(client));
                Err(PluginError::new("cancelled while the statement ran"))
            }
        }
    }
}

register_plugin!(SqlQuery);

/// Prepares, binds and runs the statement.
async fn run(client: &Object, input: &SqlInput) -> Result<SqlOutput, PluginError> {
    let failed = |e: tokio_postgres::Error| PluginError::new(pg_message(&e));
    let statement = client.prepare(&input.sql).await.map_err(failed)?;
    let params = bind_all(&statement, &input.params)?;
    let params = params.iter().map(|p| p.as_ref() as &dyn ToSql);
    if statement.columns().is_empty() {
        let affected = client
            .execute_raw(&statement, params)
            .await
            .map_err(failed)?;
        return Ok(SqlOutput {
            rows: Vec::new(),
            row_count: affected,
        });
    }
    let stream = client.query_raw(&statement, params).await.map_err(failed)?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    while let Some(row) = stream.try_next().await.map_err(failed)? {
        if rows.len() == MAX_ROWS {
            return Err(PluginError::new(format!(
                "the statement returned more than {MAX_ROWS} rows; add a LIMIT"
            )));
        }
        rows.push(to_object(&row, statement.columns())?);
    }
    Ok(SqlOutput {
        row_count: rows.len() as u64,
        rows,
    })
}

/// A parameter ready to send.
type Param = Box<dyn ToSql + Sync + Send>;

/// Binds every JSON parameter to the type the statement expects.
fn bind_all(statement: &Statement, values: &[Value]) -> Result<Vec<Param>, PluginError> {
    let types = statement.params();
    if types.len() != values.len() {
        return Err(PluginError::new(format!(
            "the statement takes {} parameter(s), {} given",
            types.len(),
            values.len()
        )));
    }
    types
        .iter()
        .zip(values)
        .enumerate()
        .map(|(i, (ty, value))| {
            bind(ty, value)
                .map_err(|why| PluginError::new(format!("parameter ${} ({ty}): {why}", i + 1)))
        })
        .collect()
}

/// `value` as a parameter of type `ty`, or what was expected instead.
fn bind(ty: &Type, value: &Value) -> Result<Param, String> {
    match *ty {
        Type::BOOL => typed(value, "true or false", Value::as_bool),
        Type::INT2 => typed(value, "an integer from -32768 to 32767", |v| {
            v.as_i64().and_then(|i| i16::try_from(i).ok())
        }),
        Type::INT4 => typed(value, "a 32-bit integer", |v| {
            v.as_i64().and_then(|i| i32::try_from(i).ok())
        }),
        Type::INT8 => typed(value, "a 64-bit integer", Value::as_i64),
        // Narrowing to f32 is what a float4 column does anyway.
        Type::FLOAT4 => typed(value, "a number", |v| v.as_f64().map(|f| f as f32)),
        Type::FLOAT8 => typed(value, "a number", Value::as_f64),
        Type::JSON | Type::JSONB => typed(value, "JSON", |v| Some(v.clone())),
        _ if <String as ToSql>::accepts(ty) => typed(value, "a string", |v| Some(text_of(v))),
        _ => typed(value, "a value", |v| Some(Text(text_of(v)))),
    }
}

/// `None` for JSON `null`, else `convert(value)` if it fits.
fn typed<T: ToSql + Sync + Send + 'static>(
    value: &Value,
    expected: &str,
    convert: impl FnOnce(&Value) -> Option<T>,
) -> Result<Param, String> {
    if value.is_null() {
        return Ok(Box::new(None::<T>));
    }
    match convert(value) {
        Some(v) => Ok(Box::new(v)),
        None => Err(format!("expected {expected}, got {value}")),
    }
}

/// A string as itself; anything else as its JSON text.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A parameter sent in PostgreSQL's text form, for the server to parse
/// as whatever type the statement gives it.
#[derive(Debug)]
struct Text(String);

impl ToSql for Text {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// One row as an object by column name.
fn to_object(row: &Row, columns: &[Column]) -> Result<Map<String, Value>, PluginError> {
    let mut object = Map::new();
    for (i, column) in columns.iter().enumerate() {
        let value = cell(row, i, column.type_()).map_err(|why| {
            PluginError::new(format!(
                "column \"{}\" ({}): {why}",
                column.name(),
                column.type_()
            ))
        })?;
        object.insert(column.name().to_owned(), value);
    }
    Ok(object)
}

/// Column `i` of `row` as JSON.
fn cell(row: &Row, i: usize, ty: &Type) -> Result<Value, String> {
    match *ty {
        Type::BOOL => get(row, i, Value::Bool),
        Type::INT2 => get(row, i, |v: i16| v.into()),
        Type::INT4 => get(row, i, |v: i32| v.into()),
        Type::INT8 => get(row, i, |v: i64| v.into()),
        Type::OID => get(row, i, |v: u32| v.into()),
        // NaN and infinities have no JSON form: null.
        Type::FLOAT4 => get(row, i, |v: f32| f64::from(v).into()),
        Type::FLOAT8 => get(row, i, |v: f64| v.into()),
        Type::NUMERIC => get(row, i, |v: Numeric| v.0.into()),
        Type::JSON | Type::JSONB => get(row, i, |v: Value| v),
        Type::TIMESTAMPTZ => get(row, i, |v: jiff::Timestamp| v.to_string().into()),
        Type::TIMESTAMP => get(row, i, |v: jiff::civil::DateTime| v.to_string().into()),
        Type::DATE => get(row, i, |v: jiff::civil::Date| v.to_string().into()),
        Type::TIME => get(row, i, |v: jiff::civil::Time| v.to_string().into()),
        Type::UUID => get(row, i, |v: uuid::Uuid| v.to_string().into()),
        _ if <String as FromSql>::accepts(ty) => get(row, i, Value::String),
        _ => Err(
            "this type cannot be returned as JSON; cast the column in the SQL (e.g. `::text`)"
                .to_owned(),
        ),
    }
}

/// Reads column `i` as a `T` (SQL `NULL` as JSON `null`).
fn get<'a, T: FromSql<'a>>(
    row: &'a Row,
    i: usize,
    into_json: impl FnOnce(T) -> Value,
) -> Result<Value, String> {
    match row.try_get::<_, Option<T>>(i) {
        Ok(value) => Ok(value.map_or(Value::Null, into_json)),
        Err(e) => Err(match e.source() {
            Some(cause) => cause.to_string(),
            None => e.to_string(),
        }),
    }
}

/// A `numeric` value in decimal, every digit kept.
struct Numeric(String);

impl<'a> FromSql<'a> for Numeric {
    /// The binary form: digit count, weight (of the first base-10000
    /// digit), sign, display scale, then the base-10000 digits.
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let word = |i: usize| {
            raw.get(2 * i..2 * i + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or("numeric value is truncated")
        };
        let count = usize::from(word(0)?);
        // The weight is signed: the raw bits of an i16.
        let weight = i32::from(word(1)? as i16);
        let sign = word(2)?;
        let scale = usize::from(word(3)?);
        match sign {
            0x0000 | 0x4000 => {}
            0xC000 => return Ok(Self("NaN".into())),
            0xD000 => return Ok(Self("Infinity".into())),
            0xF000 => return Ok(Self("-Infinity".into())),
            other => return Err(format!("numeric value has an unknown sign {other:#x}").into()),
        }
        let digits = (0..count)
            .map(|k| word(4 + k))
            .collect::<Result<Vec<u16>, _>>()?;
        let digit = |k: i32| {
            usize::try_from(k)
                .ok()
                .and_then(|k| digits.get(k))
                .copied()
                .unwrap_or(0)
        };
        let mut text = String::new();
        if sign == 0x4000 {
            text.push('-');
        }
        if weight < 0 {
            text.push('0');
        } else {
            for k in 0..=weight {
                if k == 0 {
                    write!(text, "{}", digit(k))?;
                } else {
                    write!(text, "{:04}", digit(k))?;
                }
            }
        }
        if scale > 0 {
            let mut fraction = String::new();
            let mut k = weight + 1;
            while fraction.len() < scale {
                write!(fraction, "{:04}", digit(k))?;
                k += 1;
            }
            fraction.truncate(scale);
            text.push('.');
            text.push_str(&fraction);
        }
        Ok(Self(text))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use serde_json::json;
    use tokio_util::sync::CancellationToken;
    use troupe_plugin::{LoadedPlugin, Plugins, Scope};

    use super::*;
    use crate::resources::postgres;

    fn database_url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    /// A schema of its own for one test, with the plugin and a context
    /// whose `postgres` resource uses it.
    struct Fixture {
        schema: String,
        admin: tokio_postgres::Client,
        plugin: Arc<LoadedPlugin>,
        scope: Arc<Scope>,
    }

    impl Fixture {
        async fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let schema = format!(
                "troupe_builtins_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let url = database_url();
            let (admin, connection) = tokio_postgres::connect(&url, NoTls)
                .await
                .expect("DATABASE_URL reachable");
            tokio::spawn(connection);
            admin
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
                ))
                .await
                .expect("schema created");
            let separator = if url.contains('?') { '&' } else { '?' };
            let url = format!("{url}{separator}options=-csearch_path%3D{schema}");
            let scope = postgres(Scope::builder(), &url)
                .acquire()
                .await
                .expect("postgres acquired");
            let plugins = Plugins::load(&[POSTGRES]).expect("plugins load");
            Self {
                schema,
                admin,
                plugin: Arc::clone(plugins.get(SqlQuery::NAME).expect("offered with postgres")),
                scope: Arc::new(scope),
            }
        }

        async fn run(&self, sql: &str, params: Value) -> Result<Value, PluginError> {
            let cx = Context::new(CancellationToken::new(), Some(Arc::clone(&self.scope)));
            self.plugin
                .process(json!({"sql": sql, "params": params}), &cx)
                .await
        }

        async fn ok(&self, sql: &str, params: Value) -> Value {
            self.run(sql, params)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        }

        async fn fails(&self, sql: &str, params: Value) -> String {
            self.run(sql, params).await.expect_err(sql).0
        }

        async fn drop_schema(self) {
            drop(self.scope);
            self.admin
                .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
                .await
                .expect("schema dropped");
        }
    }

    #[tokio::test]
    async fn inserts_with_bound_params_and_reads_typed_rows_back() {
        let db = Fixture::new().await;
        db.ok(
            "CREATE TABLE items (
                id serial PRIMARY KEY, name text NOT NULL, qty int4, big int8, active bool,
                tags jsonb, ratio float8, price numeric(10, 2), seen timestamptz, uid uuid
            )",
            json!([]),
        )
        .await;
        let inserted = db
            .ok(
                "INSERT INTO items (name, qty, big, active, tags, ratio, price, seen, uid)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id, name",
                json!([
                    "widget'); DROP TABLE items; --",
                    3,
                    9_007_199_254_740_993_i64,
                    true,
                    {"colours": ["red"], "n": 1},
                    2.5,
                    "12.30",
                    "2024-05-01T12:00:00+02:00",
                    "67e55044-10b1-426f-9247-bb680e5fe0c8"
                ]),
            )
            .await;
        assert_eq!(
            inserted,
            json!({"rows": [{"id": 1, "name": "widget'); DROP TABLE items; --"}], "row_count": 1})
        );
        let plain = db
            .ok(
                "INSERT INTO items (name, qty, active, tags) VALUES ($1, $2, $3, $4)",
                json!(["gadget", null, false, null]),
            )
            .await;
        assert_eq!(plain, json!({"rows": [], "row_count": 1}));
        let updated = db
            .ok(
                "UPDATE items SET ratio = coalesce(ratio, 0) + $1",
                json!([0.25]),
            )
            .await;
        assert_eq!(updated, json!({"rows": [], "row_count": 2}));

        let selected = db.ok("SELECT * FROM items ORDER BY id", json!([])).await;
        assert_eq!(
            selected,
            json!({"row_count": 2, "rows": [
                {
                    "id": 1, "name": "widget'); DROP TABLE items; --", "qty": 3,
                    "big": 9_007_199_254_740_993_i64, "active": true,
                    "tags": {"colours": ["red"], "n": 1}, "ratio": 2.75, "price": "12.30",
                    "seen": "2024-05-01T10:00:00Z", "uid": "67e55044-10b1-426f-9247-bb680e5fe0c8"
                },
                {
                    "id": 2, "name": "gadget", "qty": null, "big": null, "active": false,
                    "tags": null, "ratio": 0.25, "price": null, "seen": null, "uid": null
                }
            ]})
        );
        let filtered = db
            .ok(
                "SELECT name FROM items WHERE active = $1 AND tags ? $2",
                json!([true, "colours"]),
            )
            .await;
        assert_eq!(
            filtered["rows"],
            json!([{"name": "widget'); DROP TABLE items; --"}])
        );
        db.drop_schema().await;
    }

    #[tokio::test]
    async fn errors_carry_the_server_s_message() {
        let db = Fixture::new().await;
        let e = db.fails("SELECT * FROM missing", json!([])).await;
        assert!(e.contains(r#"relation "missing" does not exist"#), "{e}");
        let e = db.fails("SELEC 1", json!([])).await;
        assert!(e.contains(r#"syntax error at or near "SELEC""#), "{e}");
        let e = db.fails("SELECT $1::int4 + $2::int4", json!([1])).await;
        assert_eq!(e, "the statement takes 2 parameter(s), 1 given");
        let e = db.fails("SELECT $1::int4", json!(["abc"])).await;
        assert_eq!(
            e,
            r#"parameter $1 (int4): expected a 32-bit integer, got "abc""#
        );
        let e = db.fails("SELECT $1::int2", json!([70000])).await;
        assert!(e.starts_with("parameter $1 (int2)"), "{e}");
        let e = db.fails("SELECT $1::numeric", json!(["twelve"])).await;
        assert!(e.contains("invalid input syntax for type numeric"), "{e}");
        let e = db
            .fails("SELECT interval '1 day' AS period", json!([]))
            .await;
        assert!(e.starts_with(r#"column "period" (interval): "#), "{e}");
        db.drop_schema().await;
    }

    #[tokio::test]
    async fn numerics_keep_every_digit() {
        let db = Fixture::new().await;
        let row = db
            .ok(
                "SELECT 0::numeric AS zero, -1.5::numeric AS neg, 0.00012::numeric AS small,
                        123456789.000000001::numeric AS long, 1e20::numeric AS big,
                        'NaN'::numeric AS nan, 10000::numeric(8, 1) AS scaled",
                json!([]),
            )
            .await;
        assert_eq!(
            row["rows"][0],
            json!({
                "zero": "0", "neg": "-1.5", "small": "0.00012", "long": "123456789.000000001",
                "big": "100000000000000000000", "nan": "NaN", "scaled": "10000.0"
            })
        );
        db.drop_schema().await;
    }

    #[tokio::test]
    async fn cancellation_stops_the_statement_and_the_pool_stays_usable() {
        let db = Fixture::new().await;
        let cancel = CancellationToken::new();
        let cx = Context::new(cancel.clone(), Some(Arc::clone(&db.scope)));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cancel.cancel();
        });
        let started = Instant::now();
        let e = db
            .plugin
            .process(json!({"sql": "SELECT pg_sleep(30)"}), &cx)
            .await
            .expect_err("cancelled");
        assert_eq!(e.0, "cancelled while the statement ran");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "returned promptly"
        );
        assert_eq!(
            db.ok("SELECT 1 AS one", json!([])).await,
            json!({"rows": [{"one": 1}], "row_count": 1})
        );
        db.drop_schema().await;
    }

    #[test]
    fn empty_sql_is_refused_at_submission() {
        let plugins = Plugins::load(&[POSTGRES]).expect("plugins load");
        let p = plugins.get(SqlQuery::NAME).expect("offered");
        assert!(p.check(&json!({"sql": "SELECT 1"})).is_ok());
        assert_eq!(
            p.check(&json!({"sql": "  "})).expect_err("blank").field,
            "input.sql"
        );
        assert_eq!(p.check(&json!({})).expect_err("missing").field, "input.sql");
        assert_eq!(
            p.check(&json!({"sql": "SELECT 1", "params": {}}))
                .expect_err("not an array")
                .field,
            "input.params"
        );
    }
}
