//! Starting and stopping the relay: bind one SO_REUSEPORT listener per
//! shard, wire a bounded queue between every pair of shards, start one
//! pinned executor per shard, and wait until all of them accept. The
//! returned `Server` stops them: each shard drains (1001 to every client)
//! within `shutdown_timeout_ms`.

use crate::access::Namespaces;
use crate::cluster::bridge::Bridge;
use crate::cluster::secret::ClusterSecret;
use crate::cluster::Cluster;
use crate::config::{allowed_cpus, Backplane, Config, MetricsEndpoint};
use crate::error::Error;
use crate::id::{random_seed, ShardId, UidCipher};
use crate::metrics::{self, Metrics};
use crate::shard::{self, message::Batch, Shard, ShardWiring};
use crate::tls::Tls;
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

/// A running relay.
pub struct Server {
    local_addr: SocketAddr,
    /// The separate metrics listener's address, if there is one.
    metrics_addr: Option<SocketAddr>,
    shards: usize,
    metrics: Metrics,
    /// Our ends of the shards' control sockets.
    control: Vec<UnixStream>,
    /// Where reloaded namespace tables go, one queue per shard.
    reloads: Vec<std::sync::mpsc::SyncSender<Arc<Namespaces>>>,
    /// A shard's word that it put a reloaded table in force.
    reloaded: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    executors: Vec<ExecutorJoinHandle<()>>,
    /// The backplane's thread, in a cluster; stopped after the shards.
    bridge: Option<Bridge>,
    cluster: Option<Arc<Cluster>>,
    /// TLS on the main listener, when on: reloaded on SIGHUP.
    tls: Option<Tls>,
}

impl Server {
    /// Starts every shard and returns once all of them accept connections.
    pub fn start(config: Config) -> Result<Server, Error> {
        config.validate()?;
        crate::shard::sweep::fix_mmap_threshold();
        let cpus = allowed_cpus();
        let shards = if config.shards == 0 {
            cpus.len()
        } else {
            config.shards
        };
        let listeners = crate::shard::listener::bind_all(config.listen, shards)?;
        let local_addr = listeners[0].local_addr()?;
        let mut metrics_listener = match config.metrics {
            MetricsEndpoint::Listen(addr) => {
                Some(crate::shard::listener::bind_all(addr, 1)?.remove(0))
            }
            _ => None,
        };
        let metrics_addr = metrics_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        // Before anything starts: a broken certificate stops the start.
        let tls = Tls::from_config(&config)?;
        let (cluster, mut engine_wakes) = cluster(&config, shards)?;
        let cipher = match &cluster {
            // Every node maps engine numbers to the same uids.
            Some(c) => UidCipher::new(c.secret.uid_seed()),
            None => UidCipher::new(random_seed()),
        };
        let common = Common {
            namespaces: Arc::new(Namespaces::build(&config.namespace)?),
            config: Arc::new(config),
            metrics: metrics::new(shards),
            cipher,
            congested: (0..shards).map(|_| Default::default()).collect(),
            cluster: cluster.clone(),
            tls: tls.as_ref().map(Tls::server_config),
        };
        let (mut senders, mut receivers) = queues(shards, common.config.forward_queue_slots);
        let (reloaded_tx, reloaded_rx) = std::sync::mpsc::channel();
        let mut server = Server {
            local_addr,
            metrics_addr,
            shards,
            metrics: common.metrics.clone(),
            control: Vec::with_capacity(shards),
            reloads: Vec::with_capacity(shards),
            reloaded: std::sync::Mutex::new(reloaded_rx),
            executors: Vec::with_capacity(shards),
            bridge: None,
            cluster: cluster.clone(),
            tls,
        };
        // One readiness channel per shard: a shard whose executor cannot
        // start drops its sender, which is noticed at once.
        let mut ready = Vec::with_capacity(shards);
        for (index, listener) in listeners.into_iter().enumerate() {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            ready.push(ready_rx);
            let (ours, theirs) = UnixStream::pair()?;
            server.control.push(ours);
            let (reload_tx, reload_rx) = std::sync::mpsc::sync_channel(RELOADS_QUEUED_MAX);
            server.reloads.push(reload_tx);
            let wiring = ShardWiring {
                shard: common.shard(ShardId(index as u16), shards),
                listener,
                control: theirs,
                reloads: reload_rx,
                reloaded: reloaded_tx.clone(),
                metrics_listener: metrics_listener.take().filter(|_| index == 0),
                senders: std::mem::take(&mut senders[index]),
                receivers: std::mem::take(&mut receivers[index]),
                ready: ready_tx,
                engine_wake: engine_wakes.get_mut(index).and_then(Option::take),
            };
            let placement = match common.config.pin {
                true => Placement::Fixed(cpus[index % cpus.len()]),
                false => Placement::Unbound,
            };
            let executor = LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{index}"))
                .io_memory(common.config.io_memory_bytes)
                .spawn(move || shard::run(wiring))
                .map_err(|e| Error::Executor(format!("shard {index}: {e}")))?;
            server.executors.push(executor);
        }
        server.wait_ready(ready)?;
        if let Some(cluster) = &server.cluster {
            server.bridge = Some(Bridge::start(cluster.clone())?);
        }
        tracing::info!(%local_addr, shards, "listening");
        if let Some(addr) = metrics_addr {
            tracing::info!(%addr, "metrics listening");
        }
        Ok(server)
    }

