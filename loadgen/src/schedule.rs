//! The open-loop timeline (pure).
//!
//! At `rate` entries per second and `batch` entries per request, requests
//! are due every `batch / rate` seconds. Slot `n` of the run is due at
//! `n * batch / rate` seconds after the start, and belongs to connection
//! `n % connections`; so each connection sends every `connections * batch /
//! rate` seconds, and the connections are staggered evenly rather than
//! firing together. A connection whose previous request is still running
//! sends late, but its latency is still measured from the slot's due time
//! (wrk2's correction for coordinated omission): a stalled server cannot hide
//! the requests it delayed.

/// The timeline of a fixed-rate run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Connections sharing the timeline.
    pub connections: u64,
    /// Entries per request.
    pub batch: u64,
    /// Entries per second (> 0).
    pub rate: u64,
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;

impl Schedule {
    /// The global slot of request `index` of `connection`.
    pub fn slot(&self, connection: u64, index: u64) -> u128 {
        debug_assert!(connection < self.connections);
        u128::from(index) * u128::from(self.connections) + u128::from(connection)
    }

    /// When request `index` of `connection` is due, in ns after the start.
    pub fn due_ns(&self, connection: u64, index: u64) -> u128 {
        self.slot(connection, index) * u128::from(self.batch) * NANOS_PER_SECOND / u128::from(self.rate)
    }

    /// Requests of `connection` due before `end_ns` (the ones with
    /// `due_ns < end_ns`).
    pub fn requests_before(&self, connection: u64, end_ns: u128) -> u64 {
        // due(slot) < end  ⇔  slot * batch * 1e9 < end * rate (the floor in
        // due_ns does not change a strict comparison with an integer).
        let per_slot = u128::from(self.batch) * NANOS_PER_SECOND;
        let slots = (end_ns * u128::from(self.rate)).div_ceil(per_slot);
        if slots <= u128::from(connection) {
            return 0;
        }
        let count = (slots - u128::from(connection) - 1) / u128::from(self.connections) + 1;
        u64::try_from(count).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_evenly_spaced_and_staggered() {
        let schedule = Schedule { connections: 4, batch: 100, rate: 20_000 };
        // 200 requests/s: one every 5 ms, each connection every 20 ms.
        assert_eq!(schedule.due_ns(0, 0), 0);
        assert_eq!(schedule.due_ns(1, 0), 5_000_000);
        assert_eq!(schedule.due_ns(3, 0), 15_000_000);
        assert_eq!(schedule.due_ns(0, 1), 20_000_000);
        assert_eq!(schedule.due_ns(2, 10), 210_000_000);
    }

    #[test]
    fn requests_before_matches_due_times() {
        for (connections, batch, rate) in [(4, 100, 20_000), (3, 7, 1_000), (16, 1, 123_457), (5, 1000, 999)] {
            let schedule = Schedule { connections, batch, rate };
            for end_ns in [0u128, 1, 4_999_999, 5_000_000, 1_000_000_000, 3_000_000_001] {
                let mut total = 0;
                for connection in 0..connections {
                    let count = schedule.requests_before(connection, end_ns);
                    if count > 0 {
                        assert!(schedule.due_ns(connection, count - 1) < end_ns);
                    }
                    assert!(schedule.due_ns(connection, count) >= end_ns);
                    total += count;
                }
                // The whole run carries rate * seconds entries, within one request.
                let expected = end_ns * u128::from(rate) / u128::from(batch) / NANOS_PER_SECOND;
                assert!(u128::from(total).abs_diff(expected) <= 1, "{total} vs {expected}");
            }
        }
    }
}
