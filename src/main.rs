//! The `itty-relay` binary: parse the configuration, start the shards,
//! wait for SIGTERM or SIGINT, drain, exit.

use anyhow::Context;
use clap::Parser;
use itty_relay::config::{option_table, Cli, Config};
use itty_relay::Server;
use signal_hook::consts::{SIGINT, SIGTERM};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.print_config_table {
        print!("{}", option_table());
        return Ok(());
    }
    let config = Config::load(cli.config.as_deref(), cli.overrides)?;
    init_logging(&config.log);
    abort_on_panic();
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("installing signal handlers")?;
    let server = Server::start(config).context("starting the relay")?;
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "shutting down");
    }
    server.shutdown()?;
    Ok(())
}

/// A panic would end one shard's thread and leave its listener accepting
/// connections nobody serves: stop the whole process instead, so a
/// supervisor restarts it. (Tests keep the default hook: they run the
/// library, not this binary.)
fn abort_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        tracing::error!("a shard panicked; aborting the process");
        std::process::abort();
    }));
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}
