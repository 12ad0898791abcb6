//! A shard: one glommio executor pinned to one cpu, and everything it owns:
//! the connections it accepted, the channels that hash to it (`registry`),
//! its subscriber lists, its links to the other shards and its counters.
//! Nothing here is shared with another shard; other shards reach it only
//! through `ShardMsg`s on the forward queues.
//!
//! Borrow discipline: no `RefCell` borrow is held across an `.await`, and a
//! fan-out never touches the registry, so the owner may fan out while it
//! holds it.

mod admission;
pub mod forward;
pub mod listener;
mod owner;
mod run;
mod stop;
mod sweep;

use crate::access::Namespaces;
use crate::config::Config;
use crate::conn::handle::{ConnHandle, Pushed};
use crate::error::CloseReason;
use crate::http::JoinOptions;
use crate::id::{ChannelToken, ConnId, ShardId, Uid, UidCipher};
use crate::limits::FORWARD_CONGESTED;
use crate::metrics::{Metrics, ShardCounters};
use crate::pubsub::envelope;
use crate::pubsub::json::JsonValidator;
use crate::pubsub::registry::{token_owner, Registry};
use crate::ratelimit::{BanList, IpBuckets, Rate};
use crate::router::{route, Route};
use ahash::AHashMap;
use bytes::Bytes;
use forward::{JoinRequest, KeyCheck, PeerLink, ShardMsg};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use admission::Admission;
use forward::ReplySlot;
pub use run::{run, ShardWiring, CONTROL_RELOAD, CONTROL_SHUTDOWN};

/// Every shard's congestion flag (see `Shard::forward_room`).
pub type Congestion = Arc<[AtomicBool]>;

/// An accepted socket being served; see `Shard::track_socket`.
pub struct SocketGuard(Rc<Shard>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.0.sockets_open.set(self.0.sockets_open.get() - 1);
        self.0.trim.closed();
    }
}

pub struct Shard {
    id: ShardId,
    shards: usize,
    config: Arc<Config>,
    /// Maps connection numbers to uids and back; same key on every shard.
    cipher: UidCipher,
    /// Every shard's counters; this shard writes only `metrics[id]`.
    metrics: Metrics,
    /// Channels this shard owns.
    registry: RefCell<Registry>,
    /// Local members of each channel instance, whoever owns it.
    subscribers: RefCell<AHashMap<ChannelToken, Vec<Rc<ConnHandle>>>>,
    /// Every WebSocket connection this shard accepted and has not dropped.
    conns: RefCell<AHashMap<ConnId, Rc<ConnHandle>>>,
    /// Connections waiting for their owner to confirm the join.
    pending_joins: RefCell<AHashMap<ConnId, Rc<ConnHandle>>>,
    /// One link per other shard (`None` at our own index).
    peers: Vec<Option<PeerLink>>,
    /// Where every connection's reads land (see `conn::session`): borrowed
    /// only between a read completing and its frames being handled.
    read_buffer: RefCell<Vec<u8>>,
    /// JSON validation scratch space, reused for every message.
    validator: RefCell<JsonValidator>,
    /// Connections accepted so far (the local part of `ConnId`).
    conns_issued: Cell<u64>,
    /// Messages stamped so far (the local part of message ids).
    messages_issued: Cell<u64>,
    /// Coarse clock in ms since `started`, advanced by the sweep.
    clock_ms: Cell<u64>,
    started: Instant,
    /// Set once shutdown began: upgrades refused, `/health` answers 503.
    draining: Cell<bool>,
    /// Accepted sockets still being served (HTTP phase or WebSocket); the
    /// drain waits for them so none is left behind unanswered.
    sockets_open: Cell<usize>,
    /// When the sweep hands freed memory back to the kernel.
    trim: sweep::TrimPolicy,
    /// One flag per shard, each written only by its shard: set while that
    /// shard has a congested forward link (see `forward_room`).
    congested: Congestion,
    /// Raised when the shard stops for good; its long-lived tasks end.
    stop: stop::StopSignal,
    /// The namespaces in force: this shard's snapshot, swapped whole when
    /// the operator reloads.
    namespaces: RefCell<Arc<Namespaces>>,
    /// Per-IP upgrade buckets, push buckets and bans: this shard's own.
    upgrade_buckets: RefCell<IpBuckets>,
    push_buckets: RefCell<IpBuckets>,
    bans: RefCell<BanList>,
    /// The per-connection message rate (sessions keep the buckets).
    message_rate: Rate,
    /// Push requests waiting for their channel's owner to answer.
    pending_pushes: RefCell<AHashMap<u64, Rc<ReplySlot<u32>>>>,
    /// Push requests issued so far (their ids).
    pushes_issued: Cell<u64>,
}

