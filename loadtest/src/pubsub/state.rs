//! What the executors and the main thread share, and each executor's own
//! counters: plain data and atomics, no executor and no I/O.

use crate::net::SourceIps;
use crate::proto::Wire;
use crate::ws::{SetupError, Target};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Read buffer per connection: one read carries many frames.
pub const READ_BUF: usize = 64 * 1024;
/// Read buffer per connection when nothing but events is expected (`idle`).
pub const SMALL_READ_BUF: usize = 2 * 1024;
/// glommio's default (10 MiB per ring) exceeds the usual 8 MiB memlock limit.
pub const IO_MEMORY: usize = 256 * 1024;
/// Largest latency recorded, in microseconds (longer ones are clamped).
pub const LATENCY_MAX_US: u64 = 60_000_000;
/// Above this average busy share of its cores, the generator is the limit.
pub const SATURATED: f64 = 0.90;
pub const NS: u64 = 1_000_000_000;
/// The first sequence number of an external source (`ceiling`): fixed-width
/// (12 digits) so that its frames are patched in place, not formatted.
pub const EXTERNAL_SEQ_BASE: u64 = 100_000_000_000;

/// How receivers read after their join (`--recv`): through glommio
/// (`Uring`), or by one epoll pump per executor (`Epoll`, see `epoll.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecvMode {
    Uring,
    Epoll,
}

/// One channel of the plan.
pub struct Channel {
    pub name: String,
    /// The upgrade request that joins it.
    pub request: Vec<u8>,
    /// Its publishers are ids `pub_base..pub_base + pub_count`.
    pub pub_base: u32,
    pub pub_count: u32,
}

/// One WebSocket connection of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnSpec {
    pub channel: u32,
    /// Counts what it receives (a member); otherwise it only drains.
    pub receives: bool,
    /// Publishes as this publisher id.
    pub publisher: Option<u32>,
}

/// Who connects where and who publishes: built by each scenario.
pub struct Plan {
    pub channels: Vec<Channel>,
    /// Receivers first: they join before any publisher-only connection.
    pub conns: Vec<ConnSpec>,
    /// Total publishers; publisher p publishes on `pub_channel[p]`.
    pub pub_channel: Vec<u32>,
    /// Publishers are HTTP push clients (`push`), not WebSocket connections.
    pub push: Option<PushSpec>,
    /// Messages come from elsewhere (the `ceiling` blast server): nothing is
    /// expected, so nothing can be lost.
    pub external_source: bool,
}

#[derive(Debug, Clone)]
pub struct PushSpec {
    pub send_key: String,
    /// Requests in flight per connection (1: wait for each response).
    pub pipeline: usize,
}

/// What every executor and the main thread share: settings and atomics.
pub struct Shared {
    pub wire: &'static dyn Wire,
    pub target: Target,
    /// `wss://`: the TLS client.
    pub tls: Option<crate::tls::ClientTls>,
    /// The relays' addresses: connection i goes to `addrs[i % len]`.
    pub addrs: Vec<std::net::SocketAddr>,
    pub sources: SourceIps,
    pub recv: RecvMode,
    pub plan: Plan,
    /// Messages per second over all publishers.
    pub rate: f64,
    pub payload_bytes: usize,
    pub payload_fill: super::config::PayloadFill,
    pub deflate: Option<super::config::InflateMode>,
    /// Receive buffer per connection.
    pub buf_bytes: usize,
    pub duration_ns: u64,
    pub warmup_ns: u64,
    pub grace_ns: u64,
    pub join_timeout: Duration,
    /// Per channel: receivers joined (fixed once publishing starts).
    pub receivers_on: Vec<AtomicU32>,
    pub members_joined: AtomicUsize,
    pub publishers_joined: AtomicUsize,
    pub failed: AtomicUsize,
    pub failures: Mutex<BTreeMap<String, usize>>,
    /// Upgrades answered `429` and tried again.
    pub retried_429: AtomicU64,
    pub setup_done: AtomicUsize,
    /// Publishing start, ns on the shared clock; 0 until scheduled.
    pub t0: AtomicU64,
    pub abort: AtomicBool,
    pub stop: AtomicBool,
    pub published: AtomicU64,
    /// Deliveries the published messages owe (receivers on the channel,
    /// minus the sender itself).
    pub expected: AtomicU64,
    pub publishers_done: AtomicUsize,
    /// Deliveries per executor, for ending the grace period early.
    pub delivered: Vec<Padded>,
}

#[repr(align(128))]
#[derive(Default)]
pub struct Padded(pub AtomicU64);

impl Shared {
    /// The relay connection `i` goes to (round robin over the URLs).
    pub fn addr_for(&self, i: usize) -> std::net::SocketAddr {
        self.addrs[i % self.addrs.len()]
    }

