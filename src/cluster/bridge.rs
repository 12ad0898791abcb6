//! The bridge thread: the one place a node talks to the engine. It runs a
//! tokio current-thread runtime (the engine client's), takes the shards'
//! commands from their lock-free queues in batches, runs each batch as one
//! pipeline, and hands answers and subscribed traffic back to the shards'
//! queues (`Cluster::deliver`, which wakes a parked shard).
//!
//! A connection lives until it fails: a command unanswered within the
//! response timeout, the client reporting it closed, a heartbeat refused,
//! or the node's probe not coming back within a heartbeat. Then every
//! shard is told `Down` (joins get 503, `/health` 503, delivery goes on
//! locally), and the bridge reconnects with backoff (100 ms doubling to
//! 5 s, with jitter). On reconnect it resubscribes, and every shard is
//! told `Up` and re-asserts its members (see `shard::cluster`).
//!
//! While down, commands are still taken from the queues (so they never
//! fill): subscriptions are remembered, joins and pushes answered
//! "unavailable", the rest dropped and counted.
//!
//! Never blocks a shard; a shard never waits for it.

use super::engine::{Batch, Engine, Inbox};
use super::redis_engine::RedisEngine;
use super::secret::ChannelHash;
use super::{Cluster, EngineCmd, EngineEvent, EngineState, JoinReply};
use ahash::AHashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// First wait before reconnecting; doubles up to `BACKOFF_MAX`.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A channel whose last member here left stays subscribed this long, so
/// churn (leave, join again) does not cost a subscribe each time.
const UNSUBSCRIBE_LINGER: Duration = Duration::from_secs(2);

/// Commands taken from the queues for one pipeline.
const BATCH_MAX: usize = 8192;

/// How long a stopping node waits for the engine to take its last
/// commands and its goodbye.
const STOP_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Heartbeats per node timeout: a node that misses its deadline
/// (`node_timeout_ms - interval` after its last beat) is reaped at the next
/// beat of another node, so its members' leaves go out within
/// `node_timeout_ms` of its death.
pub fn heartbeat_interval_ms(node_timeout_ms: u64) -> u64 {
    (node_timeout_ms / 5).clamp(20, 1000)
}

/// The running bridge thread.
pub struct Bridge {
    cluster: Arc<Cluster>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bridge {
    pub fn start(cluster: Arc<Cluster>) -> std::io::Result<Bridge> {
        let shared = cluster.clone();
        let thread = std::thread::Builder::new()
            .name("backplane".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime builds");
                runtime.block_on(supervise(shared));
            })?;
        Ok(Bridge {
            cluster,
            thread: Some(thread),
        })
    }

