//! The engine interface: what the bridge needs from an engine, in two
//! parts, so another engine (a NATS bus beside a Redis presence store) can
//! be added in the bridge without touching the shards:
//!
//! - the **bus**: `subscribe`/`unsubscribe` a channel hash, `publish`
//!   (inside `run`), and `probe` (a message to this node's own probe
//!   channel that must come back, so a connection that stalls silently is
//!   noticed). Subscribed traffic goes to the `Inbox` as it arrives.
//! - the **presence store**: joins, leaves, asserts, push counts, uid
//!   blocks (inside `run`), node registration, heartbeat and reaping.
//!
//! Redis does both on one connection; its scripts publish join and leave
//! events on the bus in the same atomic step that counts them, which is
//! what gives every member the same `total` sequence. A bus that is not
//! the presence store would need the scripts to return their events for
//! the node to publish (Centrifugo's Redis-presence-plus-NATS layout).
//!
//! Runs on the bridge thread only.

use super::secret::ChannelHash;
use super::wire::NodeNo;
use super::{Cluster, EngineCmd, EngineEvent};
use ahash::AHashMap;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Why an engine call failed: every failure means "reconnect".
#[derive(Debug)]
pub struct EngineError(pub String);

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a heartbeat learned.
#[derive(Debug, Default, Clone, Copy)]
pub struct Heartbeat {
    pub reaped: u64,
    pub live_nodes: u64,
    pub mismatched: u64,
}

/// One command of a batch, with the shard that sent it (replies go back
/// to it).
pub type Batch = Vec<(usize, EngineCmd)>;

#[allow(async_fn_in_trait)]
pub trait Engine {
    /// Connects (again): registers the node (keeping `node` if it is still
    /// ours) and returns its number. Subscribed traffic goes to the inbox.
    async fn connect(&mut self, node: Option<NodeNo>) -> Result<NodeNo, EngineError>;
    /// Drops the connection.
    fn disconnect(&mut self);
    // -- the bus --
    async fn subscribe(&mut self, hs: &[ChannelHash]) -> Result<(), EngineError>;
    async fn unsubscribe(&mut self, hs: &[ChannelHash]) -> Result<(), EngineError>;
    /// Publishes `nonce` to this node's probe channel; the inbox records
    /// it when it comes back.
    async fn probe(&mut self, nonce: u64) -> Result<(), EngineError>;
    // -- presence, and publishes, in one ordered batch --
    /// Runs `batch` in order; each command's answer (if it has one) for
    /// its shard.
    async fn run(&mut self, batch: Batch) -> Result<Vec<(usize, EngineEvent)>, EngineError>;
    /// Says this node is alive and reaps the dead ones.
    async fn heartbeat(&mut self) -> Result<Heartbeat, EngineError>;
    /// The node stops: its remaining members leave now.
    async fn deregister(&mut self) -> Result<u64, EngineError>;
}

/// Where subscribed traffic lands: routes each payload to the shard that
/// subscribed its channel. Called from the engine client's reader, on the
/// bridge thread, for every payload: never blocks (`Cluster::deliver`
/// drops when a shard's queue is full).
pub struct Inbox {
    cluster: Arc<Cluster>,
    /// Channel hash -> the shard that subscribed it (its owner here).
    routes: Mutex<AHashMap<ChannelHash, u16>>,
    /// The last probe nonce that came back.
    probe_seen: AtomicU64,
    /// Set when the engine client reports the connection gone.
    disconnected: AtomicBool,
    /// Wakes the bridge when the connection is gone.
    pub(crate) gone: tokio::sync::Notify,
}

impl Inbox {
    pub fn new(cluster: Arc<Cluster>) -> Inbox {
        Inbox {
            cluster,
            routes: Mutex::default(),
            probe_seen: AtomicU64::new(0),
            disconnected: AtomicBool::new(false),
            gone: tokio::sync::Notify::new(),
        }
    }

    pub fn route(&self, h: ChannelHash, shard: usize) {
        self.routes
            .lock()
            .expect("not poisoned")
            .insert(h, shard as u16);
    }

    pub fn unroute(&self, h: &ChannelHash) {
        self.routes.lock().expect("not poisoned").remove(h);
    }

    /// A payload published on engine channel `channel`.
    pub fn message(&self, channel: &[u8], payload: Vec<u8>) {
        if let Some(nonce) = channel.strip_prefix(b"itty:probe:") {
            let _ = nonce;
            if let Some(n) = std::str::from_utf8(&payload)
                .ok()
                .and_then(|s| s.parse().ok())
            {
                self.probe_seen.fetch_max(n, Ordering::AcqRel);
            }
            return;
        }
        let Some(h) = channel
            .strip_prefix(b"itty:{")
            .and_then(|c| c.strip_suffix(b"}"))
            .and_then(ChannelHash::parse)
        else {
            return;
        };
        // A node's own messages come back to it: drop them here, so its
        // shard is not even woken. Lag is measured on the others'.
        if let Some((origin, sent_ms)) = message_origin(&payload) {
            if origin == self.cluster.node() {
                return;
            }
            if let Some(sent_ms) = sent_ms {
                let now = crate::pubsub::envelope::now_ms();
                self.cluster.counters.lag(now.saturating_sub(sent_ms));
            }
        }
        let shard = self.routes.lock().expect("not poisoned").get(&h).copied();
        if let Some(shard) = shard {
            self.cluster.counters.received();
            let payload = Bytes::from(payload);
            self.cluster
                .deliver(shard as usize, EngineEvent::Stream { h, payload });
        }
    }

    /// The engine client says the connection is gone.
    pub fn disconnect(&self) {
        self.disconnected.store(true, Ordering::Release);
        self.gone.notify_one();
    }

    pub fn probe_seen(&self) -> u64 {
        self.probe_seen.load(Ordering::Acquire)
    }

    /// Clears the disconnected flag for a new connection.
    pub fn reset(&self) {
        self.disconnected.store(false, Ordering::Release);
    }

    pub fn is_disconnected(&self) -> bool {
        self.disconnected.load(Ordering::Acquire)
    }
}

/// The origin node (and sent time) of a message or direct message
/// payload; `None` for presence events.
fn message_origin(payload: &[u8]) -> Option<(NodeNo, Option<u64>)> {
    let (kind, rest) = match payload {
        [k @ (b'M' | b'D'), b' ', rest @ ..] => (*k, rest),
        _ => return None,
    };
    let end = rest.iter().position(|&b| b == b' ' || b == b'\n')?;
    let origin = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    let sent_ms = (kind == b'M')
        .then(|| {
            let tail = &rest[end + 1..];
            let stop = tail.iter().position(|&b| b == b'\n')?;
            std::str::from_utf8(&tail[..stop]).ok()?.parse().ok()
        })
        .flatten();
    Some((origin, sent_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::wire;

    #[test]
    fn message_origin_reads_the_header_only() {
        let mut p = wire::message_header(12, 345).as_bytes().to_vec();
        p.extend_from_slice(b"\x81\x00");
        assert_eq!(message_origin(&p), Some((12, Some(345))));
        let uid = crate::id::Uid(*b"abc123");
        let p = wire::direct_header(7, &uid).as_bytes().to_vec();
        assert_eq!(message_origin(&p), Some((7, None)));
        assert_eq!(message_origin(b"J 1 2 3 abc123 0 0\n"), None);
    }
}
