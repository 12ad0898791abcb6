//! The receive side of a connection: a 64 KiB buffer and a walk over the
//! frame headers in it, read either through glommio (io_uring poll, then
//! recv) or, for members in `--recv epoll` mode, by one pump per executor.

use super::exec::{Reader, Writer};
use super::state::*;
use crate::proto::{Framing, Incoming, NatsOp, NatsStream};
use crate::sys;
use crate::ws;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::timer::sleep;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// `--recv epoll`: after the join, member sockets leave glommio's io_uring
/// and are read by one pump per executor that polls an epoll set without
/// blocking. Nobody ever sleeps on these sockets, so the relay's sends wake
/// no one: no wake-up IPI, no io_uring task work, per delivery.
pub struct EpollSet {
    pub epfd: RawFd,
    pub slots: Vec<Option<Slot>>,
}

pub struct Slot {
    pub fd: RawFd,
    pub rx: Receiver,
    /// Keeps the socket open (glommio owns the fd).
    pub _halves: (Reader, Option<Writer>),
}

impl EpollSet {
    pub fn new() -> std::io::Result<EpollSet> {
        // SAFETY: plain syscall.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(EpollSet {
            epfd,
            slots: Vec::new(),
        })
    }

    pub fn add(&mut self, rx: Receiver, reader: Reader, writer: Option<Writer>) {
        let fd = rx.fd;
        let idx = self.slots.len();
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: idx as u64,
        };
        // SAFETY: epfd and fd are open; ev is valid.
        if unsafe { libc::epoll_ctl(self.epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            rx.record_disconnect(&format!("epoll_ctl: {}", std::io::Error::last_os_error()));
            return;
        }
        self.slots.push(Some(Slot {
            fd,
            rx,
            _halves: (reader, writer),
        }));
    }

    pub fn remove(&mut self, idx: usize) {
        if let Some(slot) = self.slots[idx].take() {
            // SAFETY: as above; a null event is allowed for DEL.
            unsafe {
                libc::epoll_ctl(
                    self.epfd,
                    libc::EPOLL_CTL_DEL,
                    slot.fd,
                    std::ptr::null_mut(),
                )
            };
        }
    }
}

impl EpollSet {
    /// One recv on each socket epoll found readable, and the frames walked;
    /// returns the reads that carried data.
    pub fn read_ready(&mut self, events: &[libc::epoll_event]) -> u64 {
        let mut reads = 0u64;
        for ev in events {
            let idx = ev.u64 as usize;
            let Some(slot) = self.slots.get_mut(idx).and_then(|s| s.as_mut()) else {
                continue;
            };
            let fd = slot.fd;
            let end = match slot.rx.recv_now(fd) {
                Ok(None) => None,
                Ok(Some(0)) => Some("eof".to_owned()),
                Ok(Some(_)) => {
                    reads += (slot.rx.role == Role::Member) as u64;
                    slot.rx.process();
                    if !slot.rx.pong.is_empty() {
                        // Rare (a ping after 30 s of client silence): one
                        // best-effort non-blocking send.
                        // SAFETY: pong is valid memory of its length.
                        unsafe {
                            libc::send(
                                fd,
                                slot.rx.pong.as_ptr().cast(),
                                slot.rx.pong.len(),
                                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                            )
                        };
                        slot.rx.pong.clear();
                    }
                    slot.rx.closed.take()
                }
                Err(e) => Some(format!("read: {e}")),
            };
            if let Some(why) = end {
                slot.rx.record_disconnect(&why);
                self.remove(idx);
            }
        }
        reads
    }
}

impl Drop for EpollSet {
    fn drop(&mut self) {
        // SAFETY: epfd is ours.
        unsafe { libc::close(self.epfd) };
    }
}

/// How long the pump sleeps when its epoll set has nothing ready: the
/// receive side's added latency, at most, while traffic flows.
pub const EPOLL_IDLE: Duration = Duration::from_micros(50);
/// The pause after a round that read data: long enough that the timer is
/// not already due when first polled, so the pump really yields.
pub const EPOLL_ROUND_YIELD: Duration = Duration::from_micros(5);
/// Empty polls in a row after which the pump blocks instead (in glommio's
/// helper thread, pinned to the same cpu), so an idle generator sleeps.
pub const EPOLL_SPINS: u32 = 8;

pub async fn epoll_pump(local: Rc<Local>) {
    let Some(set) = &local.epoll else { return };
    let epfd = set.borrow().epfd;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut empty = 0u32;
    while !local.shared.stop.load(Relaxed) {
        // SAFETY: events is valid for its length; timeout 0 never blocks.
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, 0) };
        if n <= 0 {
            empty += 1;
            if empty < EPOLL_SPINS {
                sleep(EPOLL_IDLE).await;
            } else {
                // Idle: wait for the first readable socket (level-triggered,
                // so the pump's next poll still sees it), at most 20 ms.
                empty = 0;
                glommio::executor()
                    .spawn_blocking(move || {
                        let mut ev = libc::epoll_event { events: 0, u64: 0 };
                        // SAFETY: ev is valid; epfd outlives the run.
                        unsafe { libc::epoll_wait(epfd, &mut ev, 1, 20) };
                    })
                    .await;
            }
            continue;
        }
        empty = 0;
        let reads = set.borrow_mut().read_ready(&events[..n as usize]);
        local.stats.borrow_mut().reads += reads;
        // Through the reactor once per round, so timers (publishers, ticks)
        // and other I/O keep their turn. (A zero sleep would not do: glommio
        // completes an expired timer without yielding, and under constant
        // traffic the pump then starves every other task of the executor.)
        sleep(EPOLL_ROUND_YIELD).await;
    }
}

