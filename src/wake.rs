//! Parking a task until another part of its shard has news for it: one
//! `WakerSlot` per waiting task, one `WakerList` where several wait on the
//! same thing. Shard-local (`Cell`, not `Send`); every slot's declaration
//! says which task parks in it.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Where one task parks. Re-registering replaces the waker, so a task
/// polled many times holds one slot, not one per poll.
#[derive(Default)]
pub struct WakerSlot(Cell<Option<Waker>>);

impl WakerSlot {
    /// Wakes the parked task, if any (it parks again if still not ready).
    pub fn wake(&self) {
        if let Some(w) = self.0.take() {
            w.wake();
        }
    }

    /// Resolves once `ready()` says so, parking here in between. `ready`
    /// is checked on every poll, so a wake that raced the park is not lost.
    pub async fn until<T>(&self, mut ready: impl FnMut() -> Option<T>) -> T {
        poll_fn(|cx| match ready() {
            Some(v) => Poll::Ready(v),
            None => {
                self.0.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// Where several tasks park for the same news.
#[derive(Default)]
pub struct WakerList {
    wakers: RefCell<Vec<Waker>>,
    /// `wake_all` calls so far: a future registers once per round.
    rounds: Cell<u64>,
}

impl WakerList {
    /// Wakes every parked task.
    pub fn wake_all(&self) {
        self.rounds.set(self.rounds.get() + 1);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Resolves once `ready()` is true. The task's waker is registered on
    /// the first pending poll after each `wake_all` only: such futures are polled again every
    /// time the task they race is woken (every accept, every forward
    /// batch), and a clone per poll would grow the list without bound and
    /// overflow glommio's waker reference count (it panics at 32,767). A
    /// glommio task's waker never changes, so the first one stays valid.
    pub async fn until(&self, mut ready: impl FnMut() -> bool) {
        let mut registered_in = None;
        poll_fn(|cx| {
            if ready() {
                return Poll::Ready(());
            }
            let round = self.rounds.get();
            if registered_in != Some(round) {
                self.wakers.borrow_mut().push(cx.waker().clone());
                registered_in = Some(round);
            }
            Poll::Pending
        })
        .await
    }

    /// Tasks parked now.
    pub fn len(&self) -> usize {
        self.wakers.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.wakers.borrow().is_empty()
    }
}
