//! `troupe cluster up`: every node of a config as a local child process.
//!
//! Stays in the foreground like `docker compose up`: prints where each node
//! listens and where it logs, reports nodes that exit, and on Ctrl-C or
//! SIGTERM stops them all gracefully (SIGTERM, then SIGKILL after the grace
//! period).

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::cli::ClusterUpArgs;
use crate::config::ClusterConfig;
use crate::run::SHUTDOWN_GRACE;
use crate::signals::shutdown_requested;
use crate::telemetry::LogFormat;

struct Running {
    id: String,
    child: Child,
}

/// Starts the nodes and supervises them until a signal.
pub async fn up(
    args: &ClusterUpArgs,
    config: &ClusterConfig,
    log_format: LogFormat,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the troupe binary")?;
    let format = match log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let mut nodes = Vec::new();
    for entry in &config.nodes {
        let dir = config.data_dir(entry);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log_path = dir.join("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut command = Command::new(&exe);
        command
            .arg("--log-format")
            .arg(format)
            .arg("node")
            .arg("--config")
            .arg(&args.config)
            .arg("--id")
            .arg(&entry.id)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if args.fault_injection {
            command.arg("--fault-injection");
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting node {}", entry.id))?;
        println!(
            "{:<6} http://{:<21} pid {:<7} log {}",
            entry.id,
            entry.http,
            child.id().unwrap_or_default(),
            log_path.display()
        );
        nodes.push(Running {
            id: entry.id.clone(),
            child,
        });
    }
    println!(
        "cluster {:?}: {} nodes started; Ctrl-C stops them",
        config.cluster.name,
        nodes.len()
    );

    let signal = shutdown_requested();
    tokio::pin!(signal);
    loop {
        let exited = async {
            loop {
                for node in nodes.iter_mut() {
                    if let Ok(Some(status)) = node.child.try_wait() {
                        return (node.id.clone(), status);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            () = &mut signal => break,
            (id, status) = exited => {
                println!("node {id} exited: {status}");
                nodes.retain(|n| n.id != id);
                if nodes.is_empty() {
                    anyhow::bail!("every node has exited");
                }
            }
        }
    }
    println!("stopping {} nodes", nodes.len());
    for node in &nodes {
        if let Some(pid) = node.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: sending a signal to a child process we started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    for node in &mut nodes {
        match tokio::time::timeout(SHUTDOWN_GRACE, node.child.wait()).await {
            Ok(Ok(status)) => println!("node {} stopped: {status}", node.id),
            _ => {
                println!("node {} did not stop in time; killing it", node.id);
                let _ = node.child.kill().await;
            }
        }
    }
    Ok(())
}
