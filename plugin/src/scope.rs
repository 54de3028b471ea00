//! Resource scopes: our answer to Python's `with a, b:`.
//!
//! A [`ScopeBuilder`] names the resources an actor or plugin needs and how
//! to acquire each; [`ScopeBuilder::acquire`] acquires them all in
//! parallel. If any fails, the ones already acquired are released (in
//! reverse order) and the error names the resource that failed. A
//! [`Scope`] releases what it holds in reverse order when dropped — on a
//! clean stop, an error or a panic alike. Scopes nest: a child sees its
//! parent's resources and, holding the parent, is always released first.
//!
//! Every resource is counted in the node's metrics (`/metrics`), labelled
//! by name: `troupe_resource_acquire_seconds`, `troupe_resource_hold_seconds`,
//! `troupe_resource_failures_total`, `troupe_resource_acquired_total`,
//! `troupe_resource_released_total` and the gauge `troupe_resource_held`.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{join_all, BoxFuture, FutureExt};

/// How long one resource may take to acquire, unless the builder says.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

type Value = Box<dyn Any + Send + Sync>;

/// A resource that could not be acquired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resource {resource}: {reason}")]
pub struct ScopeError {
    /// Its name in the scope (`postgres`, `http`).
    pub resource: String,
    /// Why.
    pub reason: String,
}

struct Held {
    name: Arc<str>,
    value: Value,
    since: Instant,
}

impl Held {
    fn release(self) {
        let Self { name, value, since } = self;
        drop(value);
        let labels = [("resource", name.to_string())];
        metrics::histogram!("troupe_resource_hold_seconds", &labels)
            .record(since.elapsed().as_secs_f64());
        metrics::gauge!("troupe_resource_held", &labels).decrement(1.0);
        metrics::counter!("troupe_resource_released_total", &labels).increment(1);
        tracing::debug!(resource = %name, "released");
    }
}

/// Resources held together, released in reverse order when dropped.
pub struct Scope {
    held: Vec<Held>,
    parent: Option<Arc<Scope>>,
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("resources", &self.names())
            .finish()
    }
}

impl Scope {
    /// Starts a top-level scope.
    pub fn builder() -> ScopeBuilder {
        ScopeBuilder::new(None)
    }

    /// Starts a scope nested in this one: it sees these resources too and
    /// keeps this scope alive until it is released.
    pub fn nested(self: &Arc<Self>) -> ScopeBuilder {
        ScopeBuilder::new(Some(Arc::clone(self)))
    }

    /// The resource `name` if this scope or an enclosing one holds it as
    /// a `T`; the innermost wins.
    pub fn get<T: Any>(&self, name: &str) -> Option<&T> {
        self.held
            .iter()
            .find(|h| &*h.name == name)
            .and_then(|h| h.value.downcast_ref::<T>())
            .or_else(|| self.parent.as_ref().and_then(|p| p.get(name)))
    }

    /// Whether this scope or an enclosing one holds `name`.
    pub fn holds(&self, name: &str) -> bool {
        self.held.iter().any(|h| &*h.name == name)
            || self.parent.as_ref().is_some_and(|p| p.holds(name))
    }

    /// Names of the resources held here (not in enclosing scopes), in the
    /// order they were declared.
    pub fn names(&self) -> Vec<&str> {
        self.held.iter().map(|h| &*h.name).collect()
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        while let Some(held) = self.held.pop() {
            held.release();
        }
    }
}

struct Pending {
    name: Arc<str>,
    acquire: BoxFuture<'static, Result<Value, String>>,
}

/// The resources a scope will hold, not yet acquired.
#[must_use = "nothing is acquired until `acquire` is awaited"]
pub struct ScopeBuilder {
    parent: Option<Arc<Scope>>,
    pending: Vec<Pending>,
    timeout: Duration,
}

