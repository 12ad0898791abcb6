//! The receive side of a connection: a 64 KiB buffer and a walk over the
//! frame headers in it, read either through glommio (io_uring poll, then
//! recv; `Receiver::run`) or, for members in `--recv epoll` mode, by the
//! executor's epoll pump (`epoll.rs`, through `recv_now`).
//!
//! A `Receiver` holds only what it writes to (the run's `Shared`, its
//! executor's counters), not the executor's `Local`: whoever owns it (the
//! epoll set, a reader task) keeps nothing else of the executor alive, and
//! nothing it holds leads back to its owner.

use super::local::Local;
use super::state::*;
use crate::deflate::Inflater;
use crate::proto::{Framing, Incoming, NatsOp, NatsStream, Wire};
use crate::sys;
use crate::tls::Conn;
use crate::ws;
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use std::cell::RefCell;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

pub type Reader = ReadHalf<Conn>;
pub type Writer = WriteHalf<Conn>;

/// A connection's receive side: a 64 KiB buffer and a walk over the frame
/// headers in it.
pub struct Receiver {
    pub shared: Arc<Shared>,
    /// Its executor: where its deliveries are counted in `Shared`.
    pub exec: usize,
    /// Its executor's counters.
    pub stats: Rc<RefCell<ExecStats>>,
    pub role: Role,
    pub fd: RawFd,
    pub buf: Box<[u8]>,
    pub start: usize,
    pub filled: usize,
    /// Bytes of an oversized frame still to skip.
    pub skip: usize,
    pub joined: bool,
    /// The first publisher id of the connection's channel.
    pub pub_base: u64,
    /// The connection's own publisher id (`rooms`): its own messages, when
    /// the relay echoes them (nchan), are skipped, never delivered.
    pub own: Option<u64>,
    /// `Framing::NatsStream`: the byte stream across frames.
    pub stream: Option<NatsStream>,
    /// Bytes of an oversized frame still to come, to be fed to `stream`
    /// rather than skipped.
    pub stream_left: usize,
    /// Next sequence number expected from each publisher of the channel.
    pub next_seq: Vec<u64>,
    /// Pongs to send (answers to pings).
    pub pong: Vec<u8>,
    pub closed: Option<String>,
    /// Bytes read since the last walk (counted there, for members).
    pub fresh_bytes: u64,
    /// The executor's inflater (compressed frames, `--deflate`).
    pub inflater: Rc<RefCell<Inflater>>,
}

impl Receiver {
    /// The receive side of socket `fd`, a connection of executor `local`
    /// on `channel`; `own` is its own publisher id, if it publishes.
    pub fn new(
        local: &Local,
        role: Role,
        fd: RawFd,
        channel: &Channel,
        own: Option<u32>,
    ) -> Receiver {
        let buf_bytes = local.shared.buf_bytes;
        let wire = local.shared.wire;
        let first_seq = if local.shared.plan.external_source {
            EXTERNAL_SEQ_BASE
        } else {
            0
        };
        Receiver {
            shared: local.shared.clone(),
            exec: local.exec,
            stats: local.stats.clone(),
            role,
            fd,
            buf: vec![0u8; buf_bytes].into_boxed_slice(),
            start: 0,
            filled: 0,
            skip: 0,
            joined: wire.joined_on_upgrade(),
            pub_base: channel.pub_base as u64,
            own: own.map(u64::from),
            stream: (wire.framing() == Framing::NatsStream).then(NatsStream::default),
            stream_left: 0,
            next_seq: if role == Role::Member {
                vec![first_seq; channel.pub_count as usize]
            } else {
                Vec::new()
            },
            pong: Vec::new(),
            closed: None,
            fresh_bytes: 0,
            inflater: local.inflater.clone(),
        }
    }

    /// Reads more bytes after what is buffered (moving a partial frame to
    /// the front first).
    pub async fn read<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> std::io::Result<usize> {
        let filled = self.make_room();
        let n = r.read(&mut self.buf[filled..]).await?;
        self.filled += n;
        self.fresh_bytes += n as u64;
        Ok(n)
    }

    /// Moves a partial frame to the front; returns where new bytes go.
    pub fn make_room(&mut self) -> usize {
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        self.filled
    }

