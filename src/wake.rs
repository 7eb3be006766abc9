//! Wakers that stand between a future and the task polling it, for code that polls futures
//! by hand and decides which wake-ups reach the task: a pooled upstream connection driven by
//! the request holding it (`cluster::pool`), and a connection's timers polled only when they
//! fire (`listener`).

use std::sync::Mutex;
use std::task::{Context, Waker};

/// The waker of the task that polled last, so that a waker of our own can pass wake-ups on.
pub struct TaskWaker(Mutex<Waker>);

impl TaskWaker {
    pub fn new() -> TaskWaker {
        TaskWaker(Mutex::new(Waker::noop().clone()))
    }

    /// Remembers `waker`; cloned only when it changed (a task's own waker does not). Inlined:
    /// it runs on each poll of a driven connection, where an outlined call showed up in
    /// per-request instruction counts.
    #[inline]
    pub fn register(&self, waker: &Waker) {
        let mut task = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !task.will_wake(waker) {
            task.clone_from(waker);
        }
    }

    #[inline]
    pub fn wake(&self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .wake_by_ref();
    }
}

impl Default for TaskWaker {
    fn default() -> TaskWaker {
        TaskWaker::new()
    }
}

/// A context whose waker does nothing, for futures that only something polled just before
/// (with the real waker) can make ready.
pub fn quiet() -> Context<'static> {
    Context::from_waker(Waker::noop())
}
