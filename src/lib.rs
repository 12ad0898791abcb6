//! # itty-relay
//!
//! A realtime relay for the itty-sockets protocol (`PROTOCOL.md`), built
//! thread-per-core on glommio (io_uring).
//!
//! ## The data path
//!
//! ```text
//! client A (shard 1) --text frame--> shard 1: decode (ws::codec), check size,
//!     rate (ratelimit) and send key (access), classify (pubsub::classify),
//!     validate JSON (pubsub::json)
//!   --route: owner_shard(channel) = 0--> shard 0, the owner (pubsub::registry):
//!     stamp id + date, build the envelope ONCE as frame bytes (pubsub::envelope)
//!   --fan out--> shard 0's members: push the same Bytes to each outgoing queue
//!             --> shard 1 (has members): one FanOut over the forward queue,
//!                 shard 1 pushes the Bytes to its members' queues
//!   --deliver--> each connection's writer: one gathered sendmsg of many frames
//! ```
//!
//! Joins and leaves travel the same way: the home shard (the one that
//! accepted the connection) checks the IP's limits and a namespace's join
//! key, then asks the owner, which checks ephemeral keys, updates the member
//! list and fans the event out. The `101` (or a `403`) goes out when the
//! owner answers. An HTTP push is checked on its home shard and published
//! through the owner like a client's message.
//!
//! ## Words
//!
//! - **shard**: one executor pinned to one cpu, and all it owns.
//! - **home shard**: where a connection was accepted; it owns the socket.
//! - **owner shard**: where a channel hashes to; it orders the channel.
//! - **publish** (a client hands a message in), **route** (find the owner),
//!   **forward** (cross to another shard), **fan out** (the owner expands a
//!   message to the shards and members), **deliver** (queue it for a socket).
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
//! | [`server`] | start N shards, wait until ready, stop them |
//! | [`shard`] | one executor's state, its routing point `Shard::send`, the owner side (`owner`), forward queues and backpressure, listener, the once-a-second sweep (liveness, pruning, memory back to the kernel) |
//! | [`conn`] | a connection: HTTP phase, push, WebSocket session, bounded outgoing queue, gathered writer |
//! | [`http`] | request heads (httparse), routes, upgrade checks, client IP, push bodies, responses |
//! | [`ws`] | the sans-IO frame codec on tungstenite's frame types |
//! | [`pubsub`] | classify, JSON check, channel registry, envelopes built once |
//! | [`router`] | `owner_shard(channel)`: local, or forward to the owner |
//! | [`id`] | shard, connection and channel ids; uids; message ids |
//! | [`metrics`] | per-shard counters, summed when scraped |

pub mod access;
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
pub mod wake;
pub mod ws;

pub use config::Config;
pub use error::{CloseReason, Error};
pub use server::Server;
