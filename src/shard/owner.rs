//! The owner side of a shard, sans-IO: the channels that hash to this
//! shard, their members, their message counter and the uid cipher. Joins,
//! leaves, publishes and pushes for them arrive here, and this is the one
//! place where a channel's order is decided: the owner stamps `id` and
//! `date`, builds each frame once, and says where it goes.
//!
//! Like the frame codec, it does no I/O and never calls back into the
//! shard: each method takes a request and `now`, updates the registry, and
//! appends `Effects` (shard messages, each for one shard). `Shard::dispatch`
//! carries them out after the owner's borrow has ended. Runs only on the
//! owner shard; never waits.

/// `frame` as the `Frames` for this node's members of `ch`: compressed
/// once for those that negotiated deflate. A macro because it borrows the
/// owner's fields apart (the channel from the registry, the compressor).
macro_rules! frames_here {
    ($owner:expr, $ch:expr, $frame:expr) => {
        crate::shard::owner::frames_for(
            &mut $owner.compressor,
            $owner.compression_min_bytes,
            &$owner.metrics[$owner.router.here().index()],
            $frame,
            $ch,
        )
    };
}

/// `frame` for one member: compressed if it negotiated deflate and it pays.
macro_rules! frame_for_member {
    ($owner:expr, $deflate:expr, $frame:expr) => {
        match $deflate {
            Some(bits) => crate::shard::owner::compress(
                &mut $owner.compressor,
                $owner.compression_min_bytes,
                &$owner.metrics[$owner.router.here().index()],
                crate::ws::frame::payload_of(&$frame),
                bits,
            )
            .unwrap_or($frame),
            None => $frame,
        }
    };
}

#[path = "cluster.rs"]
mod cluster;
pub use cluster::ClusterSide;

use super::join::{decide, Decision, JoinRequest};
use super::message::{Frames, ShardMsg};
use crate::cluster::EngineCmd;
use crate::id::{message_id, ChannelToken, ConnId, ShardId, Uid, UidCipher};
use crate::metrics::{Metrics, ShardCounters};
use crate::outcome::{DropReason, UpgradeRefusal};
use crate::pubsub::envelope::{self, Who};
use crate::pubsub::registry::{Channel, Member, Registry};
use crate::router::Router;
use crate::ws::deflate::Compressor;
use crate::ws::frame::payload_of;
use bytes::Bytes;

/// What the owner decided, in order: each message for one shard (this one
/// included), and, in a cluster, commands for the engine (which stands for
/// the other nodes the way a shard id stands for another shard). Reused
/// between calls, so the hot path does not allocate.
#[derive(Debug, Default)]
pub struct Effects(Vec<(ShardId, ShardMsg)>, Vec<EngineCmd>);

impl Effects {
    fn send(&mut self, to: ShardId, msg: ShardMsg) {
        self.0.push((to, msg));
    }

    fn engine(&mut self, cmd: EngineCmd) {
        self.1.push(cmd);
    }

    /// Takes the effects out, in order, leaving the buffer for reuse.
    pub fn drain(&mut self) -> impl Iterator<Item = (ShardId, ShardMsg)> + '_ {
        self.0.drain(..)
    }

    /// Takes the commands for the engine out, in order.
    pub fn drain_engine(&mut self) -> impl Iterator<Item = EngineCmd> + '_ {
        self.1.drain(..)
    }

    pub fn engine_cmds(&self) -> &[EngineCmd] {
        &self.1
    }

    pub fn iter(&self) -> impl Iterator<Item = &(ShardId, ShardMsg)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A client's message on its way to its channel's owner. The payload is
/// borrowed, so a locally owned publish is read where it was decoded.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    pub token: ChannelToken,
    pub from: ConnId,
    /// Whether the sender receives its own broadcast.
    pub echo: bool,
    /// A direct message's recipient.
    pub to: Option<Uid>,
    pub payload: &'a [u8],
}

