//! Every operator setting, with its default, unit and trade-off, in one
//! table (`options!` below). Read once at startup from an optional TOML
//! file, then overridden by command-line flags, then validated; shards get
//! an `Arc<Config>` and never see it change.

use crate::access::NamespaceConfig;
use crate::error::Error;
use clap::Parser;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Declares the options once: the `Config` struct and its defaults, the
/// matching command-line flags (all optional, so a flag overrides the file
/// only when given), and the table printed by `--print-config-table`.
macro_rules! options {
    ($( $(#[doc = $doc:literal])* $name:ident : $ty:ty = $default:expr; )*
     @file_only { $( $(#[doc = $fdoc:literal])* $fname:ident : $fty:ty = $fdefault:expr; )* }) => {
        /// The relay's settings. See each field for default, unit and why.
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $name: $ty, )*
            $( $(#[doc = $fdoc])* pub $fname: $fty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $name: $default, )* $( $fname: $fdefault, )* }
            }
        }

        /// Command-line overrides, one per `Config` field.
        #[derive(Debug, Default, Clone, clap::Args)]
        pub struct Overrides {
            $( $(#[doc = $doc])* #[arg(long)] pub $name: Option<$ty>, )*
        }

        impl Overrides {
            fn apply(self, config: &mut Config) {
                $( if let Some(v) = self.$name { config.$name = v; } )*
            }
        }

        /// Markdown rows for the README's configuration table.
        pub fn option_table() -> String {
            let mut out = String::from("| flag | file key | meaning |\n|---|---|---|\n");
            $(
                let doc: Vec<&str> = vec![$($doc.trim()),*];
                out.push_str(&format!(
                    "| `--{}` | `{}` | {} |\n",
                    stringify!($name).replace('_', "-"),
                    stringify!($name),
                    doc.join(" ")
                ));
            )*
            $(
                let doc: Vec<&str> = vec![$($fdoc.trim()),*];
                out.push_str(&format!(
                    "| (file only) | `{}` | {} |\n",
                    stringify!($fname),
                    doc.join(" ")
                ));
            )*
            out
        }
    };
}

options! {
    /// Address every shard listens on (each binds it with SO_REUSEPORT and the
    /// kernel spreads connections). Default 0.0.0.0:8080.
    listen: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 8080));
    /// Number of shards (executors, one per cpu). Default 0 = one per cpu the
    /// process may run on (its affinity mask, so `taskset` is respected).
    shards: usize = 0;
    /// Pin each shard to its own cpu. Default true; turn off when sharing the
    /// cpus with other busy processes (tests, a load generator).
    pin: bool = true;
    /// Largest message a client may send, in bytes of payload after
    /// reassembling fragments. Default 102400 (100 KiB, as the public
    /// service). Larger messages are closed with 1009.
    message_bytes_max: usize = 100 * 1024;
    /// Bytes of unsent frames a connection may have queued before it is
    /// dropped as a slow consumer (1008). Default 1048576 (1 MiB). Higher
    /// tolerates slower readers but costs memory per stalled client.
    outgoing_queue_bytes_max: usize = 1024 * 1024;
    /// Time a client has to send its whole HTTP request head, in ms, before
    /// the socket is closed (slowloris). Default 10000. With TLS, the
    /// handshake has this long too.
    handshake_timeout_ms: u64 = 10_000;
    /// Largest HTTP request head, in bytes. Default 8192.
    request_head_bytes_max: usize = 8 * 1024;
    /// Most HTTP headers in one request. Default 64.
    request_headers_max: usize = 64;
    /// Silence from a client, in ms, after which the server sends a ping.
    /// Default 30000 (proxies often close idle WebSockets at 60 s).
    ping_interval_ms: u64 = 30_000;
    /// Silence from a client, in ms (no frame, no pong), after which it is
    /// dropped and its leave goes out. Default 75000.
    idle_timeout_ms: u64 = 75_000;
    /// After sending its close frame, how long the server waits for the
    /// client's close or EOF before dropping the socket, in ms. Default 2000.
    close_timeout_ms: u64 = 2_000;
    /// Upper bound on a graceful shutdown, in ms: connections get 1001 after
    /// their queues drain, and whatever is left when this passes is dropped.
    /// Default 5000.
    shutdown_timeout_ms: u64 = 5_000;
    /// Slots in each shard-to-shard queue; a slot holds one batch of up to
    /// 1024 messages. Default 64.
    forward_queue_slots: usize = 64;
    /// Messages a shard may hold for one peer shard while that peer's queue
    /// is full. Every shard's readers pause long before (at 8192), so this
    /// only catches what was already in flight; past it, messages for that
    /// peer are dropped and counted. Default 262144.
    forward_backlog_max: usize = 256 * 1024;
    /// Memory glommio registers per io_uring, in bytes. Default 262144
    /// (256 KiB): glommio's own default (10 MiB) exceeds the usual 8 MiB
    /// memlock limit of non-root users, and the relay does no file I/O.
    io_memory_bytes: usize = 256 * 1024;
    /// Serve the raw echo endpoint `/__echo` (for the Autobahn conformance
    /// suite). Default false.
    echo_endpoint: bool = false;
    /// Log filter (tracing-subscriber syntax; RUST_LOG overrides it).
    /// Default "info". Nothing at info names a channel, uid or address.
    log: String = "info".to_owned();
    /// WebSocket upgrades one client IP may make per second, per shard
    /// (docs/PROTOCOL.md section 8). Default 10. Over it: 429 with Retry-After.
    upgrades_per_ip_per_sec: u32 = 10;
    /// Upgrades one client IP may make at once before the rate applies
    /// (the bucket starts full). Default 20.
    upgrades_per_ip_burst: u32 = 20;
    /// HTTP push requests one client IP may make per second, per shard: a
    /// bucket apart from upgrades, so a backend is not throttled like a
    /// browser. Default 100.
    pushes_per_ip_per_sec: u32 = 100;
    /// Push requests one client IP may make at once. Default 200.
    pushes_per_ip_burst: u32 = 200;
    /// Messages one connection may send per second. Default 40. A message
    /// over it is dropped with a warning (an error event).
    messages_per_conn_per_sec: u32 = 40;
    /// Messages one connection may send at once before the rate applies.
    /// Default 100.
    messages_per_conn_burst: u32 = 100;
    /// Warnings a connection gets for messages over its rate; the next one
    /// closes it with 1008 and bans its IP. Default 3.
    rate_limit_warnings: u32 = 3;
    /// How long a kicked connection's IP may not upgrade (429), in ms, on
    /// the shard that kicked it. Default 60000.
    ban_duration_ms: u64 = 60_000;
    /// WebSocket connections one shard serves at most; more upgrades get
    /// 503. Default 100000 (an idle one holds about 0.6 KB of relay
    /// memory, 1.6 KB over TLS: 60-160 MB at the bound, plus queued
    /// output).
    connections_per_shard_max: usize = 100_000;
    /// Where `GET /metrics` and the status page (`/status`, `/status.json`)
    /// are served: `main` (the main listener, the default), `off`, or an
    /// address such as `127.0.0.1:9090` (a separate listener, served by
    /// shard 0, answering only those, /health and /version).
    metrics: MetricsEndpoint = MetricsEndpoint::Main;
    /// Reverse proxies whose `X-Forwarded-For` / `X-Real-IP` name the
    /// client for limits and bans: addresses or CIDR ranges, comma-separated
    /// (a list in the file). Default empty: every peer is the client.
    trusted_proxies: TrustedProxies = TrustedProxies::default();
    /// permessage-deflate (RFC 7692): `on` accepts a client's offer (with
    /// no context takeover either way, so no connection keeps compression
    /// state), `off` declines every offer. Default off (measured in
    /// loadtest/runs/2026-12-02-deflate.md): chat-sized envelopes stay under
    /// the threshold and gain nothing, while every message a browser sends
    /// must then be inflated (0.8 us for 225 B). Turn it on for large
    /// payloads: 1 KiB of JSON goes out at 0.40-0.48 of its size, compressed
    /// once per message (6.5 us) for every member, and the relay spends less
    /// cpu per delivery (0.65-0.95x at fan-out 1,000).
    compression: Switch = Switch::Off;
    /// With compression on, the smallest envelope (in bytes) that is
    /// compressed; smaller ones go out plain (RSV1 chooses per message).
    /// Compressed once per message for every member that negotiated it.
    /// Default 512.
    compression_min_bytes: usize = 512;
    /// Run as one node of a cluster on this engine: `redis://HOST:PORT`
    /// (a password as `redis://:PASSWORD@HOST:PORT`), or `off` (the
    /// default: one node, no engine connection, nothing paid). Needs a
    /// cluster secret (`ITTY_CLUSTER_SECRET` or `cluster_secret_file`).
    backplane: Backplane = Backplane::Off;
    /// With a backplane: silence after which a node counts as dead and its
    /// members' leaves go out, in ms. Default 5000. Lower notices a dead
    /// node sooner but reaps a node that stalls that long.
    node_timeout_ms: u64 = 5_000;
    /// TLS: a PEM file with the certificate chain (leaf first) the main
    /// listener serves; with `tls_key`, every connection to it speaks TLS
    /// (`wss://`, `https://`). Default none: plain TCP, nothing paid.
    /// Reloaded on SIGHUP (new handshakes only; open connections keep
    /// theirs). ECDSA P-256 is the cheapest to handshake.
    tls_cert: Option<PathBuf> = None;
    /// TLS: the PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    /// Read at start and on SIGHUP; never logged.
    tls_key: Option<PathBuf> = None;
    @file_only {
        /// TLS: more certificates, chosen by the name the client asks for
        /// (SNI): `[[tls_sni]]` tables with `names` (a list of DNS names),
        /// `cert` and `key`. A name not listed, or no name, gets `tls_cert`.
        tls_sni: Vec<SniCertificate> = Vec::new();
        /// Namespaces (docs/PROTOCOL.md section 6): `[[namespace]]` tables with
        /// `prefix` and optional `join_key` and `send_key`. Reloaded on
        /// SIGHUP without dropping a connection.
        namespace: Vec<NamespaceConfig> = Vec::new();
        /// With a backplane: a file holding the cluster secret (at least 16
        /// bytes, the same on every node), used when `ITTY_CLUSTER_SECRET` is
        /// not set. Never a flag: flags show in `ps`.
        cluster_secret_file: Option<PathBuf> = None;
    }
}

/// One `[[tls_sni]]` table (see `Config::tls_sni`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    /// The DNS names it serves (compared without regard to case).
    pub names: Vec<String>,
    /// Its PEM certificate chain.
    pub cert: PathBuf,
    /// Its PEM private key.
    pub key: PathBuf,
}

/// A feature switch written `on` or `off` (see `Config::compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Switch {
    On,
    Off,
}

impl std::str::FromStr for Switch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on" => Ok(Switch::On),
            "off" => Ok(Switch::Off),
            _ => Err(format!("must be `on` or `off`, not {s:?}")),
        }
    }
}

