//! The home side of a shard: the connections it accepted, which of them
//! are members of which channel instance (its subscriber lists), the joins
//! and pushes waiting for an owner's answer. Everything a `FanOut` or a
//! `Deliver` from an owner needs to reach a socket's queue. Never touched
//! from another shard; never waits.

use super::message::Frames;
use crate::conn::handle::{ConnHandle, Delivery, QueuedFrame};
use crate::conn::outbox::Outbox;
use crate::id::{ChannelToken, ConnId, UidCipher};
use crate::router::Router;
use crate::wake::WakerSlot;
use ahash::AHashMap;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

pub struct Home {
    router: Router,
    /// Maps connection numbers to uids; same key on every shard.
    cipher: UidCipher,
    /// Every WebSocket connection this shard accepted and has not dropped.
    conns: RefCell<AHashMap<ConnId, Rc<ConnHandle>>>,
    /// The connections with frames to send this round.
    outbox: Rc<Outbox>,
    /// Local members of each channel instance, whoever owns it.
    subscribers: RefCell<AHashMap<ChannelToken, Vec<Rc<ConnHandle>>>>,
    /// Connections waiting for their owner to answer the join.
    pending_joins: RefCell<AHashMap<ConnId, Rc<ConnHandle>>>,
    /// Connections accepted so far (the local part of `ConnId`).
    conns_issued: Cell<u64>,
    /// Push requests waiting for their channel's owner to answer.
    pending_pushes: RefCell<AHashMap<u64, Rc<ReplySlot<Option<u32>>>>>,
    /// Push requests issued so far (their ids).
    pushes_issued: Cell<u64>,
    /// In a cluster: the uid numbers the engine handed this shard.
    uid_blocks: Option<UidBlocks>,
}

/// uid numbers from the engine (`INCRBY`), unique across the cluster: the
/// block in use and the next one, asked for when half is used.
#[derive(Default)]
struct UidBlocks {
    next: Cell<u64>,
    end: Cell<u64>,
    spare: Cell<Option<u64>>,
    asked: Cell<bool>,
}

impl UidBlocks {
    fn take(&self) -> Option<u64> {
        if self.next.get() >= self.end.get() {
            let end = self.spare.take()?;
            self.next.set(end - crate::cluster::UID_BLOCK);
            self.end.set(end);
        }
        let n = self.next.get();
        self.next.set(n + 1);
        Some(n)
    }

    fn left(&self) -> u64 {
        let spare = self.spare.get().map_or(0, |_| crate::cluster::UID_BLOCK);
        self.end.get().saturating_sub(self.next.get()) + spare
    }
}

impl Home {
    pub fn new(router: Router, cipher: UidCipher) -> Home {
        Home {
            router,
            cipher,
            conns: RefCell::default(),
            outbox: Rc::default(),
            subscribers: RefCell::default(),
            pending_joins: RefCell::default(),
            conns_issued: Cell::new(0),
            pending_pushes: RefCell::default(),
            pushes_issued: Cell::new(0),
            uid_blocks: None,
        }
    }

    /// A home in a cluster: uids come from the engine's blocks.
    pub fn with_uid_blocks(mut self) -> Home {
        self.uid_blocks = Some(UidBlocks::default());
        self
    }

    /// Whether a new member can get a uid (always, on one node).
    pub fn has_uids(&self) -> bool {
        self.uid_blocks.as_ref().is_none_or(|b| b.left() > 0)
    }

    /// Whether to ask the engine for a block now (once, when less than
    /// half a block is left).
    pub fn wants_uid_block(&self) -> bool {
        let Some(b) = &self.uid_blocks else {
            return false;
        };
        let want = !b.asked.get() && b.left() < crate::cluster::UID_BLOCK / 2;
        b.asked.set(b.asked.get() || want);
        want
    }

    /// The engine answered: a block ending at `end`.
    pub fn add_uid_block(&self, end: u64) {
        let Some(b) = &self.uid_blocks else {
            return;
        };
        b.asked.set(false);
        if end < crate::cluster::UID_BLOCK {
            return;
        }
        if b.next.get() >= b.end.get() {
            b.next.set(end - crate::cluster::UID_BLOCK);
            b.end.set(end);
        } else {
            b.spare.set(Some(end));
        }
    }

    /// The engine was lost: a block asked for may never come.
    pub fn forget_uid_request(&self) {
        if let Some(b) = &self.uid_blocks {
            b.asked.set(false);
        }
    }

    /// A new connection: its id, uid and handle, registered here.
    pub fn open_conn(&self, echo: bool, queued_bytes_max: usize, now_ms: u64) -> Rc<ConnHandle> {
        let local = self.conns_issued.get();
        self.conns_issued.set(local + 1);
        let id = self.router.conn_id(local);
        // In a cluster a member's uid comes from the engine's numbers (the
        // echo endpoint, which joins nothing, may use its own).
        let number = self.uid_blocks.as_ref().and_then(UidBlocks::take);
        let uid = match number {
            Some(n) => self.cipher.uid(ConnId(n % crate::limits::UID_SPACE)),
            None => self.cipher.uid(id),
        };
        let outbox = self.outbox.clone();
        let conn = Rc::new(ConnHandle::new(
            id,
            uid,
            echo,
            queued_bytes_max,
            now_ms,
            outbox,
        ));
        self.conns.borrow_mut().insert(id, conn.clone());
        conn
    }