    /// Waits until every shard accepts connections, or names the first that
    /// could not start.
    fn wait_ready(&mut self, ready: Vec<std::sync::mpsc::Receiver<()>>) -> Result<(), Error> {
        for (index, ready_rx) in ready.into_iter().enumerate() {
            if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
                let why = match self.executors.remove(index).join() {
                    Err(e) => e.to_string(),
                    Ok(()) => "it stopped before it was ready".to_owned(),
                };
                return Err(Error::Executor(format!(
                    "shard {index} did not start: {why} (is io_uring available, and is the memlock limit high enough? see README)"
                )));
            }
        }
        Ok(())
    }

    /// The address the shards listen on (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The separate metrics listener's address (`--metrics ADDR`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Puts `config`'s namespaces in force on every shard, for joins and
    /// pushes from now on (connections keep what their join granted). The
    /// caller loaded and validated `config`; a table that does not build
    /// is refused and the old one stays. Returns the number of namespaces.
    pub fn reload_namespaces(&self, config: &Config) -> Result<usize, Error> {
        let namespaces = Arc::new(Namespaces::build(&config.namespace)?);
        if let Some(cluster) = &self.cluster {
            cluster.set_config_digest(cluster.secret.config_digest(&config.namespace));
        }
        let reloaded = self.reloaded.lock().unwrap_or_else(|e| e.into_inner());
        while reloaded.try_recv().is_ok() {} // a late word from an earlier reload
        for (tx, socket) in self.reloads.iter().zip(&self.control) {
            tx.try_send(namespaces.clone()).map_err(|_| {
                Error::Executor("a shard is not taking reloads (stopped or stuck)".into())
            })?;
            (&*socket)
                .write_all(&[shard::CONTROL_RELOAD])
                .map_err(Error::Io)?;
        }
        // In force on every shard before this returns (and the reload is
        // logged): a connection made after that is checked against it.
        for _ in 0..self.shards {
            reloaded.recv_timeout(RELOAD_APPLIED_WAIT).map_err(|_| {
                Error::Executor("a shard did not put the reload in force (stopped or stuck)".into())
            })?;
        }
        Ok(namespaces.len())
    }

    /// Loads `config`'s TLS certificates again and puts them in force for
    /// new handshakes (open connections keep theirs). A missing or broken
    /// file is refused and the old certificates stay. `Ok(None)`: TLS is
    /// off. Returns how many certificates are served.
    pub fn reload_certificates(&self, config: &Config) -> Result<Option<usize>, Error> {
        self.tls.as_ref().map(|tls| tls.reload(config)).transpose()
    }

    /// Whether the main listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Every shard's counters, as `/metrics` sums them.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Tells every shard to drain and stop, and waits until they have.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), Error> {
        for socket in &mut self.control {
            let _ = socket.write_all(&[shard::CONTROL_SHUTDOWN]);
        }
        let mut result = Ok(());
        for (index, executor) in self.executors.drain(..).enumerate() {
            if let Err(e) = executor.join() {
                result = Err(Error::Executor(format!("shard {index}: {e}")));
            }
        }
        // After the shards: their leaves are queued; the bridge sends
        // them, then lets any member left leave, then disconnects.
        if let Some(mut bridge) = self.bridge.take() {
            bridge.stop();
        }
        result
    }

    /// The backplane's shared state, in a cluster.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// What every shard gets a handle to, made on the main thread.