    /// One non-blocking `recv` straight on the socket (epoll mode).
    /// `Ok(None)`: nothing to read.
    pub fn recv_now(&mut self, fd: RawFd) -> std::io::Result<Option<usize>> {
        let filled = self.make_room();
        let room = &mut self.buf[filled..];
        // SAFETY: `room` is valid writable memory of the given length.
        let n = unsafe { libc::recv(fd, room.as_mut_ptr().cast(), room.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        self.filled += n as usize;
        self.fresh_bytes += n as u64;
        Ok(Some(n as usize))
    }

    /// Counts the connection's end, unless the run is over (then every
    /// connection ends, and none of it is news).
    pub fn record_disconnect(&self, why: &str) {
        if !self.shared.stop.load(Relaxed) {
            let key = format!("{}: {why}", self.role.name());
            self.stats.borrow_mut().disconnect(key);
        }
    }

    /// Walks the complete frames in the buffer: counts deliveries, records
    /// latencies, notes the own join, queues pongs, stops at a close.
    pub fn process(&mut self) {
        if self.closed.is_some() {
            return;
        }
        let shared = &*self.shared;
        let mut delivered = 0u64;
        let buf_len = self.buf.len();
        let mut st = self.stats.borrow_mut();
        if self.role == Role::Member {
            st.bytes_received += self.fresh_bytes;
        }
        self.fresh_bytes = 0;
        let mut inflater = self.inflater.borrow_mut();
        let mut walk = Walk {
            acct: Acct {
                st: &mut st,
                next_seq: &mut self.next_seq,
                pub_base: self.pub_base,
                own: self.own,
                member: self.role == Role::Member,
                now: sys::now_ns(),
                measured_from: shared.measured_from(),
                delivered: &mut delivered,
            },
            joined: &mut self.joined,
            pong: &mut self.pong,
            wire: shared.wire,
            payload_len: shared.payload_bytes,
        };
        if self.skip > 0 {
            let n = self.skip.min(self.filled - self.start);
            if self.stream_left > 0 {
                // The rest of an oversized stream frame: its bytes go on.
                if let Some(stream) = self.stream.as_mut() {
                    walk.stream_bytes(stream, &self.buf[self.start..self.start + n]);
                }
                self.stream_left -= n;
            }
            self.start += n;
            self.skip -= n;
        }
        loop {
            let avail = &mut self.buf[self.start..self.filled];
            let Some(h) = ws::parse_header(avail) else {
                break;
            };
            let total = h.header_len + h.payload_len;
            let partial = total > avail.len();
            if partial && total <= buf_len {
                break; // the rest comes with the next read
            }
            let end = total.min(avail.len());
            let payload = &mut avail[h.header_len..end];
            if let Some(key) = h.mask {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= key[i & 3];
                }
            }
            let stream = self.stream.as_mut();
            let data = matches!(h.opcode, ws::OP_TEXT | ws::OP_BINARY);
            let streamed = stream.is_some() && data;
            let payload: &[u8] = match (h.rsv1 && data, partial) {
                (false, _) => payload,
                (true, false) => {
                    walk.acct.st.compressed += 1;
                    let Some(inflated) = inflater.inflate(payload) else {
                        self.closed = Some("invalid or oversized compressed message".into());
                        break;
                    };
                    inflated
                }
                // Larger than the read buffer: skipped, counted unstamped.
                (true, true) => &[],
            };
            if let Some(why) = walk.frame(h.opcode, payload, partial, stream) {
                self.closed = Some(why);
                break;
            }
            if partial {
                if streamed {
                    // The rest of the frame goes on to the stream too.
                    self.stream_left = total - avail.len();
                }
                self.skip = total - avail.len();
                self.start = self.filled;
                break;
            }
            self.start += total;
        }
        if delivered > 0 {
            st.delivered += delivered;
            shared.delivered[self.exec].0.fetch_add(delivered, Relaxed);
        }
    }

    /// The receive loop after the join, until the connection ends (or the
    /// executor is dropped at the end of the run).
    pub async fn run(mut self, mut reader: Reader, mut writer: Option<Writer>) {
        let why = loop {
            self.process();
            if let Some(why) = self.closed.take() {
                break why;
            }
            if !self.pong.is_empty() {
                if let Some(w) = writer.as_mut() {
                    if let Err(e) = w.write_all(&self.pong).await {
                        break format!("write: {e}");
                    }
                }
                self.pong.clear();
            }
            match self.read(&mut reader).await {
                Ok(0) => break "eof".to_owned(),
                Ok(_) => {
                    if self.role == Role::Member {
                        self.stats.borrow_mut().reads += 1;
                    }
                }
                Err(e) => break format!("read: {e}"),
            }
        };
        self.record_disconnect(&why);
    }
}

/// The accounting of one connection's received messages, for one walk over
/// its buffer.
struct Acct<'a> {
    st: &'a mut ExecStats,
    next_seq: &'a mut [u64],
    pub_base: u64,
    own: Option<u64>,
    /// A member counts deliveries; a publisher-only connection only drains.
    member: bool,
    now: u64,
    measured_from: u64,
    delivered: &'a mut u64,
}

