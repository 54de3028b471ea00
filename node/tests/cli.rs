//! The `troupe` binary's command line: help, and bad config files.
//!
//! Also makes `cargo test --workspace` build the binary that the black-box
//! tests in `tests/` run (cargo builds a package's binaries for its
//! integration tests).

use std::path::Path;
use std::process::{Command, Output};

fn troupe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(args)
        .output()
        .expect("run troupe")
}

const GOOD: &str = r#"
[cluster]
name = "t"
secret = "s"
replication = 1
[[nodes]]
id = "n1"
http = "127.0.0.1:1"
cluster = "127.0.0.1:2"
gossip = "127.0.0.1:3"
data_dir = "data/n1"
"#;

/// Runs `troupe node` on a config file with `text`; returns exit code and stderr.
fn node_with_config(text: &str, id: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cluster.toml");
    std::fs::write(&file, text).expect("write config");
    let out = troupe(&["node", "--config", &file.to_string_lossy(), "--id", id]);
    assert!(
        !Path::new(&dir.path().join("data")).exists(),
        "a rejected config must not create data dirs"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_documents_every_subcommand() {
    let out = troupe(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["node", "cluster", "status"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} missing:\n{help}"
        );
    }
    for args in [
        &["node", "--help"][..],
        &["cluster", "up", "--help"],
        &["status", "--help"],
    ] {
        let out = troupe(args);
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("--"),
            "{args:?} lists its options"
        );
    }
}

#[test]
fn bad_config_files_fail_with_one_line_naming_the_key_and_exit_2() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            GOOD.replace("127.0.0.1:1", "localhost"),
            "n1",
            "nodes[0].http",
        ),
        (
            GOOD.replace("name = \"t\"", "name = \"t\"\nflavour = 1"),
            "n1",
            "cluster.flavour",
        ),
        (
            GOOD.replace("replication = 1", "replication = 0"),
            "n1",
            "cluster.replication",
        ),
        (
            format!("{GOOD}[supervision]\nwithin_secs = -1\n"),
            "n1",
            "supervision.within_secs",
        ),
        (format!("{GOOD}[mystery]\n"), "n1", "mystery"),
        ("[cluster\n".to_owned(), "n1", "(file)"),
        (GOOD.to_owned(), "n7", "--id"),
    ];
    for (text, id, key) in cases {
        let (code, stderr) = node_with_config(&text, id);
        assert_eq!(code, Some(2), "{key}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line for {key}: {stderr}");
        assert!(lines[0].starts_with("error: "), "{stderr}");
        assert!(
            lines[0].contains(&format!(": {key}: ")),
            "{key} named in: {stderr}"
        );
    }
}

#[test]
fn a_missing_config_file_exits_2() {
    let out = troupe(&[
        "node",
        "--config",
        "/nonexistent/cluster.toml",
        "--id",
        "n1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/cluster.toml") && stderr.contains("cannot read"),
        "{stderr}"
    );
}
