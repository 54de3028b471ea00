//! Where a task lives: rendezvous (highest-random-weight) hashing.
//!
//! Every node ranks the live nodes for a task's key by a hash of (node,
//! key) and agrees on the order without talking: the first is the owner,
//! the next R-1 hold replicas. When a node goes, only the keys it owned
//! move, each to the next node in its own order — its first replica.
//!
//! Only nodes that run a task's plugin, in a version the task accepts,
//! take part in its order ([`eligible`]): the gossiped [`Catalogue`] says
//! which those are.

use std::collections::BTreeMap;

use semver::{Version, VersionReq};
use troupe_protocol::plugins::PluginId;

/// Which plugins (and versions) each live node runs, by node id.
pub type Catalogue = BTreeMap<String, Vec<PluginId>>;

/// Whether plugin `version` satisfies `wanted` (any version if `None`).
pub fn compatible(version: &str, wanted: Option<&VersionReq>) -> bool {
    wanted.is_none_or(|req| Version::parse(version).is_ok_and(|v| req.matches(&v)))
}

/// A task's requirement on its plugin's version (`^1.2`), if it has one.
pub fn version_req(text: Option<&str>) -> Result<Option<VersionReq>, String> {
    text.map(|v| {
        VersionReq::parse(v).map_err(|e| format!("not a semver requirement (like ^1.2): {e}"))
    })
    .transpose()
}

/// This node's id and the version of the plugin in question it loaded:
/// a node knows itself better than gossip does, which may lag behind or
/// not carry it yet.
pub type Own<'a> = (&'a str, Option<&'a str>);

/// The version of plugin `kind` that `node` runs: this node by what it
/// loaded, the others by the gossiped `catalogue`.
pub fn version_on<'a>(
    node: &str,
    catalogue: &'a Catalogue,
    own: Own<'a>,
    kind: &str,
) -> Option<&'a str> {
    if node == own.0 {
        return own.1;
    }
    catalogue
        .get(node)?
        .iter()
        .find(|p| p.name == kind)
        .map(|p| p.version.as_str())
}

/// The nodes of `live` that run plugin `kind` in a version `wanted`
/// accepts, in `live`'s order.
pub fn eligible(
    live: &[String],
    catalogue: &Catalogue,
    own: Own<'_>,
    kind: &str,
    wanted: Option<&VersionReq>,
) -> Vec<String> {
    live.iter()
        .filter(|node| {
            version_on(node, catalogue, own, kind).is_some_and(|v| compatible(v, wanted))
        })
        .cloned()
        .collect()
}

/// A stable 64-bit hash (FNV-1a, then a SplitMix64 finaliser so that
/// nearby inputs spread evenly). Stable across builds, unlike std's hasher,
/// so nodes running different builds still agree on placement.
fn weight(node: &str, key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes().chain([0xff]).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// `nodes` ordered for `key`: owner first, then replicas in order.
pub fn rendezvous_order<'a>(key: &str, nodes: &'a [String]) -> Vec<&'a str> {
    let mut ranked: Vec<(u64, &str)> = nodes.iter().map(|n| (weight(n, key), n.as_str())).collect();
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    ranked.into_iter().map(|(_, n)| n).collect()
}

/// The copies of a task with key `key`: first the nodes that can run it
/// (`runners`, in rendezvous order: the owner, then who adopts it), then
/// the other `live` nodes in rendezvous order — they only keep a copy, so
/// that a task whose plugin few nodes run is still on min(R, live) disks.
pub fn replica_order<'a>(key: &str, runners: &'a [String], live: &'a [String]) -> Vec<&'a str> {
    let others: Vec<String> = live
        .iter()
        .filter(|n| !runners.contains(n))
        .cloned()
        .collect();
    let mut order = rendezvous_order(key, runners);
    order.extend(
        rendezvous_order(key, &others)
            .into_iter()
            .filter_map(|n| live.iter().find(|l| l.as_str() == n).map(String::as_str)),
    );
    order
}

