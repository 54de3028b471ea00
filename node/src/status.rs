//! `troupe status`: a node's health, readiness and supervision tree.

use std::fmt::Write as _;

use anyhow::Context;
use troupe_protocol::{ActorNode, ActorStatus, Health, Readiness};

use crate::cli::Output;
use crate::client::Client;
use crate::output::print_json;

/// Fetches and prints the status; Err when the node cannot be reached.
pub fn run(client: &Client, output: Output) -> anyhow::Result<()> {
    let health: Health = client.get("/health")?;
    // /ready answers 503 with a body when not ready; both carry Readiness.
    let (_, ready) = client.get_raw("/ready")?;
    let readiness: Readiness = serde_json::from_str(&ready).context("reading /ready")?;
    let tree: ActorNode = client.get("/v1/actors")?;
    match output {
        Output::Json => print_json(&serde_json::json!({
            "health": health, "ready": readiness, "actors": tree
        }))?,
        Output::Table => print!("{}", render(&health, &readiness, &tree)),
    }
    Ok(())
}

/// The human-readable report.
pub fn render(health: &Health, readiness: &Readiness, tree: &ActorNode) -> String {
    let mut out = String::new();
    let yes_no = |b: bool| if b { "ok" } else { "DOWN" };
    let _ = writeln!(
        out,
        "node {}  version {}  generation {}  up {}s",
        health.node, health.version, health.generation, health.uptime_secs
    );
    let _ = writeln!(
        out,
        "ready: {}  (store {}, actors {}, joined {})",
        if readiness.ready { "yes" } else { "NO" },
        yes_no(readiness.store),
        yes_no(readiness.actors),
        if readiness.joined { "yes" } else { "not yet" }
    );
    if !readiness.not_running.is_empty() {
        let _ = writeln!(out, "not running: {}", readiness.not_running.join(", "));
    }
    let mut rows = Vec::new();
    flatten(tree, String::new(), true, true, &mut rows);
    let width = rows
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let _ = writeln!(
        out,
        "\n{:<width$}  {:<10}  {:>8}  LAST FAILURE",
        "ACTOR", "STATUS", "RESTARTS"
    );
    for (label, node) in rows {
        let status = match node.status {
            ActorStatus::Running => "running",
            ActorStatus::Restarting => "restarting",
            ActorStatus::Stopped => "stopped",
        };
        let failure = node
            .last_failure
            .as_ref()
            .map(|f| f.reason.clone())
            .unwrap_or_default();
        let pad = width - label.chars().count();
        let _ = writeln!(
            out,
            "{label}{:pad$}  {status:<10}  {:>8}  {failure}",
            "", node.restarts
        );
    }
    out
}

fn flatten<'a>(
    node: &'a ActorNode,
    prefix: String,
    last: bool,
    root: bool,
    rows: &mut Vec<(String, &'a ActorNode)>,
) {
    let branch = match (root, last) {
        (true, _) => "",
        (false, true) => "└── ",
        (false, false) => "├── ",
    };
    rows.push((format!("{prefix}{branch}{}", node.name), node));
    let child_prefix = match (root, last) {
        (true, _) => prefix,
        (false, true) => format!("{prefix}    "),
        (false, false) => format!("{prefix}│   "),
    };
    for (i, child) in node.children.iter().enumerate() {
        flatten(
            child,
            child_prefix.clone(),
            i + 1 == node.children.len(),
            false,
            rows,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_protocol::Failure;

    fn node(path: &str, restarts: u64, children: Vec<ActorNode>) -> ActorNode {
        ActorNode {
            name: path.rsplit('/').next().unwrap_or(path).into(),
            path: path.into(),
            kind: "worker".into(),
            status: ActorStatus::Running,
            restarts,
            last_failure: (restarts > 0).then(|| Failure {
                reason: "boom".into(),
                at_ms: 1,
            }),
            children,
        }
    }

    #[test]
    fn renders_a_tree_with_restart_counts() {
        let tree = node(
            "node",
            0,
            vec![
                node("node/scheduler", 2, vec![]),
                node(
                    "node/ingest",
                    0,
                    vec![node("node/ingest/ingestor", 0, vec![])],
                ),
            ],
        );
        let health = Health {
            status: "ok".into(),
            node: "n1".into(),
            generation: 5,
            version: "0.1.0".into(),
            uptime_secs: 3,
        };
        let ready = Readiness {
            ready: true,
            joined: true,
            store: true,
            actors: true,
            not_running: vec![],
            postgres: None,
        };
        let text = render(&health, &ready, &tree);
        assert!(text.contains("node n1"), "{text}");
        assert!(text.contains("├── scheduler"), "{text}");
        assert!(text.contains("└── ingest"), "{text}");
        assert!(text.contains("    └── ingestor"), "{text}");
        let scheduler = text
            .lines()
            .find(|l| l.contains("scheduler"))
            .unwrap_or_default();
        assert!(scheduler.contains(" 2  boom"), "{scheduler}");
    }
}
