//! A token's ingest rate (`rate_entries_per_s`): a token bucket counted in
//! entries, shared by every core of the node.
//!
//! [`TokenBucket`] is the pure rule, with the clock passed in. The bucket
//! holds at most one second of the rate (the burst: a client idle for a
//! second may send that many entries at once). A request is let through
//! when the bucket holds its entries, or, for a request larger than the
//! burst, when the bucket is full; it then takes all its entries, and the
//! bucket may go below zero (a debt that later requests wait out). So a
//! request is never refused for its size alone, and over any window the
//! entries let through stay within the rate plus one burst plus one
//! request.
//!
//! Arithmetic is exact, in integers: the bucket counts entry-nanoseconds
//! (an entry is 10^9 units, a nanosecond of time adds `rate` units), so the
//! wait it names is rounded up to the nanosecond and a client that waits
//! that long is let through (a test relies on it).
//!
//! [`RateLimit`] is one token's bucket behind a mutex, taken once per
//! ingest request (or pushed batch) of that token, by whichever core
//! serves it: exact across cores, at the cost of a lock only tokens with a
//! rate pay.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Units of the bucket per entry: one second of nanoseconds.
const UNITS_PER_ENTRY: i128 = 1_000_000_000;

/// The pure rule (see the module doc). `now` is any monotonic clock's
/// reading; a reading older than the last one counts as no time passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    entries_per_s: u64,
    /// In entry-nanoseconds; below zero while in debt.
    units: i128,
    /// When `units` was last brought up to date (`None`: never used, full).
    updated: Option<Duration>,
}

impl TokenBucket {
    /// A full bucket for `entries_per_s` (at least 1).
    pub fn new(entries_per_s: u64) -> TokenBucket {
        let entries_per_s = entries_per_s.max(1);
        TokenBucket { entries_per_s, units: Self::burst_units(entries_per_s), updated: None }
    }

    fn burst_units(entries_per_s: u64) -> i128 {
        i128::from(entries_per_s) * UNITS_PER_ENTRY
    }

    /// The rate.
    pub fn entries_per_s(&self) -> u64 {
        self.entries_per_s
    }

    /// Entries the bucket holds at `now` (negative in debt), rounded down.
    pub fn available(&mut self, now: Duration) -> i64 {
        self.refill(now);
        (self.units.div_euclid(UNITS_PER_ENTRY)) as i64
    }

    fn refill(&mut self, now: Duration) {
        let burst = Self::burst_units(self.entries_per_s);
        if let Some(updated) = self.updated {
            let elapsed = now.saturating_sub(updated).as_nanos() as i128;
            self.units = (self.units + elapsed * i128::from(self.entries_per_s)).min(burst);
        }
        self.updated = Some(self.updated.map_or(now, |updated| updated.max(now)));
    }

    /// Lets `entries` through at `now`, or says how long to wait before the
    /// same request would be let through.
    pub fn take(&mut self, entries: u64, now: Duration) -> Result<(), Duration> {
        self.refill(now);
        let burst = Self::burst_units(self.entries_per_s);
        let cost = i128::from(entries) * UNITS_PER_ENTRY;
        let needed = cost.min(burst);
        if self.units >= needed {
            self.units -= cost;
            return Ok(());
        }
        let missing = needed - self.units;
        let rate = i128::from(self.entries_per_s);
        let nanos = (missing + rate - 1) / rate;
        Err(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }
}

/// The process's clock origin for every bucket.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// One token's bucket, shared by the cores, and how often it said wait.
#[derive(Debug)]
pub struct RateLimit {
    bucket: Mutex<TokenBucket>,
    limited: AtomicU64,
}

impl RateLimit {
    /// A full bucket of `entries_per_s`.
    pub fn new(entries_per_s: u64) -> RateLimit {
        RateLimit { bucket: Mutex::new(TokenBucket::new(entries_per_s)), limited: AtomicU64::new(0) }
    }

    /// The rate.
    pub fn entries_per_s(&self) -> u64 {
        self.bucket.lock().unwrap_or_else(PoisonError::into_inner).entries_per_s()
    }

