//! The channels a shard owns: members, per-shard member counts, totals.
//! Lives in the owner shard's `Owner` only and is never touched from
//! another shard.

use crate::access::Keys;
use crate::id::{ChannelToken, ConnId, ShardId, Uid};
use crate::router::Router;
use ahash::AHashMap;

/// A member as the owner knows it.
#[derive(Debug)]
pub struct Member {
    pub uid: Uid,
    /// The alias as a JSON string literal, when the member set one.
    pub alias_json: Option<Box<str>>,
    /// Whether join/leave events and `users` lists name this member.
    pub announce: bool,
    /// The window of its compressed frames, if it negotiated deflate.
    pub deflate: Option<u8>,
}

/// One channel on its owner.
#[derive(Debug)]
pub struct Channel {
    pub name: Box<str>,
    /// Every connection on the channel, wherever its home shard is.
    pub members: AHashMap<ConnId, Member>,
    /// Members per home shard: the fan-out visits only shards with members.
    pub members_per_shard: Vec<u32>,
    /// Members that negotiated deflate, by window bits (index: bits - 9).
    pub deflate_members: [u32; 7],
    /// Ephemeral keys its creator set (docs/PROTOCOL.md section 6); held until
    /// the channel empties. Empty on channels a namespace covered.
    pub keys: Keys,
}

impl Channel {
    pub fn total(&self) -> usize {
        self.members.len()
    }

    /// Whether some member takes plain frames.
    pub fn has_plain_members(&self) -> bool {
        self.deflate_members.iter().sum::<u32>() < self.members.len() as u32
    }

    /// The window a frame compressed for every deflate member may use (the
    /// smallest any asked for); `None` when no member negotiated deflate.
    pub fn deflate_window(&self) -> Option<u8> {
        let smallest = self.deflate_members.iter().position(|&n| n > 0)?;
        Some(smallest as u8 + 9)
    }

    /// The shards that have at least one member.
    pub fn home_shards(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.members_per_shard
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, _)| ShardId(i as u16))
    }
}

/// Every channel this shard owns, by name (for joins) and by token (for
/// everything after the join).
pub struct Registry {
    /// The owner shard's placement: issues tokens, finds members' homes.
    router: Router,
    /// Live channels by name, for joins.
    by_name: AHashMap<Box<str>, ChannelToken>,
    /// Live channels by token, for everything after the join.
    channels: AHashMap<ChannelToken, Channel>,
    /// Channel instances created so far (the local part of tokens).
    tokens_issued: u64,
}

impl Registry {
    pub fn new(router: Router) -> Registry {
        Registry {
            router,
            by_name: AHashMap::new(),
            channels: AHashMap::new(),
            tokens_issued: 0,
        }
    }

    /// Frees what a crowd of channels made the tables grow to, once most
    /// of them are gone (the sweep).
    pub fn shrink_idle(&mut self) {
        crate::shard::shrink_map(&mut self.by_name);
        crate::shard::shrink_map(&mut self.channels);
    }

    /// The live channel called `name`, if any.
    pub fn find(&self, name: &str) -> Option<(ChannelToken, &Channel)> {
        let token = *self.by_name.get(name)?;
        Some((token, &self.channels[&token]))
    }

    /// Adds `conn` to the channel `name`, creating the channel (with
    /// `keys_if_new` as its ephemeral keys) if needed.
    pub fn join(
        &mut self,
        name: &str,
        conn: ConnId,
        member: Member,
        keys_if_new: Keys,
    ) -> (ChannelToken, &Channel) {
        let token = match self.by_name.get(name) {
            Some(&token) => token,
            None => {
                // Tokens are unique across shards and name their owner.
                let token = self.router.channel_token(self.tokens_issued);
                self.tokens_issued += 1;
                self.by_name.insert(name.into(), token);
                self.channels.insert(
                    token,
                    Channel {
                        name: name.into(),
                        members: AHashMap::new(),
                        members_per_shard: vec![0; self.router.shard_count()],
                        deflate_members: [0; 7],
                        keys: keys_if_new,
                    },
                );
                token
            }
        };
        let channel = self
            .channels
            .get_mut(&token)
            .expect("by_name and channels agree");
        let deflate = member.deflate;
        if channel.members.insert(conn, member).is_none() {
            channel.members_per_shard[self.router.home_of(conn).index()] += 1;
            if let Some(bits) = deflate {
                channel.deflate_members[deflate_index(bits)] += 1;
            }
        }
        (token, channel)
    }

    /// Removes `conn`; returns the member and the channel as it is after the
    /// leave (`None` when the channel emptied and was retired).
    pub fn leave(
        &mut self,
        token: ChannelToken,
        conn: ConnId,
    ) -> Option<(Member, Option<&Channel>)> {
        let channel = self.channels.get_mut(&token)?;
        let member = channel.members.remove(&conn)?;
        channel.members_per_shard[self.router.home_of(conn).index()] -= 1;
        if let Some(bits) = member.deflate {
            channel.deflate_members[deflate_index(bits)] -= 1;
        }
        if channel.members.is_empty() {
            let channel = self.channels.remove(&token).expect("present");
            self.by_name.remove(&channel.name);
            return Some((member, None));
        }
        Some((member, self.channels.get(&token)))
    }

