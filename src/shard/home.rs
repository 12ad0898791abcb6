//! The home side of a shard: the connections it accepted, which of them
//! are members of which channel instance (its subscriber lists), the joins
//! and pushes waiting for an owner's answer. Everything a `FanOut` or a
//! `Deliver` from an owner needs to reach a socket's queue. Never touched
//! from another shard; never waits.

use super::message::Frames;
use crate::conn::handle::{ConnHandle, Delivery};
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
    /// Local members of each channel instance, whoever owns it.
    subscribers: RefCell<AHashMap<ChannelToken, Vec<Rc<ConnHandle>>>>,
    /// Connections waiting for their owner to answer the join.
    pending_joins: RefCell<AHashMap<ConnId, Rc<ConnHandle>>>,
    /// Connections accepted so far (the local part of `ConnId`).
    conns_issued: Cell<u64>,
    /// Push requests waiting for their channel's owner to answer.
    pending_pushes: RefCell<AHashMap<u64, Rc<ReplySlot<u32>>>>,
    /// Push requests issued so far (their ids).
    pushes_issued: Cell<u64>,
}

impl Home {
    pub fn new(router: Router, cipher: UidCipher) -> Home {
        Home {
            router,
            cipher,
            conns: RefCell::default(),
            subscribers: RefCell::default(),
            pending_joins: RefCell::default(),
            conns_issued: Cell::new(0),
            pending_pushes: RefCell::default(),
            pushes_issued: Cell::new(0),
        }
    }

    /// A new connection: its id, uid and handle, registered here.
    pub fn open_conn(&self, echo: bool, queued_bytes_max: usize, now_ms: u64) -> Rc<ConnHandle> {
        let local = self.conns_issued.get();
        self.conns_issued.set(local + 1);
        let id = self.router.conn_id(local);
        let conn = Rc::new(ConnHandle::new(
            id,
            self.cipher.uid(id),
            echo,
            queued_bytes_max,
            now_ms,
        ));
        self.conns.borrow_mut().insert(id, conn.clone());
        conn
    }

    /// The connection is gone: forget it.
    pub fn close_conn(&self, conn: &ConnHandle) {
        self.conns.borrow_mut().remove(&conn.id());
    }

    pub fn open_conns(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Calls `f` for every open connection (the sweep, the drain).
    pub fn for_each_conn(&self, mut f: impl FnMut(&ConnHandle)) {
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
        for conn in list {
            let frame = frames.for_member(conn.deflate_window().is_some());
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
    pub fn await_push(&self) -> (u64, Rc<ReplySlot<u32>>) {
        let request = self.pushes_issued.get();
        self.pushes_issued.set(request + 1);
        let slot = Rc::new(ReplySlot::default());
        self.pending_pushes
            .borrow_mut()
            .insert(request, slot.clone());
        (request, slot)
    }

    /// The owner answered a push (ignored if it already gave up).
    pub fn pushed(&self, request: u64, recipients: u32) {
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
