//! Harness for black-box tests: real `troupe` processes, driven over HTTP.
//!
//! A [`Cluster`] writes a `cluster.toml` with free loopback ports (from a
//! range the kernel does not hand out for outgoing connections) into a
//! temporary folder, starts and stops node processes (SIGKILL, SIGTERM),
//! and kills whatever is left when dropped, so tests clean up after
//! themselves and can run in parallel.

pub mod browser;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a node may take to answer `/health` after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `troupe` binary built by `cargo test --workspace` (or `TROUPE_BIN`).
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TROUPE_BIN") {
        return PathBuf::from(path);
    }
    // Test executables live in target/<profile>/deps; the binary one up.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is inside target/<profile>/deps");
    let path = profile_dir.join("troupe");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        path.display()
    );
    path
}

/// Ports for test nodes come from 20000-31999, below the kernel's ephemeral
/// range (32768+): a port taken from the ephemeral range and released can
/// be handed to some process's outgoing connection before the node binds
/// it. Each test process gets its own slice of 400 (by pid), and a port is
/// used only if both TCP and UDP can bind it now.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const SLICE: u32 = 400;
    const SLICES: u32 = 30;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = FIRST + (std::process::id() % SLICES) * SLICE;
    for _ in 0..SLICE {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % SLICE;
        let Ok(port) = u16::try_from(base + offset) else {
            continue;
        };
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{base}..{}", base + SLICE);
}

/// Polls `condition` until it holds or `timeout` passes, then panics with `what`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A reply: status code and JSON body (`Value::Null` when not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Parsed body.
    pub body: Value,
    /// Raw body text.
    pub text: String,
}

fn reply(result: Result<ureq::Response, ureq::Error>) -> Reply {
    let response = match result {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, body, text }
}

struct NodePorts {
    http: u16,
}

/// A cluster config in a temp folder and the node processes started from it.
pub struct Cluster {
    dir: tempfile::TempDir,
    config: PathBuf,
    ports: HashMap<String, NodePorts>,
    processes: HashMap<String, Child>,
    /// Nodes that run another build than [`binary`].
    binaries: HashMap<String, PathBuf>,
    agent: ureq::Agent,
}

