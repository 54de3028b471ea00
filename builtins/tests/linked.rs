//! A node links this crate and calls only its resource functions; every
//! built-in plugin must still be registered (they are collected at link
//! time, so this is checked from outside the crate, as a node sees it).

use troupe_builtins::resources::{http_client, HTTP, POSTGRES};
use troupe_plugin::{Plugins, Scope};

#[tokio::test]
async fn every_builtin_is_registered_where_the_resources_are_used() {
    let scope = http_client(Scope::builder())
        .acquire()
        .await
        .expect("an HTTP client");
    assert!(scope.holds(HTTP));
    let plugins = Plugins::load(&[HTTP, POSTGRES]).expect("plugins load");
    let ids: Vec<String> = plugins
        .catalogue()
        .iter()
        .map(ToString::to_string)
        .collect();
    for id in [
        "json.transform@1.0.0",
        "http.webhook@1.0.0",
        "sql.query@1.0.0",
    ] {
        assert!(ids.iter().any(|i| i == id), "{id} missing from {ids:?}");
    }
}
