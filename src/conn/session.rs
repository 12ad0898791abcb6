//! A WebSocket session on the connection's home shard: join the channel,
//! then read until the connection ends for a `CloseReason`, then close.
//!
//! Once the join is confirmed, a plain connection's task ends: the shard's
//! reader (`conn::reader`) reads it from then on, and the shard's flush
//! task sends to it, so a silent connection holds no task at all. Its end
//! runs in a task of its own (`close_read`). A TLS connection keeps its
//! task, which reads and decrypts, and a writer task that seals and sends.
//! Either way, what is read goes through `conn::inbound`.

use super::handle::ConnHandle;
use super::inbound::{Inbound, Role};
use super::writer;
use super::Stream;
use crate::error::CloseReason;
use crate::http::{self, JoinOptions};
use crate::ratelimit::IpKey;
use crate::shard::join::KeyCheck;
use crate::shard::{Shard, SocketGuard};
use crate::ws::deflate::Negotiated;
use bytes::Bytes;
use futures_lite::{future, AsyncRead};
use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

/// What the upgrade asked for.
pub enum Mode {
    /// Join the channel and publish to it; the owner checks `KeyCheck`.
    Channel(String, JoinOptions, KeyCheck),
    /// Echo every message back (`/__echo`, for conformance tests).
    Echo,
}

/// The handshake's answer: the accept key and the extension agreed.
pub struct Upgrade {
    pub accept_key: String,
    pub deflate: Option<Negotiated>,
}

/// A connection the HTTP phase upgraded: what its session starts from.
pub struct Upgraded {
    pub stream: Stream,
    /// Bytes read past the request head: the client's first frames.
    pub leftover: Vec<u8>,
    pub mode: Mode,
    pub upgrade: Upgrade,
    pub ip: IpKey,
}

/// Opens the session at once (the `101` queued, the join asked for) and
/// returns the future that runs it. A plain function rather than an `async
/// fn`: an `async fn` keeps its arguments in its future for its whole life,
/// and the handshake's (`Mode`, `Upgrade`: over 300 bytes) are consumed
/// here. `tracked` counts the socket until it is closed.
pub fn run_session(
    shard: Rc<Shard>,
    upgraded: Upgraded,
    tracked: SocketGuard,
) -> impl Future<Output = ()> {
    let Upgraded {
        stream,
        leftover,
        mode,
        upgrade,
        ip,
    } = upgraded;
    let deflate = upgrade.deflate.is_some();
    let role = match mode {
        Mode::Channel(..) => Role::Member,
        Mode::Echo => Role::Echo,
    };
    let conn = open(&shard, &stream, mode, upgrade);
    async move {
        conn.joined_or_ended().await;
        let started = match conn.ended() {
            Some(reason) => Err(reason),
            None => Inbound::start(&shard, &conn, leftover, deflate, role, ip),
        };
        let (closing, reason) = match (stream, started) {
            (Stream::Plain(tcp), started) => {
                // The 101 and the join event go out together, by the
                // shard's flush task.
                conn.release_output();
                match started {
                    // The reader takes the socket: this task ends.
                    Ok(inbound) => {
                        return shard.reader().adopt(&shard, conn, tcp, inbound, tracked)
                    }
                    // SAFETY: the stream gave the descriptor up to us.
                    Err(reason) => (
                        Closing::Plain(unsafe { OwnedFd::from_raw_fd(tcp.into_raw_fd()) }),
                        reason,
                    ),
                }
            }
            (tls, started) => {
                // TLS: a writer task seals and sends; this one reads.
                let stream = Rc::new(RefCell::new(tls));
                let writer = writer::run_writer(shard.clone(), conn.clone(), stream.clone());
                let writer = glommio::spawn_local(writer);
                let reason = match started {
                    // Boxed: only TLS sessions read here, and inline its
                    // state would make every plain connection's task 1.1 KB.
                    Ok(inbound) => Box::pin(read_tls(&shard, &conn, &stream, inbound)).await,
                    Err(reason) => reason,
                };
                (Closing::Tls(stream, writer), reason)
            }
        };
        conn.end(reason);
        shard.leave(&conn);
        // Boxed: the end runs once, so its state should not make every
        // idle connection's session larger.
        Box::pin(close(&shard, &conn, closing, reason)).await;
        drop(tracked);
    }
}

/// Opens the connection on its shard, queues the `101` and asks the
/// channel's owner for the join. Consumes what only the handshake needs, so
/// none of it stays in the session's future.
fn open(shard: &Shard, stream: &Stream, mode: Mode, upgrade: Upgrade) -> Rc<ConnHandle> {
    let echo = matches!(&mode, Mode::Channel(_, o, _) if o.echo);
    let conn = shard.open_conn(echo);
    let extensions = upgrade.deflate.map(|d| {
        conn.set_deflate(d);
        d.response_header()
    });
    // The 101 is the first thing queued; the writer starts once the owner
    // confirmed the join, so the join event follows it directly.
    let switching = http::switching_protocols(&upgrade.accept_key, extensions.as_deref());
    conn.deliver(Bytes::from(switching));
    conn.set_socket(std::os::fd::AsRawFd::as_raw_fd(stream));
    match mode {
        Mode::Channel(channel, options, keys) => shard.join(&channel, &conn, &options, keys),
        // No channel, so no owner to wait for.
        Mode::Echo => conn.set_joinless(),
    }
    conn
}

