//! `troupe cluster up`, the README's way to start a local cluster.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use troupe_tests::{binary, wait_until, Cluster};

#[test]
fn cluster_up_starts_every_node_and_stops_them_on_sigterm() {
    // The harness writes the config; `cluster up` starts the processes.
    let cluster = Cluster::new(3, "");
    let mut up = Command::new(binary())
        .args(["cluster", "up", "--config"])
        .arg(cluster.config_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn troupe cluster up");
    let stdout = up.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });

    let ids = ["n1", "n2", "n3"];
    wait_until(Duration::from_secs(20), "all three nodes healthy", || {
        ids.iter().all(|id| {
            ureq::get(&format!("{}/health", cluster.url(id)))
                .timeout(Duration::from_secs(1))
                .call()
                .is_ok()
        })
    });
    for id in ids {
        let health = cluster.get(id, "/health");
        assert_eq!(health.body["node"], id);
    }

    let pid = i32::try_from(up.id()).expect("pid");
    // SAFETY: signalling the child process this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_until(Duration::from_secs(20), "cluster up to exit", || {
        up.try_wait().expect("wait").is_some()
    });
    assert_eq!(up.wait().expect("status").code(), Some(0));

    let printed = reader.join().expect("stdout reader").join("\n");
    for id in ids {
        let url = cluster.url(id);
        let address = url.trim_start_matches("http://");
        assert!(printed.contains(&url), "{id}'s URL printed:\n{printed}");
        assert!(
            printed.contains(&format!("node {id} stopped: exit status: 0")),
            "{printed}"
        );
        assert!(
            std::net::TcpStream::connect(address).is_err(),
            "{id} no longer listens on {address}"
        );
    }
}

fn cluster_down(cluster: &Cluster) -> std::process::Output {
    Command::new(binary())
        .args(["cluster", "down", "--config"])
        .arg(cluster.config_path())
        .output()
        .expect("run troupe cluster down")
}

#[test]
fn cluster_down_stops_the_nodes_from_another_terminal() {
    let mut cluster = Cluster::new(2, "");
    cluster.start("n1", &[]);
    cluster.start("n2", &[]);
    let down = cluster_down(&cluster);
    let printed = String::from_utf8_lossy(&down.stdout);
    assert_eq!(down.status.code(), Some(0), "{printed}");
    for id in ["n1", "n2"] {
        assert!(printed.contains(&format!("{id}     stopped")), "{printed}");
        let (status, _) = cluster.wait_exit(id, Duration::from_secs(20));
        assert_eq!(status.code(), Some(0), "{id} stopped gracefully");
    }

    // Nothing left to stop: a second `down` says so and still succeeds.
    let again = cluster_down(&cluster);
    let printed = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(0), "{printed}");
    assert!(printed.contains("n1     not running"), "{printed}");
}
