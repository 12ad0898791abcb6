//! The part of a connection that the rest of its shard touches: its bounded
//! queue of outgoing frames, its channel membership and its end. Owned by
//! the connection's home shard; never leaves it (it is `Rc`, not `Send`).
//!
//! Overflow policy: a delivery that would take the queue past its byte
//! bound ends the connection as a slow consumer instead; the channel never
//! waits.

use super::outbox::Outbox;
use crate::error::CloseReason;
use crate::id::{ChannelToken, ConnId, Uid};
use crate::wake::WakerSlot;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

/// A frame as a connection's queue holds it. One message's frame is shared
/// by every member of the shard it goes to under a plain (non-atomic) count:
/// fanning it out to N members costs N increments, not N atomic ones on the
/// `Bytes` (whose count is the one that crosses shards).
pub type QueuedFrame = Rc<Bytes>;

/// Frame slots a new connection's queue starts with (8 bytes each): its
/// `101` and join event, and room for a first burst.
const QUEUE_SLOTS_NEW: usize = 8;

/// `read_slot` of a connection the shard's reader does not read.
const NOT_READ: u32 = u32::MAX;

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

/// Who sends a connection's queue (see `conn::outbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// Nobody yet (the join is not confirmed: the queued `101` may still be
    /// replaced by a refusal), its own writer task (TLS), or its closing
    /// session.
    Held,
    /// The shard's flush task, once a delivery marks it; nothing waits.
    Idle,
    /// Marked in the outbox for this round's flush.
    Marked,
    /// Its socket was full: a task of its own waits until it is writable,
    /// and sends until the queue is empty.
    Blocked,
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
    queue: RefCell<VecDeque<QueuedFrame>>,
    /// Bytes in `queue` not yet written (the head frame may be partly sent).
    queued_bytes: Cell<usize>,
    queued_bytes_max: usize,
    /// Bytes of the head frame already written.
    head_written: Cell<usize>,
    /// Who sends the queue.
    output: Cell<Output>,
    /// The shard's outbox, where a delivery marks it.
    outbox: Rc<Outbox>,
    /// Its slot in the shard's reader (a plain connection, once joined;
    /// `NOT_READ` before or otherwise): its end is handed to the flush
    /// task, which releases the slot.
    read_slot: Cell<u32>,
    /// A TLS connection's writer task, parked until there is output or an
    /// end.
    writer: WakerSlot,
    /// The writer task while it waits for a full socket: woken by an end
    /// only, so deliveries to a stalled client do not retry its socket.
    writer_blocked: WakerSlot,
    /// The session's reading task, parked until the join is answered or
    /// the connection ends; at its close, until a blocked send gave up.
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
        outbox: Rc<Outbox>,
    ) -> ConnHandle {
        ConnHandle {
            id,
            uid,
            echo,
            queue: RefCell::new(VecDeque::with_capacity(QUEUE_SLOTS_NEW)),
            queued_bytes: Cell::new(0),
            queued_bytes_max,
            head_written: Cell::new(0),
            output: Cell::new(Output::Held),
            outbox,
            read_slot: Cell::new(NOT_READ),
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

    /// Queues a frame and marks the connection for this round's flush (or
    /// wakes its writer). Never blocks and never waits.
    #[inline]
    pub fn deliver(self: &Rc<Self>, frame: impl Into<QueuedFrame>) -> Delivery {
        if self.end.get().is_some() {
            return Delivery::Ending;
        }
        let frame = frame.into();
        let queued = self.queued_bytes.get() + frame.len();
        if queued > self.queued_bytes_max {
            self.end(CloseReason::SlowConsumer);
            return Delivery::Overflow;
        }
        self.queued_bytes.set(queued);
        self.queue.borrow_mut().push_back(frame);
        self.mark();
        self.writer.wake();
        Delivery::Queued
    }

    /// Marks it in the outbox if the flush task sends it and it is not
    /// marked yet.
    fn mark(self: &Rc<Self>) {
        if self.output.get() == Output::Idle {
            self.output.set(Output::Marked);
            self.outbox.mark(self.clone());
        }
    }

    /// The session hands a plain connection's sending to the shard's flush
    /// task (once the join is confirmed).
    pub(crate) fn release_output(self: &Rc<Self>) {
        self.output.set(Output::Idle);
        if !self.queue.borrow().is_empty() {
            self.mark();
        }
    }

    /// For the flush task: whether it was marked (it is not any more).
    pub(crate) fn take_mark(&self) -> bool {
        let marked = self.output.get() == Output::Marked;
        if marked {
            self.output.set(Output::Idle);
        }
        marked
    }

    /// Its socket is full: a task of its own sends from now on.
    pub(crate) fn block(&self) {
        self.output.set(Output::Blocked);
    }

    /// The blocked task is done (the queue is empty, or the connection
    /// ended): the flush task sends again, or the closing session.
    pub(crate) fn unblock(self: &Rc<Self>) {
        self.output.set(Output::Idle);
        if !self.queue.borrow().is_empty() {
            self.mark();
        }
        self.session.wake();
    }

    /// The closing session takes the sending back: waits until a blocked
    /// send gave up (the end woke it), then nothing else sends.
    pub(crate) async fn hold_output(&self) {
        self.session
            .until(|| self.hold_output_now().then_some(()))
            .await;
    }

    /// `hold_output` if it need not wait: false while a blocked send is out.
    pub(crate) fn hold_output_now(&self) -> bool {
        let free = self.output.get() != Output::Blocked;
        if free {
            self.output.set(Output::Held);
        }
        free
    }

    /// Bytes of the head frame already written.
    pub(crate) fn head_written(&self) -> usize {
        self.head_written.get()
    }

    /// Queues the last frame (the close frame) even though the connection
    /// is ending. For the writer only.
    pub(crate) fn deliver_final(&self, frame: Bytes) {
        let frame = QueuedFrame::new(frame);
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
        if self.read_slot.get() != NOT_READ {
            self.outbox.ended(self.read_slot.get());
        }
        self.session.wake();
        self.writer.wake();
        self.writer_blocked.wake();
        true
    }

    /// The join was refused before the upgrade: replace the queued `101`
    /// with `response` and end, so the writer sends it and no WebSocket
    /// ever opens.
    pub fn refuse(&self, response: Vec<u8>) {
        self.discard_queue();
        self.deliver_final(Bytes::from(response));
        self.end(CloseReason::JoinRefused);
    }

    /// The shard's reader reads it from now on, from `slot`.
    pub(crate) fn set_read_slot(&self, slot: u32) {
        self.read_slot.set(slot);
    }

    /// Remembers the socket, so a stopping shard can cut it.
    pub fn set_socket(&self, fd: std::os::fd::RawFd) {
        self.socket_fd.set(fd);
    }

    pub(crate) fn socket_fd(&self) -> std::os::fd::RawFd {
        self.socket_fd.get()
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

    /// For a TLS connection's writer task: waits until there is something
    /// to write or the connection ended.
    pub async fn output_or_end(&self) {
        self.writer
            .until(|| (!self.queue.borrow().is_empty() || self.end.get().is_some()).then_some(()))
            .await
    }

    /// The queue, for the writer only.
    pub(crate) fn queue(&self) -> &RefCell<VecDeque<QueuedFrame>> {
        &self.queue
    }

    /// Drops `n` written bytes from the front of the queue and frees their
    /// room under the bound.
    pub(crate) fn written(&self, mut n: usize) {
        self.queued_bytes.set(self.queued_bytes.get() - n);
        let mut queue = self.queue.borrow_mut();
        let mut head_written = self.head_written.get();
        while n > 0 {
            let Some(head) = queue.front() else { break };
            let left = head.len() - head_written;
            if n >= left {
                n -= left;
                queue.pop_front();
                head_written = 0;
            } else {
                head_written += n;
                n = 0;
            }
        }
        self.head_written.set(head_written);
    }

    /// Drops everything queued (a slow consumer's backlog). A head frame of
    /// which some bytes already went out stays, so the stream remains
    /// well-formed for the close frame that follows. Returns the bytes
    /// dropped.
    pub(crate) fn discard_queue(&self) -> usize {
        let head_written = self.head_written.get();
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
    /// no slots (8 slots would be 64 bytes of every idle connection; 256 when a slot was a whole `Bytes`).
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

    fn conn(max: usize) -> Rc<ConnHandle> {
        Rc::new(ConnHandle::new(
            ConnId(1),
            Uid(*b"abc123"),
            false,
            max,
            0,
            Rc::default(),
        ))
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
        c.discard_queue();
        assert_eq!(c.queue().borrow().len(), 1);
        assert_eq!(c.queued_bytes(), 6);
        c.written(6);
        c.discard_queue();
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
    fn a_delivery_marks_it_once_per_round_and_only_once_released() {
        let outbox = Rc::new(Outbox::default());
        let c = Rc::new(ConnHandle::new(
            ConnId(7),
            Uid(*b"abc123"),
            false,
            100,
            0,
            outbox.clone(),
        ));
        c.deliver(Bytes::from_static(b"101"));
        assert!(outbox.is_empty(), "held until the join is confirmed");
        c.release_output();
        c.deliver(Bytes::from_static(b"a"));
        assert_eq!(outbox.take(), vec![ConnId(7)], "marked once");
        assert!(c.take_mark());
        assert!(!c.take_mark());
        c.deliver(Bytes::from_static(b"b"));
        assert_eq!(outbox.take(), vec![ConnId(7)], "marked again next round");
        c.output.set(Output::Blocked);
        c.deliver(Bytes::from_static(b"c"));
        assert!(outbox.is_empty(), "its blocked task sends it");
    }

    #[test]
    fn written_bytes_leave_the_queue_and_free_room() {
        let c = conn(10);
        c.deliver(Bytes::from_static(b"1234567890"));
        c.written(4);
        assert_eq!(c.head_written(), 4);
        assert_eq!(c.deliver(Bytes::from_static(b"1234")), Delivery::Queued);
        c.written(7);
        assert_eq!((c.queue().borrow().len(), c.head_written()), (1, 1));
        assert_eq!(c.queued_bytes(), 3);
    }
}