impl TryFrom<String> for Switch {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Where `/metrics` is served (see `Config::metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum MetricsEndpoint {
    Main,
    Off,
    Listen(SocketAddr),
}

impl std::str::FromStr for MetricsEndpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "main" => Ok(MetricsEndpoint::Main),
            "off" => Ok(MetricsEndpoint::Off),
            addr => addr.parse().map(MetricsEndpoint::Listen).map_err(|_| {
                format!(
                    "metrics must be `main`, `off` or an address like 127.0.0.1:9090, not {s:?}"
                )
            }),
        }
    }
}

impl TryFrom<String> for MetricsEndpoint {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// The engine a cluster runs on (see `Config::backplane`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Backplane {
    Off,
    /// A Redis URL (`redis://...`).
    Redis(String),
}

impl std::str::FromStr for Backplane {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" | "" => Ok(Backplane::Off),
            url if url.starts_with("redis://") => Ok(Backplane::Redis(url.to_owned())),
            _ => Err("backplane must be `off` or a redis:// URL".to_owned()),
        }
    }
}

impl TryFrom<String> for Backplane {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Trusted reverse proxies (see `Config::trusted_proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "StringOrList")]
pub struct TrustedProxies(pub Vec<crate::http::client_ip::Cidr>);

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    List(Vec<String>),
}

impl TryFrom<StringOrList> for TrustedProxies {
    type Error = String;
    fn try_from(v: StringOrList) -> Result<Self, String> {
        match v {
            StringOrList::One(s) => s.parse(),
            StringOrList::List(list) => list
                .iter()
                .map(|s| s.parse())
                .collect::<Result<_, _>>()
                .map(TrustedProxies),
        }
    }
}

impl std::str::FromStr for TrustedProxies {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

/// The command line: `itty-relay [--config FILE] [--OPTION VALUE]...`.
#[derive(Debug, Parser)]
#[command(
    name = "itty-relay",
    version,
    about = "A thread-per-core realtime relay speaking the itty-sockets protocol.",
    long_about = "A thread-per-core realtime relay speaking the itty-sockets protocol.\n\n\
        Clients connect to ws://HOST/c/<channel>?as=Alice&echo=true&announce=true with the\n\
        stock itty-sockets client (or any WebSocket) and every text frame they send is\n\
        relayed to the channel. Settings come from the defaults, then the optional TOML\n\
        file given by --config (same names, with underscores), then these flags."
)]
pub struct Cli {
    /// A TOML file of settings (keys as the flags, with underscores).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Print the configuration table (Markdown) and exit.
    #[arg(long)]
    pub print_config_table: bool,
    #[command(flatten)]
    pub overrides: Overrides,
}

impl Config {
    /// Defaults, then the file (if any), then the flags; validated.
    pub fn load(file: Option<&std::path::Path>, overrides: Overrides) -> Result<Config, Error> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
                toml::from_str(&text).map_err(|e| file_error(path, &text, &e))?
            }
            None => Config::default(),
        };
        overrides.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |m: &str| Err(Error::Config(m.to_owned()));
        if self.message_bytes_max == 0 || self.message_bytes_max > 64 * 1024 * 1024 {
            return fail("message_bytes_max must be between 1 and 67108864");
        }
        if self.outgoing_queue_bytes_max < self.message_bytes_max + 1024 {
            return fail("outgoing_queue_bytes_max must exceed message_bytes_max by at least 1024: a single message must fit");
        }
        if self.request_headers_max == 0
            || self.request_headers_max > crate::limits::HEADERS_MAX_CEILING
        {
            return fail("request_headers_max must be between 1 and 128");
        }
        if self.request_head_bytes_max < 256 || self.request_head_bytes_max > 1024 * 1024 {
            return fail("request_head_bytes_max must be between 256 and 1048576");
        }
        if self.ping_interval_ms == 0 || self.idle_timeout_ms <= self.ping_interval_ms {
            return fail("idle_timeout_ms must be greater than ping_interval_ms, and both above 0");
        }
        if self.handshake_timeout_ms == 0
            || self.close_timeout_ms == 0
            || self.shutdown_timeout_ms == 0
        {
            return fail(
                "handshake_timeout_ms, close_timeout_ms and shutdown_timeout_ms must be above 0",
            );
        }
        if self.forward_queue_slots == 0 {
            return fail("forward_queue_slots must be above 0");
        }
        let backlog_min = crate::limits::forward_backlog_floor(self.forward_queue_slots);
        if self.forward_backlog_max < backlog_min {
            return Err(Error::Config(format!(
                "forward_backlog_max must be at least {backlog_min} with {} forward_queue_slots: \
                 what is already in flight toward a shard when readers pause must still fit",
                self.forward_queue_slots
            )));
        }
        if self.shards > 1024 {
            return fail("shards must be at most 1024");
        }
        if self.io_memory_bytes < 64 * 1024 {
            return fail("io_memory_bytes must be at least 65536");
        }
        for (name, value) in [
            ("upgrades_per_ip_per_sec", self.upgrades_per_ip_per_sec),
            ("upgrades_per_ip_burst", self.upgrades_per_ip_burst),
            ("pushes_per_ip_per_sec", self.pushes_per_ip_per_sec),
            ("pushes_per_ip_burst", self.pushes_per_ip_burst),
            ("messages_per_conn_per_sec", self.messages_per_conn_per_sec),
            ("messages_per_conn_burst", self.messages_per_conn_burst),
        ] {
            if value == 0 || value > 1_000_000_000 {
                return Err(Error::Config(format!(
                    "{name} must be between 1 and 1000000000"
                )));
            }
        }
        if self.connections_per_shard_max == 0 {
            return fail("connections_per_shard_max must be above 0");
        }
        if let MetricsEndpoint::Listen(addr) = self.metrics {
            if addr == self.listen && addr.port() != 0 {
                return fail("metrics must listen on another address than listen (or be `main`)");
            }
        }
        if self.node_timeout_ms < 100 {
            return fail("node_timeout_ms must be at least 100");
        }
        crate::access::Namespaces::build(&self.namespace)?;
        Ok(())
    }
}

/// A config file's error, located by line, column and key, without quoting
/// the file: toml's own message shows the offending line, which may hold a
/// join or send key, and this text goes to the log (SIGHUP) and stderr.
fn file_error(path: &std::path::Path, text: &str, e: &toml::de::Error) -> Error {
    let mut place = String::new();
    if let Some(start) = e.span().map(|s| s.start.min(text.len())) {
        let before = &text.as_bytes()[..start];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = start - line_start + 1;
        place = format!(" line {line}, column {column}:");
        // The key the line sets, when it is a plain one (never its value).
        let rest = &text[line_start..];
        let key = rest[..rest.find('\n').unwrap_or(rest.len())]
            .split_once('=')
            .map(|(k, _)| k.trim())
            .filter(|k| {
                !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
        if let Some(key) = key {
            place = format!(" line {line}, column {column} (`{key}`):");
        }
    }
    // The message says what was expected; it quotes a value only when its
    // type is wrong, and keys are strings where strings belong.
    Error::Config(format!(
        "{}:{place} {}",
        path.display(),
        e.message().trim_end()
    ))
}

/// The cpus this process may run on (its affinity mask), in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for pid 0 (us).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn file_then_flags_override_defaults() {
        let dir = std::env::temp_dir().join(format!("itty-config-{}", std::process::id()));
        std::fs::write(&dir, "shards = 3\nmessage_bytes_max = 2000\n").unwrap();
        let overrides = Overrides {
            shards: Some(5),
            ..Default::default()
        };
        let config = Config::load(Some(&dir), overrides).unwrap();
        std::fs::remove_file(&dir).ok();
        assert_eq!(config.shards, 5);
        assert_eq!(config.message_bytes_max, 2000);
        assert_eq!(config.ping_interval_ms, 30_000);
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = std::env::temp_dir().join(format!("itty-config-bad-{}", std::process::id()));
        std::fs::write(&dir, "shardz = 3\n").unwrap();
        let err = Config::load(Some(&dir), Overrides::default()).unwrap_err();
        std::fs::remove_file(&dir).ok();
        assert!(err.to_string().contains("shardz"), "{err}");
    }

    #[test]
    fn a_broken_file_is_located_without_quoting_its_text() {
        let dir = std::env::temp_dir().join(format!("itty-config-key-{}", std::process::id()));
        std::fs::write(
            &dir,
            "shards = 2\n[[namespace]]\nprefix = \"p-hidden\"\njoin_key = \"k-hidden\n",
        )
        .unwrap();
        let err = Config::load(Some(&dir), Overrides::default()).unwrap_err();
        std::fs::remove_file(&dir).ok();
        let err = err.to_string();
        assert!(
            err.contains("line 4, column") && err.contains("`join_key`"),
            "{err}"
        );
        assert!(!err.contains("hidden"), "{err}");
    }

    #[test]
    fn idle_timeout_must_exceed_ping_interval() {
        let config = Config {
            ping_interval_ms: 10,
            idle_timeout_ms: 10,
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn readme_configuration_table_is_current() {
        let readme = include_str!("../README.md");
        assert!(
            readme.contains(&option_table()),
            "README.md's configuration table is stale: paste `itty-relay --print-config-table`"
        );
    }

    #[test]
    fn affinity_mask_lists_at_least_one_cpu() {
        assert!(!allowed_cpus().is_empty());
    }
}
