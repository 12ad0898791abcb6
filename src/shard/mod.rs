//! A shard: one glommio executor pinned to one cpu, and everything it owns,
//! in named parts, each with its own state in its own file:
//!
//! | part | file | owns |
//! |---|---|---|
//! | `Owner` | `owner.rs` | the channels that hash here: registry, message ids, uids (sans-IO) |
//! | `Home` | `home.rs` | the connections accepted here, their subscriptions, pending joins and pushes |
//! | `Admission` | `admission.rs` | per-IP buckets, bans, the namespaces in force |
//! | `Links` | `links.rs` | one bounded forward link per peer shard, congestion |
//! | `Lifecycle` | `lifecycle.rs` | clocks, sockets being served, and the shutdown: drain, tell the peers, stop |
//! | `ShardTls` | `tls.rs` | the shared TLS configuration, this shard's handshakes in progress |
//!
//! and the glue in this file: `send` (this shard's queue, or a forward)
//! and `dispatch` (the one loop that handles this shard's messages). The
//! join, from the home's checks to its answer, is `join.rs`; what crosses
//! between shards is `message.rs`. Nothing here is shared with another
//! shard; other shards reach it only through `ShardMsg`s on the links.
//!
//! Borrow discipline: no `RefCell` borrow is held across an `.await`, and
//! no handler runs inside another: a message for this shard goes into its
//! FIFO and is handled by `dispatch` once the sender's borrows have ended.

mod admission;
mod home;
pub(crate) use home::shrink_map;
pub mod join;
mod lifecycle;
pub mod links;
pub mod listener;
pub mod message;
pub mod owner;
mod run;
mod stop;
mod tls;
use tls::ShardTls;
pub(crate) mod sweep;

use crate::access::Namespaces;
use crate::cluster::{Cluster, EngineCmd, EngineEvent};
use crate::config::Config;
use crate::conn::handle::{ConnHandle, Delivery};
use crate::conn::reader::Reader;
use crate::error::CloseReason;
use crate::id::{ShardId, Uid, UidCipher};
use crate::metrics::{Metrics, ShardCounters};
use crate::outcome::{DropReason, PushAnswer, Refused, UpgradeRefusal};
use crate::pubsub::envelope;
use crate::pubsub::json::JsonValidator;
use crate::ratelimit::{IpKey, Rate};
use crate::router::Router;
use crate::ws::deflate::Inflater;
use admission::Admission;
use bytes::Bytes;
use home::Home;
use lifecycle::Lifecycle;
use links::Links;
use message::ShardMsg;
use owner::{ClusterSide, Effects, Owner, Publish, Push};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

pub use lifecycle::SocketGuard;
pub use links::Congestion;
pub use run::{run, ShardWiring, CONTROL_RELOAD, CONTROL_SHUTDOWN};

pub struct Shard {
    /// Where this shard is; who owns what.
    router: Router,
    config: Arc<Config>,
    /// Every shard's counters; this shard writes only its own block.
    metrics: Metrics,
    owner: RefCell<Owner>,
    home: Home,
    admission: Admission,
    links: Links,
    life: Lifecycle,
    /// Messages for this shard not handled yet, in order (see `dispatch`).
    inbox: RefCell<VecDeque<ShardMsg>>,
    /// Set while `dispatch` runs, so a nested call only queues.
    dispatching: Cell<bool>,
    /// The owner's effects buffer, reused between calls.
    effects: RefCell<Effects>,
    /// Where every connection's reads land (see `conn::session`): borrowed
    /// only between a read completing and its frames being handled.
    read_buffer: RefCell<Vec<u8>>,
    /// Reads the shard's joined plain connections (`conn::reader`).
    reader: Reader,
    /// JSON validation scratch space, reused for every message.
    validator: RefCell<JsonValidator>,
    /// Inflates clients' compressed messages (permessage-deflate), one at a
    /// time, into a buffer bounded by the message size limit.
    inflater: RefCell<Inflater>,
    /// The backplane, when this node is part of a cluster.
    cluster: Option<Arc<Cluster>>,
    /// TLS on the main listener (`--tls-cert`), when on.
    tls: Option<ShardTls>,
}

