//! `itty-loadtest`: the load generator bundled with itty-relay.
//!
//! Thread-per-core like the relay: one glommio executor pinned to each cpu
//! given with `--cpus`, connections spread across them, hand-written
//! WebSocket client code that counts frames without parsing their JSON, and
//! open-loop publishers whose latency is measured from the scheduled send
//! time. Every figure comes with the generator's own cpu use, so a run says
//! when the generator, not the relay, was the limit.
//!
//! Map:
//! - `pubsub/`: the engine (plan -> connections, schedule, receive path,
//!   accounting) and the publishing scenarios `fanout`, `rooms`, `spread`,
//!   `push`; `idle` and `ceiling` use it too.
//! - `connect.rs`: `connect`, connections opened and joined per second.
//! - `ceiling.rs`: a trivial in-process server that blasts frames, to
//!   measure what the generator itself can receive.
//! - `proto/`: the relay's wire specifics behind the `Wire` trait (`nats.rs`: the NATS stream).
//! - `ws.rs` (frames, handshake), `net.rs` (source addresses, fd limit),
//!   `sys.rs` (clocks, cpu, memory, /proc), `report.rs`, `sweep.rs`,
//!   `plot.rs`.

mod ceiling;
mod connect;
mod deflate;
mod idle;
mod net;
mod plot;
mod proto;
mod pubsub;
mod report;
mod sweep;
mod sys;
mod tls;
mod ws;

use clap::{Parser, Subcommand};
use pubsub::scenarios;

#[derive(Debug, Parser)]
#[command(
    name = "itty-loadtest",
    version,
    about = "Load generator for itty-sockets relays (thread-per-core, io_uring)."
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// P publishers send to one channel of N members: deliveries per second
    /// the relay sustains, and the latency of each delivery.
    Fanout(scenarios::FanoutArgs),
    /// R rooms of K members, every member publishing at a rate: the chat
    /// shape.
    Rooms(scenarios::RoomsArgs),
    /// Many channels, members landing on every shard by chance: the
    /// cross-shard path.
    Spread(scenarios::SpreadArgs),
    /// HTTP push requests per second (keep-alive, optionally pipelined) and
    /// their fan-out to the channel's members.
    Push(scenarios::PushArgs),
    /// Open C connections joined to many channels and hold them: the
    /// relay's memory per connection.
    Idle(idle::IdleArgs),
    /// Connections opened and joined per second (open or closed loop):
    /// rate, handshake and join latency, failures by reason.
    Connect(connect::ConnectArgs),
    /// The generator's own ceiling: an in-process trivial server blasts
    /// pre-built frames from another cpu; what the generator receives.
    Ceiling(ceiling::CeilingArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Fanout(a) => scenarios::fanout(a),
        Scenario::Rooms(a) => scenarios::rooms(a),
        Scenario::Spread(a) => scenarios::spread(a),
        Scenario::Push(a) => scenarios::push(a),
        Scenario::Idle(a) => idle::run(a),
        Scenario::Connect(a) => connect::run(a),
        Scenario::Ceiling(a) => ceiling::run(a),
    }
}
