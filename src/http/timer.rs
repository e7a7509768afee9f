//! A hyper [`Timer`] backed by glommio, so hyper can enforce its
//! header-read timeout (slow clients that never finish their headers).
//!
//! hyper asks for a sleep on every request of a keep-alive connection and
//! drops it as soon as the headers arrive, so sleeps must cost next to
//! nothing. Each executor keeps a [`Wheel`] of pending sleeps (deadline,
//! waker) in a thread-local, and one long-lived ticker task that waits on a
//! single glommio timer for the earliest deadline. Registering a sleep is a
//! map insert; dropping it is a map remove. The ticker re-arms only when a
//! sleep is due earlier than the deadline it waits for (with a fixed
//! timeout, that is only when the wheel was empty), and otherwise wakes
//! about once per timeout, finds the sleeps it waited for gone, and waits
//! for the new earliest one.
//!
//! An earlier version spawned one glommio task per sleep (on its first
//! poll) and cancelled it on drop. Cancelled tasks were never freed:
//! heaptrack counted one leaked 112-byte task per request, which was the
//! whole of a saturated node's steady RSS growth (about 10 MiB a minute).
//!
//! hyper wants `Send + Sync` sleeps; glommio is thread-local. A
//! [`GlommioSleep`] therefore holds only its id and deadline; its waker
//! lives in the wheel of the executor that polled it (always the one that
//! serves the connection).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

use crate::shard::oneshot::Signal;

thread_local! {
    /// This executor's pending sleeps.
    static WHEEL: RefCell<Wheel> = RefCell::new(Wheel::default());
}

static NEXT_SLEEP_ID: AtomicU64 = AtomicU64::new(1);

/// Pending sleeps by deadline: the pure part of the timer, driven by
/// [`GlommioSleep`] (register, remove) and the ticker (expire). It holds at
/// most one sleep per connection (hyper keeps one header-read sleep per
/// connection), so it is bounded by the connection limit.
#[derive(Default)]
pub struct Wheel {
    sleeps: BTreeMap<(Instant, u64), Waker>,
    /// The deadline the ticker waits for, if it waits for one.
    armed: Option<Instant>,
    /// The executor whose ticker serves this wheel, once one was started.
    /// (An executor's tasks die with it; a later executor on the same
    /// thread, as in tests, starts its own ticker.)
    ticker_executor: Option<usize>,
    /// Wakes the ticker when it must re-arm for an earlier deadline.
    rearm: Rc<Signal>,
}

impl Wheel {
    /// Registers (or updates the waker of) sleep `id` due at `deadline`.
    /// Returns whether the ticker must re-arm: the sleep is due before the
    /// deadline it waits for, or it waits for none.
    pub fn register(&mut self, id: u64, deadline: Instant, waker: &Waker) -> bool {
        match self.sleeps.get_mut(&(deadline, id)) {
            Some(registered) if registered.will_wake(waker) => {}
            Some(registered) => registered.clone_from(waker),
            None => {
                self.sleeps.insert((deadline, id), waker.clone());
            }
        }
        self.armed.is_none_or(|armed| deadline < armed)
    }

    /// Forgets sleep `id` (dropped, or woken).
    pub fn remove(&mut self, id: u64, deadline: Instant) {
        self.sleeps.remove(&(deadline, id));
    }

    /// Removes the sleeps due at or before `now` and returns their wakers.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Waker> {
        let mut expired = Vec::new();
        while let Some(entry) = self.sleeps.first_entry() {
            if entry.key().0 > now {
                break;
            }
            expired.push(entry.remove());
        }
        expired
    }

    /// The earliest pending deadline; the ticker waits for it next.
    pub fn arm(&mut self) -> Option<Instant> {
        self.armed = self.sleeps.first_key_value().map(|((deadline, _), _)| *deadline);
        self.armed
    }

    /// Number of pending sleeps.
    pub fn len(&self) -> usize {
        self.sleeps.len()
    }

    /// Whether no sleep is pending.
    pub fn is_empty(&self) -> bool {
        self.sleeps.is_empty()
    }
}

/// Number of sleeps pending on this thread's executor.
pub fn pending_sleeps() -> usize {
    WHEEL.with(|wheel| wheel.borrow().len())
}

/// The ticker: wakes due sleeps, then waits for the earliest deadline left
/// or for a re-arm. Runs for the life of the executor.
async fn run_ticker(rearm: Rc<Signal>) {
    loop {
        let now = Instant::now();
        let (expired, next) = WHEEL.with(|wheel| {
            let mut wheel = wheel.borrow_mut();
            let expired = wheel.take_expired(now);
            (expired, wheel.arm())
        });
        for waker in expired {
            waker.wake();
        }
        let due = async move {
            match next {
                Some(deadline) => glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await,
                None => std::future::pending().await,
            }
        };
        futures_lite::future::or(due, rearm.wait()).await;
    }
}

/// The timer to give hyper's connection builder.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlommioTimer;

