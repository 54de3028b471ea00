//! The node resources the built-in plugins use, added to a scope.
//!
//! A plugin names the resources it needs (`Plugin::RESOURCES`) and looks
//! them up by name and type while it runs; a node offers the plugin only
//! if its scope holds them. Building them here, next to the plugins,
//! keeps the name, the Rust type and the settings in one place: the node
//! calls [`http_client`] and [`postgres`] on its scope builder, and
//! `http.webhook` / `sql.query` find what they expect.
//!
//! Acquiring `postgres` opens one connection and runs `SELECT 1`, so a
//! wrong host, port or credential stops the node's scope at start-up with
//! the server's or the driver's own words, rather than failing every
//! task later.

use std::convert::Infallible;
use std::error::Error as _;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use tokio_postgres::config::Host;
use tokio_postgres::{Config, NoTls};
use troupe_plugin::ScopeBuilder;

use crate::webhook::MAX_TIMEOUT_MS;

/// Name of the HTTP client resource: a [`ureq::Agent`].
pub const HTTP: &str = "http";
/// Name of the PostgreSQL resource: a [`deadpool_postgres::Pool`].
pub const POSTGRES: &str = "postgres";

/// How long the HTTP client waits for a connection.
const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one read or write may stall: the longest request timeout a
/// webhook may ask for, so that the request's own timeout governs.
const HTTP_IO_TIMEOUT: Duration = Duration::from_millis(MAX_TIMEOUT_MS);
/// How long connecting to PostgreSQL may take, unless the URL says.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections the pool keeps at most.
const PG_POOL_SIZE: usize = 4;

/// Adds the resource [`HTTP`]: a blocking [`ureq::Agent`] (connection
/// pooling, 5 s to connect, 60 s per read or write). Plugins run it on a
/// blocking thread.
pub fn http_client(builder: ScopeBuilder) -> ScopeBuilder {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(HTTP_CONNECT_TIMEOUT)
        .timeout_read(HTTP_IO_TIMEOUT)
        .timeout_write(HTTP_IO_TIMEOUT)
        .user_agent(concat!("troupe/", env!("CARGO_PKG_VERSION")))
        .build();
    builder.resource(HTTP, async move { Ok::<_, Infallible>(agent) })
}

/// Adds the resource [`POSTGRES`]: a [`deadpool_postgres::Pool`] for
/// `url` (at most 4 connections, fast recycling, no TLS). Acquiring it
/// connects once and runs `SELECT 1`; the scope's error then says which
/// server could not be reached and why.
pub fn postgres(builder: ScopeBuilder, url: &str) -> ScopeBuilder {
    let config = url.parse::<Config>();
    builder.resource(POSTGRES, connect(config))
}

/// Why the PostgreSQL resource could not be acquired.
#[derive(Debug, thiserror::Error)]
enum PostgresError {
    /// The URL does not parse.
    #[error("bad URL: {}", pg_message(.0))]
    Url(tokio_postgres::Error),
    /// The pool could not be built.
    #[error("cannot build the pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
    /// The server could not be reached, or refused us.
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        /// Host and port, database and user.
        target: String,
        /// The server's or the driver's message.
        reason: String,
    },
}

/// A pool for `config` (at most 4 connections, fast recycling, no TLS),
/// nothing connected yet; the node's results sink uses the same.
pub fn pg_pool(config: Config) -> Result<Pool, deadpool_postgres::BuildError> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager).max_size(PG_POOL_SIZE).build()
}

async fn connect(config: Result<Config, tokio_postgres::Error>) -> Result<Pool, PostgresError> {
    let mut config = config.map_err(PostgresError::Url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(PG_CONNECT_TIMEOUT);
    }
    let target = target(&config);
    let pool = pg_pool(config)?;
    let client = pool.get().await.map_err(|e| PostgresError::Connect {
        target: target.clone(),
        reason: pool_message(&e),
    })?;
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| PostgresError::Connect {
            target,
            reason: pg_message(&e),
        })?;
    // Back to the pool: the first task reuses it.
    drop(client);
    Ok(pool)
}

/// `host:port` of each server, with the database and user when given.
fn target(config: &Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect();
    let mut target = if hosts.is_empty() {
        "the default server".to_owned()
    } else {
        hosts.join(", ")
    };
    if let Some(db) = config.get_dbname() {
        target.push_str(&format!(" (database {db}"));
        if let Some(user) = config.get_user() {
            target.push_str(&format!(", user {user}"));
        }
        target.push(')');
    }
    target
}

/// A PostgreSQL error in the server's words when it sent some (with its
/// detail and hint), else the driver's message and its cause.
pub(crate) fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.to_string();
    }
    match e.source() {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// A pool error, with the PostgreSQL error inside it spelled out.
pub(crate) fn pool_message(e: &PoolError) -> String {
    match e {
        PoolError::Backend(e) => pg_message(e),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use troupe_plugin::Scope;

    use super::*;

    #[tokio::test]
    async fn an_unreachable_server_fails_the_scope_quickly_and_says_why() {
        let started = Instant::now();
        let err = postgres(Scope::builder(), "postgres://postgres@127.0.0.1:1/test")
            .acquire()
            .await
            .expect_err("nothing listens on port 1");
        assert_eq!(err.resource, POSTGRES);
        assert!(
            err.reason.contains("cannot connect to 127.0.0.1:1") && err.reason.contains("refused"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "fails fast");
    }

    #[tokio::test]
    async fn a_bad_url_is_named() {
        let err = postgres(Scope::builder(), "postgres://h/db?sslmode=sideways")
            .acquire()
            .await
            .expect_err("bad URL");
        assert_eq!(err.resource, POSTGRES);
        assert!(err.reason.starts_with("bad URL"), "{err}");
    }

    #[tokio::test]
    async fn the_http_client_is_held_as_an_agent() {
        let scope = http_client(Scope::builder())
            .acquire()
            .await
            .expect("always acquired");
        assert!(scope.get::<ureq::Agent>(HTTP).is_some());
    }
}