impl Shard {
    pub fn new(
        id: ShardId,
        shards: usize,
        config: Arc<Config>,
        cipher: UidCipher,
        metrics: Metrics,
        congested: Congestion,
        namespaces: Arc<Namespaces>,
    ) -> Shard {
        use crate::limits::{BAN_LIST_ENTRIES_MAX, IP_BUCKETS_ENTRIES_MAX};
        let upgrade_rate = Rate::new(config.upgrades_per_ip_per_sec, config.upgrades_per_ip_burst);
        let push_rate = Rate::new(config.pushes_per_ip_per_sec, config.pushes_per_ip_burst);
        let message_rate = Rate::new(
            config.messages_per_conn_per_sec,
            config.messages_per_conn_burst,
        );
        Shard {
            id,
            shards,
            config,
            cipher,
            metrics,
            registry: RefCell::new(Registry::new(id, shards)),
            subscribers: RefCell::default(),
            conns: RefCell::default(),
            pending_joins: RefCell::default(),
            peers: (0..shards)
                .map(|i| (i != id.index()).then(PeerLink::default))
                .collect(),
            read_buffer: RefCell::new(vec![0; crate::limits::SHARD_READ_BUFFER_BYTES]),
            validator: RefCell::default(),
            conns_issued: Cell::new(0),
            messages_issued: Cell::new(0),
            clock_ms: Cell::new(0),
            started: Instant::now(),
            draining: Cell::new(false),
            sockets_open: Cell::new(0),
            trim: sweep::TrimPolicy::default(),
            congested,
            stop: stop::StopSignal::default(),
            namespaces: RefCell::new(namespaces),
            upgrade_buckets: RefCell::new(IpBuckets::new(upgrade_rate, IP_BUCKETS_ENTRIES_MAX)),
            push_buckets: RefCell::new(IpBuckets::new(push_rate, IP_BUCKETS_ENTRIES_MAX)),
            bans: RefCell::new(BanList::new(BAN_LIST_ENTRIES_MAX)),
            message_rate,
            pending_pushes: RefCell::default(),
            pushes_issued: Cell::new(0),
        }
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn counters(&self) -> &ShardCounters {
        &self.metrics[self.id.index()]
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    pub fn clock_ms(&self) -> u64 {
        self.clock_ms.get()
    }

    pub fn read_buffer(&self) -> &RefCell<Vec<u8>> {
        &self.read_buffer
    }

    pub fn validator(&self) -> &RefCell<JsonValidator> {
        &self.validator
    }

    /// Nanoseconds since the shard started: the clock of its buckets.
    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    pub fn message_rate(&self) -> Rate {
        self.message_rate
    }

    /// The namespaces in force now.
    pub fn namespaces(&self) -> Arc<Namespaces> {
        self.namespaces.borrow().clone()
    }

    /// Puts a reloaded namespace table in force for joins and pushes from
    /// now on; connections already joined keep what they were granted.
    pub fn set_namespaces(&self, namespaces: Arc<Namespaces>) {
        *self.namespaces.borrow_mut() = namespaces;
    }

    // ---- connections (home side) ----

    /// A new connection: its id, uid and handle, registered with the shard.
    pub fn open_conn(&self, echo: bool) -> Rc<ConnHandle> {
        let local = self.conns_issued.get();
        self.conns_issued.set(local + 1);
        let id = ConnId::new(local, self.id, self.shards);
        let conn = Rc::new(ConnHandle::new(
            id,
            self.cipher.uid(id),
            echo,
            self.config.outgoing_queue_bytes_max,
            self.clock_ms(),
        ));
        self.conns.borrow_mut().insert(id, conn.clone());
        let c = self.counters();
        c.connections_open.incr();
        c.connections_accepted.incr();
        conn
    }

    /// The connection is gone: forget it and count why.
    pub fn close_conn(&self, conn: &ConnHandle, reason: CloseReason) {
        self.conns.borrow_mut().remove(&conn.id);
        let c = self.counters();
        c.connections_open.sub(1);
        c.count_close(reason);
    }

    /// Asks the channel's owner to add `conn`; the answer arrives as
    /// `Joined`, which queues the join event and wakes the connection, or
    /// `JoinRefused`. `keys` says what the owner still has to check.
    pub fn join(
        &self,
        channel: &str,
        conn: &Rc<ConnHandle>,
        options: &JoinOptions,
        keys: KeyCheck,
    ) {
        self.pending_joins
            .borrow_mut()
            .insert(conn.id, conn.clone());
        let request = JoinRequest {
            channel: channel.into(),
            conn: conn.id,
            alias_json: options.alias.as_deref().map(envelope::alias_json),
            announce: options.announce,
            list: options.list,
            keys,
        };
        match route(channel, self.id, self.shards) {
            Route::Local => self.owner_join(request),
            Route::Forward(owner) => self.forward(owner, ShardMsg::Join(request)),
        }
    }

    /// Routes a client's message to its channel's owner. A local owner
    /// reads the payload in place; only a forward copies it.
    pub fn publish(&self, conn: &ConnHandle, to: Option<Uid>, payload: &[u8]) {
        let Some(token) = conn.token.get() else {
            return;
        };
        match token_owner(token, self.shards) {
            owner if owner == self.id => self.owner_publish(token, conn.id, conn.echo, to, payload),
            owner => self.forward(
                owner,
                ShardMsg::Publish {
                    token,
                    from: conn.id,
                    echo: conn.echo,
                    to,
                    payload: Bytes::copy_from_slice(payload),
                },
            ),
        }
    }

    /// Publishes an HTTP push through the channel's owner; resolves to the
    /// number of members it went to, or `None` if the owner did not answer
    /// in time (its shard is overloaded or stopping).
    pub async fn push(&self, channel: &str, payload: Bytes) -> Option<u32> {
        let request = self.pushes_issued.get();
        self.pushes_issued.set(request + 1);
        let slot = Rc::new(ReplySlot::default());
        self.pending_pushes
            .borrow_mut()
            .insert(request, slot.clone());
        let msg = ShardMsg::Push {
            channel: channel.into(),
            payload,
            home: self.id,
            request,
        };
        match route(channel, self.id, self.shards) {
            Route::Local => self.handle(msg),
            Route::Forward(owner) => self.forward(owner, msg),
        }
        let wait = std::time::Duration::from_millis(crate::limits::PUSH_ANSWER_TIMEOUT_MS);
        let answer = glommio::timer::timeout(wait, async { Ok(slot.wait().await) }).await;
        self.pending_pushes.borrow_mut().remove(&request);
        answer.ok()
    }

    /// The connection is ending: stop delivering to it now and tell the
    /// owner, so its leave goes out at once.
    pub fn leave(&self, conn: &ConnHandle) {
        self.pending_joins.borrow_mut().remove(&conn.id);
        if let Some(token) = conn.token.take() {
            self.unsubscribe(token, conn);
            self.send(
                token_owner(token, self.shards),
                ShardMsg::Leave {
                    token,
                    conn: conn.id,
                },
            );
        }
    }

    /// Queues an error event for one of this shard's connections.
    pub fn send_error(&self, conn: &ConnHandle, message: &str) {
        self.counters().error_events.incr();
        self.deliver(conn, envelope::error(message, envelope::now_ms()));
    }

    fn deliver(&self, conn: &ConnHandle, frame: Bytes) {
        if conn.push(frame) == Pushed::Queued {
            self.counters().deliveries.incr();
        }
    }

    fn subscribe(&self, token: ChannelToken, conn: &Rc<ConnHandle>) {
        let mut subs = self.subscribers.borrow_mut();
        let list = subs.entry(token).or_default();
        conn.subscriber_slot.set(list.len());
        list.push(conn.clone());
    }

    fn unsubscribe(&self, token: ChannelToken, conn: &ConnHandle) {
        let mut subs = self.subscribers.borrow_mut();
        let Some(list) = subs.get_mut(&token) else {
            return;
        };
        let slot = conn.subscriber_slot.get();
        debug_assert!(list.get(slot).is_some_and(|c| c.id == conn.id));
        list.swap_remove(slot);
        if let Some(moved) = list.get(slot) {
            moved.subscriber_slot.set(slot);
        }
        if list.is_empty() {
            subs.remove(&token);
        }
    }

    // ---- routing ----

    /// The one routing point for shard messages: handle in place when `to`
    /// is this shard, else forward.
    pub fn send(&self, to: ShardId, msg: ShardMsg) {
        if to == self.id {
            self.handle(msg)
        } else {
            self.forward(to, msg)
        }
    }

    fn forward(&self, to: ShardId, msg: ShardMsg) {
        let link = self.peers[to.index()]
            .as_ref()
            .expect("never forward to self");
        let c = self.counters();
        match link.push(msg, self.config.forward_backlog_max) {
            Some(len) => {
                c.forwards.incr();
                if len == FORWARD_CONGESTED {
                    self.update_congestion();
                }
            }
            None => c.count_drop(crate::metrics::Drop::ForwardBacklogFull),
        }
    }

    /// Takes the next batch for `peer` and updates the congestion flag.
    pub async fn next_batch(&self, peer: usize) -> forward::Batch {
        let batch = self.peers[peer]
            .as_ref()
            .expect("a link per peer")
            .next_batch()
            .await;
        self.update_congestion();
        batch
    }

    /// Handles a message that arrived from another shard (or from this one).
    pub fn handle(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Join(request) => self.owner_join(request),
            ShardMsg::Joined {
                conn,
                token,
                frame,
                may_send,
            } => self.home_joined(conn, token, frame, may_send),
            ShardMsg::JoinRefused { conn } => {
                let conn = self.pending_joins.borrow_mut().remove(&conn);
                if let Some(conn) = conn {
                    conn.refuse(crate::http::response(
                        403,
                        "text/plain; charset=utf-8",
                        &[],
                        b"join key required or wrong\n",
                        false,
                    ));
                }
            }
            ShardMsg::Push {
                channel,
                payload,
                home,
                request,
            } => self.owner_push(&channel, &payload, home, request),
            ShardMsg::Pushed {
                request,
                recipients,
            } => {
                if let Some(slot) = self.pending_pushes.borrow_mut().remove(&request) {
                    slot.set(recipients);
                }
            }
            ShardMsg::Publish {
                token,
                from,
                echo,
                to,
                payload,
            } => self.owner_publish(token, from, echo, to, &payload),
            ShardMsg::Leave { token, conn } => self.owner_leave(token, conn),
            ShardMsg::FanOut {
                token,
                frame,
                except,
            } => self.home_fan_out(token, &frame, except),
            ShardMsg::Deliver { conn, frame } => {
                let target = self.conns.borrow().get(&conn).cloned();
                if let Some(target) = target {
                    self.deliver(&target, frame);
                }
            }
        }
    }

    // ---- home side: deliver to the connections this shard owns ----

    fn home_joined(&self, conn_id: ConnId, token: ChannelToken, frame: Bytes, may_send: bool) {
        let conn = self.pending_joins.borrow_mut().remove(&conn_id);
        match conn {
            Some(conn) if conn.ended().is_none() => {
                conn.may_send.set(may_send);
                self.subscribe(token, &conn);
                self.deliver(&conn, frame);
                conn.set_joined(token);
            }
            // It ended while the join was in flight: undo the join.
            _ => self.send(
                token_owner(token, self.shards),
                ShardMsg::Leave {
                    token,
                    conn: conn_id,
                },
            ),
        }
    }

    fn home_fan_out(&self, token: ChannelToken, frame: &Bytes, except: Option<ConnId>) {
        let subs = self.subscribers.borrow();
        let Some(list) = subs.get(&token) else { return };
        let mut delivered = 0;
        for conn in list {
            if Some(conn.id) != except && conn.push(frame.clone()) == Pushed::Queued {
                delivered += 1;
            }
        }
        self.counters().deliveries.add(delivered);
    }

    // ---- housekeeping ----

    /// Starts the drain: every connection gets 1001 after its queue.
    fn begin_shutdown(&self) {
        self.draining.set(true);
        for conn in self.conns.borrow().values() {
            conn.end(CloseReason::ServerShutdown);
        }
    }

    /// Ends the long-lived tasks (they race `stopped`). glommio 0.9 does
    /// not drop a finished executor's remaining tasks, so anything left
    /// running would keep its sockets open: the listener first of all.
    fn stop(&self) {
        self.stop.stop();
        // Connections still draining at the deadline: cut them.
        for conn in self.conns.borrow().values() {
            conn.shutdown_socket();
        }
    }

    /// Waits until no shard has a congested forward link; a reader calls
    /// it before reading more from its socket. Every shard's readers pause,
    /// not only this one's: a publisher on shard A can congest the link
    /// from the owner B back to A, which A's own links do not show.
    pub async fn forward_room(&self) {
        loop {
            let Some(congested) = self
                .congested
                .iter()
                .position(|f| f.load(Ordering::Acquire))
            else {
                return;
            };
            if congested == self.id.index() {
                for link in self.peers.iter().flatten() {
                    link.room().await;
                }
                self.update_congestion();
            } else {
                // Another shard's flag clears without telling us: look again
                // shortly. This only runs while the relay is overloaded.
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    }

    /// Raises or clears this shard's congestion flag from its links'
    /// backlogs. Called when a backlog reaches the mark and after every
    /// batch sent.
    fn update_congestion(&self) {
        let congested = self
            .peers
            .iter()
            .flatten()
            .any(|l| l.backlog_len() >= FORWARD_CONGESTED);
        let flag = &self.congested[self.id.index()];
        if flag.load(Ordering::Relaxed) != congested {
            flag.store(congested, Ordering::Release);
        }
    }

    /// Resolves once `stop` was called.
    pub async fn stopped(&self) {
        self.stop.stopped().await
    }

    /// Counts a slow consumer's dropped backlog (see `sweep`).
    pub fn note_discarded(&self, bytes: usize) {
        self.trim.discarded(bytes);
    }

    pub fn open_conns(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Counts an accepted socket until the returned guard drops.
    pub fn track_socket(self: &Rc<Self>) -> SocketGuard {
        let open = self.sockets_open.get() + 1;
        self.sockets_open.set(open);
        self.trim.opened(open);
        SocketGuard(self.clone())
    }

    fn open_sockets(&self) -> usize {
        self.sockets_open.get()
    }
}
