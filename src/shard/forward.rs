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
//! link's backlog. Past `FORWARD_CONGESTED` messages the shard raises its
//! congestion flag and every shard's socket readers stop reading (TCP
//! pushes back on publishers) until it drains (`Shard::forward_room`);
//! past `forward_backlog_max`, messages are dropped and counted
//! (`messages_dropped{reason="forward_backlog_full"}`). Queue receivers never wait, so shards cannot
//! deadlock on each other, and a full queue never blocks the shard.

use crate::access::Keys;
use crate::id::{ChannelToken, ConnId, ShardId, Uid};
use crate::limits::{FORWARD_BATCH_MAX, FORWARD_CONGESTED};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
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
        /// Whether the connection may send (its send key, if one is needed).
        may_send: bool,
    },
    /// Owner to home: the join key did not open the channel's ephemeral
    /// keys; the connection gets a 403 instead of its 101.
    JoinRefused { conn: ConnId },
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
    /// Home to owner: an HTTP push (PROTOCOL.md section 7), already checked.
    Push {
        channel: Box<str>,
        payload: Bytes,
        home: ShardId,
        request: u64,
    },
    /// Owner to home: the push went to this many members.
    Pushed { request: u64, recipients: u32 },
}

#[derive(Debug)]
pub struct JoinRequest {
    pub channel: Box<str>,
    pub conn: ConnId,
    pub alias_json: Option<Box<str>>,
    pub announce: bool,
    pub list: bool,
    pub keys: KeyCheck,
}

/// What the owner checks about a join's keys.
#[derive(Debug)]
pub enum KeyCheck {
    /// A namespace covers the channel: the home shard checked its join key
    /// and decided whether the connection may send. Ephemeral keys are
    /// never set or checked.
    Namespace { may_send: bool },
    /// No namespace covers it: the owner checks these offered keys against
    /// the channel's ephemeral keys, or sets them when the join creates it.
    Ephemeral(Keys),
}

/// What crosses a queue slot: up to `FORWARD_BATCH_MAX` messages a shard
/// forwarded to one peer, in order.
pub type Batch = Vec<ShardMsg>;

/// The sending side of one peer: a backlog, the forwarder task's waker, and
/// the readers waiting for the backlog to shrink.
#[derive(Default)]
pub struct PeerLink {
    backlog: RefCell<VecDeque<ShardMsg>>,
    forwarder: Cell<Option<Waker>>,
    room_waiters: RefCell<Vec<Waker>>,
}

impl PeerLink {
    /// Queues `msg` for the peer and returns the backlog's new length;
    /// `None` when the backlog is full and the message was dropped.
    pub fn push(&self, msg: ShardMsg, backlog_max: usize) -> Option<usize> {
        let mut backlog = self.backlog.borrow_mut();
        if backlog.len() >= backlog_max {
            return None;
        }
        backlog.push_back(msg);
        if backlog.len() == 1 {
            if let Some(w) = self.forwarder.take() {
                w.wake();
            }
        }
        Some(backlog.len())
    }

    pub fn backlog_len(&self) -> usize {
        self.backlog.borrow().len()
    }

    /// Waits for messages, then takes up to `FORWARD_BATCH_MAX` of them as
    /// one batch (the cap keeps a full queue's memory bounded).
    pub async fn next_batch(&self) -> Batch {
        let batch = poll_fn(|cx| {
            let mut backlog = self.backlog.borrow_mut();
            if backlog.is_empty() {
                self.forwarder.set(Some(cx.waker().clone()));
                return Poll::Pending;
            }
            let n = backlog.len().min(FORWARD_BATCH_MAX);
            Poll::Ready(backlog.drain(..n).collect::<Batch>())
        })
        .await;
        if self.backlog.borrow().len() < FORWARD_CONGESTED {
            for w in self.room_waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
        batch
    }

    /// Resolves once the backlog is below the congestion mark. Socket
    /// readers wait on it before reading more, so a publisher faster than a
    /// peer shard is slowed by TCP instead of losing messages.
    pub async fn room(&self) {
        poll_fn(|cx| {
            if self.backlog.borrow().len() < FORWARD_CONGESTED {
                return Poll::Ready(());
            }
            self.room_waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// A one-time answer from another shard, awaited by one task here.
pub struct ReplySlot<T> {
    value: Cell<Option<T>>,
    waker: Cell<Option<Waker>>,
}

impl<T> Default for ReplySlot<T> {
    fn default() -> Self {
        ReplySlot {
            value: Cell::new(None),
            waker: Cell::new(None),
        }
    }
}

impl<T> ReplySlot<T> {
    pub fn set(&self, value: T) {
        self.value.set(Some(value));
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    pub async fn wait(&self) -> T {
        std::future::poll_fn(|cx| match self.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}