impl Acct<'_> {
    /// One relayed message with its stamp (if readable): a delivery, unless
    /// the connection is not a member or the message is its own (echoed).
    #[inline]
    fn message(&mut self, stamp: Option<(u64, u64, u64)>) {
        let st = &mut *self.st;
        if !self.member {
            st.publisher_frames += 1;
            return;
        }
        if let (Some(own), Some((p, _, _))) = (self.own, stamp) {
            if p == own {
                st.own_echoes += 1;
                return;
            }
        }
        *self.delivered += 1;
        let base = self.pub_base;
        match stamp {
            Some((p, seq, at)) if p >= base && ((p - base) as usize) < self.next_seq.len() => {
                let us = self.now.saturating_sub(at) / 1000;
                st.tick.saturating_record(us);
                if at >= self.measured_from {
                    st.latency.saturating_record(us);
                }
                let next = &mut self.next_seq[(p - base) as usize];
                if seq == *next {
                    *next += 1;
                } else if seq > *next {
                    st.gaps += seq - *next;
                    *next = seq + 1;
                } else {
                    st.reorders += 1;
                }
            }
            _ => st.unstamped += 1,
        }
    }
}

/// One walk over a connection's buffer: where the frames it finds go.
struct Walk<'a> {
    acct: Acct<'a>,
    /// The connection's own join event (or NATS `PONG`) arrived.
    joined: &'a mut bool,
    /// Pongs to send.
    pong: &'a mut Vec<u8>,
    wire: &'static dyn Wire,
    payload_len: usize,
}

impl Walk<'_> {
    /// One frame (`partial`: only its start is in the buffer, the rest is
    /// skipped); `stream` is the connection's NATS byte stream, if its
    /// data frames carry one. Returns the reason when it is a close.
    #[inline]
    fn frame(
        &mut self,
        opcode: u8,
        payload: &[u8],
        partial: bool,
        stream: Option<&mut NatsStream>,
    ) -> Option<String> {
        match opcode {
            ws::OP_TEXT | ws::OP_BINARY => {
                if let Some(stream) = stream {
                    self.stream_bytes(stream, payload);
                } else if let Incoming::Event { own_join } = self.wire.classify(payload) {
                    self.acct.st.events += 1;
                    *self.joined |= own_join;
                } else {
                    let stamp = if partial {
                        None
                    } else {
                        self.wire.find_stamp(payload, self.payload_len)
                    };
                    self.acct.message(stamp);
                }
            }
            ws::OP_PING if !partial => {
                ws::client_frame(ws::OP_PONG, payload, self.pong);
            }
            ws::OP_CLOSE => {
                let code = if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]]).to_string()
                } else {
                    "without code".to_owned()
                };
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]));
                return Some(format!("close {code} {reason}").trim().to_owned());
            }
            ws::OP_PONG => {}
            _ => self.acct.st.other_frames += 1, // continuation: none expected
        }
        None
    }

    /// Bytes of a NATS stream, as the server operations they complete.
    #[inline]
    fn stream_bytes(&mut self, stream: &mut NatsStream, data: &[u8]) {
        stream.feed(data, &mut |op| self.nats_op(op));
    }

    /// One NATS operation from the server: a `MSG` is a message, `PONG` the
    /// join (every command sent before our `PING` is in effect), `PING` is
    /// answered, the rest counted.
    #[inline]
    fn nats_op(&mut self, op: NatsOp<'_>) {
        let acct = &mut self.acct;
        match op {
            NatsOp::Msg(p) => acct.message(self.wire.find_stamp(p, self.payload_len)),
            NatsOp::Pong => {
                *self.joined = true;
                acct.st.events += 1;
            }
            NatsOp::Ping => {
                ws::client_frame(ws::OP_BINARY, b"PONG\r\n", self.pong);
                acct.st.events += 1;
            }
            NatsOp::Other(_) => acct.st.events += 1,
            NatsOp::Err(line) => {
                acct.st.events += 1;
                *acct
                    .st
                    .server_errors
                    .entry(String::from_utf8_lossy(line).into_owned())
                    .or_default() += 1;
            }
        }
    }
}
