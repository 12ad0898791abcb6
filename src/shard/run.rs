//! The life of a shard's executor: connect the forward queues, start the
//! tasks (accept loop, one forwarder and one receiver per peer, the sweep),
//! report ready, then wait for the shutdown signal and drain.

use super::message::Batch;
use super::Shard;
use crate::conn::Listener;
use crate::limits::SWEEP_INTERVAL_MS;
use futures_lite::AsyncReadExt;
use glommio::channels::shared_channel::{SharedReceiver, SharedSender};
use glommio::net::UnixStream;
use glommio::timer::Timer;
use glommio::Task;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The control byte that announces a namespace reload.
pub const CONTROL_RELOAD: u8 = 2;
/// How long past its own drain a shard waits for its peers' (each is
/// bounded by the same `shutdown_timeout_ms`, so this is slack only).
const PEERS_DRAINED_WAIT_MS: u64 = 1_000;

/// The control byte that asks for a shutdown.
pub const CONTROL_SHUTDOWN: u8 = 1;

/// What `server.rs` hands a shard's thread: all `Send`, made on the main
/// thread.
pub struct ShardWiring {
    pub shard: Box<dyn FnOnce() -> Shard + Send>,
    pub listener: std::net::TcpListener,
    /// The server's control socket: `CONTROL_RELOAD` means "take the new
    /// namespaces from `reloads`"; any other byte, EOF or an error means
    /// "shut down".
    pub control: std::os::unix::net::UnixStream,
    /// Namespace tables the operator reloaded, newest last.
    pub reloads: std::sync::mpsc::Receiver<std::sync::Arc<crate::access::Namespaces>>,
    /// Told each time this shard put a reloaded table in force.
    pub reloaded: std::sync::mpsc::Sender<()>,
    /// The separate metrics listener (`--metrics ADDR`), on shard 0 only.
    pub metrics_listener: Option<std::net::TcpListener>,
    /// `senders[i]`: the queue to shard i (`None` for ourselves).
    pub senders: Vec<Option<SharedSender<Batch>>>,
    /// `receivers[i]`: the queue from shard i.
    pub receivers: Vec<Option<SharedReceiver<Batch>>>,
    /// Told once this shard accepts connections.
    pub ready: std::sync::mpsc::Sender<()>,
    /// In a cluster: this shard's end of its wake-up socket from the
    /// backplane's bridge thread.
    pub engine_wake: Option<std::os::unix::net::UnixStream>,
}