    // ---- for a cluster's owner (shard::cluster): a channel lives while
    // this node has members or joins in flight on it, so creating,
    // adding, removing and retiring are separate steps. ----

    /// The channel called `name`, created empty if it is not live.
    pub fn open(&mut self, name: &str) -> ChannelToken {
        if let Some(&token) = self.by_name.get(name) {
            return token;
        }
        let token = self.router.channel_token(self.tokens_issued);
        self.tokens_issued += 1;
        self.by_name.insert(name.into(), token);
        self.channels.insert(
            token,
            Channel {
                name: name.into(),
                members: AHashMap::new(),
                members_per_shard: vec![0; self.router.shard_count()],
                deflate_members: [0; 7],
                keys: Keys::default(),
            },
        );
        token
    }

    /// Adds `conn` to a live channel.
    pub fn add(&mut self, token: ChannelToken, conn: ConnId, member: Member) -> Option<&Channel> {
        let channel = self.channels.get_mut(&token)?;
        let deflate = member.deflate;
        if channel.members.insert(conn, member).is_none() {
            channel.members_per_shard[self.router.home_of(conn).index()] += 1;
            if let Some(bits) = deflate {
                channel.deflate_members[deflate_index(bits)] += 1;
            }
        }
        Some(channel)
    }

    /// Removes `conn` without retiring the channel when it empties.
    pub fn remove(&mut self, token: ChannelToken, conn: ConnId) -> Option<Member> {
        let channel = self.channels.get_mut(&token)?;
        let member = channel.members.remove(&conn)?;
        channel.members_per_shard[self.router.home_of(conn).index()] -= 1;
        if let Some(bits) = member.deflate {
            channel.deflate_members[deflate_index(bits)] -= 1;
        }
        Some(member)
    }

    /// Forgets a channel.
    pub fn retire(&mut self, token: ChannelToken) {
        if let Some(channel) = self.channels.remove(&token) {
            self.by_name.remove(&channel.name);
        }
    }

    pub fn get(&self, token: ChannelToken) -> Option<&Channel> {
        self.channels.get(&token)
    }

    /// Channels this shard owns now.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}

/// A window's slot in `Channel::deflate_members` (9 to 15 bits).
fn deflate_index(bits: u8) -> usize {
    (bits.clamp(9, 15) - 9) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(c: u8) -> Member {
        Member {
            uid: Uid([c; 6]),
            alias_json: None,
            announce: true,
            deflate: None,
        }
    }

    #[test]
    fn join_creates_then_reuses_the_channel() {
        let mut r = Registry::new(Router::new(ShardId(1), 2));
        let (t1, ch) = r.join("room", ConnId(0), member(b'a'), Keys::default());
        assert_eq!(ch.total(), 1);
        assert_eq!(Router::new(ShardId(0), 2).token_owner(t1), ShardId(1));
        let (t2, ch) = r.join("room", ConnId(3), member(b'b'), Keys::default());
        assert_eq!(t1, t2);
        assert_eq!(ch.total(), 2);
        assert_eq!(
            ch.home_shards().collect::<Vec<_>>(),
            vec![ShardId(0), ShardId(1)]
        );
    }

    #[test]
    fn last_leave_retires_the_channel_and_a_new_join_gets_a_new_token() {
        let mut r = Registry::new(Router::new(ShardId(0), 2));
        let (t1, _) = r.join("room", ConnId(0), member(b'a'), Keys::default());
        let (_, after) = r.leave(t1, ConnId(0)).unwrap();
        assert!(after.is_none());
        assert!(r.is_empty());
        let (t2, _) = r.join("room", ConnId(2), member(b'a'), Keys::default());
        assert_ne!(t1, t2);
    }

    #[test]
    fn ephemeral_keys_are_the_creators_and_go_with_the_channel() {
        let mut r = Registry::new(Router::new(ShardId(0), 1));
        let keys = Keys {
            join_key: Some("a".into()),
            send_key: None,
        };
        let (t, _) = r.join("room", ConnId(0), member(b'a'), keys);
        let later = Keys {
            join_key: Some("b".into()),
            send_key: None,
        };
        r.join("room", ConnId(1), member(b'b'), later);
        let held = &r.find("room").unwrap().1.keys;
        assert!(held.may_join(Some("a")) && !held.may_join(Some("b")));
        r.leave(t, ConnId(0));
        r.leave(t, ConnId(1));
        assert!(r.find("room").is_none());
    }

    #[test]
    fn leave_of_a_stranger_changes_nothing() {
        let mut r = Registry::new(Router::new(ShardId(0), 2));
        let (t, _) = r.join("room", ConnId(0), member(b'a'), Keys::default());
        assert!(r.leave(t, ConnId(9)).is_none());
        assert_eq!(r.get(t).unwrap().total(), 1);
    }

    #[test]
    fn per_shard_counts_follow_joins_and_leaves() {
        let mut r = Registry::new(Router::new(ShardId(0), 2));
        let (t, _) = r.join("room", ConnId(1), member(b'a'), Keys::default());
        r.join("room", ConnId(2), member(b'b'), Keys::default());
        r.leave(t, ConnId(1));
        assert_eq!(
            r.get(t).unwrap().home_shards().collect::<Vec<_>>(),
            vec![ShardId(0)]
        );
    }
}
