//! PostgreSQL as the results sink: a deadpool-postgres pool, the schema
//! migrated on first use, batched upserts keyed on
//! `(pipeline, key, window_start_ms)`.
//!
//! The URL is `storage.postgres_url`; its `options` parameter may set a
//! `search_path` (the tests give each run its own schema that way).

use std::time::Duration;

use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use tokio::sync::OnceCell;
use troupe_actors::sink::ResultSink;
use troupe_actors::store::ResultFilter;
use troupe_protocol::WindowResult;

/// Schema versions, applied in order, each once.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE IF NOT EXISTS troupe_window_results (
        pipeline TEXT NOT NULL,
        key TEXT NOT NULL,
        window_start_ms BIGINT NOT NULL,
        window_end_ms BIGINT NOT NULL,
        events BIGINT NOT NULL,
        \"values\" JSONB NOT NULL,
        written_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (pipeline, key, window_start_ms)
    )",
)];

/// How long one write may take (a locked table, a stalled server).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL does not parse.
    #[error("storage.postgres_url: {0}")]
    Url(#[from] tokio_postgres::Error),
    /// The pool could not be built.
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
}

/// The PostgreSQL sink.
pub struct PgSink {
    pool: Pool,
    migrated: OnceCell<()>,
}

impl PgSink {
    /// A sink for `url`; nothing is connected yet.
    pub fn new(url: &str) -> Result<Self, PgError> {
        let pool = troupe_builtins::resources::pg_pool(url.parse()?)?;
        Ok(Self {
            pool,
            migrated: OnceCell::new(),
        })
    }

    async fn migrate(&self) -> Result<(), String> {
        let mut client = self.pool.get().await.map_err(|e| e.to_string())?;
        let tx = client.transaction().await.map_err(|e| e.to_string())?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS troupe_schema_migrations (
                version INT PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            );
            LOCK TABLE troupe_schema_migrations IN EXCLUSIVE MODE;",
        )
        .await
        .map_err(|e| e.to_string())?;
        for (version, sql) in MIGRATIONS {
            let applied = tx
                .query_opt(
                    "SELECT 1 FROM troupe_schema_migrations WHERE version = $1",
                    &[version],
                )
                .await
                .map_err(|e| e.to_string())?
                .is_some();
            if !applied {
                tx.batch_execute(sql).await.map_err(|e| e.to_string())?;
                tx.execute(
                    "INSERT INTO troupe_schema_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(|e| e.to_string())?;
                tracing::info!(version, "postgres schema migrated");
            }
        }
        tx.commit().await.map_err(|e| e.to_string())
    }

    async fn upsert(&self, results: &[WindowResult]) -> Result<(), String> {
        self.migrated.get_or_try_init(|| self.migrate()).await?;
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let column = |f: &dyn Fn(&WindowResult) -> i64| results.iter().map(f).collect::<Vec<i64>>();
        let pipelines: Vec<&str> = results.iter().map(|r| r.pipeline.as_str()).collect();
        let keys: Vec<&str> = results.iter().map(|r| r.key.as_str()).collect();
        let starts = column(&|r| r.window_start_ms as i64);
        let ends = column(&|r| r.window_end_ms as i64);
        let events = column(&|r| r.events as i64);
        let values: Vec<serde_json::Value> = results
            .iter()
            .map(|r| serde_json::to_value(&r.values).unwrap_or_default())
            .collect();
        client
            .execute(
                "INSERT INTO troupe_window_results
                    (pipeline, key, window_start_ms, window_end_ms, events, \"values\")
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::jsonb[])
                 ON CONFLICT (pipeline, key, window_start_ms) DO UPDATE SET
                    window_end_ms = EXCLUDED.window_end_ms,
                    events = EXCLUDED.events,
                    \"values\" = EXCLUDED.\"values\",
                    written_at = now()",
                &[&pipelines, &keys, &starts, &ends, &events, &values],
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A page cursor of results read from PostgreSQL: the last (key, window
/// start) returned, as `<start>:<key>`.
fn parse_cursor(cursor: &str) -> Option<(String, i64)> {
    let (start, key) = cursor.split_once(':')?;
    Some((key.to_owned(), start.parse().ok()?))
}

impl PgSink {
    /// A page of `filter`'s results in (key, window start) order after
    /// `cursor`, and the cursor of the next page when one may follow.
    /// `Err(None)` for a cursor this did not make; `Err(Some(reason))`
    /// when the database cannot answer.
    pub async fn results(
        &self,
        filter: &ResultFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<WindowResult>, Option<String>), Option<String>> {
        let after = cursor.map(|c| parse_cursor(c).ok_or(None)).transpose()?;
        let query = async {
            self.migrated.get_or_try_init(|| self.migrate()).await?;
            let client = self.pool.get().await.map_err(|e| e.to_string())?;
            let (after_key, after_start) = after.clone().unzip();
            let bound = |t: Option<u64>| t.map(|t| t as i64);
            client
                .query(
                    "SELECT key, window_start_ms, window_end_ms, events, \"values\"
                     FROM troupe_window_results
                     WHERE pipeline = $1
                       AND ($2::text IS NULL OR key = $2)
                       AND ($3::bigint IS NULL OR window_start_ms >= $3)
                       AND ($4::bigint IS NULL OR window_start_ms < $4)
                       AND ($5::text IS NULL OR (key, window_start_ms) > ($5, $6::bigint))
                     ORDER BY key, window_start_ms
                     LIMIT $7",
                    &[
                        &filter.pipeline,
                        &filter.key,
                        &bound(filter.from_ms),
                        &bound(filter.to_ms),
                        &after_key,
                        &after_start,
                        &(limit as i64),
                    ],
                )
                .await
                .map_err(|e| e.to_string())
        };
        let rows = match tokio::time::timeout(WRITE_TIMEOUT, query).await {
            Ok(rows) => rows.map_err(Some)?,
            Err(_) => {
                return Err(Some(format!(
                    "postgres did not answer within {WRITE_TIMEOUT:?}"
                )))
            }
        };
        let results: Vec<WindowResult> = rows
            .iter()
            .map(|row| WindowResult {
                pipeline: filter.pipeline.clone(),
                key: row.get(0),
                window_start_ms: row.get::<_, i64>(1) as u64,
                window_end_ms: row.get::<_, i64>(2) as u64,
                events: row.get::<_, i64>(3) as u64,
                values: serde_json::from_value(row.get(4)).unwrap_or_default(),
            })
            .collect();
        let next = (results.len() == limit)
            .then(|| {
                results
                    .last()
                    .map(|r| format!("{}:{}", r.window_start_ms, r.key))
            })
            .flatten();
        Ok((results, next))
    }
}

impl ResultSink for PgSink {
    fn write<'a>(&'a self, results: &'a [WindowResult]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            match tokio::time::timeout(WRITE_TIMEOUT, self.upsert(results)).await {
                Ok(done) => done,
                Err(_) => Err(format!("postgres did not answer within {WRITE_TIMEOUT:?}")),
            }
        })
    }
}
