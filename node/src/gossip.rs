//! Gossip membership over chitchat (scuttlebutt over UDP, phi-accrual
//! failure detection), behind the `Gossip` trait the membership actor uses.
//!
//! chitchat's defaults suit large clusters and take 4-11 s to declare a
//! node dead. Here the gossip interval is short (100 ms by default) and the
//! detector's prior interval matches it, so on loopback a killed node is
//! declared dead in about 1-2 s: detection takes roughly `phi_threshold ×`
//! the mean interval between heartbeats.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chitchat::transport::UdpTransport;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use futures::future::BoxFuture;
use troupe_actors::membership::{Gossip, GossipSession, Observation, KEY_STATUS, STATUS_LEAVING};

/// How to gossip with the rest of the cluster.
#[derive(Debug, Clone)]
pub struct ChitchatGossip {
    /// This node's id.
    pub node_id: String,
    /// Cluster id (name and a digest of the secret): nodes of other
    /// clusters, or with another secret, are ignored.
    pub cluster: String,
    /// UDP address to listen on and advertise.
    pub listen: SocketAddr,
    /// Gossip addresses of the other configured nodes.
    pub seeds: Vec<String>,
    /// Time between gossip rounds.
    pub interval: Duration,
    /// Phi above which the detector declares a node dead.
    pub phi_threshold: f64,
}

/// A restarted membership actor may find its old socket not yet released
/// (the aborted gossip task drops it asynchronously): retry the bind briefly.
const BIND_ATTEMPTS: u32 = 40;
const BIND_RETRY: Duration = Duration::from_millis(25);

impl ChitchatGossip {
    fn config(&self, generation: u64) -> ChitchatConfig {
        ChitchatConfig {
            chitchat_id: ChitchatId::new(self.node_id.clone(), generation, self.listen),
            cluster_id: self.cluster.clone(),
            gossip_interval: self.interval,
            listen_addr: self.listen,
            seed_nodes: self.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: self.phi_threshold,
                sampling_window_size: 100,
                max_interval: self.interval * 20,
                initial_interval: self.interval,
                // Dead incarnations are forgotten after a minute.
                dead_node_grace_period: Duration::from_secs(60),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        }
    }
}

impl Gossip for ChitchatGossip {
    fn join(
        &self,
        generation: u64,
        keys: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<Box<dyn GossipSession>, String>> {
        let this = self.clone();
        Box::pin(async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match spawn_chitchat(this.config(generation), keys.clone(), &UdpTransport).await {
                    Ok(handle) => {
                        return Ok(Box::new(ChitchatSession {
                            handle: Some(handle),
                        }) as Box<dyn GossipSession>)
                    }
                    Err(e) if attempt >= BIND_ATTEMPTS => {
                        return Err(format!("cannot gossip on {}: {e:#}", this.listen))
                    }
                    Err(_) => tokio::time::sleep(BIND_RETRY).await,
                }
            }
        })
    }
}

struct ChitchatSession {
    handle: Option<ChitchatHandle>,
}

impl Drop for ChitchatSession {
    fn drop(&mut self) {
        // Also runs when the membership actor panics (no post_stop then).
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

impl GossipSession for ChitchatSession {
    fn publish(&self, key: String, value: String) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(handle) = &self.handle {
                handle
                    .chitchat()
                    .lock()
                    .await
                    .self_node_state()
                    .set(key, value);
            }
        })
    }

    fn observe(&self) -> BoxFuture<'_, Vec<Observation>> {
        Box::pin(async move {
            let Some(handle) = &self.handle else {
                return Vec::new();
            };
            let chitchat = handle.chitchat();
            let guard = chitchat.lock().await;
            let me = guard.self_chitchat_id().clone();
            let live: Vec<ChitchatId> = guard.live_nodes().cloned().collect();
            guard
                .node_states()
                .iter()
                .map(|(id, state)| Observation {
                    id: id.node_id.to_string(),
                    generation: id.generation_id,
                    gossip: id.gossip_advertise_addr.to_string(),
                    live: *id == me || live.contains(id),
                    heartbeat: u64::from(state.heartbeat()),
                    keys: state
                        .key_values()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect::<BTreeMap<_, _>>(),
                })
                .collect()
        })
    }

    fn leave(&mut self, linger: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(handle) = self.handle.take() else {
                return;
            };
            handle
                .chitchat()
                .lock()
                .await
                .self_node_state()
                .set(KEY_STATUS, STATUS_LEAVING);
            // Let a few gossip rounds carry the announcement.
            tokio::time::sleep(linger).await;
            if let Err(e) = handle.shutdown().await {
                tracing::warn!("gossip did not shut down cleanly: {e:#}");
            }
        })
    }
}

/// This process's CPU use in cores since the previous call, from
/// `/proc/self/stat`; `None` where that file is not available.
pub fn cpu_load_probe() -> impl Fn() -> Option<f64> + Send + Sync {
    let last = std::sync::Mutex::new(None::<(Instant, u64)>);
    // SAFETY: sysconf has no preconditions.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    move || {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let now = Instant::now();
        let mut last = last.lock().ok()?;
        let load = last.map(|(at, before)| {
            let wall = now.duration_since(at).as_secs_f64().max(1e-3);
            ticks.saturating_sub(before) as f64 / ticks_per_sec / wall
        });
        *last = Some((now, ticks));
        load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_probe_sees_this_process_burn_cpu() {
        let probe = cpu_load_probe();
        assert_eq!(probe(), None, "first call only sets the baseline");
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let load = probe().expect("second call measures");
        assert!(
            load > 0.3 && load < 8.0,
            "busy loop on one core measured as {load}"
        );
    }
}
