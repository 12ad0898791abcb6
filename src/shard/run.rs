//! The life of a shard's executor: connect the forward queues, start the
//! tasks (accept loop, one forwarder and one receiver per peer, the sweep),
//! report ready, then wait for the shutdown signal and drain.

use super::forward::Batch;
use super::Shard;
use crate::limits::SWEEP_INTERVAL_MS;
use futures_lite::AsyncReadExt;
use glommio::channels::shared_channel::{SharedReceiver, SharedSender};
use glommio::net::{TcpListener, UnixStream};
use glommio::timer::Timer;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What `server.rs` hands a shard's thread: all `Send`, made on the main
/// thread.
pub struct ShardWiring {
    pub shard: Box<dyn FnOnce() -> Shard + Send>,
    pub listener: std::net::TcpListener,
    /// Readable (a byte or EOF) when the server must shut down.
    pub shutdown: std::os::unix::net::UnixStream,
    /// `senders[i]`: the queue to shard i (`None` for ourselves).
    pub senders: Vec<Option<SharedSender<Batch>>>,
    /// `receivers[i]`: the queue from shard i.
    pub receivers: Vec<Option<SharedReceiver<Batch>>>,
    /// Told once this shard accepts connections.
    pub ready: std::sync::mpsc::Sender<()>,
}

pub async fn run(wiring: ShardWiring) {
    let shard = Rc::new((wiring.shard)());
    connect_peers(&shard, wiring.senders, wiring.receivers).await;

    // SAFETY: the fds come from std sockets we own and give up here.
    let listener = unsafe { TcpListener::from_raw_fd(wiring.listener.into_raw_fd()) };
    let mut shutdown = unsafe { UnixStream::from_raw_fd(wiring.shutdown.into_raw_fd()) };

    glommio::spawn_local(accept_loop(shard.clone(), listener)).detach();
    glommio::spawn_local(sweep_loop(shard.clone())).detach();
    let _ = wiring.ready.send(());

    // Any byte, EOF or error on the control socket means: shut down.
    let mut byte = [0u8; 1];
    let _ = shutdown.read(&mut byte).await;
    tracing::info!(
        shard = shard.id.0,
        connections = shard.open_conns(),
        "draining"
    );
    shard.begin_shutdown();
    let deadline = Instant::now() + Duration::from_millis(shard.config.shutdown_timeout_ms);
    while shard.open_conns() > 0 && Instant::now() < deadline {
        Timer::new(Duration::from_millis(10)).await;
    }
    tracing::info!(shard = shard.id.0, left = shard.open_conns(), "stopped");
}

/// Connects both ends of every queue, concurrently (a connect waits for
/// its peer), then starts a forwarder and a receiver per peer.
async fn connect_peers(
    shard: &Rc<Shard>,
    senders: Vec<Option<SharedSender<Batch>>>,
    receivers: Vec<Option<SharedReceiver<Batch>>>,
) {
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
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let link = shard.peer(peer).expect("a link per peer");
            loop {
                let batch = link.next_batch().await;
                // Waits only this task when the peer's queue is full.
                if sender.send(batch).await.is_err() {
                    return; // the peer stopped (shutdown)
                }
            }
        })
        .detach();
    }
    for (_, receiver) in receivers {
        let receiver = receiver.await;
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(batch) = receiver.recv().await {
                for msg in batch {
                    shard.handle(msg);
                }
            }
        })
        .detach();
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(crate::conn::serve(shard.clone(), stream)).detach();
            }
            Err(e) => {
                // Out of fds or memory: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                Timer::new(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn sweep_loop(shard: Rc<Shard>) {
    loop {
        Timer::new(Duration::from_millis(SWEEP_INTERVAL_MS)).await;
        shard.sweep();
    }
}
