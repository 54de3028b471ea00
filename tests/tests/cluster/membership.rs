//! Gossip membership: join, failure detection, rejoin, graceful leave.

use std::time::{Duration, Instant};

use serde_json::Value;
use troupe_tests::{wait_until, Cluster};

const JOIN: Duration = Duration::from_secs(15);

fn member(cluster: &Cluster, on: &str, id: &str) -> Option<Value> {
    let view = cluster.get(on, "/v1/cluster");
    assert_eq!(view.status, 200, "{}", view.text);
    view.body["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
}

fn state(cluster: &Cluster, on: &str, id: &str) -> Option<String> {
    member(cluster, on, id).and_then(|m| m["state"].as_str().map(str::to_owned))
}

fn generation(cluster: &Cluster, on: &str, id: &str) -> u64 {
    member(cluster, on, id)
        .and_then(|m| m["generation"].as_u64())
        .expect("member has a generation")
}

fn start_all(cluster: &mut Cluster, ids: &[&str], args: &[&str]) {
    for id in ids {
        cluster.start(id, args);
    }
    wait_until(JOIN, "every node to see every node alive", || {
        ids.iter().all(|on| {
            ids.iter()
                .all(|id| state(cluster, on, id).as_deref() == Some("alive"))
        })
    });
}

#[test]
fn a_killed_node_is_declared_dead_within_3_s_and_rejoins_as_a_new_generation() {
    let mut cluster = Cluster::new(3, "");
    let ids = ["n1", "n2", "n3"];
    start_all(&mut cluster, &ids, &[]);
    let n3 = member(&cluster, "n1", "n3").expect("n3 known");
    assert_eq!(n3["http"], cluster.url("n3").trim_start_matches("http://"));
    assert_eq!(n3["version"], env!("CARGO_PKG_VERSION"));
    let before = generation(&cluster, "n1", "n3");

    cluster.kill("n3");
    let killed = Instant::now();
    wait_until(
        Duration::from_secs(5),
        "n1 and n2 to declare n3 dead",
        || {
            ["n1", "n2"]
                .iter()
                .all(|on| state(&cluster, on, "n3").as_deref() == Some("dead"))
        },
    );
    let detected = killed.elapsed();
    println!("SIGKILLed node declared dead by both peers after {detected:?}");
    assert!(detected < Duration::from_secs(3), "took {detected:?}");
    // The survivors still see each other.
    assert_eq!(state(&cluster, "n1", "n2").as_deref(), Some("alive"));

    cluster.start("n3", &[]);
    wait_until(JOIN, "n3 back as a new incarnation", || {
        ["n1", "n2"].iter().all(|on| {
            state(&cluster, on, "n3").as_deref() == Some("alive")
                && generation(&cluster, on, "n3") > before
        })
    });
}

#[test]
fn a_gracefully_stopped_node_is_seen_leaving_not_dying() {
    let mut cluster = Cluster::new(3, "");
    let ids = ["n1", "n2", "n3"];
    start_all(&mut cluster, &ids, &[]);
    let (status, _) = cluster.terminate("n2", Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", cluster.log("n2"));
    // Announced, so peers know at once rather than after the detector.
    for on in ["n1", "n3"] {
        assert_eq!(
            state(&cluster, on, "n2").as_deref(),
            Some("left"),
            "as seen by {on}"
        );
    }
}

#[test]
fn a_crashed_membership_actor_rejoins_and_peers_keep_it_alive() {
    let mut cluster = Cluster::new(2, "");
    let ids = ["n1", "n2"];
    start_all(&mut cluster, &ids, &["--fault-injection"]);
    let before = generation(&cluster, "n2", "n1");
    let crash = cluster.post("n1", "/v1/actors/node/membership/crash", "");
    assert_eq!(crash.status, 202, "{}", crash.text);
    // The new incarnation re-binds the gossip socket and joins afresh.
    wait_until(JOIN, "n2 to see n1's new gossip generation alive", || {
        state(&cluster, "n2", "n1").as_deref() == Some("alive")
            && generation(&cluster, "n2", "n1") > before
    });
    wait_until(JOIN, "n1's new gossip to see n2 alive", || {
        state(&cluster, "n1", "n2").as_deref() == Some("alive")
    });
    let restarted = cluster.actor("n1", "node/membership").expect("membership");
    assert_eq!(restarted["restarts"], 1);
}

#[test]
fn a_node_with_the_wrong_secret_is_kept_out() {
    let mut cluster = Cluster::new(3, "");
    let wrong = cluster.config_variant("wrong-secret", |text| {
        text.replace("secret = \"test-secret\"", "secret = \"not-the-secret\"")
    });
    cluster.start_from(&wrong, "n3", &[]);
    cluster.start("n1", &[]);
    cluster.start("n2", &[]);
    wait_until(
        Duration::from_secs(20),
        "n1 and n2 to see each other",
        || {
            state(&cluster, "n1", "n2").as_deref() == Some("alive")
                && state(&cluster, "n2", "n1").as_deref() == Some("alive")
        },
    );
    // Give gossip time to have reached n3 many times over (100 ms rounds):
    // it never becomes a member, and it never sees the others.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        for on in ["n1", "n2"] {
            assert_eq!(state(&cluster, on, "n3"), None, "{on} must not know n3");
        }
        assert_eq!(state(&cluster, "n3", "n1"), None, "n3 must not know n1");
        std::thread::sleep(Duration::from_millis(100));
    }
}
