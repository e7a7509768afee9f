//! Leader discovery, the client side (DESIGN.md section 9, "Leader
//! discovery"): which address a follower's pusher, or `wormdb restore`,
//! tries next. Pure: it never connects; the caller reports how an attempt
//! ended and connects where [`Leaders::failed`] says, after a backoff when
//! the [`Move`] asks for one.
//!
//! # The rules
//!
//! A client knows a list of archive addresses (`--leader A,B,C`) and starts
//! at the first. When an attempt ends:
//! - refused with `UNAVAILABLE` and a leader hint ([`Hint::from_status`])
//!   whose term is not older than the highest term followed so far: the
//!   next attempt goes to the hinted address, at once. The address may be
//!   outside the list (a node that joined the tier since); the term makes
//!   the client immune to a replica that answers from an older view (as
//!   Kafka's KIP-951 does with leader epochs);
//! - anything else (no hint, a stale hint, a failed connect, a broken
//!   stream): the next address of the list, at once while a cycle of the
//!   list is not complete (while a tier elects, another member is worth
//!   asking), after the caller's backoff once every address failed in a
//!   row.
//!   Rotation continues from the list address last tried, or from the
//!   hinted one when the hint named a list member, so a hinted leader that
//!   then fails hands over to its successor in the list.
//!
//! Two replicas with stale views of one term could point at each other
//! forever; so after [`HINTS_FOLLOWED_AT_ONCE_MAX`] hints followed in a row
//! without reaching the leader ([`Leaders::reached`]) or a rotation, a hint
//! is still followed, but after a backoff.
//!
//! Hint addresses are used only when they are a literal `IP:PORT`: this
//! module does no DNS lookup (the drivers run on executors that must not
//! block), so a hint naming a host is treated as no hint, and the list
//! takes over.

use std::net::SocketAddr;

use crate::grpc::status::{Code, Status};

/// Hints followed in a row with no backoff (see the module doc): a leader
/// change that every replica of a 5-node tier learns late costs at most
/// this many immediate hops, and a loop between stale replicas is slowed
/// to the backoff's pace after it.
pub const HINTS_FOLLOWED_AT_ONCE_MAX: u32 = 4;

/// A usable leader hint: where the leader is and in which term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The leader's gRPC address.
    pub addr: SocketAddr,
    /// The term in which it leads.
    pub term: u64,
}

impl Hint {
    /// The hint of a not-leader refusal: `status` is `UNAVAILABLE`, carries
    /// a [`LeaderHint`](crate::grpc::status::LeaderHint), and its address is
    /// a literal `IP:PORT`. `None` otherwise.
    pub fn from_status(status: &Status) -> Option<Hint> {
        if status.code != Code::Unavailable {
            return None;
        }
        let hint = status.leader.as_ref()?;
        let addr = hint.addr.parse().ok()?;
        Some(Hint { addr, term: hint.term })
    }
}

/// Why the next attempt goes where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A leader hint of this term was followed.
    Hint {
        /// The hint's term.
        term: u64,
    },
    /// The next address of the list.
    Rotation,
}

/// Where the next attempt goes, decided when the last one ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    /// The address of the attempt that ended.
    pub from: SocketAddr,
    /// The address of the next attempt (may equal `from`: a list of one).
    pub to: SocketAddr,
    /// Why.
    pub cause: Cause,
    /// Wait the caller's backoff before the next attempt (after a rotation
    /// that completes a cycle of the list without reaching a leader; after
    /// a hint only past [`HINTS_FOLLOWED_AT_ONCE_MAX`]).
    pub backoff: bool,
}

/// The addresses a client knows and the one it tries now (see the module
/// doc for the rules).
#[derive(Clone, Debug)]
pub struct Leaders {
    /// The configured list, in order; never empty.
    addrs: Vec<SocketAddr>,
    /// Index in `addrs` that rotation continues from.
    cursor: usize,
    /// The address of the current (or next) attempt.
    current: SocketAddr,
    /// The highest term of a hint followed.
    term_max: Option<u64>,
    /// Hints followed since the last rotation or [`Leaders::reached`].
    hints_in_a_row: u32,
    /// Rotations since [`Leaders::reached`]: the backoff applies once a
    /// whole cycle of the list has failed, not between its members (while
    /// a tier elects, the next member is worth asking at once).
    rotations: usize,
}

