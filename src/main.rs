//! The `itty-relay` binary: parse the configuration, start the shards,
//! reload the namespaces and TLS certificates on SIGHUP, and on SIGTERM or SIGINT drain and exit.

use anyhow::Context;
use clap::Parser;
use itty_relay::config::{option_table, Cli, Config};
use itty_relay::Server;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.print_config_table {
        print!("{}", option_table());
        return Ok(());
    }
    let config = Config::load(cli.config.as_deref(), cli.overrides.clone())?;
    init_logging(&config.log);
    abort_on_panic();
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;
    let server = Server::start(config.clone()).context("starting the relay")?;
    raise_open_files_limit((server.shards() * config.connections_per_shard_max) as u64);
    let mut running = config;
    for signal in signals.forever() {
        if signal != SIGHUP {
            tracing::info!(signal, "shutting down");
            break;
        }
        reload(&server, &mut running, &cli);
    }
    server.shutdown()?;
    Ok(())
}

/// SIGHUP: reads the config file again (with the same flags on top) and
/// puts its namespaces in force, then loads the TLS certificates again
/// (new handshakes get them; open connections keep theirs). A file with an
/// error is refused, loudly, and what runs stays. Other settings need a
/// restart.
fn reload(server: &Server, running: &mut Config, cli: &Cli) {
    if let Some(file) = cli.config.as_deref() {
        reload_namespaces(server, running, cli, file);
    } else if !server.is_tls() {
        tracing::warn!("SIGHUP: nothing to reload (the relay was started without --config)");
        return;
    }
    // The certificate paths come from the flags or the file just read.
    match server.reload_certificates(running) {
        Ok(None) if running.tls_cert.is_some() => tracing::warn!(
            "SIGHUP: tls_cert is set but the relay started without TLS; it takes effect at \
             the next restart"
        ),
        Ok(None) => {}
        Ok(Some(certificates)) => tracing::info!(certificates, "SIGHUP: TLS certificates reloaded"),
        Err(e) => {
            tracing::error!("SIGHUP: TLS certificates refused, the running ones stay in force: {e}")
        }
    }
}

fn reload_namespaces(server: &Server, running: &mut Config, cli: &Cli, file: &std::path::Path) {
    let loaded = Config::load(Some(file), cli.overrides.clone())
        .and_then(|config| server.reload_namespaces(&config).map(|n| (config, n)));
    match loaded {
        Err(e) => {
            tracing::error!("SIGHUP: reload refused, the running configuration stays in force: {e}")
        }
        Ok((config, namespaces)) => {
            tracing::info!(namespaces, "SIGHUP: namespaces reloaded");
            let others = |c: &Config| Config {
                namespace: Vec::new(),
                tls_cert: None,
                tls_key: None,
                tls_sni: Vec::new(),
                ..c.clone()
            };
            if others(running) != others(&config) {
                tracing::warn!(
                    "SIGHUP: settings other than namespaces and TLS certificates changed in \
                     the file; they take effect at the next restart"
                );
            }
            running.namespace = config.namespace;
            running.tls_cert = config.tls_cert;
            running.tls_key = config.tls_key;
            running.tls_sni = config.tls_sni;
        }
    }
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

/// Every connection is a file descriptor: raise the soft open-files limit
/// to the hard one (as nginx's `worker_rlimit_nofile` or Go's runtime do),
/// and say so when even that is below what the connection caps allow.
fn raise_open_files_limit(connections_max: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
        }
    };
    if !raised {
        tracing::warn!("could not raise the open-files limit");
    } else if lim.rlim_cur < connections_max {
        tracing::warn!(
            open_files_max = lim.rlim_cur,
            connections_max,
            "the open-files limit is below the connection caps: connections past it are \
             refused by the kernel (see tuning/README.md, nofile)"
        );
    } else {
        tracing::info!(open_files_max = lim.rlim_cur, "open-files limit");
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}
