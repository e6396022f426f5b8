//! Work in progress in an adapter, so that shutting down can wait for it: new work is refused once closing, and
//! what was taken finishes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    closed: AtomicBool,
    idle: Notify,
}

/// One piece of work in progress; dropping it says it is done.
pub(crate) struct Ticket(Arc<InFlight>);

impl InFlight {
    /// None once shutting down: new work is refused, work in progress finishes.
    pub(crate) fn enter(self: &Arc<Self>) -> Option<Ticket> {
        self.count.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.leave();
            return None;
        }
        Some(Ticket(self.clone()))
    }

    fn leave(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// How much is still in progress.
    pub(crate) fn left(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Refuses new work and waits until what is in progress is done.
    pub(crate) async fn close_and_wait(&self) {
        self.closed.store(true, Ordering::SeqCst);
        loop {
            let idle = self.idle.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.leave();
    }
}
