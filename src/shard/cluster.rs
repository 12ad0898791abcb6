//! The owner's side of a cluster (`--backplane`), sans-IO like the rest
//! of `Owner`: for each channel this shard owns and this node has members
//! on, a replica of the cluster-wide member table, kept from the engine's
//! ordered stream of join and leave events, and the joins waiting for the
//! engine's answer. Every method appends effects: shard messages as
//! always, and `EngineCmd`s for the engine (the bridge runs them).
//!
//! The rules, in the order a channel lives them:
//!
//! 1. **First join here**: subscribe `itty:{h}`, then run the join script
//!    asking for the member table. Until its answer arrives the replica is
//!    not ready: payloads from the stream wait (`held_back`).
//! 2. **A join becomes a member** once the engine admitted it and the
//!    replica has applied its event (its `seq`): it then gets its own join
//!    event (built here, with `users` from the replica), the others got
//!    the script's frame from the stream. Stream payloads wait while a
//!    local join's event was applied but its answer has not arrived
//!    (`paused`), so the new member misses nothing after its own event.
//! 3. **Events** (`J`, `L`) apply in the engine's order (`seq`), each
//!    fanned out to this node's members as the same bytes; an event at or
//!    below the replica's `seq` is already in it and skipped.
//! 4. **Messages** are delivered here at once (local first) and published
//!    for the other nodes only when some member is elsewhere; those
//!    from other nodes are fanned out as they arrive.
//! 5. **Leaves** run the leave script; its event comes back like any
//!    other. Cut off from the engine, a leave is told to this node's
//!    members at once, with the replica's count (island).
//! 6. **Reconnect** (`Up`): each channel asserts this node's members; the
//!    answer (the member table at a `seq`) replaces the replica, and this
//!    node's members get the joins and leaves that make up the difference,
//!    so every total converges.
//! 7. **Last member here gone**: the channel is retired and unsubscribed.

use super::{fan_out, Effects, Owner};
use crate::cluster::secret::{ChannelHash, KeyKind};
use crate::cluster::wire::{self, NodeNo};
use crate::cluster::{Cluster, EngineCmd, HeldKeys, JoinCmd, KeyDigests, MemberRecord};
use crate::id::{ChannelToken, ConnId, Uid};
use crate::outcome::{DropReason, UpgradeRefusal};
use crate::pubsub::envelope::{self, Who};
use crate::shard::join::{JoinRequest, KeyCheck};
use crate::shard::message::ShardMsg;
use ahash::AHashMap;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;

/// How long a join may wait for the engine before it gets 503.
pub const JOIN_ANSWER_TIMEOUT_MS: u64 = 5_000;

/// The owner's cluster state.
pub struct ClusterSide {
    shared: Arc<Cluster>,
    /// Live channels by their engine name.
    by_hash: AHashMap<ChannelHash, ChannelToken>,
    /// Each live channel's replica.
    replicas: AHashMap<ChannelToken, Replica>,
    /// Channels whose last member here left while the engine was
    /// unreachable: their records are cleared at the reconnect.
    orphans: Vec<ChannelHash>,
}

/// A member on another node, as the replica knows it.
#[derive(Debug)]
struct Remote {
    announce: bool,
    alias_json: Option<Box<str>>,
}

/// A join sent to the engine, not a member yet.
#[derive(Debug)]
struct PendingJoin {
    conn: ConnId,
    uid: Uid,
    alias_json: Option<Box<str>>,
    announce: bool,
    list: bool,
    /// Its deflate window, if it negotiated permessage-deflate.
    deflate: Option<u8>,
    deadline_ms: u64,
    /// Whether its join asked for the member table.
    asked_table: bool,
    /// The engine's answer: its event's seq and total, and the send right.
    answer: Option<(u64, u64, bool)>,
}

/// One channel's view of the cluster.
struct Replica {
    h: ChannelHash,
    /// Members on other nodes (and stale records of this one), by uid.
    remote: AHashMap<Uid, Remote>,
    /// This node's members (the registry holds them), by uid.
    local: AHashMap<Uid, ConnId>,
    /// The engine's event counter as of the last event applied.
    applied: u64,
    /// The member table has arrived (rule 1, rule 6).
    ready: bool,
    /// A join whose event was applied waits for its answer (rule 2).
    paused: bool,
    /// Whether a member table was asked for and not answered yet.
    table_asked: bool,
    /// Stream payloads waiting while not ready or paused, in order.
    held_back: VecDeque<Bytes>,
    pending: Vec<PendingJoin>,
    /// The ephemeral key digests, as the engine last said (re-set by an
    /// assert if the engine lost the channel).
    keys: HeldKeys,
}

impl Replica {
    fn new(h: ChannelHash) -> Replica {
        Replica {
            h,
            remote: AHashMap::new(),
            local: AHashMap::new(),
            applied: 0,
            ready: false,
            paused: false,
            table_asked: false,
            held_back: VecDeque::new(),
            pending: Vec::new(),
            keys: HeldKeys::default(),
        }
    }