pub async fn run(wiring: ShardWiring) {
    let shard = Rc::new((wiring.shard)());
    let mut tasks = connect_peers(&shard, wiring.senders, wiring.receivers).await;

    // Kept to shut the listener down at the end (the accept loop owns it,
    // and ends only once it is shut down or the shard stopped).
    let listener_fd = wiring.listener.as_raw_fd();
    // SAFETY: the fd comes from a std socket we own and give up here.
    let mut control = unsafe { UnixStream::from_raw_fd(wiring.control.into_raw_fd()) };

    tasks.push(glommio::spawn_local(until_stopped(
        shard.clone(),
        accept_loop(shard.clone(), wiring.listener, Listener::Main),
    )));
    let metrics_fd = wiring.metrics_listener.map(|listener| {
        let fd = listener.as_raw_fd();
        tasks.push(glommio::spawn_local(until_stopped(
            shard.clone(),
            accept_loop(shard.clone(), listener, Listener::Metrics),
        )));
        fd
    });
    tasks.push(glommio::spawn_local(until_stopped(
        shard.clone(),
        sweep_loop(shard.clone()),
    )));
    tasks.push(glommio::spawn_local(until_stopped(
        shard.clone(),
        flush_loop(shard.clone()),
    )));
    tasks.push(glommio::spawn_local(until_stopped(
        shard.clone(),
        crate::conn::reader::run(shard.clone()),
    )));
    if let Some(wake) = wiring.engine_wake {
        // SAFETY: as above, a socket we own and give up here.
        let wake = unsafe { UnixStream::from_raw_fd(wake.into_raw_fd()) };
        tasks.push(glommio::spawn_local(until_stopped(
            shard.clone(),
            engine_inbound(shard.clone(), wake),
        )));
    }
    let _ = wiring.ready.send(());

    let mut byte = [0u8; 1];
    while let Ok(1) = control.read(&mut byte).await {
        if byte[0] != CONTROL_RELOAD {
            break;
        }
        while let Ok(namespaces) = wiring.reloads.try_recv() {
            shard.set_namespaces(namespaces);
            let _ = wiring.reloaded.send(());
        }
    }
    tracing::info!(
        shard = shard.id().0,
        connections = shard.open_conns(),
        "draining"
    );
    shard.begin_shutdown();
    let deadline = Instant::now() + Duration::from_millis(shard.config.shutdown_timeout_ms);
    while shard.life.open_sockets() > 0 && Instant::now() < deadline {
        Timer::new(Duration::from_millis(10)).await;
    }
    let left = shard.open_conns();
    // The owner of a channel keeps running until every peer's drain is
    // over: their members' leaves reach it first. Bounded, in case a peer
    // is stuck.
    shard.tell_peers_drained();
    let deadline = deadline.max(Instant::now()) + Duration::from_millis(PEERS_DRAINED_WAIT_MS);
    while !shard.peers_drained() && Instant::now() < deadline {
        Timer::new(Duration::from_millis(2)).await;
    }
    // Shutting the listening socket down stops it listening now, and wakes
    // the accept loop's readiness poll: its accept fails and it ends.
    // SAFETY: shutdown on the listening socket this shard owns.
    unsafe { libc::shutdown(listener_fd, libc::SHUT_RDWR) };
    if let Some(fd) = metrics_fd {
        // SAFETY: as above, the metrics listener this shard owns.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
    shard.stop();
    for task in tasks {
        task.await;
    }
    tracing::info!(shard = shard.id().0, left, "stopped");
}

/// Runs `task` until the shard stops.
async fn until_stopped(shard: Rc<Shard>, task: impl std::future::Future<Output = ()>) {
    futures_lite::future::or(task, shard.stopped()).await
}

/// Connects both ends of every queue, concurrently (a connect waits for
/// its peer), then starts a forwarder and a receiver per peer.
async fn connect_peers(
    shard: &Rc<Shard>,
    senders: Vec<Option<SharedSender<Batch>>>,
    receivers: Vec<Option<SharedReceiver<Batch>>>,
) -> Vec<Task<()>> {
    let mut tasks = Vec::new();
    let senders: Vec<_> = senders
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (i, glommio::spawn_local(s.connect()))))
        .collect();
    let receivers: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.map(|r| (i, glommio::spawn_local(r.connect()))))
        .collect();
    for (peer, sender) in senders {
        let sender = sender.await;
        let forwarder = {
            let shard = shard.clone();
            async move {
                loop {
                    let batch = shard.next_batch(peer).await;
                    // Waits only this task when the peer's queue is full.
                    if sender.send(batch).await.is_err() {
                        return; // the peer stopped (shutdown)
                    }
                }
            }
        };
        tasks.push(glommio::spawn_local(until_stopped(
            shard.clone(),
            forwarder,
        )));
    }
    for (_, receiver) in receivers {
        let receiver = receiver.await;
        let receive = {
            let shard = shard.clone();
            async move {
                while let Some(batch) = receiver.recv().await {
                    shard.receive(batch);
                }
            }
        };
        tasks.push(glommio::spawn_local(until_stopped(shard.clone(), receive)));
    }
    tasks
}

