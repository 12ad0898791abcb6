//! The owner's cluster side, continued: what the engine sends back (join
//! answers, the stream of messages and events, member tables after a
//! reconnect) and how each becomes deliveries, in the order rules 2, 3 and
//! 6 of `shard::cluster` give. Sans-IO like the rest of `Owner`.

use super::super::{fan_out, Effects, Owner};
use super::{who, PendingJoin, Remote, Replica};
use crate::cluster::secret::ChannelHash;
use crate::cluster::wire::{self, Item};
use crate::cluster::{
    AssertCmd, EngineCmd, EngineEvent, HeldKeys, JoinReply, MemberRecord, Snapshot,
};
use crate::id::{ChannelToken, ConnId, Uid};
use crate::outcome::UpgradeRefusal;
use crate::pubsub::envelope::{self, Who};
use crate::pubsub::registry::{Channel, Member};
use crate::shard::message::ShardMsg;
use ahash::AHashMap;
use bytes::Bytes;

impl Owner {
    /// What the engine told this shard's owner.
    pub fn engine_event(&mut self, event: EngineEvent, now_ms: u64, fx: &mut Effects) {
        match event {
            EngineEvent::Stream { h, payload } => {
                if let Some(token) = self.token_of(&h) {
                    self.stream(token, payload, now_ms, fx);
                }
            }
            EngineEvent::Joined { h, conn, reply } => {
                if let Some(token) = self.token_of(&h) {
                    self.join_answered(token, conn, reply, now_ms, fx);
                }
            }
            EngineEvent::Pushed {
                home,
                request,
                recipients,
            } => fx.send(
                home,
                ShardMsg::Pushed {
                    request,
                    recipients,
                },
            ),
            EngineEvent::Asserted { h, snapshot } => {
                if let Some(token) = self.token_of(&h) {
                    self.asserted(token, snapshot, now_ms, fx);
                }
            }
            EngineEvent::Up { .. } => self.reassert_all(now_ms, fx),
            EngineEvent::Down => self.cut_off(fx),
            EngineEvent::UidBlock { .. } => {}
        }
    }

    fn token_of(&self, h: &ChannelHash) -> Option<ChannelToken> {
        self.cluster.as_ref()?.by_hash.get(h).copied()
    }

    fn join_answered(
        &mut self,
        token: ChannelToken,
        conn: ConnId,
        reply: JoinReply,
        now_ms: u64,
        fx: &mut Effects,
    ) {
        let side = self.cluster.as_mut().expect("cluster mode");
        let Some(replica) = side.replicas.get_mut(&token) else {
            return;
        };
        let Some(i) = replica.pending.iter().position(|p| p.conn == conn) else {
            return;
        };
        let why = match reply {
            JoinReply::Refused => UpgradeRefusal::JoinKey,
            JoinReply::Unavailable => UpgradeRefusal::BackplaneUnavailable,
            JoinReply::Admitted {
                seq,
                total,
                may_send,
                held,
                members,
            } => {
                replica.pending[i].answer = Some((seq, total, may_send));
                replica.keys = held;
                if let Some(table) = members {
                    if !replica.ready {
                        self.apply_table(token, table, now_ms, fx, false);
                    }
                }
                return self.settle(token, now_ms, fx);
            }
        };
        let p = replica.pending.remove(i);
        if !replica.ready && p.asked_table {
            replica.table_asked = false;
            if !replica.pending.is_empty() {
                // The others' joins still need the table: ask for it alone.
                replica.table_asked = true;
                fx.engine(EngineCmd::Assert(Box::new(AssertCmd {
                    h: replica.h,
                    members: None,
                    held: HeldKeys::default(),
                    date_ms: now_ms,
                })));
            }
        }
        if why == UpgradeRefusal::JoinKey {
            self.counters().count_upgrade_refused(why);
        }
        fx.send(
            self.router.home_of(p.conn),
            ShardMsg::JoinRefused { conn: p.conn, why },
        );
        self.retire_if_empty(token, fx);
    }