/// An HTTP push on its way to its channel's owner.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    pub channel: &'a str,
    pub payload: &'a [u8],
    /// Where the answer goes, and which request it answers.
    pub home: ShardId,
    pub request: u64,
}

pub struct Owner {
    router: Router,
    /// Channels this shard owns.
    registry: Registry,
    /// Maps connection numbers to uids and back; same key on every shard.
    cipher: UidCipher,
    /// Messages stamped so far (the local part of message ids).
    messages_issued: u64,
    /// Every shard's counters; the owner writes only its own shard's.
    metrics: Metrics,
    /// Compresses a message once for every member that negotiated
    /// permessage-deflate (reset per message: no context takeover).
    compressor: Compressor,
    /// Envelopes smaller than this go out plain (`compression_min_bytes`).
    compression_min_bytes: usize,
    /// The cluster's part (`--backplane`); `None` on a single node.
    cluster: Option<Box<ClusterSide>>,
}

impl Owner {
    pub fn new(router: Router, cipher: UidCipher, metrics: Metrics) -> Owner {
        Owner {
            registry: Registry::new(router),
            router,
            cipher,
            messages_issued: 0,
            metrics,
            cluster: None,
            compressor: Compressor::default(),
            compression_min_bytes: usize::MAX,
        }
    }

    /// An owner that is part of a cluster.
    pub fn with_cluster(mut self, cluster: ClusterSide) -> Owner {
        self.cluster = Some(Box::new(cluster));
        self
    }

    /// Compresses envelopes of at least `min_bytes` for the members that
    /// negotiated deflate (none do unless `compression` is on).
    pub fn with_compression_min_bytes(self, min_bytes: usize) -> Owner {
        Owner {
            compression_min_bytes: min_bytes,
            ..self
        }
    }

    /// The compressed frame of `payload` with `opcode`, whatever its size
    /// (the echo endpoint); counted.
    pub fn compress_always(
        &mut self,
        payload: &[u8],
        opcode: tungstenite::protocol::frame::coding::OpCode,
        bits: u8,
    ) -> Option<Bytes> {
        self.metrics[self.router.here().index()]
            .messages_compressed
            .incr();
        self.compressor.frame_always(payload, opcode, bits)
    }

    /// The compressed frame of `payload` for a member with window `bits`,
    /// if it is big enough and shrinks; counted.
    pub fn compress(&mut self, payload: &[u8], bits: u8) -> Option<Bytes> {
        compress(
            &mut self.compressor,
            self.compression_min_bytes,
            &self.metrics[self.router.here().index()],
            payload,
            bits,
        )
    }

    fn counters(&self) -> &ShardCounters {
        &self.metrics[self.router.here().index()]
    }

    /// Channels this shard owns now.
    pub fn channels(&self) -> usize {
        self.registry.len()
    }

    /// Adds a member (or refuses its join key): the joiner's home gets
    /// `Joined` with its own event, every home with members the others'
    /// event. See `join.rs` for the whole handshake.
    pub fn join(&mut self, request: JoinRequest, now_ms: u64, fx: &mut Effects) {
        if self.cluster.is_some() {
            return self.cluster_join(request, now_ms, fx);
        }
        let JoinRequest {
            channel,
            conn,
            uid,
            alias_json,
            announce,
            list,
            keys,
            deflate,
        } = request;
        let home = self.router.home_of(conn);
        let existing = self.registry.find(&channel).map(|(_, ch)| &ch.keys);
        let (may_send, keys_if_new) = match decide(existing, keys) {
            Decision::Refuse => {
                let why = UpgradeRefusal::JoinKey;
                self.counters().count_upgrade_refused(why);
                return fx.send(home, ShardMsg::JoinRefused { conn, why });
            }
            Decision::Admit {
                may_send,
                keys_if_new,
            } => (may_send, keys_if_new),
        };
        let member = Member {
            uid,
            alias_json,
            announce,
            deflate,
        };
        let (token, ch) = self.registry.join(&channel, conn, member, keys_if_new);
        let counters = &self.metrics[self.router.here().index()];
        let min_bytes = self.compression_min_bytes;
        let total = ch.total();
        let me = who(&ch.members[&conn]);
        let users = list.then(|| {
            ch.members
                .values()
                .filter(|m| m.announce || m.uid == uid)
                .map(who)
        });
        let own_event = envelope::join_self(me, users, total, now_ms);
        let own_event = match deflate {
            Some(bits) => compress(
                &mut self.compressor,
                min_bytes,
                counters,
                payload_of(&own_event),
                bits,
            )
            .unwrap_or(own_event),
            None => own_event,
        };
        // The joiner's home learns of the join before the others' event, so
        // the event excludes the joiner explicitly.
        fx.send(
            home,
            ShardMsg::Joined {
                conn,
                token,
                frame: own_event,
                may_send,
            },
        );
        if total > 1 {
            let frame = envelope::join(announce.then_some(me), total, now_ms);
            let frames = frames_for(&mut self.compressor, min_bytes, counters, frame, ch);
            fan_out(fx, ch, token, frames, Some(conn));
        }
        self.counters().channels.set(self.registry.len() as u64);
    }

