//! The signal that ends a shard's long-lived tasks (the accept loops, the
//! sweep, the forwarders and receivers), each of which races `stopped()`.

use crate::wake::WakerList;
use std::cell::Cell;

#[derive(Default)]
pub struct StopSignal {
    stopping: Cell<bool>,
    /// Every long-lived task of the shard parks here (see `WakerList::until`
    /// for why each registers once).
    waiting: WakerList,
}

impl StopSignal {
    /// Resolves once `stop` was called.
    pub async fn stopped(&self) {
        self.waiting.until(|| self.stopping.get()).await
    }

    /// Wakes every `stopped()` future.
    pub fn stop(&self) {
        self.stopping.set(true);
        self.waiting.wake_all();
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn polled_many_times_it_holds_one_waker_and_wakes_once_on_stop() {
        let signal = StopSignal::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut stopped = pin!(signal.stopped());
        // The soak found this: a forwarder polled 32,768 times overflowed
        // glommio's waker count when each poll cloned the waker.
        for _ in 0..100_000 {
            assert!(stopped.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(signal.waiting(), 1);
        // Ours, the context's waker, and the one registered clone.
        assert_eq!(
            Arc::strong_count(&count),
            3,
            "one clone held, not one per poll"
        );
        signal.stop();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(stopped.as_mut().poll(&mut cx).is_ready());
        assert_eq!(signal.waiting(), 0);
    }
}