struct Common {
    config: Arc<Config>,
    namespaces: Arc<Namespaces>,
    metrics: Metrics,
    cipher: UidCipher,
    congested: crate::shard::Congestion,
    cluster: Option<Arc<Cluster>>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Common {
    /// Builds shard `id` on its own thread (a `Shard` is not `Send`).
    fn shard(&self, id: ShardId, shards: usize) -> Box<dyn FnOnce() -> Shard + Send> {
        let (config, cipher, metrics) = (
            self.config.clone(),
            self.cipher.clone(),
            self.metrics.clone(),
        );
        let (congested, namespaces) = (self.congested.clone(), self.namespaces.clone());
        let (cluster, tls) = (self.cluster.clone(), self.tls.clone());
        Box::new(move || {
            let shard = Shard::new(id, shards, config, cipher, metrics, congested, namespaces);
            let shard = match cluster {
                Some(cluster) => shard.with_cluster(cluster),
                None => shard,
            };
            match tls {
                Some(tls) => shard.with_tls(tls),
                None => shard,
            }
        })
    }
}

/// The backplane's shared state, and each shard's end of its wake-up
/// socket (to be taken by its wiring).
type ClusterParts = (Option<Arc<Cluster>>, Vec<Option<UnixStream>>);

/// The backplane's shared state and each shard's wake-up socket, when
/// `--backplane` is set (the secret is read here: a missing one is an
/// error at startup, not a surprise later).
fn cluster(config: &Config, shards: usize) -> Result<ClusterParts, Error> {
    let Backplane::Redis(url) = &config.backplane else {
        return Ok((None, Vec::new()));
    };
    let secret = ClusterSecret::load(config.cluster_secret_file.as_deref())?;
    let digest = secret.config_digest(&config.namespace);
    let (cluster, wakes) =
        Cluster::new(url.clone(), secret, config.node_timeout_ms, digest, shards)?;
    Ok((
        Some(Arc::new(cluster)),
        wakes.into_iter().map(Some).collect(),
    ))
}

/// Reloads queued for one shard before it has taken the earlier ones: a
/// shard takes them at once, so more means it is stuck.
const RELOADS_QUEUED_MAX: usize = 8;

/// How long a reload waits for each shard to put it in force.
const RELOAD_APPLIED_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

type Senders = Vec<Vec<Option<SharedSender<Batch>>>>;
type Receivers = Vec<Vec<Option<SharedReceiver<Batch>>>>;

/// One bounded queue per ordered pair of shards: `senders[from][to]` and
/// `receivers[to][from]` are its two ends.
fn queues(shards: usize, slots: usize) -> (Senders, Receivers) {
    let mut senders: Senders = (0..shards)
        .map(|_| (0..shards).map(|_| None).collect())
        .collect();
    let mut receivers: Receivers = (0..shards)
        .map(|_| (0..shards).map(|_| None).collect())
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(slots);
                senders[from][to] = Some(tx);
                receivers[to][from] = Some(rx);
            }
        }
    }
    (senders, receivers)
}
