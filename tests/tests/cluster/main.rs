//! Black-box tests of several nodes together: real `troupe` processes
//! gossiping on loopback, killed and restarted.

mod chaos;
mod dashboard;
mod membership;
mod plugins;
mod schedules;
mod tasks;

use std::time::Duration;

use troupe_tests::{wait_until, Cluster};

/// The nodes of a 3-node test cluster.
pub const IDS: [&str; 3] = ["n1", "n2", "n3"];

/// Starts n1..n3 and waits until each sees all three alive and is ready
/// (has published its view of who is alive).
pub fn start_converged(cluster: &mut Cluster) {
    for id in IDS {
        cluster.start(id, &[]);
    }
    await_converged(cluster);
}

/// Waits until n1..n3 each see all three alive and are ready.
pub fn await_converged(cluster: &Cluster) {
    // Placement needs every node's warm view of every other.
    wait_until(
        Duration::from_secs(20),
        "all nodes to agree all are alive",
        || {
            IDS.iter().all(|on| {
                let view = cluster.get(on, "/v1/cluster").body;
                view["members"]
                    .as_array()
                    .is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["state"] == "alive"))
                    && cluster.get(on, "/ready").status == 200
            })
        },
    );
}
