//! The backplane: several relay nodes behind a load balancer, one channel
//! across all of them, on an existing engine (Redis). Off unless
//! `--backplane` is given; without it none of this runs and the shards
//! take the same paths as before (one branch at the owner).
//!
//! ```text
//!  node 1                                   engine (Redis)            node 2
//!  shard (owner of "room")                                            shard (owner of "room")
//!    | EngineCmd --lock-free queue--> bridge thread                      ^
//!    |   (Publish: header + the frame     | one RESP3 connection:        | EngineEvent::Stream
//!    |    built once by the owner)        | pipelined commands,          | (the same frame bytes,
//!    |                                    | SUBSCRIBE itty:{h}           |  fanned out unchanged)
//!    |                                    +--PUBLISH / EVALSHA--> itty:{h} --push--> bridge thread
//! ```
//!
//! - A remote node stands where another shard does: the owner's effects
//!   say "to the engine" the way they say "to shard 2" (`EngineCmd`), and
//!   what comes back is handled by the same dispatch (`EngineEvent`).
//! - The engine is behind a small interface (`engine::Engine`: a bus and a
//!   presence store); the shards only see `EngineCmd`/`EngineEvent`, so a
//!   NATS bus can be added in the bridge without touching them.
//! - One bridge thread per node runs the engine client (the `redis` crate
//!   on a tokio current-thread runtime): no shard ever touches an engine
//!   socket or waits on it. Each shard has one bounded queue to the bridge
//!   and one back, both lock-free (`crossbeam_queue::ArrayQueue`); full
//!   queues drop and count, never block.
//! - Channel names never reach the engine: `secret::ChannelHash`.
//! - Presence (join, leave, totals, ephemeral keys, uid blocks, node
//!   liveness) is decided by Lua scripts (`lua/`), each atomic, each
//!   publishing its event in the engine's one order.
//!
//! The owner's side of it is `shard::cluster`; the wire format is `wire`;
//! the thread is `bridge`.

pub mod bridge;
pub mod engine;
pub mod metrics;
mod redis_engine;
mod redis_reply;
pub mod secret;
pub mod wire;

use crate::id::{ConnId, ShardId, Uid};
use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use secret::{ChannelHash, ClusterSecret};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use wire::NodeNo;

/// Commands a shard queued for the engine most at once: past it (or past
/// `OUT_BYTES_MAX`) commands are dropped and counted. A shard's burst of
/// joins after a reconnect stays well below.
pub const OUT_QUEUE_COMMANDS_MAX: usize = 64 * 1024;

/// Bytes of frames a shard may have queued for the engine: while the
/// engine is slow, messages to other nodes are dropped past it (local
/// delivery never waits).
pub const OUT_BYTES_MAX: usize = 4 << 20;

/// Events the bridge may have queued for one shard; past it they are
/// dropped and counted, and the shard resynchronizes its channels.
pub const IN_QUEUE_EVENTS_MAX: usize = 64 * 1024;

/// uids fetched from the engine at once per shard (`INCRBY`).
pub const UID_BLOCK: u64 = 4096;

/// A shard's request to the engine (its owner's effects, or its home's
/// uid block).
#[derive(Debug)]
pub enum EngineCmd {
    /// Receive channel `h`'s pub/sub traffic (before the first join).
    Subscribe(ChannelHash),
    /// No member left here: stop receiving `h` (after a linger).
    Unsubscribe(ChannelHash),
    /// A message or direct message: `header` (`wire`) then `frame`.
    Publish {
        h: ChannelHash,
        header: wire::Header,
        frame: Bytes,
    },
    Join(Box<JoinCmd>),
    Leave {
        h: ChannelHash,
        uid: Uid,
        /// Whether this node has no member left on `h`.
        last_local: bool,
        date_ms: u64,
    },
    /// An HTTP push to a channel with no member on this node: published
    /// only if it has members elsewhere; the answer counts them.
    Push {
        h: ChannelHash,
        header: wire::Header,
        frame: Bytes,
        home: ShardId,
        request: u64,
    },
    /// After a reconnect: this node's members of `h` are exactly these.
    Assert(Box<AssertCmd>),
    /// A new block of uid numbers for this shard.
    UidBlock,
}

