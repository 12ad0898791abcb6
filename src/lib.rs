//! # itty-relay
//!
//! A realtime relay for the itty-sockets protocol (`docs/PROTOCOL.md`),
//! built thread-per-core on glommio (io_uring).
//!
//! ## The data path
//!
//! ```text
//! client A (shard 1) --readable--> shard 1's reader (conn::reader, one task
//!     over one epoll set for all its plain connections; a TLS connection
//!     reads in its session's task) --> conn::inbound: decode (ws::codec), check size,
//!     rate (ratelimit) and send key (access), classify (pubsub::classify),
//!     validate JSON (pubsub::json)
//!   --route: router says channel token -> shard 0--> shard 0, the owner
//!     (shard::owner, no I/O): stamp id + date, build the envelope ONCE as
//!     frame bytes (pubsub::envelope), return one FanOut per home shard
//!   --dispatch--> shard 0's own FanOut: its FIFO, then its members' queues
//!             --> shard 1's FanOut: forwarded over the link (shard::links);
//!                 shard 1 delivers the same Bytes to its members' queues
//!   --deliver--> each member's queue, the connection marked in the shard's
//!     outbox (conn::outbox) --> the flush task, once per round: one
//!     gathered sendmsg of many frames per connection
//! ```
//!
//! One line, the functions a message passes:
//! `reader::run` -> `Inbound::received_shared` -> `publish_text` -> `Shard::publish` ->
//! (`Shard::send` -> link -> `Shard::receive` ->) `Owner::publish` ->
//! `Shard::send` -> `Shard::dispatch` -> `Home::fan_out` ->
//! `ConnHandle::deliver` -> `Outbox::mark` -> `writer::flush_marked`.
//!
//! Joins and leaves travel the same way; `shard::join` draws the handshake
//! (home checks -> owner decides -> home answers 101 or 403). An HTTP push
//! is checked on its home shard and published through the owner like a
//! client's message.
//!
//! ## Across nodes (`--backplane`, off by default)
//!
//! ```text
//! node 1, owner shard: Owner::publish builds the frame ONCE, fans it out
//!   locally, and (if members are elsewhere) appends EngineCmd::Publish
//!   --Shard::with_owner--> lock-free queue --> bridge thread (cluster::bridge)
//!   --one RESP3 connection: PUBLISH itty:{hash} header+frame--> Redis
//!   --push--> node 2's bridge --queue + wake--> node 2's owner shard
//!   (shard::cluster: Owner::engine_event) --FanOut, same bytes--> members
//! ```
//!
//! Joins and leaves are Lua scripts (`cluster/lua/`) that count and
//! publish in one step, so every node applies them in one order; each
//! owner keeps a replica of its channels' cluster-wide members.
//!
//! ## Words
//!
//! - **shard**: one executor pinned to one cpu, and all it owns.
//! - **home shard**: where a connection was accepted; it owns the socket.
//! - **owner shard**: where a channel hashes to; it orders the channel.
//! - **publish** (a client or a push hands a message in), **route** (find
//!   the owner), **forward** (cross to another shard), **fan out** (the
//!   owner expands a message to the shards and members), **deliver** (queue
//!   it for a socket). **push** is only ever the HTTP push.
//!
//! ## Modules
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | every setting: default, unit, why |
//! | [`access`] | namespaces, join and send keys, constant-time key comparison |
//! | [`ratelimit`] | token buckets (time passed in), per-IP tables, bans: per shard |
//! | [`limits`] | fixed limits with their reasons |
//! | [`error`] | `CloseReason`: one close code and one metrics label each |
//! | [`outcome`] | drop reasons, upgrade refusals, push answers: text, status, label |
//! | [`server`] | start N shards, wait until ready, stop them |
//! | [`router`] | who owns it: channel names, channel tokens, connection ids |
//! | [`shard`] | one executor's parts: `Owner` (sans-IO, with its cluster side in `shard/cluster.rs`), `Home`, `Admission`, `Links`, `Lifecycle`; `send` and `dispatch`; the join; the sweep |
//! | [`conn`] | a connection: its stream (plain, or TLS driven sans-IO: `conn::tls`), the TLS handshake at low priority (`conn::handshake`), HTTP phase (one `Response` writer), push, WebSocket session, the shard's reader (one epoll set, no task per plain connection), what is read (`conn::inbound`, sans-IO), bounded outgoing queue, the shard's outbox and flush task (gathered writes; a task of its own only while a socket is full) |
//! | [`http`] | request heads (httparse), endpoints, upgrade checks, client IP, push bodies, `Response` |
//! | [`ws`] | the sans-IO frame codec on tungstenite's frame types |
//! | [`pubsub`] | classify, JSON check, channel registry, envelopes built once |
//! | [`id`] | shard, connection and channel ids; uids; message ids |
//! | [`metrics`] | per-shard counters, summed when scraped |
//! | [`wake`] | `WakerSlot`, `WakerList`: where a task parks |
//! | [`status`] | the landing page (`/`), the live status page (`/status`) and its JSON snapshot of the same counters, embedded assets |
//! | [`tls`] | `--tls-cert`: certificates loaded and checked, SNI, one `rustls::ServerConfig` (and session ticketer) for every shard, reload on SIGHUP |
//! | [`cluster`] | the backplane (`--backplane`): engine interface, Redis scripts, bridge thread, wire format |

pub mod access;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod error;
pub mod http;
pub mod id;
pub mod limits;
pub mod metrics;
pub mod outcome;
pub mod pubsub;
pub mod ratelimit;
pub mod router;
pub mod server;
pub mod shard;
pub mod status;
pub mod tls;
pub mod wake;
pub mod ws;

pub use config::Config;
pub use error::{CloseReason, Error};
pub use server::Server;
