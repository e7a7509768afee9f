//! A hyper [`Timer`] backed by glommio's timers, so hyper can enforce its
//! header-read timeout (slow clients that never finish their headers).
//!
//! hyper wants `Send + Sync` sleep futures; glommio's timers are
//! executor-local. A [`GlommioSleep`] therefore holds only shared state
//! (`Arc<Mutex<..>>`); the first poll, which happens on the executor that
//! serves the connection, starts a local task that waits on a glommio timer
//! and wakes the sleep. The task's handle is parked in a thread-local table,
//! so dropping the sleep early (the usual case: the headers arrived)
//! cancels the task instead of leaving it to run until the deadline.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

thread_local! {
    /// Timer tasks of this executor, by sleep id.
    static TIMER_TASKS: RefCell<HashMap<u64, glommio::task::JoinHandle<()>>> = RefCell::new(HashMap::new());
}

static NEXT_SLEEP_ID: AtomicU64 = AtomicU64::new(1);

/// The timer to give hyper's connection builder.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlommioTimer;

impl Timer for GlommioTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(GlommioSleep {
            id: NEXT_SLEEP_ID.fetch_add(1, Ordering::Relaxed),
            deadline,
            shared: Arc::new(Mutex::new(Shared::default())),
        })
    }
}

#[derive(Default)]
struct Shared {
    fired: bool,
    started: bool,
    waker: Option<Waker>,
}

/// A sleep that a glommio timer task wakes.
pub struct GlommioSleep {
    id: u64,
    deadline: Instant,
    shared: Arc<Mutex<Shared>>,
}

impl Future for GlommioSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let Ok(mut shared) = self.shared.lock() else { return Poll::Ready(()) };
        if shared.fired {
            return Poll::Ready(());
        }
        shared.waker = Some(context.waker().clone());
        if !shared.started {
            shared.started = true;
            let state = self.shared.clone();
            let wait = self.deadline.saturating_duration_since(Instant::now());
            let task = glommio::spawn_local(async move {
                glommio::timer::sleep(wait).await;
                let waker = state.lock().ok().and_then(|mut shared| {
                    shared.fired = true;
                    shared.waker.take()
                });
                if let Some(waker) = waker {
                    waker.wake();
                }
            })
            .detach();
            TIMER_TASKS.with(|tasks| tasks.borrow_mut().insert(self.id, task));
        }
        Poll::Pending
    }
}

impl Sleep for GlommioSleep {}

impl Drop for GlommioSleep {
    fn drop(&mut self) {
        // On another thread (never the case here) the lookup finds nothing
        // and the task simply runs out at its deadline.
        let task = TIMER_TASKS.try_with(|tasks| tasks.borrow_mut().remove(&self.id)).ok().flatten();
        if let Some(task) = task {
            task.cancel();
        }
    }
}
