//! The follower's pusher for one shard, as a sans-I/O state machine: when
//! to connect, which seqs to send next, what an ack or a failure changes,
//! how long to back off, and when shutdown has drained everything. It
//! never touches a socket, a log or a clock: the driver passes the time in
//! and performs what [`Session::poll`] asks for.
//!
//! # The protocol
//!
//! A session connects and asks the leader's watermark for (this node, this
//! shard). A watermark above the local durable seq means this node lost
//! data it had pushed ([`Error::DataLoss`]): it must be rebuilt, never push
//! over the archive. Otherwise everything up to the watermark is
//! acknowledged, and the session sends the durable entries from
//! `watermark + 1` on, in order, in batches bounded by entries and bytes,
//! with at most `batches_in_flight_max` unacknowledged. Each ack releases
//! one batch; acks never go backwards ([`Error::AckWentBackwards`]). Any
//! failure ends the session; the next one starts after a capped, jittered
//! exponential backoff ([`Backoff`]; reset when the failed session had run
//! longer than twice [`BACKOFF_MAX`]) and resumes from the leader's
//! watermark, which is exact (the leader drops duplicates), so nothing is
//! lost or archived twice.
//!
//! # Which address
//!
//! The session knows the leader addresses of `--leader` (an archive tier
//! lists its nodes) and chooses where each session connects, by the rules
//! of [`super::discovery`]: it starts at the first; a session refused with
//! `UNAVAILABLE` and a leader hint of a current term
//! ([`Session::failed_with`]) is followed by one at the hinted address at
//! once, with no backoff; any other end moves to the next address of the
//! list after the backoff. With one address this is the plain reconnect
//! loop above.
//!
//! At shutdown the session sends what is durable, half-closes the stream
//! and is done once the leader has acknowledged everything and ended the
//! stream. A failure while shutting down ends the pusher at once, with
//! entries possibly unacknowledged (they stay in the log for next time).
//!
//! Retention's veto is the shard's (`ShardConfig::retention_deletable_through`):
//! the driver publishes [`Session::acked_seq`] into it, so a segment holding
//! an entry the leader has not acknowledged stays.
//!
//! # Driving it
//!
//! One machine per pushing shard. The driver calls [`Session::poll`] with
//! the time elapsed since it started (any monotonic clock) and does what it
//! says:
//! - [`Action::Connect`]: connect to `addr` and call `GetWatermark`; on the
//!   answer call [`Session::connected`], then open the `Replicate` stream;
//!   on an error status call [`Session::failed_with`] (it reads the leader
//!   hint), on any other error [`Session::failed`].
//! - [`Action::Send`]: read the durable entries (or stored blocks) from
//!   `window.from_seq`, stopping before `window.to_seq_max` and once past
//!   `window.bytes_target` bytes (at least one entry; a block may not be
//!   cut at its end, so the driver may stop earlier), send them as one
//!   batch, then call [`Session::sent`] with the end it reached. If the read
//!   fails, call [`Session::failed`].
//! - [`Action::CloseSend`]: half-close the stream and keep reading acks.
//! - [`Action::Wait`]: wait for an input: an ack ([`Session::ack`]), the
//!   stream's end ([`Session::stream_closed`]) or error status
//!   ([`Session::failed_with`]), new durable entries ([`Session::durable`])
//!   or shutdown ([`Session::shutdown`]); then poll again.
//! - [`Action::Sleep`]: sleep until `until` (or until shutdown), then poll.
//! - [`Action::Done`]: the pusher is finished.
//!
//! An input that returns an error has already ended the session: the
//! driver drops the connection (and may log the error). Events of a
//! connection the driver dropped must not be fed in: each input belongs to
//! the current session. `poll` is cheap and may be called at any time.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use super::discovery::{Hint, Leaders, Move};
use crate::grpc::status::Status;
use crate::limits::{PUSH_BATCHES_UNACKED_MAX, PUSH_BATCH_BYTES_TARGET, PUSH_BLOCK_BATCH_ENTRIES_MAX};

/// First reconnect delay; doubles up to [`BACKOFF_MAX`], with jitter.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest reconnect delay (as Kafka clients' `reconnect.backoff.max.ms`): a
/// leader back from an outage waits at most this long for its followers.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Longest delay between two cycles over a list of several addresses (an
/// archive tier): while the tier elects a new leader (about a second), the
/// pusher keeps asking its members this often, so it finds the new leader
/// within this of its election. A few connection attempts a second per
/// follower shard cost the tier nothing.
pub const BACKOFF_MAX_TIER: Duration = Duration::from_millis(200);

/// Bounds of one pusher's batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Most entries in one batch.
    pub batch_entries_max: u64,
    /// A batch stops growing once its entries pass this many bytes (the
    /// driver measures them).
    pub batch_bytes_target: usize,
    /// Batches sent and not yet acknowledged.
    pub batches_in_flight_max: usize,
}

