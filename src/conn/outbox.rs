//! The shard's outbox: the connections a round of deliveries left frames
//! for. A delivery marks its connection here (once per round); the shard's
//! flush task then sends each marked queue with one gathered `sendmsg`,
//! after the tasks woken in the same round have queued theirs. So no task
//! per connection waits to write, and a round costs one wake-up, not one
//! per member: only a connection whose socket is full gets a task of its
//! own (`writer::run_blocked`), until its queue is empty again.
//!
//! Bounded: a connection is marked at most once until the flush takes it,
//! so the list never holds more than the shard's connections. It holds
//! their handles, so the flush looks nothing up.

use super::handle::ConnHandle;
use crate::wake::WakerSlot;
use std::cell::RefCell;
use std::rc::Rc;

#[derive(Default)]
pub struct Outbox {
    marked: RefCell<Vec<Rc<ConnHandle>>>,
    /// The reader's slots of connections that ended since: the flush task
    /// releases them (`Reader::release`). Each ends once.
    ended: RefCell<Vec<u32>>,
    /// The shard's flush task, parked until a connection is marked or
    /// ended.
    flusher: WakerSlot,
}

impl Outbox {
    pub fn mark(&self, conn: Rc<ConnHandle>) {
        self.marked.borrow_mut().push(conn);
        self.flusher.wake();
    }

    pub fn ended(&self, read_slot: u32) {
        self.ended.borrow_mut().push(read_slot);
        self.flusher.wake();
    }

    /// Waits until a connection is marked or ended, then swaps the marked
    /// list with `round` and the ended one with `ended` (both empty; their
    /// allocations are reused).
    pub async fn next_round(&self, round: &mut Vec<Rc<ConnHandle>>, ended: &mut Vec<u32>) {
        self.flusher
            .until(|| {
                let idle = self.marked.borrow().is_empty() && self.ended.borrow().is_empty();
                (!idle).then_some(())
            })
            .await;
        std::mem::swap(round, &mut *self.marked.borrow_mut());
        std::mem::swap(ended, &mut *self.ended.borrow_mut());
    }

    pub fn is_empty(&self) -> bool {
        self.marked.borrow().is_empty()
    }

    /// The marked list, emptied (tests).
    #[cfg(test)]
    pub fn take(&self) -> Vec<crate::id::ConnId> {
        let marked = std::mem::take(&mut *self.marked.borrow_mut());
        marked.iter().map(|conn| conn.id()).collect()
    }

    /// Gives back a burst's allocation once the list is empty (the sweep).
    pub fn shrink_idle(&self) {
        let mut marked = self.marked.borrow_mut();
        if marked.is_empty() && marked.capacity() > 1024 {
            *marked = Vec::new();
        }
        let mut ended = self.ended.borrow_mut();
        if ended.is_empty() && ended.capacity() > 1024 {
            *ended = Vec::new();
        }
    }
}
