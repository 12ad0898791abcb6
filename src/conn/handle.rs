//! The part of a connection that the rest of its shard touches: its bounded
//! queue of outgoing frames, its channel membership and its end. Owned by
//! the connection's home shard; never leaves it (it is `Rc`, not `Send`).
//!
//! Overflow policy: a push that would take the queue past its byte bound
//! ends the connection as a slow consumer instead; the channel never waits.

use crate::error::CloseReason;
use crate::id::{ChannelToken, ConnId, Uid};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Frame slots an idle connection's queue keeps (32 bytes each).
const QUEUE_SLOTS_IDLE: usize = 8;

/// What became of a frame handed to `push`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The connection is ending; the frame was not queued.
    Ending,
    /// The frame would have passed the bound: the connection now ends as a
    /// slow consumer.
    Overflow,
}

pub struct ConnHandle {
    pub id: ConnId,
    pub uid: Uid,
    /// Whether the client receives its own broadcasts.
    pub echo: bool,
    /// Frames (and, before the upgrade, the HTTP response) not yet written.
    queue: RefCell<VecDeque<Bytes>>,
    /// Bytes in `queue` not yet written (the head frame may be partly sent).
    queued_bytes: Cell<usize>,
    queued_bytes_max: usize,
    /// The writer task, parked until there is output or an end.
    writer: Cell<Option<Waker>>,
    /// The writer task while it waits for a full socket: woken by an end
    /// only, so pushes to a stalled client do not retry its socket.
    writer_blocked: Cell<Option<Waker>>,
    /// The connection's main task, parked until it is joined or ended.
    main: Cell<Option<Waker>>,
    /// The first reason the connection ended for; later ones are ignored.
    end: Cell<Option<CloseReason>>,
    /// The channel instance it joined, once its owner confirmed the join.
    pub token: Cell<Option<ChannelToken>>,
    /// Its index in its shard's subscriber list for `token`.
    pub subscriber_slot: Cell<usize>,
    /// Shard clock (ms) when the client was last heard from.
    pub last_heard_ms: Cell<u64>,
    /// Whether a ping went out since the client was last heard from.
    pub pinged: Cell<bool>,
    /// The socket, so a stopping shard can cut a connection that outlived
    /// the drain (-1 until the session sets it).
    pub socket_fd: Cell<std::os::fd::RawFd>,
    /// Set for a connection that joins no channel (the echo endpoint).
    joinless: Cell<bool>,
    /// Whether it may send: it holds the channel's send key, or none is
    /// needed. Decided at the join.
    pub may_send: Cell<bool>,
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
            queue: RefCell::new(VecDeque::with_capacity(QUEUE_SLOTS_IDLE)),
            queued_bytes: Cell::new(0),
            queued_bytes_max,
            writer: Cell::new(None),
            writer_blocked: Cell::new(None),
            main: Cell::new(None),
            end: Cell::new(None),
            token: Cell::new(None),
            subscriber_slot: Cell::new(0),
            last_heard_ms: Cell::new(now_ms),
            pinged: Cell::new(false),
            socket_fd: Cell::new(-1),
            joinless: Cell::new(false),
            may_send: Cell::new(false),
        }
    }

    /// Queues a frame for the writer. Never blocks and never waits.
    #[inline]
    pub fn push(&self, frame: Bytes) -> Pushed {
        if self.end.get().is_some() {
            return Pushed::Ending;
        }
        let queued = self.queued_bytes.get() + frame.len();
        if queued > self.queued_bytes_max {
            self.end(CloseReason::SlowConsumer);
            return Pushed::Overflow;
        }
        self.queued_bytes.set(queued);
        self.queue.borrow_mut().push_back(frame);
        if let Some(w) = self.writer.take() {
            w.wake();
        }
        Pushed::Queued
    }

    /// Queues the last frame (the close frame) even though the connection
    /// is ending. For the writer only.
    pub(crate) fn push_final(&self, frame: Bytes) {
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
        self.wake_main();
        for slot in [&self.writer, &self.writer_blocked] {
            if let Some(w) = slot.take() {
                w.wake();
            }
        }
        true
    }

    /// The join was refused before the upgrade: replace the queued `101`
    /// with `response` and end, so the writer sends it and no WebSocket
    /// ever opens.
    pub fn refuse(&self, response: Vec<u8>) {
        self.discard_queue(0);
        self.push_final(Bytes::from(response));
        self.end(CloseReason::JoinRefused);
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

    /// Records the owner's confirmation of the join and wakes the main task.
    pub fn set_joined(&self, token: ChannelToken) {
        self.token.set(Some(token));
        self.wake_main();
    }

    fn wake_main(&self) {
        if let Some(w) = self.main.take() {
            w.wake();
        }
    }

    /// For a connection that joins no channel (the echo endpoint): its
    /// session need not wait for an owner.
    pub fn set_joinless(&self) {
        self.joinless.set(true);
    }

    /// Waits until the join is confirmed or the connection ended.
    pub async fn joined_or_ended(&self) {
        poll_fn(|cx| {
            if self.token.get().is_some() || self.joinless.get() || self.end.get().is_some() {
                return Poll::Ready(());
            }
            self.main.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Waits until the connection ended.
    pub async fn wait_ended(&self) -> CloseReason {
        poll_fn(|cx| match self.end.get() {
            Some(reason) => Poll::Ready(reason),
            None => {
                self.main.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// For the writer while its socket is full: resolves when the
    /// connection ends.
    pub(crate) async fn ended_while_blocked(&self) {
        poll_fn(|cx| {
            if self.end.get().is_some() {
                return Poll::Ready(());
            }
            self.writer_blocked.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Waits until there is something to write or the connection ended.
    pub async fn output_or_end(&self) {
        poll_fn(|cx| {
            if !self.queue.borrow().is_empty() || self.end.get().is_some() {
                return Poll::Ready(());
            }
            self.writer.set(Some(cx.waker().clone()));
            Poll::Pending
        })
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

    /// Frees what a burst made the (now empty) queue grow to. Called by the
    /// once-a-second sweep, not on the hot path, so a busy connection does
    /// not reallocate its queue every round.
    pub fn shrink_idle_queue(&self) {
        let mut q = self.queue.borrow_mut();
        if q.is_empty() && q.capacity() > QUEUE_SLOTS_IDLE {
            q.shrink_to(QUEUE_SLOTS_IDLE);
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
        assert_eq!(c.push(Bytes::from_static(b"12345")), Pushed::Queued);
        assert_eq!(c.push(Bytes::from_static(b"12345")), Pushed::Queued);
        assert_eq!(c.push(Bytes::from_static(b"1")), Pushed::Overflow);
        assert_eq!(c.ended(), Some(CloseReason::SlowConsumer));
        assert_eq!(c.push(Bytes::from_static(b"1")), Pushed::Ending);
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
        c.push(Bytes::from_static(b"0123456789"));
        c.push(Bytes::from_static(b"abc"));
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
            c.push(Bytes::from_static(b"x"));
        }
        c.shrink_idle_queue();
        assert!(
            c.queue().borrow().capacity() >= 100,
            "not while frames wait"
        );
        c.queue().borrow_mut().clear();
        c.shrink_idle_queue();
        assert!(c.queue().borrow().capacity() <= 2 * QUEUE_SLOTS_IDLE);
    }

    #[test]
    fn written_bytes_free_room() {
        let c = conn(10);
        c.push(Bytes::from_static(b"1234567890"));
        c.written(4);
        assert_eq!(c.push(Bytes::from_static(b"1234")), Pushed::Queued);
    }
}