/// A join as the engine's script needs it.
#[derive(Debug)]
pub struct JoinCmd {
    pub h: ChannelHash,
    pub conn: ConnId,
    pub record: MemberRecord,
    pub date_ms: u64,
    pub keys: KeyDigests,
    /// Whether to return the member table (the node's first member).
    pub want_members: bool,
}

/// A member as the engine stores it.
#[derive(Debug, Clone)]
pub struct MemberRecord {
    pub uid: Uid,
    pub announce: bool,
    /// The alias as a JSON string literal, when set.
    pub alias_json: Option<Box<str>>,
}

/// What the engine checks about a join's keys.
#[derive(Debug, Clone)]
pub enum KeyDigests {
    /// A namespace covers the channel: decided at home.
    Namespace { may_send: bool },
    /// Digests of the offered ephemeral keys (`None`: not offered).
    Ephemeral {
        join: Option<[u8; 32]>,
        send: Option<[u8; 32]>,
    },
}

#[derive(Debug)]
pub struct AssertCmd {
    pub h: ChannelHash,
    /// `None`: change nothing, only answer with the member table.
    pub members: Option<Vec<MemberRecord>>,
    /// The channel's ephemeral key digests as this node last saw them, set
    /// again if the engine lost the channel.
    pub held: HeldKeys,
    pub date_ms: u64,
}

/// Ephemeral key digests a channel holds, as the engine last said.
#[derive(Debug, Clone, Default)]
pub struct HeldKeys {
    pub join: Option<[u8; 32]>,
    pub send: Option<[u8; 32]>,
}

/// What the engine told a shard.
#[derive(Debug)]
pub enum EngineEvent {
    /// Connected (again), as node `node`: resynchronize.
    Up { node: NodeNo },
    /// Cut off from the engine: refuse joins, deliver locally only.
    Down,
    /// A payload published on `h` (`wire::decode` reads it).
    Stream { h: ChannelHash, payload: Bytes },
    /// The engine's answer to a `Join`.
    Joined {
        h: ChannelHash,
        conn: ConnId,
        reply: JoinReply,
    },
    /// The engine's answer to a `Push`: members it reached (`None`: the
    /// engine could not be asked).
    Pushed {
        home: ShardId,
        request: u64,
        recipients: Option<u32>,
    },
    /// The engine's answer to an `Assert`: the channel's members and the
    /// event counter at that moment.
    Asserted { h: ChannelHash, snapshot: Snapshot },
    /// A block of uid numbers `[end - UID_BLOCK, end)`.
    UidBlock { end: u64 },
}

#[derive(Debug)]
pub enum JoinReply {
    /// The join key did not open the channel's ephemeral keys.
    Refused,
    /// The engine could not decide (down, or a uid clash): 503.
    Unavailable,
    Admitted {
        seq: u64,
        total: u64,
        may_send: bool,
        held: HeldKeys,
        /// The member table, when asked for.
        members: Option<Snapshot>,
    },
}

/// A channel's members at event `seq`.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub seq: u64,
    pub members: Vec<(NodeNo, MemberRecord)>,
    pub held: HeldKeys,
}

/// The engine connection's state, as every shard and `/health` see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EngineState {
    /// Not connected (yet, or any more): joins get 503, `/health` 503.
    Down = 0,
    Up = 1,
}

/// One shard's two queues and its wake-up line.
pub struct ShardPort {
    /// Shard to bridge.
    out: ArrayQueue<EngineCmd>,
    /// Frame bytes in `out`.
    out_bytes: AtomicUsize,
    /// Bridge to shard.
    inbound: ArrayQueue<EngineEvent>,
    /// Set by the shard's inbound task before it parks on `wake`.
    sleeping: AtomicBool,
    /// Set when an event for this shard, or a presence command of it, was
    /// dropped: it resynchronizes.
    lost: AtomicBool,
    /// The bridge's end of the shard's wake-up socket (non-blocking).
    wake: UnixStream,
}

/// Everything the shards and the bridge share about the backplane.
pub struct Cluster {
    pub url: String,
    pub secret: ClusterSecret,
    /// Silence after which a node's members are reaped, in ms.
    pub node_timeout_ms: u64,
    /// The namespaces' digest every node publishes (replaced on SIGHUP).
    config_digest: std::sync::Mutex<[u8; 32]>,
    /// A random id of this process, so a node number is never shared.
    pub instance: u64,
    state: AtomicU8,
    node: AtomicU64,
    ports: Vec<ShardPort>,
    /// Wakes the bridge when a shard queued commands.
    bridge_wake: tokio::sync::Notify,
    stopping: AtomicBool,
    pub counters: metrics::ClusterCounters,
}

