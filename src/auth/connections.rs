//! `--max-connections`: connections one listener serves at once over the
//! whole node (DESIGN.md section 10). Every core accepts on its own
//! `SO_REUSEPORT` socket, so the count is one atomic the cores share,
//! touched once when a connection opens and once when it closes; a
//! connection over the limit is closed at accept, before any byte of it
//! is read, and counted. Established connections are never affected.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// One listener's limit and counters.
#[derive(Debug)]
pub struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
    refused: AtomicU64,
}

impl ConnectionLimit {
    /// A limit of `max` open connections.
    pub fn new(max: usize) -> Arc<ConnectionLimit> {
        Arc::new(ConnectionLimit { open: AtomicUsize::new(0), max, refused: AtomicU64::new(0) })
    }

    /// A slot for a new connection, held until it closes; `None` (and the
    /// refusal counted) when `max` are open. Never more than `max` slots
    /// are out at once, whatever the cores do concurrently.
    pub fn admit(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(ConnectionSlot { limit: self.clone() })
    }

    /// [`ConnectionLimit::admit`] for a connection `listener` accepted;
    /// a refusal is logged at the 1st, 2nd, 4th, 8th... (a flood must not
    /// flood the log).
    pub fn admit_logged(self: &Arc<Self>, listener: &str) -> Option<ConnectionSlot> {
        let slot = self.admit();
        if slot.is_none() && self.refused().is_power_of_two() {
            tracing::warn!(
                limit = self.max,
                refused = self.refused(),
                "{listener}: too many connections (--max-connections); closing new ones"
            );
        }
        slot
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections closed at accept so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// An open connection's place under the limit; freed when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    limit: Arc<ConnectionLimit>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limit.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_limit_is_refused_and_counted_until_a_slot_frees() {
        let limit = ConnectionLimit::new(2);
        let first = limit.admit().unwrap();
        let _second = limit.admit().unwrap();
        assert!(limit.admit().is_none());
        assert!(limit.admit().is_none());
        assert_eq!((limit.open(), limit.refused()), (2, 2));
        drop(first);
        assert!(limit.admit().is_some(), "a closed connection frees its slot");
        assert_eq!(limit.open(), 1, "the slot just admitted was dropped at once");
    }

    #[test]
    fn threads_racing_never_hold_more_than_the_limit() {
        let limit = ConnectionLimit::new(50);
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (limit, peak) = (limit.clone(), peak.clone());
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for round in 0..2000 {
                        if let Some(slot) = limit.admit() {
                            held.push(slot);
                        }
                        peak.fetch_max(limit.open(), Ordering::Relaxed);
                        if round % 3 == 0 {
                            held.pop();
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(peak.load(Ordering::Relaxed) <= 50 + 8, "a refused admit may show for an instant, never be held");
        assert_eq!(limit.open(), 0);
    }
}