impl Cluster {
    /// A config with `nodes` nodes (`n1`…) on free ports; `extra` is TOML
    /// appended verbatim (`[supervision]`, `[debug]` …).
    pub fn new(nodes: usize, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut toml = format!(
            "[cluster]\nname = \"test\"\nreplication = {}\nsecret = \"test-secret\"\n",
            nodes.min(2)
        );
        let mut ports = HashMap::new();
        for i in 1..=nodes {
            let id = format!("n{i}");
            let http = free_port();
            let _ = write!(
                toml,
                "\n[[nodes]]\nid = \"{id}\"\nhttp = \"127.0.0.1:{http}\"\ncluster = \"127.0.0.1:{}\"\n\
                 gossip = \"127.0.0.1:{}\"\ndata_dir = \"data/{id}\"\n",
                free_port(),
                free_port()
            );
            ports.insert(id, NodePorts { http });
        }
        toml.push('\n');
        toml.push_str(extra);
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, toml).expect("write cluster.toml");
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        Self {
            dir,
            config,
            ports,
            processes: HashMap::new(),
            binaries: HashMap::new(),
            agent,
        }
    }

    /// Path of the generated config.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Base URL of node `id`.
    pub fn url(&self, id: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[id].http)
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.log"))
    }

    /// Everything node `id` logged, across its incarnations.
    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// Runs node `id` from `binary` (a `troupe` built with more plugins)
    /// from now on, restarts included.
    pub fn use_binary(&mut self, id: &str, binary: &Path) {
        self.binaries.insert(id.to_owned(), binary.to_owned());
    }

    /// Starts node `id` with extra `troupe node` arguments and waits for `/health`.
    pub fn start(&mut self, id: &str, args: &[&str]) {
        let config = self.config.clone();
        self.start_from(&config, id, args);
    }

    /// A copy of the config, changed by `edit`, beside the original (so
    /// data dirs stay where they are); returns its path.
    pub fn config_variant(&self, name: &str, edit: impl FnOnce(&str) -> String) -> PathBuf {
        let original = std::fs::read_to_string(&self.config).expect("read config");
        let path = self.dir.path().join(format!("cluster-{name}.toml"));
        std::fs::write(&path, edit(&original)).expect("write config variant");
        path
    }

    /// Like [`Cluster::start`], with another config file.
    pub fn start_from(&mut self, config: &Path, id: &str, args: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("open node log");
        let program = self.binaries.get(id).cloned().unwrap_or_else(binary);
        let mut command = Command::new(program);
        command
            .arg("node")
            .arg("--config")
            .arg(config)
            .arg("--id")
            .arg(id)
            .args(args);
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn troupe");
        self.processes.insert(id.to_owned(), child);
        let url = format!("{}/health", self.url(id));
        let agent = self.agent.clone();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if agent.get(&url).call().is_ok() {
                return;
            }
            if let Some(status) = self
                .processes
                .get_mut(id)
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "node {id} exited during start-up ({status}):\n{}",
                    self.log(id)
                );
            }
            assert!(
                Instant::now() < deadline,
                "node {id} not healthy in time:\n{}",
                self.log(id)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: &str) {
        let mut child = self.processes.remove(id).expect("node is running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// Sends SIGTERM to node `id`; returns its exit status and how long it took.
    pub fn terminate(&mut self, id: &str, within: Duration) -> (ExitStatus, Duration) {
        let pid = i32::try_from(self.processes[id].id()).expect("pid fits");
        // SAFETY: signalling a child process this harness started and has not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.wait_exit(id, within)
    }

    /// Waits for node `id` to exit by itself; returns its status and how long
    /// that took. Kills it and panics after `within`.
    pub fn wait_exit(&mut self, id: &str, within: Duration) -> (ExitStatus, Duration) {
        let mut child = self.processes.remove(id).expect("node is running");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (status, started.elapsed());
            }
            if started.elapsed() > within {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "node {id} did not exit within {within:?} of SIGTERM:\n{}",
                    self.log(id)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// GET `path` on node `id`.
    pub fn get(&self, id: &str, path: &str) -> Reply {
        reply(self.agent.get(&format!("{}{path}", self.url(id))).call())
    }

    /// POST a raw JSON body to `path` on node `id`.
    pub fn post(&self, id: &str, path: &str, body: &str) -> Reply {
        self.post_as(id, path, "application/json", body)
    }

    /// POST a raw body of `content_type` to `path` on node `id`.
    pub fn post_as(&self, id: &str, path: &str, content_type: &str, body: &str) -> Reply {
        reply(
            self.agent
                .post(&format!("{}{path}", self.url(id)))
                .set("Content-Type", content_type)
                .send_string(body),
        )
    }

    /// GET `path` on node `id` as NDJSON (`Accept: application/x-ndjson`):
    /// the status and each line parsed.
    pub fn get_ndjson(&self, id: &str, path: &str) -> (u16, Vec<Value>) {
        let reply = reply(
            self.agent
                .get(&format!("{}{path}", self.url(id)))
                .set("Accept", "application/x-ndjson")
                .call(),
        );
        let lines = reply
            .text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
            .collect();
        (reply.status, lines)
    }

    /// DELETE `path` on node `id`.
    pub fn delete(&self, id: &str, path: &str) -> Reply {
        reply(self.agent.delete(&format!("{}{path}", self.url(id))).call())
    }

    /// The actor at `path` in node `id`'s `/v1/actors` tree.
    pub fn actor(&self, id: &str, path: &str) -> Option<Value> {
        fn find(node: &Value, path: &str) -> Option<Value> {
            if node["path"] == path {
                return Some(node.clone());
            }
            node["children"]
                .as_array()?
                .iter()
                .find_map(|c| find(c, path))
        }
        let tree = self.get(id, "/v1/actors");
        assert_eq!(tree.status, 200, "{}", tree.text);
        find(&tree.body, path)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.processes.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
