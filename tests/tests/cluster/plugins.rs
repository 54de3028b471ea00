//! Plugins across real nodes: one node runs a build with a plugin the
//! others lack (`test.reverse`, declared in this crate's
//! `troupe-plugged` binary). Every node learns that from gossip; tasks of
//! that kind go to it alone, whichever node takes the submission; input
//! is checked by a node that has the plugin; once it is gone, the kind
//! is refused, and what it ran is still answered for by the others.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use troupe_tests::{wait_until, Cluster};

use crate::{start_converged, IDS};

fn plugin<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

fn runs_reverse(list: &Value, node: &str) -> bool {
    list["cluster"].as_array().is_some_and(|nodes| {
        nodes.iter().any(|n| {
            n["node"] == node
                && n["plugins"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["name"] == "test.reverse"))
        })
    })
}

fn submit(cluster: &Cluster, on: &str, task: &Value) -> (u16, Value) {
    let reply = cluster.post(on, "/v1/tasks", &task.to_string());
    (reply.status, reply.body)
}

#[test]
fn tasks_of_a_plugin_go_only_to_the_nodes_built_with_it() {
    let mut cluster = Cluster::new(3, "");
    cluster.use_binary("n3", Path::new(env!("CARGO_BIN_EXE_troupe-plugged")));
    start_converged(&mut cluster);

    // The plugin declared in this crate is listed by the node built with
    // it, with its version and the schema derived from its input type.
    let on_n3 = cluster.get("n3", "/v1/plugins").body;
    let reverse = plugin(&on_n3, "test.reverse").expect("n3 lists test.reverse");
    assert_eq!(reverse["version"], "1.4.0");
    assert_eq!(
        reverse["input_schema"]["properties"]["text"]["type"],
        "string"
    );
    assert_eq!(
        reverse["input_schema"]["properties"]["times"]["maximum"],
        10
    );
    assert!(plugin(&on_n3, "echo").is_some(), "and the built-in kinds");
    // The others do not run it, but know from gossip who does.
    for on in ["n1", "n2"] {
        wait_until(Duration::from_secs(10), "the catalogue gossiped", || {
            let list = cluster.get(on, "/v1/plugins").body;
            plugin(&list, "test.reverse").is_none() && runs_reverse(&list, "n3")
        });
    }
    assert!(!runs_reverse(&cluster.get("n1", "/v1/plugins").body, "n1"));

    // Submitted anywhere, every task of the kind is placed on n3.
    let batch: Vec<Value> = (0..24)
        .map(|i| json!({"kind": "test.reverse", "input": {"text": format!("abc{i}")}}))
        .collect();
    let mut ids = Vec::new();
    for on in IDS {
        let reply = cluster.post(on, "/v1/tasks", &Value::Array(batch.clone()).to_string());
        assert_eq!(reply.status, 202, "on {on}: {}", reply.text);
        for accepted in reply.body.as_array().expect("acceptances") {
            assert_eq!(
                accepted["owner"], "n3",
                "placed on the node with the plugin"
            );
            ids.push(accepted["id"].as_str().expect("id").to_owned());
        }
    }
    // Built-in kinds still spread over all three.
    let echoes: Vec<Value> = (0..60)
        .map(|i| json!({"kind": "echo", "input": i}))
        .collect();
    let reply = cluster.post("n1", "/v1/tasks", &Value::Array(echoes).to_string());
    assert_eq!(reply.status, 202, "{}", reply.text);
    let owners: std::collections::HashSet<&str> = reply
        .body
        .as_array()
        .expect("acceptances")
        .iter()
        .filter_map(|a| a["owner"].as_str())
        .collect();
    assert_eq!(owners.len(), 3, "echo runs everywhere: {owners:?}");

    for id in &ids {
        wait_until(
            Duration::from_secs(20),
            "the reverse task to succeed",
            || cluster.get("n1", &format!("/v1/tasks/{id}")).body["state"] == "succeeded",
        );
    }
    let one = cluster.get("n2", &format!("/v1/tasks/{}", ids[0])).body;
    assert_eq!(one["result"], json!({"text": "0cba"}));
    let calls = plugin(&cluster.get("n3", "/v1/plugins").body, "test.reverse").expect("listed")
        ["metrics"]["calls"]
        .clone();
    assert_eq!(calls, json!(ids.len()), "n3 ran every one");

    // Input is checked against the plugin's schema by a node that has it,
    // even when the submission arrives elsewhere: 422 naming the field.
    for on in IDS {
        let (status, body) = submit(
            &cluster,
            on,
            &json!({"kind": "test.reverse", "input": {"text": 5}}),
        );
        assert_eq!(
            (status, body["field"].as_str()),
            (422, Some("input.text")),
            "on {on}: {body}"
        );
        let (status, body) = submit(
            &cluster,
            on,
            &json!({"kind": "test.reverse", "input": {"text": "x", "times": 11}}),
        );
        assert_eq!(
            (status, body["field"].as_str()),
            (422, Some("input.times")),
            "on {on}: {body}"
        );
        let (status, body) = submit(
            &cluster,
            on,
            &json!({"kind": "test.reverse", "input": {"text": "  "}}),
        );
        assert_eq!(
            (status, body["field"].as_str()),
            (422, Some("input.text")),
            "on {on}: {body}"
        );
        assert!(
            body["detail"].as_str().is_some_and(|e| e.contains("blank")),
            "{body}"
        );
    }
    // A version the cluster does not run, and a kind nobody runs.
    let (status, body) = submit(
        &cluster,
        "n1",
        &json!({"kind": "test.reverse", "version": "^2", "input": {"text": "x"}}),
    );
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("version")),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|e| e.contains("1.4.0")),
        "{body}"
    );
    let (status, _) = submit(
        &cluster,
        "n1",
        &json!({"kind": "test.reverse", "version": "^1.2", "input": {"text": "x"}}),
    );
    assert_eq!(status, 202);
    let (status, body) = submit(&cluster, "n2", &json!({"kind": "teleport"}));
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("kind")),
        "{body}"
    );
    let (status, body) = submit(&cluster, "n2", &json!({"kind": "echo", "version": "one"}));
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("version")),
        "{body}"
    );

    // Without n3 no live node runs the kind: refused, not queued forever.
    cluster.kill("n3");
    wait_until(Duration::from_secs(20), "n3 out of the placement", || {
        let (status, body) = submit(
            &cluster,
            "n1",
            &json!({"kind": "test.reverse", "input": {"text": "x"}}),
        );
        status == 422 && body["field"] == "kind"
    });
    // Every task n3 took is still answered for: its record was on
    // min(R, live) disks before the 202, nodes without the plugin
    // included. (Later state changes reach copies best-effort.)
    for (n, id) in ids.iter().enumerate() {
        let copy = cluster.get("n1", &format!("/v1/tasks/{id}"));
        assert_eq!(copy.status, 200, "{id}: {}", copy.text);
        assert_eq!(copy.body["kind"], "test.reverse", "{}", copy.text);
        let text = format!("abc{}", n % 24);
        assert_eq!(copy.body["input"]["text"], text, "{}", copy.text);
    }
}
