//! Node-to-node authentication with the cluster secret.
//!
//! A connection's hello carries an HMAC-SHA256, keyed by the secret, over
//! the sender's cluster, node id, send time and a fresh nonce; a peer
//! refuses a hello whose proof does not verify or whose send time is more
//! than [`MAX_SKEW`] away from its own clock. Gossip (chitchat) has no
//! authentication of its own, so its cluster id carries a digest of the
//! secret: nodes with another secret are another cluster to it and never
//! become members.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use troupe_protocol::now_ms;
use troupe_protocol::wire::Hello;

/// How far a hello's send time may be from the receiver's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(60);

type HmacSha256 = Hmac<Sha256>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cluster secret, ready to prove and check hellos.
#[derive(Clone)]
pub struct ClusterKey {
    secret: Vec<u8>,
}

impl ClusterKey {
    /// The key of `secret`.
    pub fn new(secret: &str) -> Self {
        Self {
            secret: secret.as_bytes().to_vec(),
        }
    }

    fn mac(&self, cluster: &str, node: &str, sent_at_ms: u64, nonce: &str) -> HmacSha256 {
        // HMAC takes keys of any length.
        let mut mac = HmacSha256::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        for part in [cluster, node, &sent_at_ms.to_string(), nonce] {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        mac
    }

    /// Fills in a hello's send time, nonce and proof.
    pub fn sign(&self, hello: &mut Hello) {
        hello.sent_at_ms = now_ms();
        hello.nonce = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let mac = self.mac(&hello.cluster, &hello.node, hello.sent_at_ms, &hello.nonce);
        hello.proof = hex(&mac.finalize().into_bytes());
    }

    /// Whether a hello was signed with this secret, recently.
    pub fn verify(&self, hello: &Hello) -> bool {
        let fresh = now_ms().abs_diff(hello.sent_at_ms) <= MAX_SKEW.as_millis() as u64;
        let Some(proof) = (0..hello.proof.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hello.proof.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()
        else {
            return false;
        };
        fresh
            && self
                .mac(&hello.cluster, &hello.node, hello.sent_at_ms, &hello.nonce)
                .verify_slice(&proof)
                .is_ok()
    }

    /// The gossip cluster id: the name and a digest of the secret.
    pub fn gossip_cluster_id(&self, name: &str) -> String {
        let digest = Sha256::new()
            .chain_update(b"troupe-gossip\0")
            .chain_update(&self.secret)
            .finalize();
        format!("{name}-{}", &hex(&digest)[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_protocol::wire::{MAGIC, VERSION};

    fn hello() -> Hello {
        Hello {
            magic: MAGIC.into(),
            version: VERSION,
            cluster: "c".into(),
            node: "n1".into(),
            sent_at_ms: 0,
            nonce: String::new(),
            proof: String::new(),
        }
    }

    #[test]
    fn only_the_same_secret_verifies_and_a_changed_hello_does_not() {
        let key = ClusterKey::new("s3cret");
        let mut signed = hello();
        key.sign(&mut signed);
        assert!(key.verify(&signed));
        assert!(!ClusterKey::new("other").verify(&signed));
        let mut forged = signed.clone();
        forged.node = "n2".into();
        assert!(!key.verify(&forged));
        let mut stale = signed.clone();
        stale.sent_at_ms -= 2 * MAX_SKEW.as_millis() as u64;
        assert!(!key.verify(&stale));
        assert!(!key.verify(&hello()), "unsigned");
        assert_ne!(
            key.gossip_cluster_id("c"),
            ClusterKey::new("other").gossip_cluster_id("c")
        );
    }
}
