//! `troupe chaos`: the CLI's own kill test, end to end.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use troupe_tests::{binary, Cluster};

#[test]
fn chaos_kills_a_node_under_load_and_reports_nothing_lost() {
    // The harness only writes the config; `troupe chaos` runs the nodes.
    let cluster = Cluster::new(3, "");
    let mut chaos = Command::new(binary())
        .args(["chaos", "--tasks", "300", "--kill", "1", "--duration", "4"])
        .args(["--output", "json", "--config"])
        .arg(cluster.config_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn troupe chaos");
    let deadline = Instant::now() + Duration::from_secs(120);
    while chaos.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = chaos.kill();
            panic!("troupe chaos did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = chaos.wait_with_output().expect("chaos output");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let report: Value = serde_json::from_str(&text).expect("JSON summary");
    assert_eq!(report["submitted"], 300, "{report}");
    assert_eq!(report["succeeded"], 300, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["unfinished"], 0, "{report}");
    let kills = report["kills"].as_array().expect("kills");
    assert_eq!(kills.len(), 1, "{report}");
    let dead_after = kills[0]["declared_dead_ms"]
        .as_u64()
        .expect("declared dead");
    assert!(dead_after < 3000, "declared dead after {dead_after} ms");
}