    fn total(&self) -> usize {
        self.local.len() + self.remote.len()
    }
}

impl ClusterSide {
    pub fn new(shared: Arc<Cluster>) -> ClusterSide {
        ClusterSide {
            shared,
            by_hash: AHashMap::new(),
            replicas: AHashMap::new(),
            orphans: Vec::new(),
        }
    }

    fn me(&self) -> NodeNo {
        self.shared.node()
    }

    /// This node's number.
    pub fn node(&self) -> NodeNo {
        self.shared.node()
    }
}

/// A message id unique across the cluster: the node's number (base62,
/// length-prefixed) then the owner's counter interleaved by shard.
pub fn message_id(
    node: NodeNo,
    local: &mut u64,
    router: crate::router::Router,
) -> ([u8; 24], usize) {
    let mut out = [0u8; 24];
    let mut node_digits = [0u8; 12];
    let n = base62(node, &mut node_digits);
    out[0] = BASE62[n];
    out[1..1 + n].copy_from_slice(&node_digits[..n]);
    let mut rest = [0u8; 12];
    let m = crate::id::message_id(*local, router.here(), router.shard_count(), &mut rest);
    out[1 + n..1 + n + m].copy_from_slice(&rest[..m]);
    *local += 1;
    (out, 1 + n + m)
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn base62(mut v: u64, out: &mut [u8; 12]) -> usize {
    let mut len = 0;
    loop {
        out[len] = BASE62[(v % 62) as usize];
        len += 1;
        v /= 62;
        if v == 0 {
            break;
        }
    }
    out[..len].reverse();
    len
}

fn who<'a>(uid: &'a Uid, alias_json: Option<&'a str>) -> Who<'a> {
    Who { uid, alias_json }
}

impl Owner {
    fn side(&mut self) -> &mut ClusterSide {
        self.cluster.as_mut().expect("cluster mode")
    }

    /// Rule 1: a join, sent to the engine (or refused at once while the
    /// engine is unreachable).
    pub(super) fn cluster_join(&mut self, request: JoinRequest, now_ms: u64, fx: &mut Effects) {
        let conn = request.conn;
        let home = self.router.home_of(conn);
        if !self.side().shared.is_up() {
            let why = UpgradeRefusal::BackplaneUnavailable;
            return fx.send(home, ShardMsg::JoinRefused { conn, why });
        }
        let token = self.registry.open(&request.channel);
        let side = self.cluster.as_mut().expect("cluster mode");
        let secret = &side.shared.secret;
        let replica = side.replicas.entry(token).or_insert_with(|| {
            let h = secret.channel_hash(&request.channel);
            fx.engine(EngineCmd::Subscribe(h));
            Replica::new(h)
        });
        let h = replica.h;
        side.by_hash.insert(h, token);
        let want_members = !replica.ready && !replica.table_asked;
        replica.table_asked |= want_members;
        let keys = match request.keys {
            KeyCheck::Namespace { may_send } => KeyDigests::Namespace { may_send },
            KeyCheck::Ephemeral(k) => KeyDigests::Ephemeral {
                join: k
                    .join_key
                    .map(|key| secret.key_digest(&h, KeyKind::Join, &key)),
                send: k
                    .send_key
                    .map(|key| secret.key_digest(&h, KeyKind::Send, &key)),
            },
        };
        replica.pending.push(PendingJoin {
            conn,
            uid: request.uid,
            alias_json: request.alias_json.clone(),
            announce: request.announce,
            list: request.list,
            deflate: request.deflate,
            deadline_ms: now_ms + JOIN_ANSWER_TIMEOUT_MS,
            asked_table: want_members,
            answer: None,
        });
        fx.engine(EngineCmd::Join(Box::new(JoinCmd {
            h,
            conn,
            record: MemberRecord {
                uid: request.uid,
                announce: request.announce,
                alias_json: request.alias_json,
            },
            date_ms: now_ms,
            keys,
            want_members,
        })));
        self.counters().channels.set(self.registry.len() as u64);
    }

    /// Rule 4: a message built here goes to the other nodes when some
    /// member is elsewhere; a direct message to its recipient's node.
    /// Returns the frame if it is still to be fanned out here.
    pub(super) fn cluster_publish(
        &mut self,
        token: ChannelToken,
        from: ConnId,
        to: Option<Uid>,
        frame: Bytes,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Option<Bytes> {
        let side = self.cluster.as_ref().expect("cluster mode");
        let (me, up) = (side.me(), side.shared.is_up());
        let replica = side.replicas.get(&token)?;
        let Some(uid) = to else {
            if up && !replica.remote.is_empty() {
                fx.engine(EngineCmd::Publish {
                    h: replica.h,
                    header: wire::message_header(me, now_ms),
                    frame: frame.clone(),
                });
            }
            return Some(frame);
        };
        if let Some(&conn) = replica.local.get(&uid) {
            let deflate = self
                .registry
                .get(token)
                .and_then(|ch| ch.members.get(&conn))
                .and_then(|m| m.deflate);
            let frame = frame_for_member!(self, deflate, frame);
            fx.send(self.router.home_of(conn), ShardMsg::Deliver { conn, frame });
        } else if replica.remote.contains_key(&uid) {
            if up {
                fx.engine(EngineCmd::Publish {
                    h: replica.h,
                    header: wire::direct_header(me, &uid),
                    frame,
                });
            } else {
                side.shared.counters.dropped_while_down(1);
            }
        } else {
            let counters = self.counters();
            counters.error_events.incr();
            counters.count_drop(DropReason::NoRecipient);
            let frame = envelope::error(&DropReason::no_recipient(uid.as_str()), now_ms);
            let conn = from;
            fx.send(self.router.home_of(conn), ShardMsg::Deliver { conn, frame });
        }
        None
    }

    /// An HTTP push: on a channel live here, delivered here and published
    /// if members are elsewhere; otherwise the engine publishes it if the
    /// channel has members anywhere and answers with their count.
    pub(super) fn cluster_push(&mut self, push: super::Push<'_>, now_ms: u64, fx: &mut Effects) {
        let side = self.cluster.as_ref().expect("cluster mode");
        let (me, up) = (side.me(), side.shared.is_up());
        let live = self
            .registry
            .find(push.channel)
            .filter(|(token, _)| side.replicas.get(token).is_some_and(|r| r.ready));
        if !up && live.is_none() {
            let msg = ShardMsg::Pushed {
                request: push.request,
                recipients: None,
            };
            return fx.send(push.home, msg);
        }
        let (buf, len) = message_id(me, &mut self.messages_issued, self.router);
        let frame = envelope::message(&buf[..len], None, now_ms, push.payload);
        self.counters().messages_published.incr();
        let header = wire::message_header(me, now_ms);
        match live {
            Some((token, ch)) => {
                let replica = &side.replicas[&token];
                if up && !replica.remote.is_empty() {
                    let h = replica.h;
                    fx.engine(EngineCmd::Publish {
                        h,
                        header,
                        frame: frame.clone(),
                    });
                }
                let recipients = Some(replica.total() as u32);
                let frames = frames_here!(self, ch, frame);
                fan_out(fx, ch, token, frames, None);
                let msg = ShardMsg::Pushed {
                    request: push.request,
                    recipients,
                };
                fx.send(push.home, msg);
            }
            None => fx.engine(EngineCmd::Push {
                h: side.shared.secret.channel_hash(push.channel),
                header,
                frame,
                home: push.home,
                request: push.request,
            }),
        }
    }

    /// Rule 5: a member of this node left.
    pub(super) fn cluster_leave(
        &mut self,
        token: ChannelToken,
        conn: ConnId,
        now_ms: u64,
        fx: &mut Effects,
    ) {
        let Some(member) = self.registry.remove(token, conn) else {
            return;
        };
        let side = self.cluster.as_mut().expect("cluster mode");
        let up = side.shared.is_up();
        let Some(replica) = side.replicas.get_mut(&token) else {
            return;
        };
        replica.local.remove(&member.uid);
        let last_local = replica.local.is_empty() && replica.pending.is_empty();
        if up {
            fx.engine(EngineCmd::Leave {
                h: replica.h,
                uid: member.uid,
                last_local,
                date_ms: now_ms,
            });
        } else if !last_local {
            // Island: this node's members hear of it now; the totals
            // converge after the reconnect (rule 6).
            let shown = member
                .announce
                .then(|| who(&member.uid, member.alias_json.as_deref()));
            let frame = envelope::leave(shown, replica.total(), now_ms);
            if let Some(ch) = self.registry.get(token) {
                let frames = frames_here!(self, ch, frame);
                fan_out(fx, ch, token, frames, None);
            }
        }
        if last_local {
            if !up {
                let side = self.cluster.as_mut().expect("cluster mode");
                if let Some(replica) = side.replicas.get(&token) {
                    side.orphans.push(replica.h);
                }
            }
            self.retire(token, fx);
        }
    }

    /// Rule 7: no member and no join left here.
    fn retire(&mut self, token: ChannelToken, fx: &mut Effects) {
        let side = self.cluster.as_mut().expect("cluster mode");
        if let Some(replica) = side.replicas.remove(&token) {
            side.by_hash.remove(&replica.h);
            fx.engine(EngineCmd::Unsubscribe(replica.h));
        }
        self.registry.retire(token);
        self.counters().channels.set(self.registry.len() as u64);
    }

    fn retire_if_empty(&mut self, token: ChannelToken, fx: &mut Effects) {
        let side = self.cluster.as_ref().expect("cluster mode");
        let empty = side
            .replicas
            .get(&token)
            .is_some_and(|r| r.local.is_empty() && r.pending.is_empty());
        if empty {
            self.retire(token, fx);
        }
    }
}

#[path = "cluster_events.rs"]
mod events;

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
