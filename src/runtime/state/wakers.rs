//! The wake-ups of a state store's queues: one per queue name, shared by every handle on the
//! queue in this process, so that an enqueue wakes the receivers waiting in `Queue::next`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::Notify;

/// The wake-ups of one store's queues, by queue name.
pub(crate) type Wakers = Mutex<HashMap<String, Weak<Notify>>>;

/// The wake-up of queue `name`, made on first use.
pub(crate) fn waker(wakers: &Wakers, name: &str) -> Arc<Notify> {
    let mut wakers = wakers.lock().unwrap_or_else(PoisonError::into_inner);
    wakers.retain(|_, wake| wake.strong_count() > 0);
    if let Some(wake) = wakers.get(name).and_then(Weak::upgrade) {
        return wake;
    }
    let wake = Arc::new(Notify::new());
    wakers.insert(name.to_owned(), Arc::downgrade(&wake));
    wake
}

/// Wakes the receivers waiting on `queue` (on every queue for `None`), if the store is still
/// there.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn wake(wakers: &Weak<Wakers>, queue: Option<&str>) {
    let Some(wakers) = wakers.upgrade() else {
        return;
    };
    let wakers = wakers.lock().unwrap_or_else(PoisonError::into_inner);
    for (name, wake) in wakers.iter() {
        if queue.is_none_or(|queue| queue == name)
            && let Some(wake) = wake.upgrade()
        {
            wake.notify_waiters();
        }
    }
}