    /// Stamps and builds a member's message once, then fans it out (or
    /// sends it to its one recipient). A publish that crossed its sender's
    /// leave is dropped.
    pub fn publish(&mut self, publish: Publish<'_>, now_ms: u64, fx: &mut Effects) {
        let Some(ch) = self.registry.get(publish.token) else {
            return;
        };
        let Some(sender) = ch.members.get(&publish.from) else {
            return;
        };
        if self.cluster.is_some() {
            let node = self.cluster.as_ref().map_or(0, |c| c.node());
            let (buf, len) = cluster::message_id(node, &mut self.messages_issued, self.router);
            let frame = envelope::message(&buf[..len], Some(who(sender)), now_ms, publish.payload);
            self.counters().messages_published.incr();
            let (token, from, to) = (publish.token, publish.from, publish.to);
            if let Some(frame) = self.cluster_publish(token, from, to, frame, now_ms, fx) {
                let except = (!publish.echo).then_some(from);
                if let Some(ch) = self.registry.get(token) {
                    let frames = frames_here!(self, ch, frame);
                    fan_out(fx, ch, token, frames, except);
                }
            }
            return;
        }
        let (buf, len) = next_message_id(&mut self.messages_issued, self.router);
        let frame = envelope::message(&buf[..len], Some(who(sender)), now_ms, publish.payload);
        let counters = &self.metrics[self.router.here().index()];
        counters.messages_published.incr();
        let min_bytes = self.compression_min_bytes;
        let Some(uid) = publish.to else {
            let except = (!publish.echo).then_some(publish.from);
            let frames = frames_for(&mut self.compressor, min_bytes, counters, frame, ch);
            return fan_out(fx, ch, publish.token, frames, except);
        };
        let target = self.cipher.conn(&uid);
        let (conn, frame) = if let Some(member) = ch.members.get(&target) {
            let frame = match member.deflate {
                Some(bits) => compress(
                    &mut self.compressor,
                    min_bytes,
                    counters,
                    payload_of(&frame),
                    bits,
                )
                .unwrap_or(frame),
                None => frame,
            };
            (target, frame)
        } else {
            counters.error_events.incr();
            counters.count_drop(DropReason::NoRecipient);
            let text = DropReason::no_recipient(uid.as_str());
            (publish.from, envelope::error(&text, now_ms))
        };
        fx.send(self.router.home_of(conn), ShardMsg::Deliver { conn, frame });
    }