/// The owner of `key` among `nodes`.
pub fn rendezvous_owner<'a>(key: &str, nodes: &'a [String]) -> Option<&'a str> {
    rendezvous_order(key, nodes).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    fn eligible_own(catalogue: &Catalogue, live: &[String]) -> Vec<String> {
        eligible(live, catalogue, ("n4", Some("1.9.0")), "sql", None)
    }

    #[test]
    fn only_nodes_with_a_compatible_plugin_are_eligible() {
        let id = |name: &str, version: &str| PluginId {
            name: name.into(),
            version: version.into(),
        };
        let catalogue: Catalogue = [
            (
                "n1".to_owned(),
                vec![id("echo", "1.0.0"), id("sql", "1.4.0")],
            ),
            (
                "n2".to_owned(),
                vec![id("echo", "1.0.0"), id("sql", "2.0.0")],
            ),
            ("n3".to_owned(), vec![id("echo", "1.0.0")]),
        ]
        .into_iter()
        .collect();
        let live = nodes(&["n1", "n2", "n3", "n4"]);
        let eligible =
            |live: &[String], kind, wanted| eligible(live, &catalogue, ("n9", None), kind, wanted);
        assert_eq!(eligible(&live, "echo", None), ["n1", "n2", "n3"]);
        assert_eq!(eligible(&live, "sql", None), ["n1", "n2"]);
        let v1 = VersionReq::parse("^1.2").expect("req");
        assert_eq!(eligible(&live, "sql", Some(&v1)), ["n1"]);
        let v3 = VersionReq::parse(">=3").expect("req");
        assert!(eligible(&live, "sql", Some(&v3)).is_empty());
        assert!(eligible(&live, "teleport", None).is_empty());
        assert!(eligible(&nodes(&["n3"]), "sql", None).is_empty());
        // A node answers for itself by what it loaded, whatever gossip says.
        let own = eligible_own(&catalogue, &live);
        assert_eq!(own, ["n1", "n2", "n4"]);
    }

    #[test]
    fn copies_go_to_runners_first_then_to_the_other_live_nodes() {
        let live = nodes(&["n1", "n2", "n3", "n4"]);
        let runners = nodes(&["n3"]);
        for key in ["a", "b", "c"] {
            let order = replica_order(key, &runners, &live);
            assert_eq!(order.len(), 4, "every live node, once");
            assert_eq!(order[0], "n3", "the only runner owns it");
            let rest = nodes(&["n1", "n2", "n4"]);
            assert_eq!(order[1..], rendezvous_order(key, &rest)[..]);
        }
        assert_eq!(
            replica_order("a", &live, &live),
            rendezvous_order("a", &live)
        );
    }

    #[test]
    fn keys_spread_evenly_over_nodes() {
        let all = nodes(&["n1", "n2", "n3"]);
        let mut owned = [0usize; 3];
        for i in 0..30_000 {
            let owner = rendezvous_owner(&format!("task-{i}"), &all).expect("owner");
            owned[all.iter().position(|n| n == owner).expect("known")] += 1;
        }
        for count in owned {
            assert!((9_000..11_000).contains(&count), "{owned:?}");
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_keys_to_their_first_replica() {
        let all = nodes(&["n1", "n2", "n3", "n4"]);
        let without = nodes(&["n1", "n3", "n4"]);
        for i in 0..2_000 {
            let key = format!("k{i}");
            let before = rendezvous_order(&key, &all);
            let after = rendezvous_owner(&key, &without).expect("owner");
            if before[0] == "n2" {
                assert_eq!(after, before[1], "{key} goes to its first replica");
            } else {
                assert_eq!(after, before[0], "{key} stays where it was");
            }
        }
    }

    #[test]
    fn order_does_not_depend_on_the_order_nodes_are_listed() {
        let a = nodes(&["n1", "n2", "n3"]);
        let b = nodes(&["n3", "n1", "n2"]);
        for key in ["x", "y", "order-42"] {
            assert_eq!(rendezvous_order(key, &a), rendezvous_order(key, &b));
        }
    }
}
