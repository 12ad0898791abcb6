//! A WebSocket session on the connection's home shard: join the channel,
//! then read frames, check them (size, protocol, JSON, recipient, in the
//! order docs/PROTOCOL.md section 4 gives) and publish them, until the
//! connection ends for a `CloseReason`. The shard's flush task (or a TLS
//! connection's writer task) sends everything until the end.

use super::handle::ConnHandle;
use super::writer;
use super::Stream;
use crate::error::CloseReason;
use crate::http::{self, JoinOptions};
use crate::id::Uid;
use crate::limits::READ_CHUNK_BYTES;
use crate::outcome::DropReason;
use crate::pubsub::classify::{classify, Classified};
use crate::ratelimit::{Bucket, IpKey};
use crate::shard::join::KeyCheck;
use crate::shard::Shard;
use crate::ws::codec::{Decoder, Message, Violation};
use crate::ws::deflate::{InflateError, Negotiated};
use crate::ws::frame::{self, HEADER_BYTES_MAX};
use bytes::Bytes;
use futures_lite::{future, AsyncRead};
use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

/// What the session does with client messages, once joined.
#[derive(Clone, Copy)]
enum Role {
    /// Publish them to the channel.
    Member,
    /// Echo them back. The one limit not applied is the message rate
    /// (`messages_per_conn_per_sec`): the endpoint exists for the RFC 6455
    /// conformance suite, off by default, and its bulk cases (Autobahn 9.7
    /// and 9.8) send 1000 messages back to back. Size, admission, the
    /// outgoing queue's bound, the idle timeout and closing are a member's.
    Echo,
}

/// What the upgrade asked for.
pub enum Mode {
    /// Join the channel and publish to it; the owner checks `KeyCheck`.
    Channel(String, JoinOptions, KeyCheck),
    /// Echo every message back (`/__echo`, for conformance tests).
    Echo,
}