impl Default for Config {
    /// The pusher's bounds: batches of stored blocks.
    fn default() -> Config {
        Config {
            batch_entries_max: PUSH_BLOCK_BATCH_ENTRIES_MAX as u64,
            batch_bytes_target: PUSH_BATCH_BYTES_TARGET,
            batches_in_flight_max: PUSH_BATCHES_UNACKED_MAX,
        }
    }
}

/// The seqs the next batch may hold: from `from_seq` (always durable) up to
/// but not including `to_seq_max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The first seq of the batch.
    pub from_seq: u64,
    /// One past the last seq the batch may hold (`from_seq < to_seq_max`,
    /// and `to_seq_max - 1` is durable).
    pub to_seq_max: u64,
    /// The batch stops growing once its entries pass this many bytes.
    pub bytes_target: usize,
}

/// What the driver does next (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Connect to `addr` and ask the leader's watermark.
    Connect {
        /// The address this session connects to.
        addr: SocketAddr,
    },
    /// Send one batch within the window, then call [`Session::sent`].
    Send(Window),
    /// Half-close the stream: everything durable is sent and shutdown was
    /// asked for.
    CloseSend,
    /// Nothing to do until an input.
    Wait,
    /// Back off until this time (on the driver's clock), or until shutdown.
    Sleep {
        /// When to poll again.
        until: Duration,
    },
    /// The pusher is finished.
    Done,
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The leader archived more of this shard than its log holds: this node
    /// lost data it had pushed.
    #[error(
        "the leader archived up to seq {leader_watermark} but this shard's log ends at {durable_seq}: this node lost \
         data; rebuild it with `wormdb restore` before it pushes again"
    )]
    DataLoss {
        /// The leader's watermark.
        leader_watermark: u64,
        /// The local durable seq.
        durable_seq: u64,
    },
    /// An ack lower than the previous one.
    #[error("the leader's ack went backwards: {acked_seq} after {previous}")]
    AckWentBackwards {
        /// The new ack.
        acked_seq: u64,
        /// The previous ack.
        previous: u64,
    },
    /// An ack with no batch waiting for one.
    #[error("the leader acknowledged seq {acked_seq} with no batch in flight")]
    UnexpectedAck {
        /// The ack.
        acked_seq: u64,
    },
    /// The leader ended the stream before shutdown drained it.
    #[error("the leader ended the stream with batches unacknowledged or before shutdown")]
    StreamEndedEarly,
    /// The driver's failure: connect, `GetWatermark`, a refused batch, a
    /// broken stream, a failed read of the log.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// The failure a gRPC status reports.
    pub fn from_status(status: &Status) -> Error {
        Error::Failed(status.to_string())
    }
}

/// Capped exponential backoff with full jitter, from a seed (xorshift64:
/// jitter only, no need for a real generator).
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    seed: u64,
}

impl Backoff {
    /// Starts at [`BACKOFF_MIN`], grows up to [`BACKOFF_MAX`].
    pub fn new(seed: u64) -> Backoff {
        Backoff::with_max(seed, BACKOFF_MAX)
    }

    /// Starts at [`BACKOFF_MIN`], grows up to `max` (at least the minimum).
    pub fn with_max(seed: u64, max: Duration) -> Backoff {
        Backoff { next: BACKOFF_MIN, max: max.max(BACKOFF_MIN), seed: seed | 1 }
    }

    /// Back to [`BACKOFF_MIN`] (after a healthy session).
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    /// A delay in `[next / 2, next)`, then doubles `next` up to the
    /// maximum.
    pub fn delay(&mut self) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = self.next / 2;
        let jitter = Duration::from_nanos(self.seed % (half.as_nanos() as u64).max(1));
        let delay = half + jitter;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Connect at the next poll (first session, or a hint to follow).
    Disconnected,
    /// Waiting for [`Session::connected`].
    Connecting,
    /// The stream is up.
    Streaming {
        /// The first seq not yet sent.
        next_seq: u64,
        /// A [`Action::Send`] is out, its end is `to_seq_max`, waiting for
        /// [`Session::sent`].
        sending: Option<u64>,
        /// [`Action::CloseSend`] is out.
        close_sent: bool,
    },
    /// Reconnect at `until`.
    Backoff {
        until: Duration,
    },
    Done,
}

/// The pusher state machine of one shard.
#[derive(Debug)]
pub struct Session {
    config: Config,
    backoff: Backoff,
    leaders: Leaders,
    state: State,
    durable_seq: u64,
    acked_seq: Option<u64>,
    stopping: bool,
    /// When the current (or last) session started.
    started_at: Duration,
    /// Batches sent and not acknowledged, as `[from, to)`, oldest first.
    in_flight: VecDeque<(u64, u64)>,
    sessions: u64,
    sent_entries: u64,
    last_error: Option<Error>,
    /// Where the last failure sent the next session.
    last_move: Option<Move>,
}

