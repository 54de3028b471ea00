//! The node-to-node transport: one TCP connection per peer pair.
//!
//! Frames are a 4-byte big-endian length and a JSON body. The connecting
//! side sends a [`Hello`] (magic, protocol version, cluster name, node id);
//! a mismatch closes the connection. After that each frame is an
//! [`Envelope`] whose id pairs a request with its reply, so requests from
//! many handlers share the connection and replies may come out of order.
//! A broken link fails the calls waiting on it and is re-dialled by the
//! next call. The hello proves knowledge of the cluster secret (see
//! `auth`); a peer without it is refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::bytes::Bytes;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use troupe_protocol::wire::{Envelope, Hello, PeerReply, PeerRequest, MAGIC, MAX_FRAME, VERSION};

use crate::auth::ClusterKey;

/// How long dialling a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The node id is not in the config.
    #[error("unknown node {0}")]
    UnknownNode(String),
    /// It could not be reached.
    #[error("cannot reach {node}: {reason}")]
    Unreachable {
        /// The peer.
        node: String,
        /// What went wrong.
        reason: String,
    },
    /// No reply in time.
    #[error("{node} did not answer within {timeout:?}")]
    Timeout {
        /// The peer.
        node: String,
        /// How long we waited.
        timeout: Duration,
    },
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Serves peer requests with `handler`.
pub type PeerHandler = Arc<dyn Fn(PeerRequest) -> BoxFuture<'static, PeerReply> + Send + Sync>;

/// Accepts peer connections until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    cluster: String,
    key: ClusterKey,
    handler: PeerHandler,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("peer accept failed: {e}");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            cluster.clone(),
            key.clone(),
            Arc::clone(&handler),
            stop.clone(),
        ));
    }
}

async fn serve_connection(
    stream: TcpStream,
    cluster: String,
    key: ClusterKey,
    handler: PeerHandler,
    stop: CancellationToken,
) {
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, codec());
    let hello: Option<Hello> = match frames.next().await {
        Some(Ok(frame)) => serde_json::from_slice(&frame).ok(),
        _ => None,
    };
    let Some(hello) = hello.filter(|h| {
        h.magic == MAGIC && h.version == VERSION && h.cluster == cluster && key.verify(h)
    }) else {
        tracing::warn!("refused a peer connection: bad hello or wrong cluster secret");
        metrics::counter!("troupe_peer_connections_refused_total").increment(1);
        return;
    };
    let (replies, mut outbox) = mpsc::unbounded_channel::<Bytes>();
    let mut sink = FramedWrite::new(write, codec());
    let writer = tokio::spawn(async move {
        while let Some(frame) = outbox.recv().await {
            if sink.send(frame).await.is_err() {
                break;
            }
        }
    });
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => break,
            frame = frames.next() => match frame {
                Some(Ok(frame)) => frame,
                _ => break,
            },
        };
        let Ok(request) = serde_json::from_slice::<Envelope<PeerRequest>>(&frame) else {
            tracing::warn!(peer = %hello.node, "undecodable frame; closing");
            break;
        };
        let handler = Arc::clone(&handler);
        let replies = replies.clone();
        tokio::spawn(async move {
            let body = handler(request.body).await;
            if let Ok(bytes) = serde_json::to_vec(&Envelope {
                id: request.id,
                body,
            }) {
                let _ = replies.send(Bytes::from(bytes));
            }
        });
    }
    drop(replies);
    let _ = writer.await;
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<PeerReply>>>>;

struct Link {
    outbox: mpsc::UnboundedSender<Bytes>,
    pending: Pending,
    closed: CancellationToken,
}

/// Calls to the other nodes of the cluster.
pub struct Peers {
    hello: Hello,
    key: ClusterKey,
    addresses: HashMap<String, SocketAddr>,
    links: tokio::sync::Mutex<HashMap<String, Arc<Link>>>,
    next_id: AtomicU64,
}

