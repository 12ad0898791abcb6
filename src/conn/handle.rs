//! The part of a connection that the rest of its shard touches: its bounded
//! queue of outgoing frames, its channel membership and its end. Owned by
//! the connection's home shard; never leaves it (it is `Rc`, not `Send`).
//!
//! Overflow policy: a delivery that would take the queue past its byte
//! bound ends the connection as a slow consumer instead; the channel never
//! waits.

use crate::error::CloseReason;
use crate::id::{ChannelToken, ConnId, Uid};
use crate::wake::WakerSlot;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

/// Frame slots a new connection's queue starts with (32 bytes each): its
/// `101` and join event, and room for a first burst.
const QUEUE_SLOTS_NEW: usize = 8;

/// What became of a frame handed to `deliver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// The connection is ending; the frame was not queued.
    Ending,
    /// The frame would have passed the bound: the connection now ends as a
    /// slow consumer.
    Overflow,
}

/// What the sweep should do about a connection's silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Quiet for the ping interval: ping it (once).
    PingDue,
    /// Silent for the idle timeout: drop it.
    Idle,
}

pub struct ConnHandle {
    id: ConnId,
    uid: Uid,
    /// Whether the client receives its own broadcasts.
    echo: bool,
    /// Frames (and, before the upgrade, the HTTP response) not yet written.
    queue: RefCell<VecDeque<Bytes>>,
    /// Bytes in `queue` not yet written (the head frame may be partly sent).
    queued_bytes: Cell<usize>,
    queued_bytes_max: usize,
    /// The writer task, parked until there is output or an end.
    writer: WakerSlot,
    /// The writer task while it waits for a full socket: woken by an end
    /// only, so deliveries to a stalled client do not retry its socket.
    writer_blocked: WakerSlot,
    /// The session's reading task, parked until the join is answered or
    /// the connection ends.
    session: WakerSlot,
    /// The first reason the connection ended for; later ones are ignored.
    end: Cell<Option<CloseReason>>,
    /// The channel instance it joined, once its owner confirmed the join.
    channel: Cell<Option<ChannelToken>>,
    /// Its index in its home shard's subscriber list for `channel`.
    subscriber_slot: Cell<usize>,
    /// Shard clock (ms) when the client was last heard from.
    last_heard_ms: Cell<u64>,
    /// Whether a ping went out since the client was last heard from.
    pinged: Cell<bool>,
    /// The socket, so a stopping shard can cut a connection that outlived
    /// the drain (-1 until the session sets it).
    socket_fd: Cell<std::os::fd::RawFd>,
    /// Set for a connection that joins no channel (the echo endpoint).
    joinless: Cell<bool>,
    /// Whether it may send: it holds the channel's send key, or none is
    /// needed. Decided at the join.
    may_send: Cell<bool>,
    /// The window its compressed frames use, if it negotiated
    /// permessage-deflate (0: it did not).
    deflate_window: Cell<u8>,
}

impl ConnHandle {
    pub fn new(
        id: ConnId,
        uid: Uid,
        echo: bool,
        queued_bytes_max: usize,
        now_ms: u64,
    ) -> ConnHandle {
        ConnHandle {
            id,
            uid,
            echo,
            queue: RefCell::new(VecDeque::with_capacity(QUEUE_SLOTS_NEW)),
            queued_bytes: Cell::new(0),
            queued_bytes_max,
            writer: WakerSlot::default(),
            writer_blocked: WakerSlot::default(),
            session: WakerSlot::default(),
            end: Cell::new(None),
            channel: Cell::new(None),
            subscriber_slot: Cell::new(0),
            last_heard_ms: Cell::new(now_ms),
            pinged: Cell::new(false),
            socket_fd: Cell::new(-1),
            joinless: Cell::new(false),
            may_send: Cell::new(false),
            deflate_window: Cell::new(0),
        }
    }

    pub fn id(&self) -> ConnId {
        self.id
    }

    pub fn uid(&self) -> Uid {
        self.uid
    }

    pub fn echo(&self) -> bool {
        self.echo
    }

    /// Queues a frame for the writer. Never blocks and never waits.
    #[inline]
    pub fn deliver(&self, frame: Bytes) -> Delivery {
        if self.end.get().is_some() {
            return Delivery::Ending;
        }
        let queued = self.queued_bytes.get() + frame.len();
        if queued > self.queued_bytes_max {
            self.end(CloseReason::SlowConsumer);
            return Delivery::Overflow;
        }
        self.queued_bytes.set(queued);
        self.queue.borrow_mut().push_back(frame);
        self.writer.wake();
        Delivery::Queued
    }