    /// Lets `entries` through now, or says how long to wait (and counts a
    /// wait).
    pub fn take(&self, entries: u64) -> Result<(), Duration> {
        let now = epoch().elapsed();
        let taken = self.bucket.lock().unwrap_or_else(PoisonError::into_inner).take(entries, now);
        if taken.is_err() {
            self.limited.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Requests refused, or pushed batches held back, over the rate.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }
}

/// Whole seconds to put in `Retry-After` for a wait: rounded up, at least 1
/// (a client that waits that long is let through).
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_full_bucket_lets_one_second_through_then_paces() {
        let mut bucket = TokenBucket::new(100);
        let start = Duration::from_secs(5);
        assert_eq!(bucket.take(60, start), Ok(()));
        assert_eq!(bucket.take(40, start), Ok(()), "the burst is one second of the rate");
        assert_eq!(bucket.take(10, start), Err(Duration::from_millis(100)), "10 entries at 100/s");
        assert_eq!(bucket.take(10, start + Duration::from_millis(99)), Err(Duration::from_millis(1)));
        assert_eq!(bucket.take(10, start + Duration::from_millis(100)), Ok(()), "after waiting as told");
        assert_eq!(bucket.available(start + Duration::from_millis(100)), 0);
        assert_eq!(bucket.available(start + 10 * SECOND), 100, "never more than the burst");
    }

    #[test]
    fn a_request_larger_than_the_burst_waits_for_a_full_bucket_and_leaves_a_debt() {
        let mut bucket = TokenBucket::new(100);
        let start = Duration::ZERO;
        assert_eq!(bucket.take(1, start), Ok(()));
        assert_eq!(bucket.take(250, start), Err(Duration::from_millis(10)), "needs a full bucket, not 250");
        let full = start + Duration::from_millis(10);
        assert_eq!(bucket.take(250, full), Ok(()));
        assert_eq!(bucket.available(full), -150, "in debt");
        assert_eq!(bucket.take(1, full), Err(Duration::from_millis(1510)));
        assert_eq!(bucket.take(1, full + Duration::from_millis(1510)), Ok(()));
    }

    #[test]
    fn waits_are_rounded_up_to_the_nanosecond_and_enough() {
        let mut bucket = TokenBucket::new(3);
        let now = Duration::ZERO;
        assert_eq!(bucket.take(3, now), Ok(()));
        let wait = bucket.take(1, now).unwrap_err();
        assert_eq!(wait, Duration::from_nanos(333_333_334));
        assert!(bucket.clone().take(1, now + wait - Duration::from_nanos(1)).is_err());
        assert_eq!(bucket.take(1, now + wait), Ok(()));
    }

    #[test]
    fn a_clock_that_goes_back_adds_nothing() {
        let mut bucket = TokenBucket::new(10);
        assert_eq!(bucket.take(10, SECOND * 10), Ok(()));
        assert!(bucket.take(1, SECOND).is_err());
        assert!(bucket.take(1, SECOND * 10).is_err(), "the earlier reading did not move the clock back");
        assert_eq!(bucket.take(1, SECOND * 10 + Duration::from_millis(100)), Ok(()));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(retry_after_seconds(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_seconds(SECOND), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
    }

    #[test]
    fn the_shared_limit_counts_refusals() {
        let limit = RateLimit::new(5);
        assert_eq!(limit.take(5), Ok(()));
        assert!(limit.take(5).is_err());
        assert_eq!(limit.limited(), 1);
        assert_eq!(limit.entries_per_s(), 5);
    }

    proptest::proptest! {
        /// Over any history, what is let through by time t is at most the
        /// burst plus the rate times t plus one request (the debt rule).
        #[test]
        fn never_more_than_burst_plus_rate_plus_one_request(
            rate in 1u64..1000,
            steps in proptest::collection::vec((0u64..2_000_000_000, 1u64..3000), 1..60),
        ) {
            let mut bucket = TokenBucket::new(rate);
            let mut now = Duration::ZERO;
            let mut through: u128 = 0;
            let mut largest: u128 = 0;
            for (advance_ns, entries) in steps {
                now += Duration::from_nanos(advance_ns);
                if bucket.take(entries, now).is_ok() {
                    through += u128::from(entries);
                    largest = largest.max(u128::from(entries));
                }
                let allowed = u128::from(rate) + u128::from(rate) * now.as_nanos() / 1_000_000_000 + largest;
                proptest::prop_assert!(through <= allowed, "{through} > {allowed}");
            }
        }

        /// A refused request is let through once it waited as told, if
        /// nothing else took from the bucket meanwhile.
        #[test]
        fn waiting_as_told_is_enough(rate in 1u64..10_000, first in 0u64..20_000, second in 1u64..20_000) {
            let mut bucket = TokenBucket::new(rate);
            let _ = bucket.take(first, Duration::ZERO);
            if let Err(wait) = bucket.take(second, Duration::ZERO) {
                proptest::prop_assert_eq!(bucket.take(second, wait), Ok(()));
            }
        }
    }
}