/// The end of a connection the shard's reader read: it leaves its channel
/// and is closed (see `close`) in a task of its own, unless its peer is
/// gone, no frame is half sent and no blocked send is out: such a peer is
/// sent nothing, so its end waits for nothing and runs here.
pub fn close_read(shard: &Rc<Shard>, conn: Rc<ConnHandle>, socket: OwnedFd, tracked: SocketGuard) {
    let reason = conn.ended().unwrap_or(CloseReason::PeerGone);
    shard.leave(&conn);
    if reason == CloseReason::PeerGone && conn.head_written() == 0 && conn.hold_output_now() {
        writer::finish_gone(shard, &conn, socket.as_raw_fd());
        shard.close_conn(&conn, reason);
        drop(socket);
        drop(tracked);
        return;
    }
    let shard = shard.clone();
    glommio::spawn_local(async move {
        close(&shard, &conn, Closing::Plain(socket), reason).await;
        drop(tracked);
    })
    .detach();
}

/// What a closing connection is written and read through.
enum Closing {
    /// A plain socket, used directly (no glommio stream is made for it).
    Plain(OwnedFd),
    /// A TLS stream, with the writer task that sends its last records.
    Tls(Rc<RefCell<Stream>>, glommio::Task<()>),
}

/// After the leave: send the close frame (or let the writer task), wait
/// (bounded) for the client to close too, and forget the connection (before
/// its socket is closed, so a stopping shard never cuts a reused fd).
async fn close(shard: &Rc<Shard>, conn: &Rc<ConnHandle>, closing: Closing, reason: CloseReason) {
    let lingers = reason != CloseReason::PeerGone;
    match closing {
        Closing::Plain(socket) => {
            let fd = socket.as_raw_fd();
            let linger = lingers.then(|| drain_socket(shard, fd));
            writer::finish_plain(shard, conn, fd, reason, linger).await;
            shard.close_conn(conn, reason);
        }
        Closing::Tls(stream, writer) => {
            writer.await;
            if lingers {
                linger(shard, drain_until_eof(shard, &stream)).await;
            }
            shard.close_conn(conn, reason);
        }
    }
}

/// Reads until the client closes too, for at most the close timeout.
async fn linger(shard: &Shard, drain: impl Future<Output = ()>) {
    let close_timeout = Duration::from_millis(shard.config().close_timeout_ms);
    let _ = glommio::timer::timeout(close_timeout, async {
        drain.await;
        Ok(())
    })
    .await;
}

/// Reads and handles a TLS connection's frames until it ends; returns why.
async fn read_tls(
    shard: &Shard,
    conn: &Rc<ConnHandle>,
    stream: &RefCell<Stream>,
    mut inbound: Inbound,
) -> CloseReason {
    loop {
        if let Some(reason) = conn.ended() {
            return reason;
        }
        // Backpressure: read no more while a forward queue is congested.
        let room = async {
            shard.forward_room().await;
            None
        };
        if let Some(reason) = future::or(room, async { Some(conn.wait_ended().await) }).await {
            return reason;
        }
        let outcome = match inbound.carry_room(shard) {
            None => {
                let shared = shard.read_buffer();
                let read = poll_fn(|cx| {
                    Pin::new(&mut *stream.borrow_mut()).poll_read(cx, &mut shared.borrow_mut())
                });
                match read_or_end(conn, read).await {
                    // No await between the read and here: nothing else has
                    // touched the shared buffer.
                    Ok(n) => inbound
                        .received_shared(shard, conn, &mut shared.borrow_mut()[..n])
                        .map(|()| n),
                    Err(reason) => Err(reason),
                }
            }
            Some((start, room)) => {
                let read = poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_read(cx, room));
                match read_or_end(conn, read).await {
                    Ok(n) => inbound.received_carried(shard, conn, start, n).map(|()| n),
                    Err(reason) => Err(reason),
                }
            }
        };
        match outcome {
            Ok(n) => {
                shard.counters().bytes_in.add(n as u64);
                conn.heard_from(shard.clock_ms());
            }
            Err(reason) => return reason,
        }
    }
}

/// Waits for a read or for the connection's end, whichever comes first.
async fn read_or_end(
    conn: &ConnHandle,
    read: impl std::future::Future<Output = std::io::Result<usize>>,
) -> Result<usize, CloseReason> {
    let ended = async {
        conn.wait_ended().await;
        None
    };
    match future::or(async { Some(read.await) }, ended).await {
        None => Err(conn.ended().unwrap_or(CloseReason::PeerGone)),
        Some(Ok(0)) | Some(Err(_)) => Err(CloseReason::PeerGone),
        Some(Ok(n)) => Ok(n),
    }
}

/// `drain_until_eof` for a plain socket, waiting for it with one io_uring
/// poll at a time.
async fn drain_socket(shard: &Shard, fd: RawFd) {
    loop {
        // The buffer's borrow ends here, before any await.
        let read = super::reader::recv(fd, &mut shard.read_buffer().borrow_mut());
        match read {
            Ok(_) => {}
            Err(None) => {
                if glommio::net::wait_readable(fd).await.is_err() {
                    return;
                }
            }
            Err(Some(_)) => return,
        }
    }
}

/// Reads and discards until the peer closes (after our close frame). The
/// bytes land in the shard's shared buffer: nothing is kept per connection.
async fn drain_until_eof(shard: &Shard, stream: &RefCell<Stream>) {
    let shared = shard.read_buffer();
    loop {
        match poll_fn(|cx| {
            Pin::new(&mut *stream.borrow_mut()).poll_read(cx, &mut shared.borrow_mut())
        })
        .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