    /// Queues the last frame (the close frame) even though the connection
    /// is ending. For the writer only.
    pub(crate) fn deliver_final(&self, frame: Bytes) {
        self.queued_bytes.set(self.queued_bytes.get() + frame.len());
        self.queue.borrow_mut().push_back(frame);
    }

    /// Ends the connection for `reason` (the first reason wins) and wakes
    /// its tasks; returns whether this call ended it.
    pub fn end(&self, reason: CloseReason) -> bool {
        if self.end.get().is_some() {
            return false;
        }
        self.end.set(Some(reason));
        self.session.wake();
        self.writer.wake();
        self.writer_blocked.wake();
        true
    }

    /// The join was refused before the upgrade: replace the queued `101`
    /// with `response` and end, so the writer sends it and no WebSocket
    /// ever opens.
    pub fn refuse(&self, response: Vec<u8>) {
        self.discard_queue(0);
        self.deliver_final(Bytes::from(response));
        self.end(CloseReason::JoinRefused);
    }

    /// Remembers the socket, so a stopping shard can cut it.
    pub fn set_socket(&self, fd: std::os::fd::RawFd) {
        self.socket_fd.set(fd);
    }

    /// Shuts the socket down both ways (the fd stays owned by the session).
    pub fn shutdown_socket(&self) {
        let fd = self.socket_fd.get();
        if fd >= 0 {
            // SAFETY: shutdown on a socket fd the session still owns.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }

    pub fn ended(&self) -> Option<CloseReason> {
        self.end.get()
    }

    /// Records the owner's confirmation of the join (and whether it may
    /// send) and wakes the session.
    pub fn set_joined(&self, token: ChannelToken, may_send: bool) {
        self.may_send.set(may_send);
        self.channel.set(Some(token));
        self.session.wake();
    }

    /// The channel instance it is a member of, once joined.
    pub fn channel(&self) -> Option<ChannelToken> {
        self.channel.get()
    }

    /// Leaves the channel: returns it, and it is no longer a member.
    pub fn take_channel(&self) -> Option<ChannelToken> {
        self.channel.take()
    }

    pub fn may_send(&self) -> bool {
        self.may_send.get()
    }

    /// It negotiated permessage-deflate at the upgrade.
    pub fn set_deflate(&self, negotiated: crate::ws::deflate::Negotiated) {
        self.deflate_window.set(negotiated.window_bits());
    }

    /// The window its compressed frames use, if it negotiated deflate.
    pub fn deflate_window(&self) -> Option<u8> {
        Some(self.deflate_window.get()).filter(|&bits| bits != 0)
    }

    /// For a connection that joins no channel (the echo endpoint): its
    /// session need not wait for an owner.
    pub fn set_joinless(&self) {
        self.joinless.set(true);
    }

    /// The client was heard from (any bytes) at shard clock `now_ms`.
    pub fn heard_from(&self, now_ms: u64) {
        self.last_heard_ms.set(now_ms);
        self.pinged.set(false);
    }

    /// What its silence calls for at `now_ms`. A ping is due once per
    /// silence, and only for a member (the echo endpoint is never pinged).
    pub fn liveness(&self, now_ms: u64, ping_ms: u64, idle_ms: u64) -> Liveness {
        let silent = now_ms.saturating_sub(self.last_heard_ms.get());
        if silent >= idle_ms {
            Liveness::Idle
        } else if silent >= ping_ms && !self.pinged.get() && self.channel.get().is_some() {
            Liveness::PingDue
        } else {
            Liveness::Alive
        }
    }

    /// Records that a ping went out for this silence.
    pub fn pinged(&self) {
        self.pinged.set(true);
    }

    /// Its index in its home shard's subscriber list. For `shard::home`.
    pub(crate) fn subscriber_slot(&self) -> usize {
        self.subscriber_slot.get()
    }

    pub(crate) fn set_subscriber_slot(&self, slot: usize) {
        self.subscriber_slot.set(slot);
    }

    /// Waits until the join is confirmed or the connection ended.
    pub async fn joined_or_ended(&self) {
        self.session
            .until(|| {
                let done =
                    self.channel.get().is_some() || self.joinless.get() || self.end.get().is_some();
                done.then_some(())
            })
            .await
    }

    /// Waits until the connection ended.
    pub async fn wait_ended(&self) -> CloseReason {
        self.session.until(|| self.end.get()).await
    }

    /// For the writer while its socket is full: resolves when the
    /// connection ends.
    pub(crate) async fn ended_while_blocked(&self) {
        self.writer_blocked
            .until(|| self.end.get().map(|_| ()))
            .await
    }

    /// Waits until there is something to write or the connection ended.
    pub async fn output_or_end(&self) {
        self.writer
            .until(|| (!self.queue.borrow().is_empty() || self.end.get().is_some()).then_some(()))
            .await
    }

    /// The queue, for the writer only.
    pub(crate) fn queue(&self) -> &RefCell<VecDeque<Bytes>> {
        &self.queue
    }

    /// Tells the bound that `n` queued bytes were written.
    pub(crate) fn written(&self, n: usize) {
        self.queued_bytes.set(self.queued_bytes.get() - n);
    }

    /// Drops everything queued (a slow consumer's backlog). A head frame of
    /// which `head_written` bytes already went out stays, so the stream
    /// remains well-formed for the close frame that follows. Returns the
    /// bytes dropped.
    pub(crate) fn discard_queue(&self, head_written: usize) -> usize {
        let mut q = self.queue.borrow_mut();
        let head = if head_written > 0 {
            q.pop_front()
        } else {
            None
        };
        q.clear();
        let unsent = head.as_ref().map_or(0, |h| h.len() - head_written);
        q.extend(head);
        let dropped = self.queued_bytes.get() - unsent;
        self.queued_bytes.set(unsent);
        dropped
    }

    /// Frees the (now empty) queue's slots, however many a burst made. Called
    /// by the once-a-second sweep, not on the hot path: a busy connection
    /// reallocates its queue at most once a second, and a silent one holds
    /// no slots (8 slots were 256 bytes of every idle connection).
    pub fn shrink_idle_queue(&self) {
        let mut q = self.queue.borrow_mut();
        if q.is_empty() && q.capacity() > 0 {
            *q = VecDeque::new();
        }
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(max: usize) -> ConnHandle {
        ConnHandle::new(ConnId(1), Uid(*b"abc123"), false, max, 0)
    }

    #[test]
    fn push_queues_until_the_bound_then_ends_as_slow_consumer() {
        let c = conn(10);
        assert_eq!(c.deliver(Bytes::from_static(b"12345")), Delivery::Queued);
        assert_eq!(c.deliver(Bytes::from_static(b"12345")), Delivery::Queued);
        assert_eq!(c.deliver(Bytes::from_static(b"1")), Delivery::Overflow);
        assert_eq!(c.ended(), Some(CloseReason::SlowConsumer));
        assert_eq!(c.deliver(Bytes::from_static(b"1")), Delivery::Ending);
        assert_eq!(c.queued_bytes(), 10);
    }

    #[test]
    fn first_end_reason_wins() {
        let c = conn(10);
        assert!(c.end(CloseReason::IdleTimeout));
        assert!(!c.end(CloseReason::ServerShutdown));
        assert_eq!(c.ended(), Some(CloseReason::IdleTimeout));
    }

    #[test]
    fn discarding_keeps_only_the_unsent_part_of_a_started_frame() {
        let c = conn(100);
        c.deliver(Bytes::from_static(b"0123456789"));
        c.deliver(Bytes::from_static(b"abc"));
        c.written(4);
        c.discard_queue(4);
        assert_eq!(c.queue().borrow().len(), 1);
        assert_eq!(c.queued_bytes(), 6);
        c.discard_queue(0);
        assert!(c.queue().borrow().is_empty());
        assert_eq!(c.queued_bytes(), 0);
    }

    #[test]
    fn an_emptied_queue_gives_back_what_a_burst_grew() {
        let c = conn(1 << 20);
        for _ in 0..100 {
            c.deliver(Bytes::from_static(b"x"));
        }
        c.shrink_idle_queue();
        assert!(
            c.queue().borrow().capacity() >= 100,
            "not while frames wait"
        );
        c.queue().borrow_mut().clear();
        c.shrink_idle_queue();
        assert_eq!(c.queue().borrow().capacity(), 0);
    }

    #[test]
    fn a_ping_is_due_once_per_silence_and_only_for_a_member() {
        let c = conn(10);
        assert_eq!(c.liveness(500, 300, 1000), Liveness::Alive, "not joined");
        c.set_joined(ChannelToken(1), true);
        assert_eq!(c.liveness(299, 300, 1000), Liveness::Alive);
        assert_eq!(c.liveness(300, 300, 1000), Liveness::PingDue);
        c.pinged();
        assert_eq!(c.liveness(600, 300, 1000), Liveness::Alive);
        assert_eq!(c.liveness(1000, 300, 1000), Liveness::Idle);
        c.heard_from(1000);
        assert_eq!(c.liveness(1300, 300, 1000), Liveness::PingDue);
    }

    #[test]
    fn written_bytes_free_room() {
        let c = conn(10);
        c.deliver(Bytes::from_static(b"1234567890"));
        c.written(4);
        assert_eq!(c.deliver(Bytes::from_static(b"1234")), Delivery::Queued);
    }
}
