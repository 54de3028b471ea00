//! Node processes on this machine: what `cluster up`, `cluster down`,
//! `chaos` and `bench` share.
//!
//! A node is started as a child process of the `troupe` binary itself,
//! logging to `node.log` in its data dir. Each running node leaves its pid
//! in `troupe.pid` there (written by the node, see `run`), so `cluster down`
//! can find nodes it did not start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use troupe_protocol::{TaskPage, TaskRecord};

use crate::client::{Client, DEFAULT_TIMEOUT};
use crate::config::{ClusterConfig, NodeEntry};
use crate::telemetry::LogFormat;

/// The file in a node's data dir that holds its process id.
pub const PID_FILE: &str = "troupe.pid";

/// How a node process is started.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The `troupe` binary.
    pub exe: PathBuf,
    /// The config file the node reads.
    pub config: PathBuf,
    /// Log line format of the node.
    pub log_format: LogFormat,
    /// Start with fault injection allowed.
    pub fault_injection: bool,
    /// The token this command sends to the nodes (see
    /// [`crate::client::token_for`]).
    pub token: Option<String>,
}

impl Launch {
    /// Starts nodes of `config` with this very binary.
    pub fn this_binary(config: &Path, log_format: LogFormat) -> anyhow::Result<Self> {
        Ok(Self {
            exe: std::env::current_exe().context("cannot find the troupe binary")?,
            config: config.to_owned(),
            log_format,
            fault_injection: false,
            token: None,
        })
    }

    /// Starts node `entry`, appending its output to `node.log` in its data dir.
    pub fn start(&self, config: &ClusterConfig, entry: &NodeEntry) -> anyhow::Result<LocalNode> {
        let dir = config.data_dir(entry);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log_path = dir.join("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let format = match self.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        let mut command = Command::new(&self.exe);
        command
            .arg("--log-format")
            .arg(format)
            .arg("node")
            .arg("--config")
            .arg(&self.config)
            .arg("--id")
            .arg(&entry.id)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if self.fault_injection {
            command.arg("--fault-injection");
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting node {}", entry.id))?;
        Ok(LocalNode {
            id: entry.id.clone(),
            http: entry.http.to_string(),
            log: log_path,
            token: self.token.clone(),
            child,
        })
    }
}

/// A node process started by this one. Killed when dropped, so a failing
/// command leaves no stray nodes.
#[derive(Debug)]
pub struct LocalNode {
    /// Node id.
    pub id: String,
    /// `host:port` of its HTTP API.
    pub http: String,
    /// Its log file.
    pub log: PathBuf,
    token: Option<String>,
    child: Child,
}

impl LocalNode {
    /// Its HTTP API, with the launch's token and `timeout` per request.
    pub fn client(&self, timeout: Duration) -> Client {
        Client::new(&self.http, self.token.clone(), timeout)
    }

    /// Its `/metrics` text (empty when it does not answer).
    pub fn metrics(&self) -> String {
        self.client(DEFAULT_TIMEOUT)
            .get_raw("/metrics")
            .map(|(_, text)| text)
            .unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (SIGTERM to stop, SIGKILL to kill).
    pub fn signal(&self, signal: i32) {
        send(self.pid(), signal);
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    /// Returns the exit status and whether it had to be killed.
    pub fn stop(&mut self, grace: Duration) -> (Option<ExitStatus>, bool) {
        self.signal(libc::SIGTERM);
        self.wait_or_kill(grace)
    }

    /// Waits up to `grace` for an exit already asked for, then SIGKILL.
    /// (A second SIGTERM would make the node skip its graceful shutdown.)
    pub fn wait_or_kill(&mut self, grace: Duration) -> (Option<ExitStatus>, bool) {
        if let Some(status) = self.wait(grace) {
            return (Some(status), false);
        }
        let _ = self.child.kill();
        (self.child.wait().ok(), true)
    }

    /// Peak resident memory in bytes (`VmHWM`), while it runs.
    pub fn peak_rss(&self) -> Option<u64> {
        peak_rss(self.pid())
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `signal` to process `pid`.
pub fn send(pid: u32, signal: i32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with a plain pid and signal number has no memory effects.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Peak resident memory of process `pid` in bytes, from `/proc`.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Waits until every node answers `/ready` with 200.
pub fn await_ready(nodes: &[LocalNode], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    for node in nodes {
        let client = node.client(DEFAULT_TIMEOUT);
        loop {
            if matches!(client.get_raw("/ready"), Ok((200, _))) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "node {} was not ready within {timeout:?}; see {}",
                node.id,
                node.log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// The sum of every series of metric `name` in a `/metrics` text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every task a node lists, page after page of `GET /v1/tasks?{query}`
/// (e.g. `limit=1000&state=succeeded`), handed to `each` one at a time.
pub fn for_each_task(
    client: &Client,
    query: &str,
    mut each: impl FnMut(TaskRecord),
) -> anyhow::Result<()> {
    let mut cursor = String::new();
    loop {
        let page: TaskPage = client
            .get(&format!("/v1/tasks?{query}{cursor}"))
            .with_context(|| format!("listing tasks on {}", client.base()))?;
        page.tasks.into_iter().for_each(&mut each);
        match page.next_cursor {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return Ok(()),
        }
    }
}