    /// Replaces the replica by the engine's member table at `table.seq`;
    /// with `diff`, this node's members get the joins and leaves that make
    /// up the difference (rule 6).
    fn apply_table(
        &mut self,
        token: ChannelToken,
        table: Snapshot,
        now_ms: u64,
        fx: &mut Effects,
        diff: bool,
    ) {
        let side = self.cluster.as_mut().expect("cluster mode");
        let Some(replica) = side.replicas.get_mut(&token) else {
            return;
        };
        let mut remote = AHashMap::with_capacity(table.members.len());
        for (_node, record) in table.members {
            let mine = replica.local.contains_key(&record.uid)
                || replica.pending.iter().any(|p| p.uid == record.uid);
            if !mine {
                let r = Remote {
                    announce: record.announce,
                    alias_json: record.alias_json,
                };
                remote.insert(record.uid, r);
            }
        }
        let old = std::mem::replace(&mut replica.remote, remote);
        replica.applied = table.seq;
        replica.keys = table.held;
        replica.ready = true;
        replica.table_asked = false;
        if !diff {
            return;
        }
        let mut frames = Vec::new();
        let mut total = replica.local.len() + old.len();
        for (uid, r) in &old {
            if !replica.remote.contains_key(uid) {
                total -= 1;
                let shown = r.announce.then(|| who(uid, r.alias_json.as_deref()));
                frames.push(envelope::leave(shown, total, now_ms));
            }
        }
        for (uid, r) in &replica.remote {
            if !old.contains_key(uid) {
                total += 1;
                let shown = r.announce.then(|| who(uid, r.alias_json.as_deref()));
                frames.push(envelope::join(shown, total, now_ms));
            }
        }
        if let Some(ch) = self.registry.get(token) {
            for frame in frames {
                let frames = frames_here!(self, ch, frame);
                fan_out(fx, ch, token, frames, None);
            }
        }
    }

