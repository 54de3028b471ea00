//! The PostgreSQL sink against the real server: results land once per
//! window with the right values; while the table is locked (the database
//! unusable) results wait durably, `/ready` says so, the sink actor can be
//! restarted, and everything drains once the database is back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls};
use serde_json::Value;
use troupe_tests::{wait_until, Cluster};

use crate::windows::{close_at, expected, ndjson, readings, send, BASE, PIPELINE};

pub(crate) fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema of its own for one test, dropped afterwards.
pub(crate) struct Schema {
    name: String,
    admin: Client,
}

impl Schema {
    pub(crate) fn create() -> Self {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("troupe_t{}_{stamp}", std::process::id());
        let mut admin = Client::connect(&database_url(), NoTls).expect("connect to PostgreSQL");
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .expect("create schema");
        Self { name, admin }
    }

    /// The node's URL: the server's, with this schema as search path.
    pub(crate) fn url(&self) -> String {
        let base = database_url();
        let join = if base.contains('?') { '&' } else { '?' };
        format!("{base}{join}options=-c%20search_path%3D{}", self.name)
    }

    pub(crate) fn client(&self) -> Client {
        let mut client = Client::connect(&database_url(), NoTls).expect("connect");
        client
            .batch_execute(&format!("SET search_path TO {}", self.name))
            .expect("search path");
        client
    }

    /// (key, start) → (events, sum, max) as stored.
    fn rows(&self) -> Vec<(String, u64, u64, f64, f64)> {
        let mut client = self.client();
        let Ok(rows) = client.query(
            "SELECT key, window_start_ms, events, (\"values\"->>'sum(data.v)')::float8, (\"values\"->>'max(data.v)')::float8
             FROM troupe_window_results WHERE pipeline = 'temps' ORDER BY key, window_start_ms",
            &[],
        ) else {
            return Vec::new(); // not migrated yet
        };
        rows.iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1) as u64,
                    r.get::<_, i64>(2) as u64,
                    r.get::<_, f64>(3),
                    r.get::<_, f64>(4),
                )
            })
            .collect()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}

fn assert_rows(schema: &Schema, events: &[(String, String, u64, u64)]) {
    let want = expected(events);
    wait_until(
        Duration::from_secs(30),
        "every window in PostgreSQL",
        || schema.rows().len() >= want.len(),
    );
    let rows = schema.rows();
    assert_eq!(rows.len(), want.len(), "one row per window");
    for (key, start, events, sum, max) in rows {
        let (count, want_sum, want_max) = want[&(key.clone(), start)];
        assert_eq!(
            (events, sum, max),
            (count, want_sum as f64, want_max as f64),
            "{key} @ {start}"
        );
    }
}

fn sink_health(cluster: &Cluster) -> serde_json::Value {
    cluster.get("n1", "/ready").body["postgres"].clone()
}

#[test]
fn results_reach_postgres_once_and_wait_durably_while_it_is_unusable() {
    let schema = Schema::create();
    let mut cluster = Cluster::new(
        1,
        &format!("[storage]\npostgres_url = \"{}\"\n{PIPELINE}", schema.url()),
    );
    cluster.start("n1", &["--fault-injection"]);
    let events = readings();
    send(&cluster, &ndjson(&events, "reading"));
    close_at(&cluster, BASE + 100_000);
    assert_rows(&schema, &events);
    assert_eq!(sink_health(&cluster)["up"], true);

    // The database becomes unusable: the results table is locked.
    let mut locker = schema.client();
    let mut lock = locker.transaction().expect("begin");
    lock.batch_execute("LOCK TABLE troupe_window_results IN ACCESS EXCLUSIVE MODE")
        .expect("lock");
    let later: Vec<(String, String, u64, u64)> = readings()
        .into_iter()
        .map(|(id, source, t, v)| (format!("later-{id}"), source, t + 200_000, v))
        .collect();
    send(&cluster, &ndjson(&later, "reading"));
    close_at(&cluster, BASE + 300_000);
    wait_until(
        Duration::from_secs(30),
        "/ready to report the sink down",
        || {
            let health = sink_health(&cluster);
            health["up"] == false && health["queued"].as_u64().unwrap_or(0) > 0
        },
    );
    assert_eq!(
        cluster.get("n1", "/ready").status,
        200,
        "a down sink does not make the node unready"
    );

    // The sink actor crashes and comes back while the database is down.
    let crash = cluster.post("n1", "/v1/actors/node/sinks/postgres/crash", "");
    assert_eq!(crash.status, 202, "{}", crash.text);
    wait_until(Duration::from_secs(10), "the sink actor restarted", || {
        cluster
            .actor("n1", "node/sinks/postgres")
            .is_some_and(|a| a["restarts"] == 1 && a["status"] == "running")
    });
    lock.rollback().expect("unlock");

    // Everything queued drains, once.
    let mut all = events.clone();
    all.extend(later.iter().cloned());
    // The closer events of the first phase form windows of their own.
    let closers: Vec<(String, String, u64, u64)> = (0..3)
        .map(|s| (format!("end-{s}"), format!("s{s}"), BASE + 100_000, 0))
        .collect();
    all.extend(closers);
    assert_rows(&schema, &all);
    wait_until(
        Duration::from_secs(10),
        "the sink up again with nothing queued",
        || {
            let health = sink_health(&cluster);
            health["up"] == true && health["queued"] == 0
        },
    );

    // The same results read back from PostgreSQL, a page at a time and
    // streamed, as from the node's own store.
    let store = cluster.get("n1", "/v1/aggregates?pipeline=temps&limit=1000");
    assert_eq!(store.status, 200, "{}", store.text);
    let mut from_db = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = cluster.get(
            "n1",
            &format!("/v1/aggregates?pipeline=temps&source=postgres&limit=7{cursor}"),
        );
        assert_eq!(page.status, 200, "{}", page.text);
        from_db.extend(page.body["results"].as_array().cloned().unwrap_or_default());
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert!(!from_db.is_empty());
    assert_eq!(&Value::Array(from_db.clone()), &store.body["results"]);
    let (status, lines) = cluster.get_ndjson("n1", "/v1/aggregates?pipeline=temps&source=postgres");
    assert_eq!(status, 200);
    assert_eq!(lines, from_db);
    let one_key = cluster.get("n1", "/v1/aggregates?pipeline=temps&source=postgres&key=s1");
    assert!(one_key.body["results"]
        .as_array()
        .is_some_and(|r| !r.is_empty() && r.iter().all(|r| r["key"] == "s1")));
    assert_eq!(
        cluster
            .get(
                "n1",
                "/v1/aggregates?pipeline=temps&source=postgres&cursor=nonsense"
            )
            .status,
        422
    );
}