    /// The connection is gone: forget it.
    pub fn close_conn(&self, conn: &ConnHandle) {
        self.conns.borrow_mut().remove(&conn.id());
    }

    /// Frees what a crowd made the connection tables grow to, once it left
    /// (the sweep).
    pub fn shrink_idle(&self) {
        shrink_map(&mut self.conns.borrow_mut());
        shrink_map(&mut self.pending_joins.borrow_mut());
        shrink_map(&mut self.subscribers.borrow_mut());
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn open_conns(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Calls `f` for every open connection (the sweep, the drain).
    pub fn for_each_conn(&self, mut f: impl FnMut(&Rc<ConnHandle>)) {
        for conn in self.conns.borrow().values() {
            f(conn);
        }
    }

    /// Delivers `frame` to one connection, if it is still here.
    pub fn deliver_to(&self, conn: ConnId, frame: Bytes) -> Delivery {
        let target = self.conns.borrow().get(&conn).cloned();
        match target {
            Some(target) => target.deliver(frame),
            None => Delivery::Ending,
        }
    }

    /// Delivers `frames` to every local member of `token` but `except`, each
    /// the variant it negotiated; returns how many queued it.
    pub fn fan_out(&self, token: ChannelToken, frames: &Frames, except: Option<ConnId>) -> u64 {
        let subs = self.subscribers.borrow();
        let Some(list) = subs.get(&token) else {
            return 0;
        };
        let mut delivered = 0;
        let plain = QueuedFrame::new(frames.plain.clone());
        let deflated = frames.deflated.clone().map(QueuedFrame::new);
        for conn in list {
            let frame = match (&deflated, conn.deflate_window().is_some()) {
                (Some(deflated), true) => deflated,
                _ => &plain,
            };
            if Some(conn.id()) != except && conn.deliver(frame.clone()) == Delivery::Queued {
                delivered += 1;
            }
        }
        delivered
    }

    pub fn subscribe(&self, token: ChannelToken, conn: &Rc<ConnHandle>) {
        let mut subs = self.subscribers.borrow_mut();
        let list = subs.entry(token).or_default();
        conn.set_subscriber_slot(list.len());
        list.push(conn.clone());
    }

    pub fn unsubscribe(&self, token: ChannelToken, conn: &ConnHandle) {
        let mut subs = self.subscribers.borrow_mut();
        let Some(list) = subs.get_mut(&token) else {
            return;
        };
        let slot = conn.subscriber_slot();
        debug_assert!(list.get(slot).is_some_and(|c| c.id() == conn.id()));
        list.swap_remove(slot);
        if let Some(moved) = list.get(slot) {
            moved.set_subscriber_slot(slot);
        }
        if list.is_empty() {
            subs.remove(&token);
        }
    }

    /// `conn` waits for its owner's answer to its join.
    pub fn await_join(&self, conn: &Rc<ConnHandle>) {
        self.pending_joins
            .borrow_mut()
            .insert(conn.id(), conn.clone());
    }

    /// The owner answered `conn`'s join (or it is ending): no longer
    /// pending.
    pub fn joined(&self, conn: ConnId) -> Option<Rc<ConnHandle>> {
        self.pending_joins.borrow_mut().remove(&conn)
    }

    /// A new push request: its id and the slot its answer lands in.
    pub fn await_push(&self) -> (u64, Rc<ReplySlot<Option<u32>>>) {
        let request = self.pushes_issued.get();
        self.pushes_issued.set(request + 1);
        let slot = Rc::new(ReplySlot::default());
        self.pending_pushes
            .borrow_mut()
            .insert(request, slot.clone());
        (request, slot)
    }

    /// The owner answered a push (ignored if it already gave up).
    pub fn pushed(&self, request: u64, recipients: Option<u32>) {
        if let Some(slot) = self.pending_pushes.borrow_mut().remove(&request) {
            slot.set(recipients);
        }
    }

    /// A push stopped waiting (answered or timed out).
    pub fn forget_push(&self, request: u64) {
        self.pending_pushes.borrow_mut().remove(&request);
    }
}

/// A one-time answer from another shard, awaited by one task here.
pub struct ReplySlot<T> {
    value: Cell<Option<T>>,
    /// The push task waiting for its owner's answer.
    waiting: WakerSlot,
}

impl<T> Default for ReplySlot<T> {
    fn default() -> Self {
        ReplySlot {
            value: Cell::new(None),
            waiting: WakerSlot::default(),
        }
    }
}

impl<T> ReplySlot<T> {
    pub fn set(&self, value: T) {
        self.value.set(Some(value));
        self.waiting.wake();
    }

    pub async fn wait(&self) -> T {
        self.waiting.until(|| self.value.take()).await
    }
}

/// Shrinks a map to fit once it holds less than half of its capacity
/// (and the difference is worth a reallocation).
pub fn shrink_map<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
) {
    if map.capacity() > 2 * map.len() + 256 {
        map.shrink_to_fit();
    }
}