    /// Flushes, says goodbye (the node's members leave now) and stops;
    /// waits at most a few seconds.
    pub fn stop(&mut self) {
        self.cluster.stop();
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + STOP_FLUSH_TIMEOUT * 2;
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The channels this node wants, with a deadline for those lingering.
#[derive(Default)]
struct Subscriptions {
    wanted: AHashMap<ChannelHash, Option<Instant>>,
    /// Wanted since the last subscribe call.
    new: Vec<ChannelHash>,
}

impl Subscriptions {
    fn subscribe(&mut self, inbox: &Inbox, h: ChannelHash, shard: usize) {
        inbox.route(h, shard);
        match self.wanted.insert(h, None) {
            Some(_) => {} // already subscribed (maybe lingering)
            None => self.new.push(h),
        }
    }

    fn unsubscribe(&mut self, h: ChannelHash) {
        if let Some(linger) = self.wanted.get_mut(&h) {
            *linger = Some(Instant::now() + UNSUBSCRIBE_LINGER);
        }
    }

    /// Channels whose linger ran out: no longer wanted.
    fn expired(&mut self, inbox: &Inbox, now: Instant) -> Vec<ChannelHash> {
        let gone: Vec<ChannelHash> = self
            .wanted
            .iter()
            .filter(|(_, linger)| linger.is_some_and(|t| t <= now))
            .map(|(h, _)| *h)
            .collect();
        for h in &gone {
            self.wanted.remove(h);
            inbox.unroute(h);
        }
        gone
    }
}

/// Why a connection's service ended.
enum End {
    Stop,
    Failed(String),
}

async fn supervise(cluster: Arc<Cluster>) {
    let inbox = Arc::new(Inbox::new(cluster.clone()));
    let mut engine = RedisEngine::new(cluster.clone(), inbox.clone());
    let mut subs = Subscriptions::default();
    let mut node = None;
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u64;
    while !cluster.stopping() {
        match connect(&cluster, &mut engine, node, &mut subs).await {
            Ok(n) => {
                node = Some(n);
                backoff = BACKOFF_MIN;
                failures = 0;
                tracing::info!(node = n, "backplane connected");
                cluster.set_state(EngineState::Up, n);
                let end = serve(&cluster, &mut engine, &inbox, &mut subs).await;
                engine.disconnect();
                cluster.set_state(EngineState::Down, n);
                match end {
                    End::Stop => return,
                    End::Failed(why) => {
                        tracing::warn!(error = %why, "backplane connection lost");
                        cluster.counters.reconnected();
                    }
                }
            }
            Err(why) => {
                // Said once, then every 20th attempt (~100 s at the cap).
                if failures.is_multiple_of(20) {
                    tracing::warn!(error = %why, "backplane unreachable; retrying");
                }
                failures += 1;
            }
        }
        wait_down(&cluster, &inbox, &mut subs, jitter(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn connect(
    cluster: &Cluster,
    engine: &mut RedisEngine,
    node: Option<u64>,
    subs: &mut Subscriptions,
) -> Result<u64, String> {
    let n = engine.connect(node).await.map_err(|e| e.0)?;
    let all: Vec<ChannelHash> = subs.wanted.keys().copied().collect();
    engine.subscribe(&all).await.map_err(|e| e.0)?;
    subs.new.clear();
    // Every shard gets uids before it hears `Up`, so the first join after
    // `/health` turns 200 has one.
    let batch = (0..cluster.shards())
        .map(|s| (s, EngineCmd::UidBlock))
        .collect();
    for (shard, event) in engine.run(batch).await.map_err(|e| e.0)? {
        cluster.deliver(shard, event);
    }
    Ok(n)
}

/// Backoff plus up to half of it again, so nodes cut off together do not
/// all knock at once.
fn jitter(d: Duration) -> Duration {
    let extra = crate::id::random_seed() % (d.as_millis() as u64 / 2 + 1);
    d + Duration::from_millis(extra)
}

/// While disconnected: keep the queues moving for `wait`.
async fn wait_down(cluster: &Cluster, inbox: &Inbox, subs: &mut Subscriptions, wait: Duration) {
    let until = Instant::now() + wait;
    loop {
        let batch = take(cluster, inbox, subs);
        let mut dropped = 0;
        for (shard, cmd) in batch {
            match cmd {
                EngineCmd::Join(join) => cluster.deliver(
                    shard,
                    EngineEvent::Joined {
                        h: join.h,
                        conn: join.conn,
                        reply: JoinReply::Unavailable,
                    },
                ),
                EngineCmd::Push { home, request, .. } => cluster.deliver(
                    shard,
                    EngineEvent::Pushed {
                        home,
                        request,
                        recipients: None,
                    },
                ),
                _ => dropped += 1,
            }
        }
        cluster.counters.dropped_while_down(dropped);
        // Lingering channels are simply forgotten: the next connection
        // subscribes only what is wanted.
        subs.expired(inbox, Instant::now() + UNSUBSCRIBE_LINGER);
        if cluster.stopping() || Instant::now() >= until {
            return;
        }
        tokio::select! {
            _ = cluster.bridge_woken() => {}
            _ = tokio::time::sleep_until(until) => {}
        }
    }
}

/// Takes up to `BATCH_MAX` commands from the shards, round robin; applies
/// subscription changes at once (routes first, so no payload for a new
/// channel is missed).
fn take(cluster: &Cluster, inbox: &Inbox, subs: &mut Subscriptions) -> Batch {
    let mut batch = Vec::new();
    let mut progress = true;
    while progress && batch.len() < BATCH_MAX {
        progress = false;
        for shard in 0..cluster.shards() {
            // A few at a time per shard, so one busy shard does not starve
            // another's joins.
            for _ in 0..64 {
                let Some(cmd) = cluster.next_cmd(shard) else {
                    break;
                };
                progress = true;
                match cmd {
                    EngineCmd::Subscribe(h) => subs.subscribe(inbox, h, shard),
                    EngineCmd::Unsubscribe(h) => subs.unsubscribe(h),
                    cmd => batch.push((shard, cmd)),
                }
            }
        }
    }
    batch
}

async fn serve(
    cluster: &Cluster,
    engine: &mut RedisEngine,
    inbox: &Inbox,
    subs: &mut Subscriptions,
) -> End {
    let beat = Duration::from_millis(heartbeat_interval_ms(cluster.node_timeout_ms));
    let mut next_beat = Instant::now();
    let mut probe_sent = 0u64;
    let mut mismatched = 0;
    loop {
        if inbox.is_disconnected() {
            return End::Failed("the engine closed the connection".into());
        }
        if let Err(why) = run_commands(cluster, engine, inbox, subs).await {
            return End::Failed(why);
        }
        if cluster.stopping() {
            return stop(cluster, engine, inbox, subs).await;
        }
        let now = Instant::now();
        if now >= next_beat {
            // The probe sent at the last beat must be back by now: the
            // connection carries our subscriptions, not only commands.
            if probe_sent > 0 && inbox.probe_seen() < probe_sent {
                return End::Failed("the probe did not come back".into());
            }
            match engine.heartbeat().await {
                Ok(h) => {
                    cluster
                        .counters
                        .heartbeat(h.live_nodes, h.mismatched, h.reaped);
                    if h.mismatched > 0 && mismatched == 0 {
                        tracing::warn!(
                            nodes = h.mismatched,
                            "backplane: other nodes run different namespaces; \
                             every node must run the same"
                        );
                    }
                    mismatched = h.mismatched;
                }
                Err(e) => return End::Failed(e.0),
            }
            probe_sent += 1;
            if let Err(e) = engine.probe(probe_sent).await {
                return End::Failed(e.0);
            }
            let gone = subs.expired(inbox, now);
            if !gone.is_empty() {
                if let Err(e) = engine.unsubscribe(&gone).await {
                    return End::Failed(e.0);
                }
            }
            next_beat = now + beat;
        }
        tokio::select! {
            _ = cluster.bridge_woken() => {}
            _ = tokio::time::sleep_until(next_beat) => {}
            _ = inbox.gone.notified() => {}
        }
    }
}

/// Runs what the shards queued until their queues are empty.
async fn run_commands(
    cluster: &Cluster,
    engine: &mut RedisEngine,
    inbox: &Inbox,
    subs: &mut Subscriptions,
) -> Result<(), String> {
    loop {
        let batch = take(cluster, inbox, subs);
        if !subs.new.is_empty() {
            // Subscribed before the batch's joins run: a node always
            // receives its own members' join events.
            let new = std::mem::take(&mut subs.new);
            engine.subscribe(&new).await.map_err(|e| e.0)?;
        }
        if batch.is_empty() {
            return Ok(());
        }
        for (_, cmd) in &batch {
            if matches!(cmd, EngineCmd::Publish { .. }) {
                cluster.counters.published();
            }
        }
        let answers = engine.run(batch).await.map_err(|e| e.0)?;
        for (shard, event) in answers {
            cluster.deliver(shard, event);
        }
    }
}

/// The node stops: last commands, then its remaining members leave.
async fn stop(
    cluster: &Cluster,
    engine: &mut RedisEngine,
    inbox: &Inbox,
    subs: &mut Subscriptions,
) -> End {
    let goodbye = async {
        run_commands(cluster, engine, inbox, subs).await?;
        engine.deregister().await.map_err(|e| e.0)
    };
    match tokio::time::timeout(STOP_FLUSH_TIMEOUT, goodbye).await {
        Ok(Ok(left)) => tracing::info!(left, "backplane: node deregistered"),
        Ok(Err(e)) => tracing::warn!(error = %e, "backplane: goodbye failed"),
        Err(_) => tracing::warn!("backplane: goodbye timed out"),
    }
    End::Stop
}