async fn accept_loop(shard: Rc<Shard>, listener: std::net::TcpListener, kind: Listener) {
    // TLS on the main listener only (`--metrics ADDR` stays plain).
    let tls = match kind {
        Listener::Main => shard.tls_config().cloned(),
        Listener::Metrics => None,
    };
    let queues = tls
        .as_ref()
        .map(|_| crate::conn::handshake::Queues::create());
    // Accepted here rather than by glommio's `TcpListener`, which makes
    // the listening socket non-blocking and back around each accept (three
    // `fcntl`s per connection): this one is non-blocking from its bind
    // (`listener::bind_all`), and an empty backlog is waited on with one
    // readiness poll.
    let fd = listener.as_raw_fd();
    let listener = socket2::Socket::from(listener);
    loop {
        // accept4 (close-on-exec), which also gives the peer's address: no
        // getpeername per connection.
        let e = match listener.accept() {
            Ok((socket, addr)) => {
                let Some(peer) = addr.as_socket().map(|a| a.ip()) else {
                    continue; // not TCP over IP: cannot happen on this listener
                };
                // SAFETY: a connected socket just accepted, handed over whole.
                let stream = unsafe { glommio::net::TcpStream::from_raw_fd(socket.into_raw_fd()) };
                match (&tls, queues) {
                    (Some(config), Some(queues)) => {
                        crate::conn::handshake::accept(&shard, stream, peer, config, queues)
                    }
                    _ => {
                        let stream = crate::conn::Stream::Plain(stream);
                        let serve = crate::conn::serve(shard.clone(), stream, peer, kind);
                        glommio::spawn_local(serve).detach();
                    }
                }
                continue;
            }
            Err(e) => e,
        };
        match e.kind() {
            std::io::ErrorKind::WouldBlock => {
                if let Err(e) = glommio::net::wait_readable(fd).await {
                    if shard.draining() {
                        return;
                    }
                    tracing::warn!(error = %e, "waiting to accept failed");
                    Timer::new(Duration::from_millis(50)).await;
                }
            }
            std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted => {}
            _ if shard.draining() => return, // the listener was shut down
            _ => {
                // Out of fds or memory: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                Timer::new(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Events the inbound task handles before it lets other tasks run.
const ENGINE_EVENTS_PER_TURN: usize = 1024;

/// In a cluster: takes what the bridge queued for this shard, and parks on
/// the wake-up socket when there is nothing (the bridge writes a byte only
/// to a parked shard, see `Cluster::park`).
async fn engine_inbound(shard: Rc<Shard>, mut wake: UnixStream) {
    let Some(cluster) = shard.cluster().cloned() else {
        return;
    };
    let mut scratch = [0u8; 64];
    loop {
        if shard.receive_from_engine(ENGINE_EVENTS_PER_TURN) == ENGINE_EVENTS_PER_TURN {
            futures_lite::future::yield_now().await;
            continue;
        }
        if cluster.park(shard.id()) {
            match wake.read(&mut scratch).await {
                Ok(0) | Err(_) => return, // the bridge is gone
                Ok(_) => {}
            }
        }
    }
}

/// The flush task: each round, sends what the round's deliveries queued
/// for the connections they marked (see `conn::outbox`).
async fn flush_loop(shard: Rc<Shard>) {
    let (mut round, mut ended) = (Vec::new(), Vec::new());
    loop {
        shard.home.outbox().next_round(&mut round, &mut ended).await;
        let marked = round.len();
        for conn in round.drain(..) {
            crate::conn::flush_marked(&shard, &conn);
        }
        for slot in ended.drain(..) {
            shard.reader().release(&shard, slot);
        }
        // A crowd's round leaves a large list behind: not kept once
        // rounds are small again.
        if marked < 256 && round.capacity() > 1024 {
            round = Vec::new();
        }
        if ended.capacity() > 1024 {
            ended = Vec::new();
        }
    }
}

async fn sweep_loop(shard: Rc<Shard>) {
    loop {
        Timer::new(Duration::from_millis(SWEEP_INTERVAL_MS)).await;
        shard.sweep();
    }
}