impl Session {
    /// A pusher whose shard holds `durable_seq` durable entries, pushing
    /// to the leader at one of `leaders` (not empty; the first is tried
    /// first); `seed` drives the backoff's jitter. It connects at the first
    /// poll.
    pub fn new(config: Config, seed: u64, durable_seq: u64, leaders: &[SocketAddr]) -> Session {
        assert!(config.batch_entries_max > 0 && config.batches_in_flight_max > 0, "{config:?}");
        Session {
            config,
            // A tier has other members to ask while one is down or electing.
            backoff: Backoff::with_max(seed, if leaders.len() > 1 { BACKOFF_MAX_TIER } else { BACKOFF_MAX }),
            leaders: Leaders::new(leaders),
            state: State::Disconnected,
            durable_seq,
            acked_seq: None,
            stopping: false,
            started_at: Duration::ZERO,
            in_flight: VecDeque::with_capacity(config.batches_in_flight_max),
            sessions: 0,
            sent_entries: 0,
            last_error: None,
            last_move: None,
        }
    }

    /// What to do now; `now` is the driver's monotonic time.
    pub fn poll(&mut self, now: Duration) -> Action {
        match &mut self.state {
            State::Disconnected => self.start(now),
            State::Connecting => Action::Wait,
            State::Streaming { next_seq, sending, close_sent } => {
                if sending.is_some() || *close_sent || self.in_flight.len() >= self.config.batches_in_flight_max {
                    return Action::Wait;
                }
                if *next_seq <= self.durable_seq {
                    let last = self.durable_seq.min(next_seq.saturating_add(self.config.batch_entries_max - 1));
                    let window = Window {
                        from_seq: *next_seq,
                        to_seq_max: last + 1,
                        bytes_target: self.config.batch_bytes_target,
                    };
                    *sending = Some(window.to_seq_max);
                    return Action::Send(window);
                }
                if self.stopping {
                    *close_sent = true;
                    return Action::CloseSend;
                }
                Action::Wait
            }
            State::Backoff { until } => {
                if now < *until && !self.stopping {
                    return Action::Sleep { until: *until };
                }
                if self.stopping && self.acked_seq >= Some(self.durable_seq) {
                    self.state = State::Done;
                    return Action::Done;
                }
                self.start(now)
            }
            State::Done => Action::Done,
        }
    }

    fn start(&mut self, now: Duration) -> Action {
        self.sessions += 1;
        self.started_at = now;
        self.in_flight.clear();
        self.state = State::Connecting;
        Action::Connect { addr: self.leaders.current() }
    }

    /// The leader answered `GetWatermark` with `leader_watermark`.
    pub fn connected(&mut self, now: Duration, leader_watermark: u64) -> Result<(), Error> {
        assert_eq!(self.state, State::Connecting, "connected() answers Action::Connect");
        if leader_watermark > self.durable_seq {
            return Err(self.fail(now, Error::DataLoss { leader_watermark, durable_seq: self.durable_seq }));
        }
        // Only the leader answers `GetWatermark` (on a tier it is
        // linearizable): this address is the leader's.
        self.leaders.reached();
        self.acked_seq = Some(leader_watermark);
        self.state = State::Streaming { next_seq: leader_watermark + 1, sending: None, close_sent: false };
        Ok(())
    }

    /// The batch of the last [`Action::Send`] holds `[from_seq, to_seq)` and
    /// is sent.
    pub fn sent(&mut self, from_seq: u64, to_seq: u64) {
        let State::Streaming { next_seq, sending, .. } = &mut self.state else {
            panic!("sent() without a session");
        };
        let to_seq_max = sending.take().expect("sent() answers Action::Send");
        assert_eq!(from_seq, *next_seq, "a batch starts where the last one ended");
        assert!(from_seq < to_seq && to_seq <= to_seq_max, "batch [{from_seq}, {to_seq}) outside its window");
        *next_seq = to_seq;
        self.in_flight.push_back((from_seq, to_seq));
        self.sent_entries += to_seq - from_seq;
    }

    /// Whether an empty batch may go out now to renew the follower's lease
    /// on the tier (DESIGN.md section 9): the stream is up and idle, with
    /// nothing in flight and no send or close under way.
    pub fn may_keepalive(&self) -> bool {
        matches!(self.state, State::Streaming { sending: None, close_sent: false, .. }) && self.in_flight.is_empty()
    }

    /// An empty batch went out (see [`Session::may_keepalive`]): its ack is
    /// awaited like a batch's, and moves nothing.
    pub fn keepalive_sent(&mut self) {
        assert!(self.may_keepalive(), "a keepalive on a busy or closed stream");
        let State::Streaming { next_seq, .. } = self.state else { unreachable!("checked above") };
        self.in_flight.push_back((next_seq, next_seq));
    }

