//! What a WebSocket connection does with the bytes it reads, without the
//! reading (sans-IO): decode frames, check each message (size, rate,
//! send key, protocol, JSON, recipient, in the order docs/PROTOCOL.md
//! section 4 gives) and publish it. The shard's reader (`conn::reader`)
//! drives it for plain connections, a TLS connection's session
//! (`conn::session`) its own.
//!
//! Reads land in the shard's shared read buffer and are decoded there, in
//! place, before anything else runs; only the bytes of a frame that is not
//! complete yet are copied into the connection's own `carry` buffer. An
//! idle connection therefore holds no read buffer at all.

use super::handle::ConnHandle;
use crate::error::CloseReason;
use crate::id::Uid;
use crate::limits::READ_CHUNK_BYTES;
use crate::outcome::DropReason;
use crate::pubsub::classify::{classify, Classified};
use crate::ratelimit::{Bucket, IpKey};
use crate::shard::Shard;
use crate::ws::codec::{Decoder, Message, Violation};
use crate::ws::deflate::InflateError;
use crate::ws::frame::{self, HEADER_BYTES_MAX};
use std::rc::Rc;

/// What the session does with client messages, once joined.
#[derive(Clone, Copy)]
pub enum Role {
    /// Publish them to the channel.
    Member,
    /// Echo them back. The one limit not applied is the message rate
    /// (`messages_per_conn_per_sec`): the endpoint exists for the RFC 6455
    /// conformance suite, off by default, and its bulk cases (Autobahn 9.7
    /// and 9.8) send 1000 messages back to back. Size, admission, the
    /// outgoing queue's bound, the idle timeout and closing are a member's.
    Echo,
}

/// A member's sending state: its message bucket, the warnings it got, and
/// the client IP a kick bans.
struct Sending {
    bucket: Bucket,
    warnings: u32,
    ip: IpKey,
}

/// A connection's reading state: its decoder, the start of a frame carried
/// over between reads, and its sending state.
pub struct Inbound {
    decoder: Decoder,
    /// The bytes after the request head, then a frame's start carried over.
    carry: Vec<u8>,
    sending: Sending,
    role: Role,
}

impl Inbound {
    /// Starts reading with the bytes read past the request head (the
    /// client's first frames), which it handles at once.
    pub fn start(
        shard: &Shard,
        conn: &Rc<ConnHandle>,
        leftover: Vec<u8>,
        deflate: bool,
        role: Role,
        ip: IpKey,
    ) -> Result<Inbound, CloseReason> {
        let mut decoder = Decoder::new(shard.config().message_bytes_max);
        if deflate {
            decoder.accept_deflate();
        }
        let mut inbound = Inbound {
            decoder,
            carry: leftover,
            sending: Sending {
                bucket: Bucket::default(),
                warnings: 0,
                ip,
            },
            role,
        };
        inbound.decode_carry(shard, conn)?;
        Ok(inbound)
    }

    /// Where the next read goes: `None` for the shard's shared buffer, or,
    /// when part of a frame is carried over, the carry buffer grown for the
    /// rest, with where the room starts (pass it to `received_carried`).
    pub fn carry_room(&mut self, shard: &Shard) -> Option<(usize, &mut [u8])> {
        if self.carry.is_empty() {
            return None;
        }
        let frame_bytes_max = shard.config().message_bytes_max + HEADER_BYTES_MAX + 4;
        let start = self.carry.len();
        self.carry.resize(
            (start + READ_CHUNK_BYTES)
                .min(frame_bytes_max)
                .max(start + 1),
            0,
        );
        Some((start, &mut self.carry[start..]))
    }

    /// A read into the shard's shared buffer: handles every complete
    /// message in `read` and carries over the rest. Call it before anything
    /// else touches the shared buffer.
    pub fn received_shared(
        &mut self,
        shard: &Shard,
        conn: &Rc<ConnHandle>,
        read: &mut [u8],
    ) -> Result<(), CloseReason> {
        let consumed = decode_all(
            shard,
            conn,
            &mut self.decoder,
            read,
            self.role,
            &mut self.sending,
        )?;
        self.carry.extend_from_slice(&read[consumed..]);
        Ok(())
    }

    /// `n` bytes were read into the room `carry_room` gave at `start`.
    pub fn received_carried(
        &mut self,
        shard: &Shard,
        conn: &Rc<ConnHandle>,
        start: usize,
        n: usize,
    ) -> Result<(), CloseReason> {
        self.carry.truncate(start + n);
        self.decode_carry(shard, conn)
    }

    /// Nothing was read into the room `carry_room` gave at `start`.
    pub fn unread(&mut self, start: usize) {
        self.carry.truncate(start);
    }

    /// Handles what the carry buffer holds and keeps only an incomplete
    /// frame; frees the buffer once it is empty.
    fn decode_carry(&mut self, shard: &Shard, conn: &Rc<ConnHandle>) -> Result<(), CloseReason> {
        let consumed = decode_all(
            shard,
            conn,
            &mut self.decoder,
            &mut self.carry,
            self.role,
            &mut self.sending,
        )?;
        self.carry.drain(..consumed);
        if self.carry.is_empty() {
            self.carry = Vec::new();
        }
        Ok(())
    }
}

/// Decodes and handles every complete message at the front of `buf`;
/// returns how many bytes that consumed.
fn decode_all(
    shard: &Shard,
    conn: &Rc<ConnHandle>,
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
    conn: &Rc<ConnHandle>,
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
    conn: &Rc<ConnHandle>,
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
    conn: &Rc<ConnHandle>,
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
fn publish_text(shard: &Shard, conn: &Rc<ConnHandle>, text: &[u8]) {
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
