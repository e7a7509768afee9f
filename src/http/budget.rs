//! The per-core budget of HTTP request body bytes in flight. Pure.
//!
//! Each core holds one [`BodyBudget`] for all its connections. An ingest
//! reserves its declared `Content-Length` before it reads a byte of the
//! body, or, for a chunked body, grows its reservation as the chunks
//! arrive; a reservation that would pass the budget is refused (the handler
//! answers 429 and reads no more). A [`BodyReservation`] gives its bytes
//! back when it is dropped: when the request finishes, fails, or its
//! connection goes away.

use std::cell::Cell;
use std::rc::Rc;

/// Request body bytes held on one core, against a cap.
#[derive(Debug)]
pub struct BodyBudget {
    held_bytes: Cell<usize>,
    max_bytes: usize,
}

impl BodyBudget {
    /// An empty budget of `max_bytes`.
    pub fn new(max_bytes: usize) -> Rc<BodyBudget> {
        Rc::new(BodyBudget { held_bytes: Cell::new(0), max_bytes })
    }

    /// Bytes reserved now.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes.get()
    }

    /// The cap.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Reserves `bytes`, or nothing (`None`) if that would hold more than
    /// the cap.
    pub fn reserve(self: &Rc<Self>, bytes: usize) -> Option<BodyReservation> {
        let mut reservation = BodyReservation { budget: self.clone(), bytes: 0 };
        reservation.grow_to(bytes).then_some(reservation)
    }
}

/// Bytes reserved from a [`BodyBudget`], given back on drop.
#[derive(Debug)]
pub struct BodyReservation {
    budget: Rc<BodyBudget>,
    bytes: usize,
}

impl BodyReservation {
    /// Bytes this reservation holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows the reservation to `bytes` (nothing to do if it holds that
    /// many already). Returns false, changing nothing, if the budget would
    /// then hold more than its cap.
    pub fn grow_to(&mut self, bytes: usize) -> bool {
        let Some(more) = bytes.checked_sub(self.bytes) else { return true };
        let held = self.budget.held_bytes.get();
        match held.checked_add(more) {
            Some(total) if total <= self.budget.max_bytes => {
                self.budget.held_bytes.set(total);
                self.bytes = bytes;
                true
            }
            _ => false,
        }
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        let held = self.budget.held_bytes.get();
        debug_assert!(held >= self.bytes, "a reservation gives back only what it took");
        self.budget.held_bytes.set(held - self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_under_the_cap_and_come_back_on_drop() {
        let budget = BodyBudget::new(100);
        let first = budget.reserve(60).expect("fits");
        assert_eq!(budget.held_bytes(), 60);
        assert!(budget.reserve(41).is_none(), "60 + 41 > 100");
        assert_eq!(budget.held_bytes(), 60, "a refused reservation holds nothing");
        let mut chunked = budget.reserve(0).expect("an empty reservation always fits");
        assert!(chunked.grow_to(30));
        assert!(chunked.grow_to(40), "exactly at the cap");
        assert!(chunked.grow_to(10), "never shrinks");
        assert_eq!((chunked.bytes(), budget.held_bytes()), (40, 100));
        assert!(!chunked.grow_to(41));
        assert_eq!((chunked.bytes(), budget.held_bytes()), (40, 100), "a refused growth changes nothing");
        assert!(!chunked.grow_to(usize::MAX), "no overflow");
        drop(first);
        assert_eq!(budget.held_bytes(), 40);
        assert!(chunked.grow_to(100));
        drop(chunked);
        assert_eq!(budget.held_bytes(), 0, "the budget is whole again");
        assert_eq!(budget.max_bytes(), 100);
        assert!(budget.reserve(100).is_some());
        assert!(budget.reserve(101).is_none());
    }
}