impl Cluster {
    /// The shared state, and each shard's end of its wake-up socket.
    pub fn new(
        url: String,
        secret: ClusterSecret,
        node_timeout_ms: u64,
        config_digest: [u8; 32],
        shards: usize,
    ) -> std::io::Result<(Cluster, Vec<UnixStream>)> {
        let mut ports = Vec::with_capacity(shards);
        let mut shard_ends = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (bridge_end, shard_end) = UnixStream::pair()?;
            bridge_end.set_nonblocking(true)?;
            ports.push(ShardPort {
                out: ArrayQueue::new(OUT_QUEUE_COMMANDS_MAX),
                out_bytes: AtomicUsize::new(0),
                inbound: ArrayQueue::new(IN_QUEUE_EVENTS_MAX),
                sleeping: AtomicBool::new(false),
                lost: AtomicBool::new(false),
                wake: bridge_end,
            });
            shard_ends.push(shard_end);
        }
        let cluster = Cluster {
            url,
            secret,
            node_timeout_ms,
            config_digest: std::sync::Mutex::new(config_digest),
            instance: crate::id::random_seed(),
            state: AtomicU8::new(EngineState::Down as u8),
            node: AtomicU64::new(0),
            ports,
            bridge_wake: tokio::sync::Notify::new(),
            stopping: AtomicBool::new(false),
            counters: metrics::ClusterCounters::default(),
        };
        Ok((cluster, shard_ends))
    }

    /// The digest of this node's namespaces.
    pub fn config_digest(&self) -> [u8; 32] {
        *self.config_digest.lock().expect("not poisoned")
    }

    /// The namespaces were reloaded: publish their new digest.
    pub fn set_config_digest(&self, digest: [u8; 32]) {
        *self.config_digest.lock().expect("not poisoned") = digest;
    }

    pub fn shards(&self) -> usize {
        self.ports.len()
    }

    pub fn state(&self) -> EngineState {
        match self.state.load(Ordering::Acquire) {
            1 => EngineState::Up,
            _ => EngineState::Down,
        }
    }

    pub fn is_up(&self) -> bool {
        self.state() == EngineState::Up
    }

    /// This node's number (0 until the engine first assigned one).
    pub fn node(&self) -> NodeNo {
        self.node.load(Ordering::Acquire)
    }

    // ---- the shard side ----

    /// Queues `cmd` from `shard`; `false` if its queue was full and the
    /// command was dropped (counted). Call `wake_bridge` after a batch. A
    /// dropped message is lost for the other nodes (at most once); a
    /// dropped presence command (a join, leave or assert) also marks the
    /// shard for a resync, so the engine's member table is put right at
    /// its next sweep.
    pub fn send(&self, shard: ShardId, cmd: EngineCmd) -> bool {
        let port = &self.ports[shard.index()];
        let bytes = cmd_bytes(&cmd);
        if port.out_bytes.load(Ordering::Relaxed) + bytes > OUT_BYTES_MAX && bytes > 0 {
            self.counters.dropped(metrics::Direction::Out);
            return false;
        }
        let presence = matches!(
            cmd,
            EngineCmd::Join(_) | EngineCmd::Leave { .. } | EngineCmd::Assert(_)
        );
        match port.out.push(cmd) {
            Ok(()) => {
                port.out_bytes.fetch_add(bytes, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.counters.dropped(metrics::Direction::Out);
                if presence {
                    port.lost.store(true, Ordering::Release);
                }
                false
            }
        }
    }

    /// Wakes the bridge after a shard queued commands.
    pub fn wake_bridge(&self) {
        self.bridge_wake.notify_one();
    }

    /// Takes the next event for `shard`.
    pub fn next_event(&self, shard: ShardId) -> Option<EngineEvent> {
        self.ports[shard.index()].inbound.pop()
    }

    /// The shard's inbound task is about to park: `true` if it may (no
    /// event arrived meanwhile); the bridge then writes to its socket.
    pub fn park(&self, shard: ShardId) -> bool {
        let port = &self.ports[shard.index()];
        port.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if port.inbound.is_empty() {
            return true;
        }
        port.sleeping.store(false, Ordering::SeqCst);
        false
    }

    /// Whether an event for `shard` was dropped since the last call.
    pub fn take_lost(&self, shard: ShardId) -> bool {
        self.ports[shard.index()].lost.swap(false, Ordering::AcqRel)
    }

    // ---- the bridge side ----

    /// Takes the next command of `shard`.
    pub(crate) fn next_cmd(&self, shard: usize) -> Option<EngineCmd> {
        let port = &self.ports[shard];
        let cmd = port.out.pop()?;
        port.out_bytes.fetch_sub(cmd_bytes(&cmd), Ordering::Relaxed);
        Some(cmd)
    }

    /// Hands `event` to `shard` and wakes it if it sleeps; a full queue
    /// drops it (counted) and marks the shard for a resync.
    pub(crate) fn deliver(&self, shard: usize, event: EngineEvent) {
        let port = &self.ports[shard];
        if port.inbound.push(event).is_err() {
            self.counters.dropped(metrics::Direction::In);
            port.lost.store(true, Ordering::Release);
        }
        fence(Ordering::SeqCst);
        if port.sleeping.swap(false, Ordering::SeqCst) {
            // Non-blocking: a full socket already holds a wake-up.
            let _ = (&port.wake).write(&[1]);
        }
    }

    /// Tells every shard about the new state.
    pub(crate) fn set_state(&self, state: EngineState, node: NodeNo) {
        if state == EngineState::Up {
            self.node.store(node, Ordering::Release);
        }
        self.state.store(state as u8, Ordering::Release);
        self.counters.set_up(state == EngineState::Up);
        for shard in 0..self.ports.len() {
            let event = match state {
                EngineState::Up => EngineEvent::Up { node },
                EngineState::Down => EngineEvent::Down,
            };
            self.deliver(shard, event);
        }
    }

    pub(crate) async fn bridge_woken(&self) {
        self.bridge_wake.notified().await
    }

    /// Asks the bridge to finish: flush what the shards queued, let the
    /// node's remaining members leave, disconnect.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.bridge_wake.notify_one();
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Frame bytes queued toward the engine, all shards.
    pub fn queued_bytes(&self) -> usize {
        self.ports
            .iter()
            .map(|p| p.out_bytes.load(Ordering::Relaxed))
            .sum()
    }
}