impl Shard {
    pub fn new(
        id: ShardId,
        shard_count: usize,
        config: Arc<Config>,
        cipher: UidCipher,
        metrics: Metrics,
        congested: Congestion,
        namespaces: Arc<Namespaces>,
    ) -> Shard {
        let router = Router::new(id, shard_count);
        let owner = Owner::new(router, cipher.clone(), metrics.clone())
            .with_compression_min_bytes(config.compression_min_bytes);
        Shard {
            router,
            owner: RefCell::new(owner),
            home: Home::new(router, cipher),
            admission: Admission::new(&config, namespaces),
            links: Links::new(id, congested),
            life: Lifecycle::default(),
            config,
            metrics,
            inbox: RefCell::default(),
            dispatching: Cell::new(false),
            effects: RefCell::default(),
            read_buffer: RefCell::new(vec![0; crate::limits::SHARD_READ_BUFFER_BYTES]),
            reader: Reader::new().expect("epoll_create1 for the shard's reader"),
            validator: RefCell::default(),
            inflater: RefCell::default(),
            cluster: None,
            tls: None,
        }
    }

    /// Makes this shard part of a cluster (`--backplane`): its owner keeps
    /// replicas of the cluster's channels and its home takes uids from the
    /// engine.
    pub fn with_cluster(mut self, cluster: Arc<Cluster>) -> Shard {
        let owner = self.owner.into_inner();
        self.owner = RefCell::new(owner.with_cluster(ClusterSide::new(cluster.clone())));
        self.home = self.home.with_uid_blocks();
        self.cluster = Some(cluster);
        self
    }