impl ScopeBuilder {
    fn new(parent: Option<Arc<Scope>>) -> Self {
        Self {
            parent,
            pending: Vec::new(),
            timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }

    /// Adds the resource `name`, acquired by `acquire`. Released by
    /// dropping it, after every resource declared later.
    pub fn resource<T, E, F>(mut self, name: &str, acquire: F) -> Self
    where
        T: Any + Send + Sync,
        E: fmt::Display,
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.pending.push(Pending {
            name: Arc::from(name),
            acquire: acquire
                .map(|r| r.map(|v| Box::new(v) as Value).map_err(|e| e.to_string()))
                .boxed(),
        });
        self
    }

    /// Names of the resources declared so far, in order.
    pub fn names(&self) -> Vec<&str> {
        self.pending.iter().map(|p| &*p.name).collect()
    }

    /// How long any one resource may take (default 10 s).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// Acquires every resource at once. On the first failure (in
    /// declaration order) the others are still awaited, then everything
    /// acquired is released in reverse order, and the error names the
    /// resource that failed.
    pub async fn acquire(self) -> Result<Scope, ScopeError> {
        let Self {
            parent,
            pending,
            timeout,
        } = self;
        for (i, p) in pending.iter().enumerate() {
            if pending[..i].iter().any(|q| q.name == p.name) {
                return Err(ScopeError {
                    resource: p.name.to_string(),
                    reason: "declared twice in one scope".into(),
                });
            }
        }
        let attempts = pending
            .into_iter()
            .map(|Pending { name, acquire }| async move {
                let started = Instant::now();
                let result = match tokio::time::timeout(timeout, acquire).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("not acquired within {timeout:?}")),
                };
                let labels = [("resource", name.to_string())];
                metrics::histogram!("troupe_resource_acquire_seconds", &labels)
                    .record(started.elapsed().as_secs_f64());
                match result {
                    Ok(value) => {
                        metrics::counter!("troupe_resource_acquired_total", &labels).increment(1);
                        metrics::gauge!("troupe_resource_held", &labels).increment(1.0);
                        Ok(Held {
                            name,
                            value,
                            since: Instant::now(),
                        })
                    }
                    Err(reason) => {
                        metrics::counter!("troupe_resource_failures_total", &labels).increment(1);
                        tracing::warn!(resource = %name, %reason, "could not acquire");
                        Err(ScopeError {
                            resource: name.to_string(),
                            reason,
                        })
                    }
                }
            });
        let mut scope = Scope {
            held: Vec::new(),
            parent,
        };
        let mut first_error = None;
        for result in join_all(attempts).await {
            match result {
                Ok(held) => scope.held.push(held),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            // Dropping the partial scope releases what it got, in reverse.
            Some(e) => Err(e),
            None => Ok(scope),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Logs its release into a shared journal.
    struct Tracked {
        name: &'static str,
        journal: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.journal.lock().expect("journal").push(self.name);
        }
    }

    fn tracked(
        name: &'static str,
        journal: &Arc<Mutex<Vec<&'static str>>>,
    ) -> impl Future<Output = Result<Tracked, String>> + Send + 'static {
        let journal = Arc::clone(journal);
        async move { Ok(Tracked { name, journal }) }
    }

    fn journal() -> Arc<Mutex<Vec<&'static str>>> {
        Arc::new(Mutex::new(Vec::new()))
    }

    fn released(journal: &Arc<Mutex<Vec<&'static str>>>) -> Vec<&'static str> {
        journal.lock().expect("journal").clone()
    }

    #[tokio::test]
    async fn resources_are_released_in_reverse_order_on_drop() {
        let log = journal();
        let scope = Scope::builder()
            .resource("a", tracked("a", &log))
            .resource("b", tracked("b", &log))
            .resource("c", tracked("c", &log))
            .acquire()
            .await
            .expect("acquired");
        assert_eq!(scope.names(), ["a", "b", "c"]);
        assert!(scope.get::<Tracked>("b").is_some());
        assert!(scope.get::<String>("b").is_none(), "wrong type");
        assert!(released(&log).is_empty());
        drop(scope);
        assert_eq!(released(&log), ["c", "b", "a"]);
    }

    #[tokio::test]
    async fn one_bad_resource_releases_the_good_ones_and_is_named() {
        let log = journal();
        let err = Scope::builder()
            .resource("first", tracked("first", &log))
            .resource("database", async {
                Err::<Tracked, _>("connection refused (127.0.0.1:1)")
            })
            .resource("last", tracked("last", &log))
            .acquire()
            .await
            .expect_err("one is bad");
        assert_eq!(err.resource, "database");
        assert_eq!(
            err.to_string(),
            "resource database: connection refused (127.0.0.1:1)"
        );
        assert_eq!(released(&log), ["last", "first"]);
    }

    #[test]
    fn metrics_show_the_failure_and_the_good_resources_released() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};

        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let _ = Scope::builder()
                    .resource("pool", async { Ok::<_, String>(1u8) })
                    .resource("bad-host", async { Err::<u8, _>("no route to host") })
                    .acquire()
                    .await;
            });
        });
        // Counters read as what changed since the last snapshot: take one.
        let snapshot = snapshotter.snapshot().into_vec();
        let value = |name: &str, resource: &str| {
            snapshot
                .iter()
                .find(|(key, ..)| {
                    key.key().name() == name
                        && key
                            .key()
                            .labels()
                            .any(|l| l.key() == "resource" && l.value() == resource)
                })
                .map(|(.., value)| match value {
                    DebugValue::Counter(n) => *n as f64,
                    DebugValue::Gauge(g) => g.into_inner(),
                    // A histogram by how many values it recorded.
                    DebugValue::Histogram(h) => h.len() as f64,
                })
        };
        assert_eq!(
            value("troupe_resource_failures_total", "bad-host"),
            Some(1.0)
        );
        assert_eq!(value("troupe_resource_acquired_total", "pool"), Some(1.0));
        assert_eq!(value("troupe_resource_released_total", "pool"), Some(1.0));
        assert_eq!(value("troupe_resource_held", "pool"), Some(0.0));
        assert_eq!(value("troupe_resource_hold_seconds", "pool"), Some(1.0));
        assert_eq!(
            value("troupe_resource_held", "bad-host"),
            None,
            "never held"
        );
    }

    #[tokio::test]
    async fn acquisition_is_parallel_and_bounded_in_time() {
        let started = Instant::now();
        let scope = Scope::builder()
            .resource("slow-a", async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, String>(1u8)
            })
            .resource("slow-b", async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, String>(2u8)
            })
            .acquire()
            .await
            .expect("acquired");
        assert!(
            started.elapsed() < Duration::from_millis(550),
            "in parallel"
        );
        assert_eq!(scope.get::<u8>("slow-b"), Some(&2));

        let err = Scope::builder()
            .timeout(Duration::from_millis(50))
            .resource("stuck", std::future::pending::<Result<u8, String>>())
            .acquire()
            .await
            .expect_err("times out");
        assert_eq!(err.resource, "stuck");
        assert!(err.reason.contains("not acquired within"), "{err}");
    }

    #[tokio::test]
    async fn nested_scopes_see_their_parent_and_are_released_first() {
        let log = journal();
        let outer = Arc::new(
            Scope::builder()
                .resource("pool", tracked("pool", &log))
                .acquire()
                .await
                .expect("outer"),
        );
        let inner = outer
            .nested()
            .resource("session", tracked("session", &log))
            .acquire()
            .await
            .expect("inner");
        assert!(inner.get::<Tracked>("pool").is_some(), "sees the parent");
        assert!(inner.holds("session") && inner.holds("pool"));
        assert!(!outer.holds("session"));
        drop(outer);
        assert!(released(&log).is_empty(), "the child keeps its parent");
        drop(inner);
        assert_eq!(released(&log), ["session", "pool"]);
    }

    #[tokio::test]
    async fn a_name_declared_twice_is_refused() {
        let err = Scope::builder()
            .resource("x", async { Ok::<_, String>(1u8) })
            .resource("x", async { Ok::<_, String>(2u8) })
            .acquire()
            .await
            .expect_err("duplicate");
        assert_eq!(err.resource, "x");
    }
}
