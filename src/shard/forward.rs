//! Forwarding between shards: the messages that cross, and one bounded
//! link per peer shard. Each link batches what the shard produced during a
//! turn into one queue slot, so the receiving shard wakes once per batch.
//!
//! The queues are glommio `shared_channel`s (lock-free SPSC rings that wake
//! a parked executor through its eventfd), wired pairwise by `server.rs`.
//! We do not use glommio's `MeshBuilder`: in 0.9 it is `Send` while holding
//! an `Rc`, and it orders peers by executor id rather than by our shard
//! index.
//!
//! Overflow policy: when a peer's queue is full, messages wait in the
//! link's backlog; past `forward_backlog_max` they are dropped and counted
//! (`forward_drops`). A full queue never blocks the shard.

use crate::id::{ChannelToken, ConnId, Uid};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// A message from one shard to another.
#[derive(Debug)]
pub enum ShardMsg {
    /// Home to owner: add a member to a channel.
    Join(JoinRequest),
    /// Owner to home: the join is done; `frame` is the joiner's own join
    /// event, the first frame it receives.
    Joined {
        conn: ConnId,
        token: ChannelToken,
        frame: Bytes,
    },
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
    /// Owner to home: deliver `frame` to every local member of the channel
    /// except `except`.
    FanOut {
        token: ChannelToken,
        frame: Bytes,
        except: Option<ConnId>,
    },
    /// Owner to home: deliver `frame` to one connection (a direct message
    /// or an error event).
    Deliver { conn: ConnId, frame: Bytes },
}

#[derive(Debug)]
pub struct JoinRequest {
    pub channel: Box<str>,
    pub conn: ConnId,
    pub alias_json: Option<Box<str>>,
    pub announce: bool,
    pub list: bool,
}

/// What crosses a queue slot: everything a shard forwarded to one peer
/// since that peer's forwarder last ran.
pub type Batch = Vec<ShardMsg>;

/// The sending side of one peer: a backlog and the forwarder task's waker.
#[derive(Default)]
pub struct PeerLink {
    backlog: RefCell<Vec<ShardMsg>>,
    forwarder: Cell<Option<Waker>>,
}

impl PeerLink {
    /// Queues `msg` for the peer; `false` when the backlog is full and the
    /// message was dropped.
    pub fn push(&self, msg: ShardMsg, backlog_max: usize) -> bool {
        let mut backlog = self.backlog.borrow_mut();
        if backlog.len() >= backlog_max {
            return false;
        }
        backlog.push(msg);
        if backlog.len() == 1 {
            if let Some(w) = self.forwarder.take() {
                w.wake();
            }
        }
        true
    }

    /// Waits for messages, then takes all of them as one batch.
    pub async fn next_batch(&self) -> Batch {
        poll_fn(|cx| {
            let mut backlog = self.backlog.borrow_mut();
            if backlog.is_empty() {
                self.forwarder.set(Some(cx.waker().clone()));
                return Poll::Pending;
            }
            let capacity = backlog.len().min(1024);
            Poll::Ready(std::mem::replace(
                &mut *backlog,
                Vec::with_capacity(capacity),
            ))
        })
        .await
    }
}