    /// The backplane, in a cluster.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Whether `/health` answers 200: not draining, and in a cluster,
    /// connected to the engine (so a load balancer drains a node that is
    /// cut off).
    pub fn health(&self) -> Result<(), &'static str> {
        if self.draining() {
            return Err("draining\n");
        }
        match &self.cluster {
            Some(c) if !c.is_up() => Err("backplane unavailable\n"),
            _ => Ok(()),
        }
    }

    /// In a cluster, whether a join can be decided now: the engine is
    /// reachable and this shard has uids to give.
    pub fn backplane_ready(&self) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|c| c.is_up() && self.home.has_uids())
    }

    pub fn id(&self) -> ShardId {
        self.router.here()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn counters(&self) -> &ShardCounters {
        &self.metrics[self.id().index()]
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn draining(&self) -> bool {
        self.life.draining()
    }

    pub fn clock_ms(&self) -> u64 {
        self.life.clock_ms()
    }

    /// Nanoseconds since the shard started: the clock of its buckets.
    pub fn now_ns(&self) -> u64 {
        self.life.now_ns()
    }

    pub fn read_buffer(&self) -> &RefCell<Vec<u8>> {
        &self.read_buffer
    }

    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    pub fn validator(&self) -> &RefCell<JsonValidator> {
        &self.validator
    }

    pub fn inflater(&self) -> &RefCell<Inflater> {
        &self.inflater
    }

    /// The echo endpoint's answer to a text or binary message: compressed
    /// (with the owner's compressor) whenever the connection negotiated
    /// deflate, whatever its size, so the conformance suite exercises the
    /// compressed path for every message; plain otherwise.
    pub fn echo_frame(&self, conn: &ConnHandle, payload: &[u8], binary: bool) -> Bytes {
        use tungstenite::protocol::frame::coding::{Data, OpCode};
        let opcode = OpCode::Data(if binary { Data::Binary } else { Data::Text });
        conn.deflate_window()
            .and_then(|bits| {
                self.owner
                    .borrow_mut()
                    .compress_always(payload, opcode, bits)
            })
            .unwrap_or_else(|| match binary {
                true => crate::ws::frame::binary_frame(payload),
                false => crate::ws::frame::text_frame(payload),
            })
    }

    pub fn message_rate(&self) -> Rate {
        self.admission.message_rate()
    }

    /// The namespaces in force now.
    pub fn namespaces(&self) -> Arc<Namespaces> {
        self.admission.namespaces()
    }

    pub fn set_namespaces(&self, namespaces: Arc<Namespaces>) {
        self.admission.set_namespaces(namespaces)
    }

    // ---- admission ----

    /// Whether any upgrade (a join or the echo endpoint) may go on, in
    /// order: draining, the IP's ban and rate, the shard's cap. Counted.
    pub fn admit_upgrade(&self, ip: IpKey) -> Result<(), Refused> {
        let admitted = if self.draining() {
            Err(Refused {
                why: UpgradeRefusal::Draining,
                retry_after_secs: None,
            })
        } else {
            let open = self.home.open_conns();
            self.admission.admit_upgrade(ip, open, self.now_ns())
        };
        if let Err(refused) = admitted {
            self.counters().count_upgrade_refused(refused.why);
        }
        admitted
    }

    /// Takes a push token for `ip`; `Err(retry_after_secs)` when over.
    pub fn admit_push(&self, ip: IpKey) -> Result<(), u64> {
        self.admission.admit_push(ip, self.now_ns())
    }

    /// Bans `ip` on this shard for `ban_duration_ms` (after a kick).
    pub fn ban(&self, ip: IpKey) {
        self.admission.ban(ip, self.now_ns());
        self.counters().bans.incr();
    }

    // ---- connections (home side) ----

    /// A new connection: its id, uid and handle, registered with the shard.
    pub fn open_conn(&self, echo: bool) -> Rc<ConnHandle> {
        let max = self.config.outgoing_queue_bytes_max;
        let conn = self.home.open_conn(echo, max, self.clock_ms());
        self.ask_uid_block();
        let c = self.counters();
        c.connections_open.incr();
        c.connections_accepted.incr();
        conn
    }

    /// The connection is gone: forget it and count why.
    pub fn close_conn(&self, conn: &ConnHandle, reason: CloseReason) {
        self.home.close_conn(conn);
        let c = self.counters();
        c.connections_open.sub(1);
        c.count_close(reason);
    }

    pub fn open_conns(&self) -> usize {
        self.home.open_conns()
    }

    /// Routes a client's message to its channel's owner. A locally owned
    /// channel reads the payload in place, where the session decoded it:
    /// the one fast path past `send`. Only a forward copies it.
    pub fn publish(&self, conn: &ConnHandle, to: Option<Uid>, payload: &[u8]) {
        let Some(token) = conn.channel() else {
            return;
        };
        let (from, echo) = (conn.id(), conn.echo());
        match self.router.token_owner(token) {
            owner if owner == self.id() => {
                let publish = Publish {
                    token,
                    from,
                    echo,
                    to,
                    payload,
                };
                self.with_owner(|o, now, fx| o.publish(publish, now, fx));
            }
            owner => {
                let payload = Bytes::copy_from_slice(payload);
                let msg = ShardMsg::Publish {
                    token,
                    from,
                    echo,
                    to,
                    payload,
                };
                self.send(owner, msg);
            }
        }
        self.dispatch();
    }

    /// Publishes an HTTP push through the channel's owner; resolves to the
    /// number of members it went to, or `None` if the owner did not answer
    /// in time (its shard is overloaded or stopping).
    pub async fn push(&self, channel: &str, payload: Bytes) -> Result<u32, PushAnswer> {
        let (request, slot) = self.home.await_push();
        let msg = ShardMsg::Push {
            channel: channel.into(),
            payload,
            home: self.id(),
            request,
        };
        self.send(self.router.channel_owner(channel), msg);
        self.dispatch();
        let wait = std::time::Duration::from_millis(crate::limits::PUSH_ANSWER_TIMEOUT_MS);
        let answer = glommio::timer::timeout(wait, async { Ok(slot.wait().await) }).await;
        self.home.forget_push(request);
        match answer {
            Ok(Some(recipients)) => Ok(recipients),
            Ok(None) => Err(PushAnswer::BackplaneUnavailable),
            Err(_) => Err(PushAnswer::OwnerTimeout),
        }
    }

    /// The connection is ending: stop delivering to it now and tell the
    /// owner, so its leave goes out at once.
    pub fn leave(&self, conn: &ConnHandle) {
        self.home.joined(conn.id());
        if let Some(token) = conn.take_channel() {
            self.home.unsubscribe(token, conn);
            let msg = ShardMsg::Leave {
                token,
                conn: conn.id(),
            };
            self.send(self.router.token_owner(token), msg);
            self.dispatch();
        }
    }

    /// Queues an error event for one of this shard's connections.
    pub fn send_error(&self, conn: &Rc<ConnHandle>, message: &str) {
        self.counters().error_events.incr();
        self.deliver(conn, envelope::error(message, envelope::now_ms()));
    }

    /// Drops a client's message for `why`, telling it when the reason has
    /// a fixed text.
    pub fn drop_message(&self, conn: &Rc<ConnHandle>, why: DropReason) {
        self.counters().count_drop(why);
        if let Some(text) = why.error_text() {
            self.send_error(conn, text);
        }
    }

    fn deliver(&self, conn: &Rc<ConnHandle>, frame: Bytes) {
        if conn.deliver(frame) == Delivery::Queued {
            self.counters().deliveries.incr();
        }
    }

    // ---- routing and dispatch ----

    /// The one place a shard message leaves for its shard: this shard's
    /// FIFO (handled by the next `dispatch`), or a forward to a peer.
    fn send(&self, to: ShardId, msg: ShardMsg) {
        if to == self.id() {
            // A delivery with nothing queued before it, outside any
            // handler, is delivered at once: it sends nothing, so it cannot
            // re-enter, and the order is the FIFO's. The common case: a
            // locally owned publish's fan-out to local members.
            let deliveries_only = matches!(msg, ShardMsg::FanOut { .. } | ShardMsg::Deliver { .. });
            if deliveries_only && !self.dispatching.get() && self.inbox.borrow().is_empty() {
                return self.handle(msg);
            }
            self.inbox.borrow_mut().push_back(msg);
            return;
        }
        let c = self.counters();
        if self.links.forward(to, msg, self.config.forward_backlog_max) {
            c.forwards.incr();
        } else {
            c.count_drop(DropReason::ForwardBacklogFull);
        }
    }

    /// Runs the owner with its effects buffer, then sends every effect,
    /// after the owner's borrow has ended (`send` only queues or forwards,
    /// so the buffer's borrow is safe across it).
    fn with_owner(&self, f: impl FnOnce(&mut Owner, u64, &mut Effects)) {
        let mut fx = self.effects.borrow_mut();
        f(&mut self.owner.borrow_mut(), envelope::now_ms(), &mut fx);
        for (to, msg) in fx.drain() {
            self.send(to, msg);
        }
        if let Some(cluster) = &self.cluster {
            self.to_engine(cluster, fx.drain_engine());
        }
    }

    /// Queues commands for the engine and wakes the bridge once.
    fn to_engine(&self, cluster: &Cluster, cmds: impl Iterator<Item = EngineCmd>) {
        let mut sent = false;
        for cmd in cmds {
            sent |= cluster.send(self.id(), cmd);
        }
        if sent {
            cluster.wake_bridge();
        }
    }

    /// Asks the engine for uids when this shard's are running low.
    fn ask_uid_block(&self) {
        if let Some(cluster) = &self.cluster {
            if cluster.is_up() && self.home.wants_uid_block() {
                self.to_engine(cluster, std::iter::once(EngineCmd::UidBlock));
            }
        }
    }

    /// Handles what the engine sent this shard (its inbound task calls it
    /// when woken); returns how many events it took, at most `max`.
    pub fn receive_from_engine(&self, max: usize) -> usize {
        let Some(cluster) = self.cluster.clone() else {
            return 0;
        };
        let mut taken = 0;
        while taken < max {
            let Some(event) = cluster.next_event(self.id()) else {
                break;
            };
            taken += 1;
            match event {
                EngineEvent::UidBlock { end } => self.home.add_uid_block(end),
                EngineEvent::Up { node } => {
                    self.home.forget_uid_request();
                    self.ask_uid_block();
                    let up = EngineEvent::Up { node };
                    self.with_owner(|o, now, fx| o.engine_event(up, now, fx));
                }
                EngineEvent::Down => {
                    self.home.forget_uid_request();
                    self.with_owner(|o, now, fx| o.engine_event(EngineEvent::Down, now, fx));
                }
                event => self.with_owner(|o, now, fx| o.engine_event(event, now, fx)),
            }
        }
        self.dispatch();
        taken
    }

    /// Handles this shard's queued messages, in order, until none is left.
    /// Every entry point calls it once its own borrows have ended; a call
    /// from inside a handler returns at once (the running loop picks up
    /// what it queued), so no handler ever runs inside another.
    fn dispatch(&self) {
        if self.dispatching.replace(true) {
            return;
        }
        loop {
            // The borrow ends before the message is handled.
            let next = self.inbox.borrow_mut().pop_front();
            match next {
                Some(msg) => self.handle(msg),
                None => break,
            }
        }
        self.dispatching.set(false);
    }

    /// A batch that arrived from a peer shard: handled in order.
    pub fn receive(&self, batch: message::Batch) {
        self.inbox.borrow_mut().extend(batch);
        self.dispatch();
    }

    fn handle(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Join(request) => self.with_owner(|o, now, fx| o.join(*request, now, fx)),
            ShardMsg::Joined {
                conn,
                token,
                frame,
                may_send,
            } => self.joined(conn, token, frame, may_send),
            ShardMsg::JoinRefused { conn, why } => self.join_refused(conn, why),
            ShardMsg::Drained => self.life.peer_drained(),
            ShardMsg::Publish {
                token,
                from,
                echo,
                to,
                payload,
            } => {
                let publish = Publish {
                    token,
                    from,
                    echo,
                    to,
                    payload: &payload,
                };
                self.with_owner(|o, now, fx| o.publish(publish, now, fx))
            }
            ShardMsg::Push {
                channel,
                payload,
                home,
                request,
            } => {
                let push = Push {
                    channel: &channel,
                    payload: &payload,
                    home,
                    request,
                };
                self.with_owner(|o, now, fx| o.push(push, now, fx))
            }
            ShardMsg::Pushed {
                request,
                recipients,
            } => self.home.pushed(request, recipients),
            ShardMsg::Leave { token, conn } => {
                self.with_owner(|o, now, fx| o.leave(token, conn, now, fx))
            }
            ShardMsg::FanOut {
                token,
                frames,
                except,
            } => {
                let delivered = self.home.fan_out(token, &frames, except);
                self.counters().deliveries.add(delivered);
            }
            ShardMsg::Deliver { conn, frame } => {
                if self.home.deliver_to(conn, frame) == Delivery::Queued {
                    self.counters().deliveries.incr();
                }
            }
        }
    }

    // ---- links and lifecycle ----

    /// Takes the next batch for `peer` (its forwarder task).
    pub async fn next_batch(&self, peer: usize) -> message::Batch {
        self.links.next_batch(peer).await
    }

    /// Waits until no shard has a congested forward link; a reader calls
    /// it before reading more from its socket (see `Links::room`).
    pub async fn forward_room(&self) {
        self.links.room().await
    }

    /// Whether no shard has a congested forward link now (the shard's
    /// reader checks it before each read).
    pub fn has_forward_room(&self) -> bool {
        self.links.has_room()
    }

    /// Counts a slow consumer's dropped backlog (see `sweep`).
    pub fn note_discarded(&self, bytes: usize) {
        self.life.note_discarded(bytes);
    }
}