    /// The leader acknowledged the oldest batch in flight, reporting
    /// `acked_seq` archived.
    pub fn ack(&mut self, now: Duration, acked_seq: u64) -> Result<(), Error> {
        assert!(matches!(self.state, State::Streaming { .. }), "ack() without a stream");
        if let Some(previous) = self.acked_seq.filter(|&previous| acked_seq < previous) {
            return Err(self.fail(now, Error::AckWentBackwards { acked_seq, previous }));
        }
        if self.in_flight.pop_front().is_none() {
            return Err(self.fail(now, Error::UnexpectedAck { acked_seq }));
        }
        self.acked_seq = Some(acked_seq);
        Ok(())
    }

    /// The leader ended the stream without an error.
    pub fn stream_closed(&mut self, now: Duration) -> Result<(), Error> {
        let drained = matches!(self.state, State::Streaming { close_sent: true, .. }) && self.in_flight.is_empty();
        if !drained {
            return Err(self.fail(now, Error::StreamEndedEarly));
        }
        self.state = State::Done;
        Ok(())
    }

    /// The current session failed (see [`Error::Failed`]) with no status
    /// to read: the next one goes to the next address, after the backoff.
    pub fn failed(&mut self, now: Duration, reason: impl Into<String>) {
        self.fail_at(now, Error::Failed(reason.into()), None);
    }

    /// The current session ended with the error `status` (a connect,
    /// `GetWatermark`, or the stream). A not-leader refusal with a hint of
    /// a current term ([`Hint::from_status`]) sends the next session to the
    /// hinted address at once; anything else to the next address after the
    /// backoff. Returns where the next session goes and why (the driver
    /// logs a move that follows a hint).
    pub fn failed_with(&mut self, now: Duration, status: &Status) -> Move {
        self.fail_at(now, Error::from_status(status), Hint::from_status(status));
        self.last_move.expect("a failure decides the next address")
    }

    /// A failure decided by the session itself (a bad watermark or ack):
    /// no hint.
    fn fail(&mut self, now: Duration, error: Error) -> Error {
        self.fail_at(now, error, None)
    }

    fn fail_at(&mut self, now: Duration, error: Error, hint: Option<Hint>) -> Error {
        assert!(
            matches!(self.state, State::Connecting | State::Streaming { .. }),
            "a failure ends a session: there is none ({:?})",
            self.state
        );
        self.in_flight.clear();
        let next = self.leaders.failed(hint);
        self.last_move = Some(next);
        if self.stopping {
            self.state = State::Done;
        } else if !next.backoff {
            self.state = State::Disconnected;
        } else {
            if now.saturating_sub(self.started_at) > BACKOFF_MAX * 2 {
                self.backoff.reset();
            }
            self.state = State::Backoff { until: now + self.backoff.delay() };
        }
        self.last_error = Some(error.clone());
        error
    }

    /// The shard's log is durable up to `durable_seq` (lower values than
    /// one already seen are ignored).
    pub fn durable(&mut self, durable_seq: u64) {
        self.durable_seq = self.durable_seq.max(durable_seq);
    }

    /// Shutdown: send what is durable, then finish (a backoff is cut short).
    pub fn shutdown(&mut self) {
        self.stopping = true;
    }

    /// Highest seq the leader acknowledged (`None` before first contact).
    pub fn acked_seq(&self) -> Option<u64> {
        self.acked_seq
    }

