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
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("installing signal handlers")?;
    let server = Server::start(config).context("starting the relay")?;
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "shutting down");
    }
    server.shutdown()?;
    Ok(())
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}