    /// Where latencies start counting: the end of the warm-up (never,
    /// before publishing is scheduled).
    pub fn measured_from(&self) -> u64 {
        match self.t0.load(Relaxed) {
            0 => u64::MAX,
            t0 => t0 + self.warmup_ns,
        }
    }

    pub fn fail(&self, e: &SetupError) {
        self.failed.fetch_add(1, Relaxed);
        *self.failures.lock().unwrap().entry(e.label()).or_default() += 1;
    }
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// One executor's counters; returned to the main thread at the end.
pub struct ExecStats {
    /// Relayed messages received by members.
    pub delivered: u64,
    /// Reads that returned data on member connections (frames per read
    /// shows how much each wake-up batches).
    pub reads: u64,
    /// Bytes those reads returned: frames on the wire, as received.
    pub bytes_received: u64,
    /// Compressed (RSV1) messages received and inflated (`--deflate`).
    pub compressed: u64,
    /// Latency (us) of messages scheduled after the warm-up.
    pub latency: Histogram<u64>,
    /// Latency (us) of everything received since the last tick.
    pub tick: Histogram<u64>,
    /// Deliveries without a readable stamp.
    pub unstamped: u64,
    /// Join/leave/error events, NATS control lines (skipped).
    pub events: u64,
    /// A member's own messages the relay sent back (nchan; skipped).
    pub own_echoes: u64,
    /// Protocol errors the server reported (NATS `-ERR`), by line.
    pub server_errors: BTreeMap<String, u64>,
    /// Binary or continuation frames (none expected).
    pub other_frames: u64,
    /// Sequence numbers skipped at a member (lost mid-stream).
    pub gaps: u64,
    /// Sequence numbers that went backwards at a member (duplicates, reorder).
    pub reorders: u64,
    /// Connections that ended during the run, by reason.
    pub disconnects: BTreeMap<String, u64>,
    /// Frames publishers received (other publishers' messages; not counted).
    pub publisher_frames: u64,
    pub published: u64,
    /// Messages scheduled before the end but not sent by then.
    pub unsent: u64,
    /// Publisher lateness (us): write completed minus scheduled time.
    pub lag: Histogram<u64>,
    /// Deliveries the messages published here owe.
    pub expected: u64,
    /// `push`: responses by HTTP status.
    pub push_status: BTreeMap<u16, u64>,
    /// `push`: sum of the `recipients` the relay reported.
    pub push_recipients: u64,
    /// `push`: response latency (us) from the scheduled send.
    pub push_latency: Histogram<u64>,
}

impl ExecStats {
    pub fn merge(&mut self, s: &ExecStats) {
        self.delivered += s.delivered;
        self.reads += s.reads;
        self.bytes_received += s.bytes_received;
        self.compressed += s.compressed;
        let _ = self.latency.add(&s.latency);
        let _ = self.lag.add(&s.lag);
        self.unstamped += s.unstamped;
        self.events += s.events;
        self.own_echoes += s.own_echoes;
        for (k, v) in &s.server_errors {
            *self.server_errors.entry(k.clone()).or_default() += v;
        }
        self.other_frames += s.other_frames;
        self.gaps += s.gaps;
        self.reorders += s.reorders;
        self.publisher_frames += s.publisher_frames;
        self.published += s.published;
        self.unsent += s.unsent;
        for (k, v) in &s.disconnects {
            *self.disconnects.entry(k.clone()).or_default() += v;
        }
        self.expected += s.expected;
        for (k, v) in &s.push_status {
            *self.push_status.entry(*k).or_default() += v;
        }
        self.push_recipients += s.push_recipients;
        let _ = self.push_latency.add(&s.push_latency);
    }

    /// Counts one connection that ended during the run, by reason.
    pub fn disconnect(&mut self, why: String) {
        *self.disconnects.entry(why).or_default() += 1;
    }

    /// Connections that ended during the run.
    pub fn disconnected(&self) -> u64 {
        self.disconnects.values().sum()
    }

    pub fn new() -> ExecStats {
        ExecStats {
            delivered: 0,
            reads: 0,
            bytes_received: 0,
            compressed: 0,
            latency: histogram(),
            tick: histogram(),
            unstamped: 0,
            events: 0,
            own_echoes: 0,
            server_errors: BTreeMap::new(),
            other_frames: 0,
            gaps: 0,
            reorders: 0,
            disconnects: BTreeMap::new(),
            publisher_frames: 0,
            published: 0,
            unsent: 0,
            lag: histogram(),
            expected: 0,
            push_status: BTreeMap::new(),
            push_recipients: 0,
            push_latency: histogram(),
        }
    }
}

/// Sent by each executor at `t0 + sec` seconds.
pub struct Tick {
    pub exec: usize,
    pub sec: u64,
    pub delivered: u64,
    pub published: u64,
    pub tick: Histogram<u64>,
    pub cpu_ns: u64,
    pub disconnected: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Member,
    Publisher,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Publisher => "publisher",
        }
    }
}