    /// The local durable seq last seen.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// A session is up (the leader's watermark is known).
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Streaming { .. })
    }

    /// The pusher is finished.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Batches sent and not yet acknowledged.
    pub fn batches_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Sessions started (1 + reconnects).
    pub fn sessions(&self) -> u64 {
        self.sessions
    }

    /// Entries sent, resends after a reconnect included.
    pub fn sent_entries(&self) -> u64 {
        self.sent_entries
    }

    /// Why the last session ended.
    pub fn last_error(&self) -> Option<&Error> {
        self.last_error.as_ref()
    }

    /// The address the current session uses, or the next one will.
    pub fn leader_addr(&self) -> SocketAddr {
        self.leaders.current()
    }

    /// The highest term of a leader hint followed so far.
    pub fn leader_term(&self) -> Option<u64> {
        self.leaders.term_max()
    }

    /// Where the last failure sent the next session, and why.
    pub fn last_move(&self) -> Option<Move> {
        self.last_move
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::replication::discovery::{Cause, HINTS_FOLLOWED_AT_ONCE_MAX};

    const MS: Duration = Duration::from_millis(1);
    /// The leader of the tests with one address.
    const LEADER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50051);

    fn config(batch_entries_max: u64, batches_in_flight_max: usize) -> Config {
        Config { batch_entries_max, batch_bytes_target: 1000, batches_in_flight_max }
    }

    fn window(from_seq: u64, to_seq_max: u64) -> Action {
        Action::Send(Window { from_seq, to_seq_max, bytes_target: 1000 })
    }

    #[test]
    fn a_session_resumes_from_the_leaders_watermark_in_bounded_batches() {
        let mut session = Session::new(config(4, 2), 1, 10, &[LEADER]);
        assert_eq!(session.poll(Duration::ZERO), Action::Connect { addr: LEADER });
        assert_eq!(session.poll(Duration::ZERO), Action::Wait);
        assert_eq!(session.acked_seq(), None, "nothing acknowledged before first contact");
        session.connected(MS, 3).unwrap();
        assert!(session.is_connected());
        assert_eq!(session.acked_seq(), Some(3), "the watermark is what retention may delete through");
        assert_eq!(session.poll(MS), window(4, 8));
        assert_eq!(session.poll(MS), Action::Wait, "waits for sent()");
        session.sent(4, 6); // the driver stopped early (bytes)
        assert_eq!(session.poll(MS), window(6, 10));
        session.sent(6, 10);
        assert_eq!(session.poll(MS), Action::Wait, "two batches in flight");
        session.ack(MS, 5).unwrap();
        assert_eq!(session.poll(MS), window(10, 11));
        session.sent(10, 11);
        session.ack(MS, 9).unwrap();
        assert_eq!(session.poll(MS), Action::Wait, "nothing more is durable");
        session.durable(12);
        assert_eq!(session.poll(MS), window(11, 13));
        assert_eq!(session.sent_entries(), 7);
        assert_eq!(session.batches_in_flight(), 1);
    }

    #[test]
    fn a_leader_ahead_of_the_log_is_data_loss() {
        let mut session = Session::new(config(4, 2), 1, 10, &[LEADER]);
        session.poll(Duration::ZERO);
        let error = session.connected(MS, 11).unwrap_err();
        assert_eq!(error, Error::DataLoss { leader_watermark: 11, durable_seq: 10 });
        assert_eq!(session.acked_seq(), None, "the leader's watermark is not taken");
        assert!(matches!(session.poll(MS), Action::Sleep { .. }));
    }

    #[test]
    fn acks_that_go_backwards_or_come_unasked_end_the_session() {
        let mut session = Session::new(config(4, 2), 1, 10, &[LEADER]);
        session.poll(Duration::ZERO);
        session.connected(MS, 0).unwrap();
        let Action::Send(window) = session.poll(MS) else { panic!() };
        session.sent(window.from_seq, window.to_seq_max);
        session.ack(MS, 4).unwrap();
        assert_eq!(session.ack(MS, 5).unwrap_err(), Error::UnexpectedAck { acked_seq: 5 });
        assert!(!session.is_connected());
        // Next session.
        let Action::Sleep { until } = session.poll(MS) else { panic!() };
        assert_eq!(session.poll(until), Action::Connect { addr: LEADER });
        session.connected(until, 4).unwrap();
        let Action::Send(window) = session.poll(until) else { panic!() };
        session.sent(window.from_seq, window.to_seq_max);
        assert_eq!(session.ack(until, 3).unwrap_err(), Error::AckWentBackwards { acked_seq: 3, previous: 4 });
        assert_eq!(session.sessions(), 2);
        assert_eq!(session.last_error(), Some(&Error::AckWentBackwards { acked_seq: 3, previous: 4 }));
    }

    #[test]
    fn backoff_grows_to_the_cap_and_resets_after_a_healthy_session() {
        let mut session = Session::new(config(4, 2), 7, 0, &[LEADER]);
        let mut now = Duration::ZERO;
        let mut cap = BACKOFF_MIN;
        for _ in 0..10 {
            assert_eq!(session.poll(now), Action::Connect { addr: LEADER });
            session.failed(now, "refused");
            let Action::Sleep { until } = session.poll(now) else { panic!() };
            assert!(until - now >= cap / 2 && until - now < cap, "{:?} for cap {cap:?}", until - now);
            assert_eq!(session.poll(until - Duration::from_nanos(1)), Action::Sleep { until });
            cap = (cap * 2).min(BACKOFF_MAX);
            now = until;
        }
        // A session that ran longer than twice the cap was healthy.
        assert_eq!(session.poll(now), Action::Connect { addr: LEADER });
        session.connected(now, 0).unwrap();
        let later = now + BACKOFF_MAX * 2 + MS;
        session.failed(later, "leader restarted");
        let Action::Sleep { until } = session.poll(later) else { panic!() };
        assert!(until - later < BACKOFF_MIN);
    }

    #[test]
    fn shutdown_drains_then_closes() {
        let mut session = Session::new(config(4, 4), 1, 6, &[LEADER]);
        session.poll(Duration::ZERO);
        session.connected(MS, 0).unwrap();
        session.shutdown();
        assert_eq!(session.poll(MS), window(1, 5));
        session.sent(1, 5);
        assert_eq!(session.poll(MS), window(5, 7));
        session.sent(5, 7);
        assert_eq!(session.poll(MS), Action::CloseSend);
        assert_eq!(session.poll(MS), Action::Wait);
        assert_eq!(session.stream_closed(MS).unwrap_err(), Error::StreamEndedEarly);
        assert_eq!(session.poll(MS), Action::Done, "a failure while stopping ends the pusher");

        let mut session = Session::new(config(4, 4), 1, 2, &[LEADER]);
        session.poll(Duration::ZERO);
        session.connected(MS, 0).unwrap();
        session.shutdown();
        assert_eq!(session.poll(MS), window(1, 3));
        session.sent(1, 3);
        assert_eq!(session.poll(MS), Action::CloseSend);
        session.ack(MS, 2).unwrap();
        session.stream_closed(MS).unwrap();
        assert!(session.is_done());
        assert_eq!(session.poll(MS), Action::Done);
    }

    #[test]
    fn shutdown_cuts_a_backoff_short() {
        let mut session = Session::new(config(4, 4), 1, 2, &[LEADER]);
        session.poll(Duration::ZERO);
        session.connected(MS, 2).unwrap();
        session.failed(MS, "broken pipe");
        assert!(matches!(session.poll(MS), Action::Sleep { .. }));
        session.shutdown();
        assert_eq!(session.poll(MS), Action::Done, "everything durable was acknowledged");

        let mut session = Session::new(config(4, 4), 1, 3, &[LEADER]);
        session.poll(Duration::ZERO);
        session.connected(MS, 2).unwrap();
        session.failed(MS, "broken pipe");
        session.shutdown();
        assert_eq!(session.poll(MS), Action::Connect { addr: LEADER }, "one more session to drain seq 3");
    }

    // --- Which address --------------------------------------------------

    fn tier(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The tier of the address tests: three nodes.
    const TIER: [u16; 3] = [1, 2, 3];

    fn tier_session() -> Session {
        Session::new(config(4, 2), 3, 10, &TIER.map(tier))
    }

    /// A replica's refusal naming the leader at `port` in `term`.
    fn not_leader(port: u16, term: u64) -> Status {
        let hint = crate::grpc::status::LeaderHint { leader_id: u32::from(port), addr: tier(port).to_string(), term };
        Status::not_leader("not the leader", Some(hint))
    }

    /// The next connect of `session` after a failure at `now`: at once
    /// (`None`) or after a backoff (its end).
    fn next_connect(session: &mut Session, now: Duration) -> (SocketAddr, Option<Duration>) {
        match session.poll(now) {
            Action::Connect { addr } => (addr, None),
            Action::Sleep { until } => {
                assert!(until > now);
                let Action::Connect { addr } = session.poll(until) else { panic!("connects after its backoff") };
                (addr, Some(until))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_hint_is_followed_at_once() {
        let mut session = tier_session();
        assert_eq!(session.poll(Duration::ZERO), Action::Connect { addr: tier(1) }, "the first address first");
        let step = session.failed_with(MS, &not_leader(3, 7));
        assert_eq!(step, Move { from: tier(1), to: tier(3), cause: Cause::Hint { term: 7 }, backoff: false });
        assert_eq!(next_connect(&mut session, MS), (tier(3), None), "no backoff");
        assert_eq!(session.leader_term(), Some(7));
        assert_eq!(session.last_error(), Some(&Error::from_status(&not_leader(3, 7))));
        // A leader change while streaming: the stream's refusal redirects too,
        // and the next session resumes from the new leader's watermark.
        session.connected(MS, 4).unwrap();
        let Action::Send(batch) = session.poll(MS) else { panic!() };
        session.sent(batch.from_seq, batch.to_seq_max);
        session.failed_with(2 * MS, &not_leader(2, 8));
        assert_eq!(session.batches_in_flight(), 0);
        assert_eq!(next_connect(&mut session, 2 * MS), (tier(2), None));
        session.connected(2 * MS, 6).unwrap();
        assert_eq!(session.poll(2 * MS), window(7, 11));
    }

    #[test]
    fn a_stale_hint_is_ignored() {
        let mut session = tier_session();
        session.poll(Duration::ZERO);
        session.failed_with(MS, &not_leader(2, 7));
        assert_eq!(next_connect(&mut session, MS), (tier(2), None));
        // Node 2 answers from an older view, pointing back at 1: rotation
        // (at once: the next member of the list is worth asking).
        let step = session.failed_with(MS, &not_leader(1, 6));
        assert_eq!((step.cause, step.backoff), (Cause::Rotation, false));
        let (addr, after) = next_connect(&mut session, MS);
        assert_eq!(addr, tier(3), "the list address after 2, not the stale hint's 1");
        assert!(after.is_none(), "no backoff inside a cycle of the list");
        assert_eq!(session.leader_term(), Some(7));
        // The same term again is not older: followed.
        session.failed_with(MS, &not_leader(1, 7));
        assert_eq!(next_connect(&mut session, MS), (tier(1), None));
    }

    #[test]
    fn no_hint_rotates_the_list_with_backoff_after_each_cycle() {
        let mut session = tier_session();
        let mut now = Duration::ZERO;
        assert_eq!(session.poll(now), Action::Connect { addr: tier(1) });
        let mut visited = Vec::new();
        let mut delays = Vec::new();
        for failure in 0..6 {
            // Alternately a connect that fails and a refusal that knows no leader.
            let status = if failure % 2 == 0 {
                Status::unavailable("connect 127.0.0.1:1: connection refused")
            } else {
                Status::not_leader("election under way", None)
            };
            let step = session.failed_with(now, &status);
            // The backoff comes once the whole list (3) failed.
            assert_eq!((step.cause, step.backoff), (Cause::Rotation, failure % 3 == 2));
            let (addr, until) = next_connect(&mut session, now);
            assert_eq!(until.is_some(), step.backoff);
            if let Some(until) = until {
                delays.push(until - now);
                now = until;
            }
            visited.push(addr);
        }
        assert_eq!(visited, [2, 3, 1, 2, 3, 1].map(tier));
        assert!(delays[1] >= delays[0] / 2, "the usual growing backoff: {delays:?}");
        assert!(delays[0] < BACKOFF_MIN && delays[1] >= BACKOFF_MIN / 2, "{delays:?}");
        // A failure of the session itself (not a status) rotates as well.
        session.connected(now, 11).unwrap_err();
        assert_eq!(next_connect(&mut session, now).0, tier(2));
        session.failed(now, "read failed");
        assert_eq!(next_connect(&mut session, now).0, tier(3));
    }

    #[test]
    fn a_hint_outside_the_list_is_followed() {
        let mut session = tier_session();
        session.poll(Duration::ZERO);
        let step = session.failed_with(MS, &not_leader(9, 1));
        assert_eq!((step.to, step.backoff), (tier(9), false));
        assert_eq!(next_connect(&mut session, MS), (tier(9), None));
        assert_eq!(session.leader_addr(), tier(9));
        session.connected(MS, 0).unwrap();
        assert!(session.is_connected());
    }

    #[test]
    fn a_hinted_address_that_fails_falls_back_to_rotation() {
        let mut session = tier_session();
        session.poll(Duration::ZERO);
        session.failed(MS, "connection refused"); // 1 is down: 2 next
        assert_eq!(next_connect(&mut session, MS).0, tier(2));
        let now = 100 * MS;
        session.failed_with(now, &not_leader(9, 4)); // 2 names 9, outside the list
        assert_eq!(next_connect(&mut session, now), (tier(9), None));
        let step = session.failed_with(now, &Status::unavailable("connect 127.0.0.1:9: connection refused"));
        assert_eq!(step, Move { from: tier(9), to: tier(3), cause: Cause::Rotation, backoff: false });
        assert!(next_connect(&mut session, now).1.is_none(), "inside a cycle of the list: at once");
        // A hinted list member that fails hands over to its successor.
        session.failed_with(now, &not_leader(1, 5));
        assert_eq!(next_connect(&mut session, now), (tier(1), None));
        session.failed(now, "connection reset");
        assert_eq!(next_connect(&mut session, now).0, tier(2));
    }

    #[test]
    fn hints_bouncing_between_stale_replicas_slow_down_to_the_backoff() {
        let mut session = tier_session();
        let now = MS;
        session.poll(Duration::ZERO);
        for round in 0..HINTS_FOLLOWED_AT_ONCE_MAX {
            let to = if round % 2 == 0 { 2 } else { 1 };
            session.failed_with(now, &not_leader(to, 3));
            assert_eq!(next_connect(&mut session, now), (tier(to), None), "round {round}");
        }
        session.failed_with(now, &not_leader(2, 3));
        let (addr, after) = next_connect(&mut session, now);
        assert_eq!(addr, tier(2), "still followed");
        assert!(after.is_some(), "but after a backoff");
        // Reaching the leader resets the bound.
        session.connected(after.unwrap(), 0).unwrap();
        session.failed_with(after.unwrap(), &not_leader(3, 3));
        assert_eq!(next_connect(&mut session, after.unwrap()), (tier(3), None));
    }

    #[test]
    fn a_hint_while_stopping_ends_the_pusher_as_any_failure() {
        let mut session = tier_session();
        session.poll(Duration::ZERO);
        session.connected(MS, 2).unwrap();
        session.shutdown();
        session.failed_with(MS, &not_leader(2, 1));
        assert_eq!(session.poll(MS), Action::Done);
    }

    /// One step of the property test's world.
    #[derive(Clone, Copy, Debug)]
    enum Op {
        /// Time passes by this many ms, then the driver polls and acts.
        Poll(u8),
        /// New durable entries.
        Write(u8),
        /// The leader answers the oldest outstanding thing.
        Answer,
        /// The connection breaks.
        Fail,
        Shutdown,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => any::<u8>().prop_map(Op::Poll),
            2 => (1u8..6).prop_map(Op::Write),
            4 => Just(Op::Answer),
            1 => Just(Op::Fail),
            1 => Just(Op::Shutdown),
        ]
    }

    /// An honest leader with an exact archive, and a driver that sends as
    /// much of each window as `cut` allows.
    struct World {
        session: Session,
        now: Duration,
        archive_watermark: u64,
        /// Batches the leader got and has not answered, and whether the
        /// follower half-closed.
        leader_batches: VecDeque<(u64, u64)>,
        closed: bool,
        connecting: bool,
        streaming: bool,
        expected_next: u64,
    }

    impl World {
        fn act(&mut self, cut: u8) -> Action {
            let action = self.session.poll(self.now);
            match action {
                Action::Connect { .. } => {
                    assert!(!self.connecting && !self.streaming);
                    self.connecting = true;
                }
                Action::Send(window) => {
                    assert!(self.streaming);
                    assert_eq!(window.from_seq, self.expected_next, "batches are contiguous");
                    assert!(window.to_seq_max <= self.session.durable_seq() + 1, "only durable entries");
                    assert!(window.to_seq_max - window.from_seq <= 3);
                    assert!(self.session.batches_in_flight() < 2);
                    let len = (u64::from(cut) % (window.to_seq_max - window.from_seq)) + 1;
                    self.session.sent(window.from_seq, window.from_seq + len);
                    self.leader_batches.push_back((window.from_seq, window.from_seq + len));
                    self.expected_next = window.from_seq + len;
                }
                Action::CloseSend => self.closed = true,
                Action::Sleep { until } => {
                    assert!(until > self.now && until < self.now + BACKOFF_MAX);
                }
                Action::Wait | Action::Done => {}
            }
            action
        }

        fn answer(&mut self) {
            if self.connecting {
                self.connecting = false;
                self.streaming = true;
                self.session.connected(self.now, self.archive_watermark).unwrap();
                self.expected_next = self.archive_watermark + 1;
            } else if let Some((from, to)) = self.leader_batches.pop_front() {
                if from > self.archive_watermark + 1 {
                    panic!("the session left a gap: sent {from} with {} archived", self.archive_watermark);
                }
                self.archive_watermark = self.archive_watermark.max(to - 1);
                self.session.ack(self.now, self.archive_watermark).unwrap();
            } else if self.closed && self.streaming {
                self.streaming = false;
                self.session.stream_closed(self.now).unwrap();
            }
        }

        fn fail(&mut self) {
            if self.connecting || self.streaming {
                self.session.failed(self.now, "cut");
                self.connecting = false;
                self.streaming = false;
                self.closed = false;
                self.leader_batches.clear();
            }
        }
    }

    proptest::proptest! {
        /// Whatever the failures and timings, the session sends contiguous
        /// durable batches from the leader's watermark, never leaves a gap,
        /// keeps what is unacknowledged, and once the faults stop and
        /// shutdown is asked, drains everything and finishes.
        #[test]
        fn any_history_sends_in_order_and_drains_at_shutdown(
            ops in proptest::collection::vec(op(), 0..200),
            seed: u64,
        ) {
            let mut world = World {
                session: Session::new(config(3, 2), seed, 0, &[LEADER]),
                now: Duration::ZERO,
                archive_watermark: 0,
                leader_batches: VecDeque::new(),
                closed: false,
                connecting: false,
                streaming: false,
                expected_next: 0,
            };
            let mut durable = 0u64;
            let mut stopping = false;
            for op in ops {
                match op {
                    Op::Poll(ms) => {
                        world.now += Duration::from_millis(u64::from(ms) * 4);
                        world.act(ms);
                    }
                    // A node that shuts down takes no more writes.
                    Op::Write(count) if !stopping => {
                        durable += u64::from(count);
                        world.session.durable(durable);
                    }
                    Op::Write(_) => {}
                    Op::Answer => world.answer(),
                    Op::Fail => world.fail(),
                    Op::Shutdown => {
                        stopping = true;
                        world.session.shutdown();
                    }
                }
                let acked = world.session.acked_seq();
                proptest::prop_assert!(acked.unwrap_or(0) <= world.archive_watermark);
            }
            // Faults stop; shutdown; an honest leader answers everything.
            world.session.shutdown();
            for _ in 0..10_000 {
                if world.session.is_done() {
                    break;
                }
                world.answer();
                if let Action::Sleep { until } = world.act(0) {
                    world.now = until;
                }
            }
            proptest::prop_assert!(world.session.is_done());
            // Done after a clean drain, or after a failure while stopping.
            if world.session.acked_seq() != Some(durable) {
                proptest::prop_assert!(world.session.last_error().is_some());
            }
        }
    }
}