impl Timer for GlommioTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(GlommioSleep { id: NEXT_SLEEP_ID.fetch_add(1, Ordering::Relaxed), deadline })
    }
}

/// A sleep that this executor's ticker wakes.
pub struct GlommioSleep {
    id: u64,
    deadline: Instant,
}

impl Future for GlommioSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let executor = glommio::executor().id();
        let (rearm, start_ticker, signal) = WHEEL.with(|wheel| {
            let mut wheel = wheel.borrow_mut();
            let start_ticker = wheel.ticker_executor != Some(executor);
            if start_ticker {
                wheel.ticker_executor = Some(executor);
                wheel.armed = None;
                wheel.rearm = Rc::default();
            }
            let rearm = wheel.register(self.id, self.deadline, context.waker());
            // Most polls neither start nor re-arm the ticker: no clone then.
            let signal = (start_ticker || rearm).then(|| wheel.rearm.clone());
            (rearm, start_ticker, signal)
        });
        // Outside the wheel's borrow: the ticker borrows it when it runs.
        if let Some(signal) = signal {
            if start_ticker {
                glommio::spawn_local(run_ticker(signal)).detach();
            } else if rearm {
                signal.notify();
            }
        }
        Poll::Pending
    }
}

impl Sleep for GlommioSleep {}

impl Drop for GlommioSleep {
    fn drop(&mut self) {
        // On a thread whose wheel never saw this sleep, this removes nothing.
        let _ = WHEEL.try_with(|wheel| wheel.borrow_mut().remove(self.id, self.deadline));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn the_ticker_rearms_only_for_an_earlier_deadline() {
        let waker = Waker::noop();
        let base = Instant::now();
        let mut wheel = Wheel::default();
        assert!(wheel.register(1, base + Duration::from_secs(10), waker), "nothing armed yet");
        assert_eq!(wheel.arm(), Some(base + Duration::from_secs(10)));
        assert!(!wheel.register(2, base + Duration::from_secs(11), waker), "later than the armed deadline");
        assert!(!wheel.register(1, base + Duration::from_secs(10), waker), "a repeated poll changes nothing");
        assert!(wheel.register(3, base + Duration::from_secs(5), waker), "earlier than the armed deadline");
        assert_eq!(wheel.len(), 3);
    }

    #[test]
    fn expiry_wakes_only_due_sleeps_and_removes_them() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let base = Instant::now();
        let mut wheel = Wheel::default();
        for id in 0..10u64 {
            wheel.register(id, base + Duration::from_secs(id), &waker);
        }
        wheel.remove(3, base + Duration::from_secs(3));
        wheel.remove(4, base + Duration::from_secs(999)); // wrong deadline: not this sleep
        let expired = wheel.take_expired(base + Duration::from_secs(5));
        assert_eq!(expired.len(), 5, "ids 0, 1, 2, 4 and 5 are due; 3 was removed");
        expired.into_iter().for_each(Waker::wake);
        assert_eq!(counter.0.load(Ordering::Relaxed), 5);
        assert_eq!(wheel.arm(), Some(base + Duration::from_secs(6)));
        assert_eq!(wheel.len(), 4);
    }

    #[test]
    fn dropped_sleeps_leave_nothing_behind_and_a_pending_one_fires() {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make().unwrap();
        executor.run(async {
            // Many sleeps, each polled once (registered) and dropped before
            // its deadline, as hyper does for requests whose headers arrive
            // in time: none may stay behind.
            for _ in 0..10_000 {
                let mut sleep = GlommioTimer.sleep(Duration::from_secs(10));
                let polled = futures_lite::future::poll_once(sleep.as_mut()).await;
                assert!(polled.is_none());
                assert_eq!(pending_sleeps(), 1);
                drop(sleep);
            }
            assert_eq!(pending_sleeps(), 0);

            // A long sleep armed first, then a short one: the short one must
            // fire on time (the ticker re-arms) while the long one stays.
            let mut long = GlommioTimer.sleep(Duration::from_secs(60));
            assert!(futures_lite::future::poll_once(long.as_mut()).await.is_none());
            glommio::timer::sleep(Duration::from_millis(5)).await;
            let started = Instant::now();
            GlommioTimer.sleep(Duration::from_millis(50)).await;
            let waited = started.elapsed();
            assert!(waited >= Duration::from_millis(50), "woke after {waited:?}");
            assert!(waited < Duration::from_secs(30), "the short sleep waited for the long one: {waited:?}");
            assert_eq!(pending_sleeps(), 1, "only the long sleep is left");
            drop(long);
            assert_eq!(pending_sleeps(), 0);
        });
        drop(executor);

        // A second executor on the same thread gets a ticker of its own: the
        // first one's died with it.
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make().unwrap();
        executor.run(async {
            let started = Instant::now();
            GlommioTimer.sleep(Duration::from_millis(20)).await;
            assert!(started.elapsed() < Duration::from_secs(30));
        });
    }
}
