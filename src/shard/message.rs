//! What crosses between shards: the messages a home shard and an owner
//! shard send each other. Each goes where `router` says, through
//! `Shard::send`: this shard's own queue, or a peer's link (`links`).

use super::join::JoinRequest;
use crate::id::{ChannelToken, ConnId, ShardId, Uid};
use crate::outcome::UpgradeRefusal;
use bytes::Bytes;

/// A message from one shard to another (or to itself).
#[derive(Debug)]
pub enum ShardMsg {
    /// Home to owner: add a member to a channel. Boxed: joins are rare
    /// next to the messages, which should not move its bytes around.
    Join(Box<JoinRequest>),
    /// Owner to home: the join is done; `frame` is the joiner's own join
    /// event, the first frame it receives.
    Joined {
        conn: ConnId,
        token: ChannelToken,
        frame: Bytes,
        /// Whether the connection may send (its send key, if one is needed).
        may_send: bool,
    },
    /// Owner to home: the join key did not open the channel's ephemeral
    /// keys (403), or, in a cluster, the engine could not be asked (503);
    /// the connection gets that status instead of its 101.
    JoinRefused { conn: ConnId, why: UpgradeRefusal },
    /// Home to owner: a client published a message.
    Publish {
        token: ChannelToken,
        from: ConnId,
        echo: bool,
        to: Option<Uid>,
        payload: Bytes,
    },
    /// Home to owner: a member left (however its connection ended).
    Leave { token: ChannelToken, conn: ConnId },
    /// Peer to peer, at shutdown: the sender's drain is over, and every
    /// leave it forwarded came before this (a link is FIFO). A shard stops
    /// only once every peer said so, so an owner still runs the leaves of
    /// members homed elsewhere (in a cluster, their leaves go out before
    /// the node's goodbye).
    Drained,
    /// Owner to home: deliver `frames` to every local member of the
    /// channel except `except`, each the variant it negotiated.
    FanOut {
        token: ChannelToken,
        frames: Frames,
        except: Option<ConnId>,
    },
    /// Owner to home: deliver `frame` to one connection (a direct message
    /// or an error event).
    Deliver { conn: ConnId, frame: Bytes },
    /// Home to owner: an HTTP push (docs/PROTOCOL.md section 7), already
    /// checked.
    Push {
        channel: Box<str>,
        payload: Bytes,
        home: ShardId,
        request: u64,
    },
    /// Owner to home: the push went to this many members (`None`: the
    /// cluster's engine could not be asked).
    Pushed {
        request: u64,
        recipients: Option<u32>,
    },
}

/// One message as frames: built once by its owner, plain, and compressed
/// once (RSV1) when a member that negotiated permessage-deflate takes it
/// and it is worth it. Both are shared bytes: delivering is a refcount.
#[derive(Debug, Clone)]
pub struct Frames {
    pub plain: Bytes,
    pub deflated: Option<Bytes>,
}

impl Frames {
    pub fn plain(plain: Bytes) -> Frames {
        Frames {
            plain,
            deflated: None,
        }
    }

    /// The frame for one member, moved out.
    pub fn into_member(self, deflate: bool) -> Bytes {
        match (self.deflated, deflate) {
            (Some(deflated), true) => deflated,
            (_, _) => self.plain,
        }
    }
}

/// What crosses a queue slot: up to `FORWARD_BATCH_MAX` messages a shard
/// forwarded to one peer, in order.
pub type Batch = Vec<ShardMsg>;
