//! The pub/sub engine behind `fanout`, `rooms`, `spread`, `push`, `idle`
//! and `ceiling`: a scenario builds a `Plan` (channels, connections, who
//! publishes where), the engine runs it and returns what it saw.
//!
//! - Connections join with bounded concurrency, spread round-robin over the
//!   executors (and over `--source-ips`), receivers first; each waits for its
//!   own join event. Publishing starts when every connection has joined.
//! - Open loop: message k of publisher p (of P) is due at
//!   `t0 + (k*P + p) / rate`, sent late if the publisher is behind (never
//!   skipped before the end), and its latency is measured from the due
//!   time, not from the write (no coordinated omission).
//! - Every published message owes one delivery to each receiver joined on
//!   its channel except its sender: `expected`. What did not arrive by the
//!   end of the grace period is `lost`.
//! - Payload: `[<publisher>,<seq>,<scheduled_ns>,"<padding>"]`, padded to
//!   `--payload-bytes`; the protocol (`proto::Wire`) says where a received
//!   frame carries it. Nothing else of a frame is parsed.
//! - Receiving (`--recv`): after the join, by default (`epoll`), sockets
//!   are read by one pump per executor that polls an epoll set without ever
//!   sleeping on a socket while traffic flows; with `uring` they stay on
//!   glommio (io_uring poll, then recv). On loopback the relay's `send`
//!   runs the receiver's wake-up; glommio's rings (no
//!   `IORING_SETUP_COOP_TASKRUN`) turn each into an inter-processor
//!   interrupt, which here cost the relay ~40% more cpu per delivery and
//!   saturated the generator (README, "Why epoll").
//!
//! Modules, each owning one part; an arrow means "uses", and a module may
//! also use whatever lies further along its arrows (no module uses one
//! that leads back to it):
//!
//! ```text
//! scenarios ──> summary ─────────────────────┐
//!     │                                      v
//!     └──> run ──> measure ──────────> config, outcome ──> state
//!           │                                               ^
//!           └──> exec ──> join, epoll ──> recv ──> local ───┘
//!                  │                                 ^
//!                  └──> publish ─────────────────────┘
//!                          └──> schedule (pure)
//! ```
//!
//! - `state`: the plan, settings and atomics shared with the main thread,
//!   each executor's counters (plain data, no I/O).
//! - `schedule`: the open-loop due times and the payload (pure).
//! - `local`: one executor's state shared by its tasks, and their waits.
//! - `recv`: a connection's receive side (frames walked in place).
//! - `epoll`: `--recv epoll`, the set of member sockets and its pump.
//! - `join`: connecting and joining (and a push client's connect).
//! - `publish`: the WebSocket and HTTP push publishers.
//! - `exec`: the executors' lifecycle and the only module that spawns.
//! - `config`, `outcome`, `run`, `measure`: the main thread's side: the
//!   options, what a run saw, starting and stopping a run, following it.
//! - `summary`, `scenarios`: what the scenarios build and print.

mod config;
mod epoll;
mod exec;
mod join;
mod local;
mod measure;
mod outcome;
mod publish;
mod recv;
mod run;
pub mod scenarios;
mod schedule;
pub mod state;
pub mod summary;

// What the other scenarios (`idle`, `connect`, `ceiling`) use of the engine.
pub use config::{fresh_channel_prefix, Common, Config, Traffic};
pub use exec::join_all;
pub use local::timed;
pub use outcome::{format_failures, Second};
pub use run::start;
pub use state::{ConnSpec, Plan};
