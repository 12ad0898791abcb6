//! `itty-loadtest`: the load generator bundled with itty-relay.
//!
//! Thread-per-core like the relay: one glommio executor pinned to each cpu
//! given with `--cpus`, connections spread across them, hand-written
//! WebSocket client code that counts frames without parsing their JSON, and
//! open-loop publishers whose latency is measured from the scheduled send
//! time. Every figure comes with the generator's own cpu use, so a run says
//! when the generator, not the relay, was the limit.
//!
//! Scenarios (one subcommand each): `fanout` for now; rooms, spread, idle,
//! connect, push and sweep are to come (see README.md).

mod fanout;
mod report;
mod sys;
mod ws;

use clap::{Parser, Subcommand};

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
    Fanout(fanout::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Fanout(args) => fanout::run(args),
    }
}
