//! The owner side of a shard: the channels that hash to it. Joins, leaves
//! and publishes for them arrive here (in place or forwarded), and this is
//! the one place where a channel's order is decided: the owner stamps `id`
//! and `date`, builds each frame once, and fans it out to the home shards
//! of the members. Runs only on the owner shard; never waits.

use super::forward::{JoinRequest, KeyCheck, ShardMsg};
use super::Shard;
use crate::access::Keys;
use crate::id::{message_id, ChannelToken, ConnId, ShardId, Uid};
use crate::pubsub::envelope::{self, Who};
use crate::pubsub::registry::Member;
use bytes::Bytes;

impl Shard {
    pub(super) fn owner_join(&self, request: JoinRequest) {
        let JoinRequest {
            channel,
            conn,
            alias_json,
            announce,
            list,
            keys,
        } = request;
        let mut registry = self.registry.borrow_mut();
        // Keys first: a refused join neither creates nor changes the channel.
        let (may_send, keys_if_new) = match keys {
            KeyCheck::Namespace { may_send } => (may_send, Keys::default()),
            KeyCheck::Ephemeral(offered) => match registry.find(&channel) {
                Some((_, ch)) if !ch.keys.may_join(offered.join_key.as_deref()) => {
                    drop(registry);
                    self.counters()
                        .count_upgrade_refused(crate::metrics::UpgradeRefusal::JoinKey);
                    return self.send(conn.home(self.shards), ShardMsg::JoinRefused { conn });
                }
                Some((_, ch)) => (
                    ch.keys.may_send(offered.send_key.as_deref()),
                    Keys::default(),
                ),
                // The creator sets the keys it offered, and may send.
                None => (true, offered),
            },
        };
        let uid = self.cipher.uid(conn);
        let date = envelope::now_ms();
        let member = Member {
            uid,
            alias_json,
            announce,
        };
        let (token, ch) = registry.join(&channel, conn, member, keys_if_new);
        let total = ch.total();
        let me = &ch.members[&conn];
        let me = Who {
            uid: &me.uid,
            alias_json: me.alias_json.as_deref(),
        };
        let users = list.then(|| {
            ch.members
                .values()
                .filter(|m| m.announce || m.uid == uid)
                .map(|m| Who {
                    uid: &m.uid,
                    alias_json: m.alias_json.as_deref(),
                })
        });
        let own_event = envelope::join_self(me, users, total, date);
        let others_event = (total > 1).then(|| envelope::join(announce.then_some(me), total, date));
        let homes: Vec<ShardId> = ch.home_shards().collect();
        self.counters().channels.set(registry.len() as u64);
        drop(registry);

        // The joiner's home learns of the join before the others' event, so
        // the event excludes the joiner explicitly.
        self.send(
            conn.home(self.shards),
            ShardMsg::Joined {
                conn,
                token,
                frame: own_event,
                may_send,
            },
        );
        if let Some(frame) = others_event {
            self.fan_out(homes, token, &frame, Some(conn));
        }
    }

    pub(super) fn owner_publish(
        &self,
        token: ChannelToken,
        from: ConnId,
        echo: bool,
        to: Option<Uid>,
        payload: &[u8],
    ) {
        let registry = self.registry.borrow();
        let Some(ch) = registry.get(token) else {
            return;
        };
        // A publish that crossed its sender's leave is dropped.
        let Some(sender) = ch.members.get(&from) else {
            return;
        };
        let date = envelope::now_ms();
        let id = self.next_message_id();
        let id = id.as_bytes();
        let who = Who {
            uid: &sender.uid,
            alias_json: sender.alias_json.as_deref(),
        };
        let frame = envelope::message(id, Some(who), date, payload);
        self.counters().messages_published.incr();
        match to {
            None => self.fan_out(ch.home_shards(), token, &frame, (!echo).then_some(from)),
            Some(uid) => {
                let target = self.cipher.conn(&uid);
                if ch.members.contains_key(&target) {
                    self.send(
                        target.home(self.shards),
                        ShardMsg::Deliver {
                            conn: target,
                            frame,
                        },
                    );
                } else {
                    let text = format!("no user {} on this channel", uid.as_str());
                    self.counters().error_events.incr();
                    self.counters()
                        .count_drop(crate::metrics::Drop::NoRecipient);
                    let frame = envelope::error(&text, date);
                    self.send(
                        from.home(self.shards),
                        ShardMsg::Deliver { conn: from, frame },
                    );
                }
            }
        }
    }

    /// An HTTP push: relayed like a message but without `uid` and `alias`;
    /// answers the home shard with the number of members it went to.
    pub(super) fn owner_push(&self, channel: &str, payload: &[u8], home: ShardId, request: u64) {
        let registry = self.registry.borrow();
        let recipients = match registry.find(channel) {
            None => 0,
            Some((token, ch)) => {
                let id = self.next_message_id();
                let frame = envelope::message(id.as_bytes(), None, envelope::now_ms(), payload);
                self.counters().messages_published.incr();
                self.fan_out(ch.home_shards(), token, &frame, None);
                ch.total() as u32
            }
        };
        drop(registry);
        self.send(
            home,
            ShardMsg::Pushed {
                request,
                recipients,
            },
        );
    }

    /// The next message id, base62 of this owner's counter interleaved by
    /// shard.
    fn next_message_id(&self) -> MessageId {
        let mut id = MessageId([0; 12], 0);
        let issued = self.messages_issued.get();
        self.messages_issued.set(issued + 1);
        id.1 = message_id(issued, self.id, self.shards, &mut id.0);
        id
    }

    pub(super) fn owner_leave(&self, token: ChannelToken, conn: ConnId) {
        let mut registry = self.registry.borrow_mut();
        let Some((member, after)) = registry.leave(token, conn) else {
            return;
        };
        let fan_out = after.map(|ch| {
            let who = Who {
                uid: &member.uid,
                alias_json: member.alias_json.as_deref(),
            };
            let frame = envelope::leave(
                member.announce.then_some(who),
                ch.total(),
                envelope::now_ms(),
            );
            (frame, ch.home_shards().collect::<Vec<_>>())
        });
        self.counters().channels.set(registry.len() as u64);
        drop(registry);
        if let Some((frame, homes)) = fan_out {
            self.fan_out(homes, token, &frame, None);
        }
    }

    /// Sends `frame` to every home shard of the channel's members, once per
    /// shard; each delivers it to its local members but `except` (a
    /// connection id matches on its own home shard only).
    fn fan_out(
        &self,
        homes: impl IntoIterator<Item = ShardId>,
        token: ChannelToken,
        frame: &Bytes,
        except: Option<ConnId>,
    ) {
        for home in homes {
            let frame = frame.clone();
            self.send(
                home,
                ShardMsg::FanOut {
                    token,
                    frame,
                    except,
                },
            );
        }
    }
}

/// A message id on the stack: base62 bytes and their length.
struct MessageId([u8; 12], usize);

impl MessageId {
    fn as_bytes(&self) -> &[u8] {
        &self.0[..self.1]
    }
}