impl Peers {
    /// Peers at `addresses`, greeted as node `me` of `cluster`, with hellos
    /// signed by `key`.
    pub fn new(
        me: &str,
        cluster: &str,
        key: ClusterKey,
        addresses: HashMap<String, SocketAddr>,
    ) -> Self {
        Self {
            hello: Hello {
                magic: MAGIC.to_owned(),
                version: VERSION,
                cluster: cluster.to_owned(),
                node: me.to_owned(),
                sent_at_ms: 0,
                nonce: String::new(),
                proof: String::new(),
            },
            key,
            addresses,
            links: tokio::sync::Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Whether there are no other nodes at all.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    async fn link(&self, node: &str) -> Result<Arc<Link>, TransportError> {
        let mut links = self.links.lock().await;
        if let Some(link) = links.get(node).filter(|l| !l.closed.is_cancelled()) {
            return Ok(Arc::clone(link));
        }
        let address = *self
            .addresses
            .get(node)
            .ok_or_else(|| TransportError::UnknownNode(node.to_owned()))?;
        let unreachable = |reason: String| TransportError::Unreachable {
            node: node.to_owned(),
            reason,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let mut sink = FramedWrite::new(write, codec());
        let mut hello = self.hello.clone();
        self.key.sign(&mut hello);
        let hello = serde_json::to_vec(&hello).map_err(|e| unreachable(e.to_string()))?;
        sink.send(Bytes::from(hello))
            .await
            .map_err(|e| unreachable(e.to_string()))?;

        let pending: Pending = Arc::default();
        let closed = CancellationToken::new();
        let (outbox, mut queued) = mpsc::unbounded_channel::<Bytes>();
        let writer_closed = closed.clone();
        tokio::spawn(async move {
            while let Some(frame) = queued.recv().await {
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
            writer_closed.cancel();
        });
        let reader_pending = Arc::clone(&pending);
        let reader_closed = closed.clone();
        tokio::spawn(async move {
            let mut frames = FramedRead::new(read, codec());
            while let Some(Ok(frame)) = frames.next().await {
                let Ok(reply) = serde_json::from_slice::<Envelope<PeerReply>>(&frame) else {
                    break;
                };
                let waiter = reader_pending
                    .lock()
                    .ok()
                    .and_then(|mut p| p.remove(&reply.id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(reply.body);
                }
            }
            reader_closed.cancel();
            // Fail every call still waiting on this link.
            if let Ok(mut waiting) = reader_pending.lock() {
                waiting.clear();
            }
        });
        let link = Arc::new(Link {
            outbox,
            pending,
            closed,
        });
        links.insert(node.to_owned(), Arc::clone(&link));
        Ok(link)
    }

    /// Sends `request` to `node` and waits up to `timeout` for its reply.
    pub async fn call(
        &self,
        node: &str,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerReply, TransportError> {
        let link = self.link(node).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = link.pending.lock() {
            pending.insert(id, tx);
        }
        let frame = serde_json::to_vec(&Envelope { id, body: request }).map_err(|e| {
            TransportError::Unreachable {
                node: node.to_owned(),
                reason: e.to_string(),
            }
        })?;
        let lost = |reason: &str| TransportError::Unreachable {
            node: node.to_owned(),
            reason: reason.to_owned(),
        };
        link.outbox
            .send(Bytes::from(frame))
            .map_err(|_| lost("link closed"))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(lost("connection lost before the reply")),
            Err(_) => {
                if let Ok(mut pending) = link.pending.lock() {
                    pending.remove(&id);
                }
                Err(TransportError::Timeout {
                    node: node.to_owned(),
                    timeout,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer server on a free port answering every request with `Stored`.
    async fn server(key: ClusterKey) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let stop = CancellationToken::new();
        let handler: PeerHandler = Arc::new(|_| Box::pin(async { PeerReply::Stored }));
        tokio::spawn(serve(listener, "c".into(), key, handler, stop.clone()));
        (address, stop)
    }

    fn peers(key: ClusterKey, address: SocketAddr) -> Peers {
        Peers::new("n1", "c", key, HashMap::from([("n2".to_owned(), address)]))
    }

    #[tokio::test]
    async fn only_a_peer_with_the_cluster_secret_is_served() {
        let (address, stop) = server(ClusterKey::new("right")).await;
        let ask = PeerRequest::Get { id: "t".into() };
        let timeout = Duration::from_secs(2);
        let good = peers(ClusterKey::new("right"), address);
        assert!(matches!(
            good.call("n2", ask.clone(), timeout).await,
            Ok(PeerReply::Stored)
        ));
        let bad = peers(ClusterKey::new("wrong"), address);
        assert!(
            bad.call("n2", ask, timeout).await.is_err(),
            "a hello signed with another secret is refused"
        );
        stop.cancel();
    }
}
