//! `troupe cluster up` / `troupe cluster down`: every node of a config as
//! a local process; `troupe cluster members`: who a node knows of.
//!
//! `up` stays in the foreground like `docker compose up`: prints where each
//! node listens and where it logs, reports nodes that exit, and on Ctrl-C or
//! SIGTERM stops them all gracefully. `down` stops the nodes of a config
//! from another terminal (or after `up` was itself killed): it finds them by
//! the pid files they keep in their data dirs. `members` reads any node's
//! `GET /v1/cluster`, so it works against remote clusters too.

use std::time::Duration;

use anyhow::Context;
use comfy_table::Cell;
use troupe_protocol::ClusterView;

use crate::cli::{ClusterDownArgs, ClusterUpArgs, Output};
use crate::client::Client;
use crate::config::ClusterConfig;
use crate::local::{self, Launch, PID_FILE};
use crate::output::{align_right, or_dash, print_json, print_table, table, wire_name};
use crate::run::SHUTDOWN_GRACE;
use crate::signals::shutdown_requested;
use crate::telemetry::LogFormat;

/// Starts the nodes and supervises them until a signal.
pub async fn up(
    args: &ClusterUpArgs,
    config: &ClusterConfig,
    log_format: LogFormat,
) -> anyhow::Result<()> {
    let mut launch = Launch::this_binary(&args.config, log_format)?;
    launch.fault_injection = args.fault_injection;
    let mut nodes = Vec::new();
    for entry in &config.nodes {
        let node = launch.start(config, entry)?;
        println!(
            "{:<6} http://{:<21} pid {:<7} log {}",
            node.id,
            node.http,
            node.pid(),
            node.log.display()
        );
        nodes.push(node);
    }
    println!(
        "cluster {:?}: {} nodes started; Ctrl-C or `troupe cluster down` stops them",
        config.cluster.name,
        nodes.len()
    );

    let signal = shutdown_requested();
    tokio::pin!(signal);
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            () = &mut signal => break,
            _ = poll.tick() => {
                for node in &mut nodes {
                    if let Some(status) = node.exited() {
                        println!("node {} exited: {status}", node.id);
                    }
                }
                nodes.retain_mut(|n| n.exited().is_none());
                if nodes.is_empty() {
                    println!("every node has stopped");
                    return Ok(());
                }
            }
        }
    }
    println!("stopping {} nodes", nodes.len());
    tokio::task::spawn_blocking(move || {
        for node in &nodes {
            node.signal(libc::SIGTERM);
        }
        for node in &mut nodes {
            match node.wait_or_kill(SHUTDOWN_GRACE) {
                (Some(status), false) => println!("node {} stopped: {status}", node.id),
                _ => println!("node {} did not stop in time; killed it", node.id),
            }
        }
    })
    .await
    .context("stopping the nodes")
}

/// Whether `pid` is a running `troupe node` process for node `id`.
fn is_node(pid: u32, id: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.iter().any(|a| *a == b"node")
        && args
            .windows(2)
            .any(|w| w[0] == b"--id" && w[1] == id.as_bytes())
}

/// Stops every node of the config that runs on this machine: SIGTERM, and
/// SIGKILL for any still running after `--timeout`.
pub fn down(args: &ClusterDownArgs, config: &ClusterConfig) -> anyhow::Result<()> {
    let mut running = Vec::new();
    for entry in &config.nodes {
        let path = config.data_dir(entry).join(PID_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            println!("{:<6} not running", entry.id);
            continue;
        };
        let pid: u32 = text
            .trim()
            .parse()
            .with_context(|| format!("{}: not a process id", path.display()))?;
        if !is_node(pid, &entry.id) {
            println!("{:<6} not running (stale {})", entry.id, path.display());
            continue;
        }
        local::send(pid, libc::SIGTERM);
        running.push((entry.id.clone(), pid));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(args.timeout);
    for (id, pid) in running {
        while is_node(pid, &id) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if is_node(pid, &id) {
            local::send(pid, libc::SIGKILL);
            println!(
                "{id:<6} did not stop within {} s; killed (pid {pid})",
                args.timeout
            );
        } else {
            println!("{id:<6} stopped (pid {pid})");
        }
    }
    Ok(())
}

/// Prints the members node `client` knows of, as a table or its
/// `GET /v1/cluster` reply.
pub fn members(client: &Client, output: Output) -> anyhow::Result<()> {
    let view: ClusterView = client.get("/v1/cluster")?;
    if output == Output::Json {
        return print_json(&view);
    }
    println!("cluster {:?} as seen by {}", view.cluster, view.node);
    let mut t = table([
        "ID",
        "STATE",
        "HTTP",
        "GENERATION",
        "LOAD",
        "QUEUE",
        "WORKERS",
        "HEARD",
        "VERSION",
        "PLUGINS",
    ]);
    align_right(&mut t, &[3, 4, 5, 6, 7]);
    for m in &view.members {
        let plugins: Vec<String> = m.plugins.iter().map(ToString::to_string).collect();
        t.add_row(vec![
            Cell::new(&m.id),
            Cell::new(wire_name(m.state)),
            or_dash(m.http.as_ref()),
            Cell::new(m.generation),
            or_dash(m.load.map(|l| format!("{l:.2}"))),
            or_dash(m.queue_depth),
            or_dash(m.workers),
            Cell::new(format!("{} ms ago", m.last_heard_ms)),
            or_dash(m.version.as_ref()),
            Cell::new(plugins.join(", ")),
        ]);
    }
    print_table(&t);
    Ok(())
}