/// What a command counts against `OUT_BYTES_MAX`: its frame.
fn cmd_bytes(cmd: &EngineCmd) -> usize {
    match cmd {
        EngineCmd::Publish { frame, .. } | EngineCmd::Push { frame, .. } => frame.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        let secret = ClusterSecret::new(b"unit-test-secret-0123").unwrap();
        Cluster::new("redis://x".into(), secret, 5000, [0; 32], 1)
            .unwrap()
            .0
    }

    fn leave() -> EngineCmd {
        EngineCmd::Leave {
            h: ChannelHash([b'0'; 32]),
            uid: Uid(*b"abc123"),
            last_local: false,
            date_ms: 0,
        }
    }

    #[test]
    fn a_full_queue_drops_and_a_dropped_presence_command_asks_for_a_resync() {
        let c = cluster();
        let shard = ShardId(0);
        for _ in 0..OUT_QUEUE_COMMANDS_MAX {
            assert!(c.send(shard, EngineCmd::UidBlock));
        }
        assert!(!c.send(shard, EngineCmd::UidBlock));
        assert!(!c.take_lost(shard), "a uid request is asked again anyway");
        assert!(!c.send(shard, leave()));
        assert!(c.take_lost(shard), "a lost leave is put right by a resync");
        assert!(!c.take_lost(shard));
    }

    #[test]
    fn frames_past_the_byte_bound_are_dropped_but_presence_still_passes() {
        let c = cluster();
        let shard = ShardId(0);
        let frame = Bytes::from(vec![0u8; OUT_BYTES_MAX / 2 + 1]);
        let publish = || EngineCmd::Publish {
            h: ChannelHash([b'0'; 32]),
            header: wire::message_header(1, 1),
            frame: frame.clone(),
        };
        assert!(c.send(shard, publish()));
        assert!(!c.send(shard, publish()), "over the byte bound");
        assert!(c.send(shard, leave()), "presence carries no frame");
        assert_eq!(c.queued_bytes(), frame.len());
        c.next_cmd(0);
        assert_eq!(c.queued_bytes(), 0);
    }
}