impl Leaders {
    /// A client of `addrs`, starting at the first. Panics if `addrs` is
    /// empty (a node with no leader runs no client).
    pub fn new(addrs: &[SocketAddr]) -> Leaders {
        assert!(!addrs.is_empty(), "leader discovery needs at least one address");
        Leaders { addrs: addrs.to_vec(), cursor: 0, current: addrs[0], term_max: None, hints_in_a_row: 0, rotations: 0 }
    }

    /// The address to connect to now.
    pub fn current(&self) -> SocketAddr {
        self.current
    }

    /// The configured list.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The highest term of a hint followed so far.
    pub fn term_max(&self) -> Option<u64> {
        self.term_max
    }

    /// The attempt at [`Leaders::current`] reached the leader (it answered
    /// as one): hints may again be followed at once.
    pub fn reached(&mut self) {
        self.hints_in_a_row = 0;
        self.rotations = 0;
    }

    /// The attempt at [`Leaders::current`] ended, refused with `hint` (see
    /// [`Hint::from_status`]) or otherwise (`None`); returns where the next
    /// one goes, which [`Leaders::current`] now is.
    pub fn failed(&mut self, hint: Option<Hint>) -> Move {
        let from = self.current;
        let fresh = hint.filter(|hint| self.term_max.is_none_or(|term_max| hint.term >= term_max));
        if let Some(hint) = fresh {
            self.term_max = Some(hint.term);
            self.hints_in_a_row += 1;
            if let Some(index) = self.addrs.iter().position(|&addr| addr == hint.addr) {
                self.cursor = index;
            }
            self.current = hint.addr;
            let backoff = self.hints_in_a_row > HINTS_FOLLOWED_AT_ONCE_MAX;
            return Move { from, to: hint.addr, cause: Cause::Hint { term: hint.term }, backoff };
        }
        self.hints_in_a_row = 0;
        self.cursor = (self.cursor + 1) % self.addrs.len();
        self.current = self.addrs[self.cursor];
        self.rotations += 1;
        let backoff = self.rotations % self.addrs.len() == 0;
        Move { from, to: self.current, cause: Cause::Rotation, backoff }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::grpc::status::LeaderHint;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn hint(port: u16, term: u64) -> Option<Hint> {
        Some(Hint { addr: addr(port), term })
    }

    #[test]
    fn only_an_unavailable_refusal_with_a_literal_address_is_a_hint() {
        let leader = |addr: &str| Some(LeaderHint { leader_id: 2, addr: addr.into(), term: 7 });
        let refusal = Status::not_leader("not the leader", leader("10.0.0.1:2"));
        assert_eq!(Hint::from_status(&refusal), hint(2, 7));
        let v6 = Status::not_leader("", leader("[::1]:9"));
        assert_eq!(Hint::from_status(&v6).unwrap().addr, "[::1]:9".parse().unwrap());
        assert_eq!(Hint::from_status(&Status::not_leader("", None)), None, "leader unknown");
        assert_eq!(Hint::from_status(&Status::not_leader("", leader("node-2:50051"))), None, "no DNS lookup");
        assert_eq!(Hint::from_status(&Status::not_leader("", leader("10.0.0.1"))), None, "no port");
        let other = Status { leader: leader("10.0.0.1:2"), ..Status::failed_precondition("gap") };
        assert_eq!(Hint::from_status(&other), None, "only a not-leader refusal redirects");
    }

    #[test]
    fn rotation_walks_the_list_and_wraps() {
        let mut leaders = Leaders::new(&[addr(1), addr(2), addr(3)]);
        assert_eq!(leaders.current(), addr(1));
        let visited: Vec<Move> = (0..4).map(|_| leaders.failed(None)).collect();
        let to: Vec<SocketAddr> = visited.iter().map(|step| step.to).collect();
        assert_eq!(to, [addr(2), addr(3), addr(1), addr(2)]);
        assert!(visited.iter().all(|step| step.cause == Cause::Rotation));
        // The backoff comes once the whole list failed, not between members.
        let backoffs: Vec<bool> = visited.iter().map(|step| step.backoff).collect();
        assert_eq!(backoffs, [false, false, true, false]);
        assert_eq!(visited[0].from, addr(1));

        let mut single = Leaders::new(&[addr(9)]);
        assert_eq!(single.failed(None), Move { from: addr(9), to: addr(9), cause: Cause::Rotation, backoff: true });
    }

    #[test]
    fn a_hint_is_followed_at_once_and_a_stale_one_is_ignored() {
        let mut leaders = Leaders::new(&[addr(1), addr(2), addr(3)]);
        let step = leaders.failed(hint(3, 5));
        assert_eq!(step, Move { from: addr(1), to: addr(3), cause: Cause::Hint { term: 5 }, backoff: false });
        assert_eq!(leaders.term_max(), Some(5));
        // The same term is not older: followed.
        assert_eq!(leaders.failed(hint(2, 5)).to, addr(2));
        // An older term is stale: rotation from the hinted 2 (the first of
        // a cycle: no backoff yet).
        let step = leaders.failed(hint(1, 4));
        assert_eq!(step, Move { from: addr(2), to: addr(3), cause: Cause::Rotation, backoff: false });
        assert_eq!(leaders.term_max(), Some(5), "a stale hint changes nothing");
        assert_eq!(leaders.failed(hint(1, 6)).cause, Cause::Hint { term: 6 });
    }

    #[test]
    fn a_hint_outside_the_list_is_followed_and_its_failure_rotates_the_list() {
        let mut leaders = Leaders::new(&[addr(1), addr(2), addr(3)]);
        leaders.failed(None); // 1 refused with no hint: now 2
        let step = leaders.failed(hint(7, 1)); // 2 names 7, a node not in the list
        assert_eq!((step.from, step.to, step.backoff), (addr(2), addr(7), false));
        assert_eq!(leaders.current(), addr(7));
        assert_eq!(leaders.addrs(), [addr(1), addr(2), addr(3)], "the list is not changed");
        // 7 fails to connect: rotation goes on after 2, the list address last tried.
        let step = leaders.failed(None);
        assert_eq!(step, Move { from: addr(7), to: addr(3), cause: Cause::Rotation, backoff: false });
        // A whole cycle failed: now the backoff.
        assert!(leaders.failed(None).backoff);
        // Reaching a leader starts a new cycle.
        leaders.reached();
        assert!(!leaders.failed(None).backoff);
    }

    #[test]
    fn hints_in_a_row_past_the_bound_wait_for_the_backoff() {
        let mut leaders = Leaders::new(&[addr(1), addr(2)]);
        // Two replicas with stale views point at each other in one term.
        for round in 0..HINTS_FOLLOWED_AT_ONCE_MAX {
            let to = if round % 2 == 0 { 2 } else { 1 };
            assert!(!leaders.failed(hint(to, 3)).backoff, "round {round}");
        }
        assert!(leaders.failed(hint(1, 3)).backoff, "past the bound: followed, after a backoff");
        assert_eq!(leaders.current(), addr(1));
        leaders.reached();
        assert!(!leaders.failed(hint(2, 3)).backoff, "reaching the leader resets the bound");
        leaders.failed(None);
        for _ in 0..HINTS_FOLLOWED_AT_ONCE_MAX {
            assert!(!leaders.failed(hint(2, 3)).backoff, "a rotation resets it too");
        }
    }

    #[test]
    #[should_panic(expected = "at least one address")]
    fn an_empty_list_is_a_programmer_error() {
        Leaders::new(&[]);
    }
}
