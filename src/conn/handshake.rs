//! The TLS handshake of a connection to the main listener, on the shard
//! that accepted it (`--tls-cert`).
//!
//! Checked at accept, before any TLS work: the IP's ban and upgrade
//! bucket, and the shard's bound on handshakes in progress
//! (`TLS_HANDSHAKES_IN_PROGRESS_MAX`); a connection refused there is
//! closed at once. Handshakes run in a task queue with fewer shares than
//! the established connections' (`TLS_HANDSHAKE_SHARES`), so a reconnect
//! storm does not raise members' latency, and under the head deadline
//! (`handshake_timeout_ms`), so a slowloris at the TLS layer is cut in
//! time. A first byte that is not a TLS handshake record (plain HTTP on
//! the TLS port) gets a plain `400` and a close; a client rustls refuses
//! (an old TLS version, no common suite) gets rustls' alert and a close.
//! Never blocks; never touches another shard.
//!
//! Nothing here is parsed by us but that first byte: records, handshake
//! messages and certificates are rustls' (fuzzed upstream), so this module
//! has no fuzz target of its own.

use super::tls::Stream;
use super::{serve, Listener};
use crate::http::Response;
use crate::limits::TLS_HANDSHAKE_SHARES;
use crate::ratelimit::IpKey;
use crate::shard::Shard;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::{Latency, Shares, TaskQueueHandle};
use rustls::{ServerConfig, ServerConnection};
use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Bytes read per `recv` during a handshake: a ClientHello (even with a
/// post-quantum key share) and the client's second flight fit.
const HANDSHAKE_READ_BYTES: usize = 4 * 1024;

/// The first byte of a TLS handshake record (RFC 8446 section 5.1).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a plain HTTP request on the TLS port reads.
const PLAIN_HTTP_ON_TLS_PORT: &[u8] = b"this port speaks TLS: use https:// or wss://\n";

/// The two task queues a TLS shard runs connections in.
#[derive(Clone, Copy)]
pub struct Queues {
    /// Handshakes: fewer shares.
    handshakes: TaskQueueHandle,
    /// Established connections: the queue the accept loop runs in.
    connections: TaskQueueHandle,
}

impl Queues {
    /// Creates the handshake queue; call from the accept loop's queue.
    pub fn create() -> Queues {
        let executor = glommio::executor();
        let handshakes = executor.create_task_queue(
            Shares::Static(TLS_HANDSHAKE_SHARES),
            Latency::NotImportant,
            "tls-handshakes",
        );
        Queues {
            handshakes,
            connections: executor.current_task_queue(),
        }
    }
}

/// A connection accepted on a TLS listener: checked, then handshaken in
/// the handshake queue, then served in the connections' queue.
pub fn accept(
    shard: &Rc<Shard>,
    tcp: TcpStream,
    peer: IpAddr,
    config: &Arc<ServerConfig>,
    queues: Queues,
) {
    if !shard.admit_handshake(IpKey::of(peer)) {
        return; // closed before any TLS work
    }
    let (shard, config) = (shard.clone(), config.clone());
    let task = async move {
        let tracked = shard.track_socket();
        let stream = handshake(&shard, tcp, config).await;
        shard.handshake_ended(stream.is_some());
        drop(tracked);
        if let Some(stream) = stream {
            let serving = serve(shard, stream, peer, Listener::Main);
            if let Ok(task) = glommio::spawn_local_into(serving, queues.connections) {
                task.detach();
            }
        }
    };
    match glommio::spawn_local_into(task, queues.handshakes) {
        Ok(task) => {
            task.detach();
        }
        Err(e) => tracing::warn!(error = %e, "cannot spawn a TLS handshake"),
    }
}

/// Runs the handshake within the head deadline; `None`: it failed (the
/// socket is closed when `tcp` drops).
async fn handshake(shard: &Shard, tcp: TcpStream, config: Arc<ServerConfig>) -> Option<Stream> {
    let session = ServerConnection::new(config).ok()?;
    let deadline = Duration::from_millis(shard.config().handshake_timeout_ms);
    let mut state = Some((tcp, session));
    let run = async { Ok(drive(shard, &mut state).await) };
    match glommio::timer::timeout(deadline, run).await {
        Ok(Ok(())) => {
            let (tcp, session) = state.take()?;
            Some(Stream::tls(tcp, session))
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None, // the head deadline passed
    }
}

/// Reads, processes and answers until the handshake is done (and its last
/// flight, with the session ticket, is sent).
async fn drive(shard: &Shard, state: &mut Option<(TcpStream, ServerConnection)>) -> io::Result<()> {
    let (tcp, session) = state.as_mut().ok_or(io::ErrorKind::NotConnected)?;
    let mut buf = vec![0u8; HANDSHAKE_READ_BYTES];
    let mut sealed = Vec::new();
    let mut first = true;
    loop {
        while session.wants_write() {
            session.write_tls(&mut sealed)?;
        }
        // TLS 1.2 ends with the server's Finished, which the client waits
        // for before it sends a request: always send what is sealed.
        if !sealed.is_empty() {
            tcp.write_all(&sealed).await?;
            sealed.clear();
        }
        if !session.is_handshaking() {
            return Ok(());
        }
        let n = tcp.read(&mut buf).await?;
        shard.counters().bytes_in.add(n as u64);
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if std::mem::take(&mut first) && buf[0] != TLS_HANDSHAKE_RECORD {
            let refusal = Response::text(400, PLAIN_HTTP_ON_TLS_PORT).keep_alive(false);
            tcp.write_all(&refusal.to_bytes(false)).await?;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "plain HTTP on the TLS port",
            ));
        }
        let mut input = &buf[..n];
        while !input.is_empty() {
            session.read_tls(&mut input)?;
            if let Err(e) = session.process_new_packets() {
                // rustls queued its alert (protocol_version for an old
                // client, and so on): send it, then close.
                while session.wants_write() {
                    session.write_tls(&mut sealed)?;
                }
                let _ = tcp.write_all(&sealed).await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }
}