    /// Rule 2: members are made of joins that are answered and applied,
    /// in seq order; then the payloads that waited are handled.
    fn settle(&mut self, token: ChannelToken, now_ms: u64, fx: &mut Effects) {
        loop {
            let side = self.cluster.as_mut().expect("cluster mode");
            let Some(replica) = side.replicas.get_mut(&token) else {
                return;
            };
            let ready = replica.ready;
            let next = replica
                .pending
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    p.answer
                        .is_some_and(|(seq, ..)| ready && seq <= replica.applied)
                })
                .min_by_key(|(_, p)| p.answer.map(|(seq, ..)| seq))
                .map(|(i, _)| i);
            if let Some(i) = next {
                let p = replica.pending.remove(i);
                replica.paused = false;
                self.admit(token, p, now_ms, fx);
                continue;
            }
            if !replica.ready || replica.paused {
                return;
            }
            let Some(payload) = replica.held_back.pop_front() else {
                return;
            };
            self.stream(token, payload, now_ms, fx);
        }
    }

    /// A join becomes a member: its own event, built here.
    fn admit(&mut self, token: ChannelToken, p: PendingJoin, now_ms: u64, fx: &mut Effects) {
        let (_, total, may_send) = p.answer.expect("answered");
        let side = self.cluster.as_mut().expect("cluster mode");
        let Some(replica) = side.replicas.get_mut(&token) else {
            return;
        };
        replica.local.insert(p.uid, p.conn);
        replica.remote.remove(&p.uid);
        let member = Member {
            uid: p.uid,
            alias_json: p.alias_json,
            announce: p.announce,
            deflate: p.deflate,
        };
        let Some(ch) = self.registry.add(token, p.conn, member) else {
            return;
        };
        let me = &ch.members[&p.conn];
        let me = who(&me.uid, me.alias_json.as_deref());
        let replica = &self.cluster.as_ref().expect("cluster mode").replicas[&token];
        let frame = if p.list {
            envelope::join_self(me, Some(users(ch, replica, &p.uid)), total as usize, now_ms)
        } else {
            envelope::join_self(me, None::<std::iter::Empty<Who>>, total as usize, now_ms)
        };
        let frame = frame_for_member!(self, p.deflate, frame);
        let home = self.router.home_of(p.conn);
        let msg = ShardMsg::Joined {
            conn: p.conn,
            token,
            frame,
            may_send,
        };
        fx.send(home, msg);
    }

    /// Rule 3 and 4: one payload from the stream.
    fn stream(&mut self, token: ChannelToken, payload: Bytes, now_ms: u64, fx: &mut Effects) {
        let side = self.cluster.as_mut().expect("cluster mode");
        let me = side.me();
        let Some(replica) = side.replicas.get_mut(&token) else {
            return;
        };
        if !replica.ready || replica.paused {
            replica.held_back.push_back(payload);
            return;
        }
        let Some(ch) = self.registry.get(token) else {
            return;
        };
        match wire::decode(payload) {
            None => {}
            Some(Item::Message { frame, .. }) => {
                let frames = frames_here!(self, ch, frame);
                fan_out(fx, ch, token, frames, None);
            }
            Some(Item::Direct { to, frame, .. }) => {
                if let Some(&conn) = replica.local.get(&to) {
                    let deflate = ch.members.get(&conn).and_then(|m| m.deflate);
                    let frame = frame_for_member!(self, deflate, frame);
                    fx.send(self.router.home_of(conn), ShardMsg::Deliver { conn, frame });
                }
            }
            Some(Item::Join {
                event,
                announce,
                alias_json,
                frame,
            }) => {
                if event.seq <= replica.applied {
                    return;
                }
                replica.applied = event.seq;
                let pending = (event.node == me)
                    .then(|| replica.pending.iter().position(|p| p.uid == event.uid))
                    .flatten();
                if pending.is_none() && !replica.local.contains_key(&event.uid) {
                    let r = Remote {
                        announce,
                        alias_json,
                    };
                    replica.remote.insert(event.uid, r);
                }
                let frames = frames_here!(self, ch, frame);
                fan_out(fx, ch, token, frames, None);
                if let Some(i) = pending {
                    if replica.pending[i].answer.is_none() {
                        replica.paused = true;
                    } else {
                        self.settle(token, now_ms, fx);
                    }
                }
            }
            Some(Item::Leave { event, frame }) => {
                if event.seq <= replica.applied {
                    return;
                }
                replica.applied = event.seq;
                replica.remote.remove(&event.uid);
                let reaped_alive = replica.local.contains_key(&event.uid);
                let frames = frames_here!(self, ch, frame);
                fan_out(fx, ch, token, frames, None);
                if reaped_alive {
                    // This node was taken for dead while its member was
                    // here: put it back (its join goes out again).
                    self.assert_channel(token, now_ms, fx);
                }
            }
        }
    }

    /// Rule 6: tells the engine exactly who this node has on `token`.
    fn assert_channel(&mut self, token: ChannelToken, now_ms: u64, fx: &mut Effects) {
        let side = self.cluster.as_mut().expect("cluster mode");
        let Some(replica) = side.replicas.get_mut(&token) else {
            return;
        };
        let Some(ch) = self.registry.get(token) else {
            return;
        };
        let members = ch
            .members
            .values()
            .map(|m| MemberRecord {
                uid: m.uid,
                announce: m.announce,
                alias_json: m.alias_json.clone(),
            })
            .collect();
        replica.ready = false;
        replica.paused = false;
        fx.engine(EngineCmd::Assert(Box::new(AssertCmd {
            h: replica.h,
            members: Some(members),
            held: replica.keys.clone(),
            date_ms: now_ms,
        })));
    }

    fn asserted(&mut self, token: ChannelToken, table: Snapshot, now_ms: u64, fx: &mut Effects) {
        self.apply_table(token, table, now_ms, fx, true);
        self.settle(token, now_ms, fx);
    }

    /// Connected again: every channel re-asserts its members, and the
    /// channels left while cut off lose this node's records.
    fn reassert_all(&mut self, now_ms: u64, fx: &mut Effects) {
        let side = self.cluster.as_mut().expect("cluster mode");
        for h in std::mem::take(&mut side.orphans) {
            if side.by_hash.contains_key(&h) {
                continue; // joined again since: its assert covers it
            }
            fx.engine(EngineCmd::Assert(Box::new(AssertCmd {
                h,
                members: Some(Vec::new()),
                held: HeldKeys::default(),
                date_ms: now_ms,
            })));
        }
        let tokens: Vec<ChannelToken> = side.replicas.keys().copied().collect();
        for token in tokens {
            let h = self.cluster.as_ref().expect("cluster mode").replicas[&token].h;
            fx.engine(EngineCmd::Subscribe(h));
            self.assert_channel(token, now_ms, fx);
        }
    }

    /// Cut off: joins in flight get 503; members stay, and are served
    /// locally until the engine is back.
    fn cut_off(&mut self, fx: &mut Effects) {
        let side = self.cluster.as_mut().expect("cluster mode");
        let mut refused = Vec::new();
        let tokens: Vec<ChannelToken> = side.replicas.keys().copied().collect();
        for replica in side.replicas.values_mut() {
            refused.extend(replica.pending.drain(..).map(|p| p.conn));
            replica.paused = false;
            replica.table_asked = false;
            if !replica.ready {
                // Never got its table: serve what is known.
                replica.ready = true;
                replica.held_back.clear();
            }
        }
        for conn in refused {
            let why = UpgradeRefusal::BackplaneUnavailable;
            fx.send(
                self.router.home_of(conn),
                ShardMsg::JoinRefused { conn, why },
            );
        }
        for token in tokens {
            self.retire_if_empty(token, fx);
        }
    }

    /// Joins the engine did not answer in time get 503.
    pub fn cluster_sweep(&mut self, now_ms: u64, fx: &mut Effects) {
        let Some(side) = self.cluster.as_mut() else {
            return;
        };
        let mut late: Vec<(ChannelToken, ConnId)> = Vec::new();
        for (&token, replica) in side.replicas.iter_mut() {
            let before = replica.pending.len();
            replica.pending.retain(|p| {
                let keep = p.answer.is_some() || p.deadline_ms > now_ms;
                if !keep {
                    late.push((token, p.conn));
                }
                keep
            });
            if replica.pending.len() < before {
                // A pause waited for one of them (its answer was lost).
                replica.paused = false;
            }
        }
        for &(_, conn) in &late {
            let why = UpgradeRefusal::BackplaneUnavailable;
            fx.send(
                self.router.home_of(conn),
                ShardMsg::JoinRefused { conn, why },
            );
        }
        for (token, _) in late {
            self.settle(token, now_ms, fx);
            self.retire_if_empty(token, fx);
        }
    }

    /// Every channel asserts its members again (after an event for this
    /// shard was dropped).
    pub fn cluster_resync(&mut self, now_ms: u64, fx: &mut Effects) {
        if self.cluster.is_some() {
            self.reassert_all(now_ms, fx);
        }
    }
}

/// The `users` of a joiner's own event: every announced member of the
/// cluster, the joiner itself included.
fn users<'a>(ch: &'a Channel, replica: &'a Replica, me: &'a Uid) -> impl Iterator<Item = Who<'a>> {
    let local = ch
        .members
        .values()
        .filter(move |m| m.announce || m.uid == *me)
        .map(|m| who(&m.uid, m.alias_json.as_deref()));
    let remote = replica
        .remote
        .iter()
        .filter(|(_, r)| r.announce)
        .map(|(uid, r)| who(uid, r.alias_json.as_deref()));
    local.chain(remote)
}