/// A member's sending state: its message bucket, the warnings it got, and
/// the client IP a kick bans.
struct Sending {
    bucket: Bucket,
    warnings: u32,
    ip: IpKey,
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
/// and the handshake's (the stream before it is shared, `Mode`, `Upgrade`:
/// over 300 bytes) are consumed here, so an idle connection's task holds
/// only what the session uses.
pub fn run_session(shard: Rc<Shard>, upgraded: Upgraded) -> impl Future<Output = ()> {
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
    let stream = Rc::new(RefCell::new(stream));
    async move {
        conn.joined_or_ended().await;
        // The 101 and the join event go out together: a plain connection
        // is sent by the shard's flush task from now on, a TLS one by its
        // own writer task.
        let writer = if matches!(&*stream.borrow(), Stream::Plain(_)) {
            conn.release_output(stream.clone());
            None
        } else {
            let writer = writer::run_writer(shard.clone(), conn.clone(), stream.clone());
            Some(glommio::spawn_local(writer))
        };

        let reason = match conn.ended() {
            Some(reason) => reason,
            None => {
                let mut sending = Sending {
                    bucket: Bucket::default(),
                    warnings: 0,
                    ip,
                };
                read_frames(
                    &shard,
                    &conn,
                    &stream,
                    leftover,
                    deflate,
                    role,
                    &mut sending,
                )
                .await
            }
        };
        conn.end(reason);
        shard.leave(&conn);
        // Boxed: the end runs once, so its state should not make every idle
        // connection's session larger.
        Box::pin(close(&shard, &conn, &stream, writer, reason)).await;
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

/// After the leave: send the close frame (or let the writer task), wait
/// (bounded) for the client to close too, and forget the connection.
async fn close(
    shard: &Rc<Shard>,
    conn: &Rc<ConnHandle>,
    stream: &Rc<RefCell<Stream>>,
    writer: Option<glommio::Task<()>>,
    reason: CloseReason,
) {
    match writer {
        Some(writer) => writer.await,
        None => writer::finish_plain(shard, conn, stream, reason).await,
    }
    if reason != CloseReason::PeerGone {
        let close_timeout = Duration::from_millis(shard.config().close_timeout_ms);
        let _ = glommio::timer::timeout(close_timeout, async {
            drain_until_eof(shard, stream).await;
            Ok(())
        })
        .await;
    }
    shard.close_conn(conn, reason);
}

/// Reads and handles frames until the connection ends; returns why.
///
/// Reads land in the shard's shared read buffer and are decoded there, in
/// place, before anything else runs; only the bytes of a frame that is not
/// complete yet are copied into the connection's own `carry` buffer. An
/// idle connection therefore holds no read buffer at all.
async fn read_frames(
    shard: &Shard,
    conn: &ConnHandle,
    stream: &RefCell<Stream>,
    // The bytes after the request head, then a frame's start carried over
    // (an argument used as is: a copy would take a second slot in the
    // future).
    mut carry: Vec<u8>,
    deflate: bool,
    role: Role,
    sending: &mut Sending,
) -> CloseReason {
    // Made here, not passed in: a value moved into an awaited call keeps
    // its slot in the caller's future.
    let mut decoder = Decoder::new(shard.config().message_bytes_max);
    if deflate {
        decoder.accept_deflate();
    }
    let frame_bytes_max = shard.config().message_bytes_max + HEADER_BYTES_MAX + 4;
    if let Err(reason) = decode_carry(shard, conn, &mut decoder, &mut carry, role, sending) {
        return reason;
    }
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
        let outcome = if carry.is_empty() {
            let shared = shard.read_buffer();
            let read = poll_fn(|cx| {
                Pin::new(&mut *stream.borrow_mut()).poll_read(cx, &mut shared.borrow_mut())
            });
            match read_or_end(conn, read).await {
                Ok(n) => {
                    // No await between the read and here: nothing else has
                    // touched the shared buffer.
                    let mut buf = shared.borrow_mut();
                    let result =
                        decode_all(shard, conn, &mut decoder, &mut buf[..n], role, sending);
                    result.map(|consumed| {
                        carry.extend_from_slice(&buf[consumed..n]);
                        n
                    })
                }
                Err(reason) => Err(reason),
            }
        } else {
            // Part of a frame is carried over: read the rest next to it.
            let start = carry.len();
            carry.resize(
                (start + READ_CHUNK_BYTES)
                    .min(frame_bytes_max)
                    .max(start + 1),
                0,
            );
            let read = poll_fn(|cx| {
                Pin::new(&mut *stream.borrow_mut()).poll_read(cx, &mut carry[start..])
            });
            match read_or_end(conn, read).await {
                Ok(n) => {
                    carry.truncate(start + n);
                    decode_carry(shard, conn, &mut decoder, &mut carry, role, sending).map(|()| n)
                }
                Err(reason) => Err(reason),
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

/// Decodes what the carry buffer holds and keeps only an incomplete frame;
/// frees the buffer once it is empty.
fn decode_carry(
    shard: &Shard,
    conn: &ConnHandle,
    decoder: &mut Decoder,
    carry: &mut Vec<u8>,
    role: Role,
    sending: &mut Sending,
) -> Result<(), CloseReason> {
    let consumed = decode_all(shard, conn, decoder, carry, role, sending)?;
    carry.drain(..consumed);
    if carry.is_empty() {
        *carry = Vec::new();
    }
    Ok(())
}

/// Decodes and handles every complete message at the front of `buf`;
/// returns how many bytes that consumed.
fn decode_all(
    shard: &Shard,
    conn: &ConnHandle,
    decoder: &mut Decoder,
    buf: &mut [u8],
    role: Role,
    sending: &mut Sending,
) -> Result<usize, CloseReason> {
    let mut start = 0;
    loop {
        let decoded = decoder
            .decode(&mut buf[start..])
            .map_err(CloseReason::Violation)?;
        start += decoded.consumed;
        match decoded.message {
            None => return Ok(start),
            Some(message) => {
                if let Some(reason) = handle(shard, conn, message, role, sending) {
                    return Err(reason);
                }
            }
        }
    }
}

/// Inflates a compressed message into the shard's inflater (its size limit
/// applies to the inflated bytes), checks a text's UTF-8, then handles it
/// like any other; `Some` ends the connection.
fn handle_deflated(
    shard: &Shard,
    conn: &ConnHandle,
    text: bool,
    payload: &[u8],
    role: Role,
    sending: &mut Sending,
) -> Option<CloseReason> {
    let mut inflater = shard.inflater().borrow_mut();
    let inflated = match inflater.inflate(payload, shard.config().message_bytes_max) {
        Ok(inflated) => inflated,
        Err(InflateError::TooBig) => return Some(CloseReason::Violation(Violation::TOO_BIG)),
        Err(InflateError::Invalid) => {
            return Some(CloseReason::Violation(Violation::INVALID_DEFLATE))
        }
    };
    let message = if !text {
        Message::Binary(inflated)
    } else if std::str::from_utf8(inflated).is_ok() {
        Message::Text(inflated)
    } else {
        return Some(CloseReason::Violation(Violation::INVALID_UTF8));
    };
    handle(shard, conn, message, role, sending)
}

/// Handles one complete client message; `Some` ends the connection.
fn handle(
    shard: &Shard,
    conn: &ConnHandle,
    message: Message<'_>,
    role: Role,
    sending: &mut Sending,
) -> Option<CloseReason> {
    match (message, role) {
        (Message::Deflated { text, payload }, _) => {
            return handle_deflated(shard, conn, text, payload, role, sending)
        }
        (Message::Close(close), _) => {
            return Some(CloseReason::ClientClosed(close.map(|(code, _)| code)))
        }
        (Message::Ping(payload), _) => {
            conn.deliver(frame::pong_frame(payload));
        }
        (Message::Pong(_), _) => {}
        (Message::Text(text), Role::Echo) => {
            conn.deliver(shard.echo_frame(conn, text, false));
        }
        (Message::Binary(data), Role::Echo) => {
            conn.deliver(shard.echo_frame(conn, data, true));
        }
        // Checked in docs/PROTOCOL.md section 4's order: size (the codec, 1009),
        // rate limit, send key, then what the message is.
        (message, Role::Member) => {
            match take_token(shard, conn, sending) {
                Err(reason) => return Some(reason),
                Ok(false) => return None,
                Ok(true) => {}
            }
            if !conn.may_send() {
                shard.drop_message(conn, DropReason::NoSendKey);
            } else if let Message::Text(text) = message {
                publish_text(shard, conn, text);
            } else {
                shard.drop_message(conn, DropReason::Binary);
            }
        }
    }
    None
}

/// Takes a message token. Over the rate the message is dropped with a
/// warning; past the last warning the connection is kicked (1008) and its
/// IP banned on this shard (docs/PROTOCOL.md section 8). `Ok(false)`: dropped.
fn take_token(
    shard: &Shard,
    conn: &ConnHandle,
    sending: &mut Sending,
) -> Result<bool, CloseReason> {
    if sending
        .bucket
        .take(shard.message_rate(), shard.now_ns())
        .is_ok()
    {
        return Ok(true);
    }
    let c = shard.counters();
    c.count_drop(DropReason::RateLimited);
    sending.warnings += 1;
    let warnings_max = shard.config().rate_limit_warnings;
    if sending.warnings > warnings_max {
        c.kicks.incr();
        shard.ban(sending.ip);
        return Err(CloseReason::RateLimited);
    }
    c.rate_limit_warnings.incr();
    let text = DropReason::rate_limit_warning(sending.warnings, warnings_max);
    shard.send_error(conn, &text);
    Ok(false)
}

/// Checks a client text frame and routes it (docs/PROTOCOL.md section 4).
fn publish_text(shard: &Shard, conn: &ConnHandle, text: &[u8]) {
    let (to, payload) = match classify(text) {
        Classified::Broadcast(payload) => (None, payload),
        Classified::Direct { to, payload } => (Some(to), payload),
        Classified::Unterminated => return shard.drop_message(conn, DropReason::InvalidJson),
    };
    if !shard.validator().borrow_mut().is_valid(payload) {
        return shard.drop_message(conn, DropReason::InvalidJson);
    }
    let to = match to.map(|t| (t, Uid::parse(t))) {
        None => None,
        Some((_, Some(uid))) => Some(uid),
        Some((raw, None)) => {
            // Not a uid at all, so no member has it; the text is the
            // client's own, echoed back to it only.
            let shown: String = String::from_utf8_lossy(raw).chars().take(64).collect();
            shard.counters().count_drop(DropReason::NoRecipient);
            return shard.send_error(conn, &DropReason::no_recipient(&shown));
        }
    };
    shard.publish(conn, to, payload);
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