    /// An HTTP push: relayed like a message but without `uid` and `alias`;
    /// answers its home shard with the number of members it went to.
    pub fn push(&mut self, push: Push<'_>, now_ms: u64, fx: &mut Effects) {
        if self.cluster.is_some() {
            return self.cluster_push(push, now_ms, fx);
        }
        let recipients = match self.registry.find(push.channel) {
            None => 0,
            Some((token, ch)) => {
                let (buf, len) = next_message_id(&mut self.messages_issued, self.router);
                let frame = envelope::message(&buf[..len], None, now_ms, push.payload);
                let counters = &self.metrics[self.router.here().index()];
                counters.messages_published.incr();
                let min_bytes = self.compression_min_bytes;
                let frames = frames_for(&mut self.compressor, min_bytes, counters, frame, ch);
                fan_out(fx, ch, token, frames, None);
                ch.total() as u32
            }
        };
        fx.send(
            push.home,
            ShardMsg::Pushed {
                request: push.request,
                recipients: Some(recipients),
            },
        );
    }

    /// Removes a member; the others get its leave event. The channel and
    /// its ephemeral keys go when it empties.
    /// Frees what a crowd made the channel tables grow to (the sweep).
    pub fn shrink_idle(&mut self) {
        self.registry.shrink_idle();
    }

    pub fn leave(&mut self, token: ChannelToken, conn: ConnId, now_ms: u64, fx: &mut Effects) {
        if self.cluster.is_some() {
            return self.cluster_leave(token, conn, now_ms, fx);
        }
        let Some((member, after)) = self.registry.leave(token, conn) else {
            return;
        };
        if let Some(ch) = after {
            let shown = member.announce.then(|| who(&member));
            let frame = envelope::leave(shown, ch.total(), now_ms);
            let counters = &self.metrics[self.router.here().index()];
            let min_bytes = self.compression_min_bytes;
            let frames = frames_for(&mut self.compressor, min_bytes, counters, frame, ch);
            fan_out(fx, ch, token, frames, None);
        }
        self.counters().channels.set(self.registry.len() as u64);
    }
}

fn who(member: &Member) -> Who<'_> {
    Who {
        uid: &member.uid,
        alias_json: member.alias_json.as_deref(),
    }
}

/// One `FanOut` per home shard with members: each delivers `frames` to
/// its local members but `except` (a connection id matches on its own home
/// shard only). The last home takes `frames` itself: one reference count
/// update fewer per message.
fn fan_out(
    fx: &mut Effects,
    ch: &Channel,
    token: ChannelToken,
    frames: Frames,
    except: Option<ConnId>,
) {
    let mut homes = ch.home_shards().peekable();
    while let Some(home) = homes.next() {
        let frames = match homes.peek() {
            Some(_) => frames.clone(),
            None => return fx.send(home, fan_out_msg(token, frames, except)),
        };
        fx.send(home, fan_out_msg(token, frames, except));
    }
}

fn fan_out_msg(token: ChannelToken, frames: Frames, except: Option<ConnId>) -> ShardMsg {
    ShardMsg::FanOut {
        token,
        frames,
        except,
    }
}

/// A channel's frames for one message: the plain frame, and the compressed
/// one built once when a member negotiated deflate and it pays.
fn frames_for(
    compressor: &mut Compressor,
    min_bytes: usize,
    counters: &ShardCounters,
    plain: Bytes,
    ch: &Channel,
) -> Frames {
    let deflated = ch
        .deflate_window()
        .and_then(|bits| compress(compressor, min_bytes, counters, payload_of(&plain), bits));
    Frames { plain, deflated }
}

/// Compresses a text payload once, if it is at least `min_bytes` and
/// shrinks; counted in `messages_compressed`.
fn compress(
    compressor: &mut Compressor,
    min_bytes: usize,
    counters: &ShardCounters,
    payload: &[u8],
    bits: u8,
) -> Option<Bytes> {
    if payload.len() < min_bytes {
        return None;
    }
    counters.messages_compressed.incr();
    compressor.text_frame(payload, bits)
}

/// The next message id: base62 of this owner's counter interleaved by
/// shard, on the stack.
fn next_message_id(issued: &mut u64, router: Router) -> ([u8; 12], usize) {
    let mut buf = [0; 12];
    let len = message_id(*issued, router.here(), router.shard_count(), &mut buf);
    *issued += 1;
    (buf, len)
}

#[cfg(test)]
#[path = "owner_tests.rs"]
mod tests;