/// A connection's receive side: a 64 KiB buffer and a walk over the frame
/// headers in it.
pub struct Receiver {
    pub local: Rc<Local>,
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
}

impl Receiver {
    pub fn new(
        local: Rc<Local>,
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
            local,
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
        }
    }

    /// Reads more bytes after what is buffered (moving a partial frame to
    /// the front first).
    pub async fn read<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> std::io::Result<usize> {
        let filled = self.make_room();
        let n = r.read(&mut self.buf[filled..]).await?;
        self.filled += n;
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
        Ok(Some(n as usize))
    }

    pub fn record_disconnect(&self, why: &str) {
        if !self.local.shared.stop.load(Relaxed) {
            let key = format!("{}: {why}", self.role.name());
            *self
                .local
                .stats
                .borrow_mut()
                .disconnects
                .entry(key)
                .or_default() += 1;
        }
    }

    /// Walks the complete frames in the buffer: counts deliveries, records
    /// latencies, notes the own join, queues pongs, stops at a close.
    pub fn process(&mut self) {
        if self.closed.is_some() {
            return;
        }
        let shared = &self.local.shared;
        let now = sys::now_ns();
        let t0 = shared.t0.load(Relaxed);
        let measured_from = if t0 == 0 {
            u64::MAX
        } else {
            t0 + shared.warmup_ns
        };
        let payload_len = shared.payload_bytes;
        let wire = shared.wire;
        let mut delivered = 0u64;
        let buf_len = self.buf.len();
        let mut st = self.local.stats.borrow_mut();
        let mut acct = Acct {
            st: &mut st,
            next_seq: &mut self.next_seq,
            pub_base: self.pub_base,
            own: self.own,
            member: self.role == Role::Member,
            now,
            measured_from,
            delivered: &mut delivered,
        };
        if self.skip > 0 {
            let n = self.skip.min(self.filled - self.start);
            if self.stream_left > 0 {
                // The rest of an oversized stream frame: its bytes go on.
                if let Some(stream) = self.stream.as_mut() {
                    let data = &self.buf[self.start..self.start + n];
                    stream.feed(data, &mut |op| {
                        nats_op(
                            op,
                            &mut acct,
                            &mut self.joined,
                            &mut self.pong,
                            wire,
                            payload_len,
                        )
                    });
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
            let payload = &*payload;
            match h.opcode {
                ws::OP_TEXT | ws::OP_BINARY => {
                    if let Some(stream) = self.stream.as_mut() {
                        stream.feed(payload, &mut |op| {
                            nats_op(
                                op,
                                &mut acct,
                                &mut self.joined,
                                &mut self.pong,
                                wire,
                                payload_len,
                            )
                        });
                        if partial {
                            self.stream_left = total - avail.len();
                        }
                    } else if let Incoming::Event { own_join } = wire.classify(payload) {
                        acct.st.events += 1;
                        self.joined |= own_join;
                    } else {
                        let stamp = if partial {
                            None
                        } else {
                            wire.find_stamp(payload, payload_len)
                        };
                        acct.message(stamp);
                    }
                }
                ws::OP_PING if !partial => {
                    ws::client_frame(ws::OP_PONG, payload, &mut self.pong);
                }
                ws::OP_CLOSE => {
                    let code = if payload.len() >= 2 {
                        u16::from_be_bytes([payload[0], payload[1]]).to_string()
                    } else {
                        "without code".to_owned()
                    };
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]));
                    self.closed = Some(format!("close {code} {reason}").trim().to_owned());
                    break;
                }
                ws::OP_PONG => {}
                _ => acct.st.other_frames += 1, // continuation: none expected
            }
            if partial {
                self.skip = total - avail.len();
                self.start = self.filled;
                break;
            }
            self.start += total;
        }
        if delivered > 0 {
            st.delivered += delivered;
            shared.delivered[self.local.exec]
                .0
                .fetch_add(delivered, Relaxed);
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
                        self.local.stats.borrow_mut().reads += 1;
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

/// One NATS operation from the server: a `MSG` is a message, `PONG` the
/// join (every command sent before our `PING` is in effect), `PING` is
/// answered, the rest counted.
#[inline]
fn nats_op(
    op: NatsOp<'_>,
    acct: &mut Acct<'_>,
    joined: &mut bool,
    pong: &mut Vec<u8>,
    wire: &dyn crate::proto::Wire,
    payload_len: usize,
) {
    match op {
        NatsOp::Msg(p) => acct.message(wire.find_stamp(p, payload_len)),
        NatsOp::Pong => {
            *joined = true;
            acct.st.events += 1;
        }
        NatsOp::Ping => {
            ws::client_frame(ws::OP_BINARY, b"PONG\r\n", pong);
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
