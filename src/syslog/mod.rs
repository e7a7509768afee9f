//! The syslog listeners (DESIGN.md section 11): `--syslog-tcp-addr` and
//! `--syslog-udp-addr`, one `SO_REUSEPORT` socket per core like the HTTP
//! and gRPC listeners, storing into the core's own shard.
//!
//! Framing and parsing are [`crate::ingest::syslog`]'s (pure); this module
//! only moves bytes and decides when to wait.
//!
//! # TCP: never drop, never wait for each batch
//! Nothing acknowledges a syslog line, so the only way to say "slow down" is
//! to stop reading: TCP's window then fills and the sender blocks. A
//! connection reads, frames and parses, and appends the messages of each
//! read as one append; it does not wait for that append's group commit
//! before reading on (that would cap a connection at one read per
//! fdatasync), but keeps at most [`SYSLOG_APPENDS_IN_FLIGHT_MAX`] appends
//! waiting. At that bound, or when the shard refuses with backpressure, it
//! stops reading until a commit completes, then retries the same batch:
//! a line read is stored or the connection ends with the shard (shutdown,
//! a failed disk). Each backpressure pause is counted as a `backpressure`
//! refusal of `syslog-tcp` (the batch itself is retried, not lost).
//!
//! A frame that cannot be cut (a lying octet count) is counted as
//! `malformed`, logged, and closes the connection after what was framed
//! before it is stored; an over-long line is counted as `too_large` and
//! skipped. On a tier member writes go through the core's Raft group
//! ([`Core::store`]), one batch at a time.
//!
//! # UDP: count what cannot be kept
//! One datagram is one message; the datagrams already queued when one
//! arrives are taken with it, as one append. A datagram cannot be pushed
//! back on: under backpressure its batch is dropped and counted
//! (`wormdb_protocol_dropped_total{protocol="syslog-udp"}`) rather than the
//! socket being blocked (the kernel would drop what overflows its buffer,
//! uncounted).

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::AsyncReadExt;

use crate::auth::connections::ConnectionLimit;
use crate::ingest::syslog::{self, Frame, Message, Options, TcpFramer};
use crate::ingest::Protocol;
use crate::limits::{
    ACCEPT_RETRY_DELAY, SYSLOG_APPENDS_IN_FLIGHT_MAX, SYSLOG_UDP_BATCH_DATAGRAMS_MAX, SYSLOG_UDP_DATAGRAM_BYTES_MAX,
};
use crate::node::{Core, Refused, RefusedKind};
use crate::shard::{self, AppendWait};

/// How long a connection waits before retrying a batch the shard refused
/// for a reason that clears by itself but wakes no one (a full disk).
const RETRY_DELAY: Duration = Duration::from_millis(100);
/// The longest a backpressured connection waits for a commit before it
/// looks again (a commit that is not its own may already have passed).
const BACKPRESSURE_POLL: Duration = Duration::from_millis(10);

fn options(core: &Core) -> Options {
    Options { zone: core.config.syslog_timezone }
}

/// Accepts syslog TCP connections until cancelled, serving each on its own
/// task; connections over `connections` are closed at accept.
pub async fn tcp_accept_loop(core: Rc<Core>, listener: glommio::net::TcpListener, connections: Arc<ConnectionLimit>) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "syslog tcp: accept failed");
                glommio::timer::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        let Some(slot) = connections.admit_logged("syslog tcp") else { continue };
        let core = core.clone();
        glommio::spawn_local(async move {
            let peer = stream.peer_addr().ok();
            serve_tcp(&core, stream, peer).await;
            drop(slot);
        })
        .detach();
    }
}

/// The appends of one connection (or one UDP socket) waiting for their
/// group commit: at most [`SYSLOG_APPENDS_IN_FLIGHT_MAX`]. Each is awaited
/// by a task of its own that counts it once durable, so counts do not wait
/// for the next read.
struct InFlight {
    permits: Rc<glommio::sync::Semaphore>,
}

impl InFlight {
    fn new() -> InFlight {
        InFlight { permits: Rc::new(glommio::sync::Semaphore::new(SYSLOG_APPENDS_IN_FLIGHT_MAX as u64)) }
    }

    /// Waits until fewer than the bound are in flight.
    async fn room(&self) {
        if let Ok(permit) = self.permits.acquire_permit(1).await {
            drop(permit);
        }
    }

    /// Hands `wait` to a task that counts it once durable.
    fn track(&self, core: &Rc<Core>, protocol: Protocol, wait: AppendWait, entries: u64, wire_bytes: u64) {
        let permit = self.permits.try_acquire_static_permit(1).ok();
        let core = core.clone();
        glommio::spawn_local(async move {
            match wait.durable().await {
                Ok(_) => core.count_stored(protocol, entries, wire_bytes),
                Err(error) => {
                    let refused = Refused::from(error);
                    tracing::error!(error = %refused, entries, "syslog: a commit failed");
                    core.count_refused(protocol, refused.kind);
                }
            }
            drop(permit);
        })
        .detach();
    }
}

/// A connection's batch could not be stored (the shard is closing or
/// failed): close the connection.
struct Closed;

async fn serve_tcp(core: &Rc<Core>, mut stream: glommio::net::TcpStream, peer: Option<std::net::SocketAddr>) {
    let options = options(core);
    let mut framer = TcpFramer::default();
    let in_flight = InFlight::new();
    let mut ranges = Vec::new();
    loop {
        in_flight.room().await;
        let read = match stream.read(framer.spare()).await {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) => {
                tracing::debug!(%error, ?peer, "syslog tcp: read failed; closing");
                break;
            }
        };
        framer.filled(read);
        ranges.clear();
        let mut broken = None;
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Message(range))) => ranges.push(range),
                Ok(Some(Frame::TooLarge)) => {
                    core.count_refused(Protocol::SyslogTcp, RefusedKind::TooLarge);
                    tracing::warn!(?peer, "syslog tcp: a line over SYSLOG_MESSAGE_BYTES_MAX was refused");
                }
                Ok(None) => break,
                Err(error) => {
                    broken = Some(error);
                    break;
                }
            }
        }
        if !ranges.is_empty() {
            let now = crate::ingest::unix_now_ns();
            let bytes = framer.bytes();
            let messages: Vec<Message<'_>> = ranges
                .iter()
                .map(|range| syslog::parse(syslog::trim_line_end(&bytes[range.clone()]), now, &options))
                .collect();
            let wire_bytes = ranges.iter().map(|range| range.len() as u64).sum();
            if store_tcp(core, &messages, wire_bytes, &in_flight).await.is_err() {
                break;
            }
        }
        if let Some(error) = broken {
            core.count_refused(Protocol::SyslogTcp, RefusedKind::Malformed);
            tracing::warn!(%error, ?peer, "syslog tcp: the stream cannot be framed; closing the connection");
            break;
        }
    }
}

/// Stores one read's messages: appended without waiting for the commit,
/// or, when the shard is busy, after waiting for a commit; on a tier
/// member, through the group.
async fn store_tcp(
    core: &Rc<Core>,
    messages: &[Message<'_>],
    wire_bytes: u64,
    in_flight: &InFlight,
) -> Result<(), Closed> {
    if core.tier.is_some() {
        return store_tier(core, messages, wire_bytes).await;
    }
    loop {
        if core.closing.get() {
            core.count_refused(Protocol::SyslogTcp, RefusedKind::Unavailable);
            return Err(Closed);
        }
        let error = match syslog::with_entry_refs(messages, |refs| core.shard.append(refs)) {
            Ok(wait) => {
                in_flight.track(core, Protocol::SyslogTcp, wait, messages.len() as u64, wire_bytes);
                return Ok(());
            }
            Err(error) => error,
        };
        let refused = Refused::from(error.clone());
        core.count_refused(Protocol::SyslogTcp, refused.kind);
        match error {
            // Stop reading until a commit frees room, then retry.
            shard::Error::Backpressure { .. } => wait_for_a_commit(core).await,
            shard::Error::DiskFull { .. } => glommio::timer::sleep(RETRY_DELAY).await,
            _ => {
                tracing::error!(error = %refused, entries = messages.len(), "syslog tcp: the shard refused a batch; closing");
                return Err(Closed);
            }
        }
    }
}

/// Waits until the shard makes a commit durable (bounded by a short poll:
/// the commit that frees room may be someone else's, already done).
async fn wait_for_a_commit(core: &Core) {
    let durable = core.shard.durable_seq();
    futures_lite::future::or(
        async {
            core.shard.wait_durable_after(durable).await;
        },
        glommio::timer::sleep(BACKPRESSURE_POLL),
    )
    .await;
}

/// A batch on a tier member, through [`Core::store`] (which counts it);
/// retryable refusals are waited out.
async fn store_tier(core: &Rc<Core>, messages: &[Message<'_>], wire_bytes: u64) -> Result<(), Closed> {
    let entries: Vec<_> = messages.iter().map(Message::to_log_entry).collect();
    loop {
        if core.closing.get() {
            return Err(Closed);
        }
        match core.store(Protocol::SyslogTcp, entries.clone(), wire_bytes).await {
            Ok(_) => return Ok(()),
            Err(refused) if refused.kind.retryable() => {
                glommio::timer::sleep(refused.retry_after.unwrap_or(RETRY_DELAY).min(Duration::from_secs(1))).await;
            }
            Err(refused) => {
                tracing::error!(error = %refused, "syslog tcp: the group refused a batch; closing");
                return Err(Closed);
            }
        }
    }
}

/// Receives syslog datagrams until cancelled.
pub async fn udp_loop(core: Rc<Core>, socket: glommio::net::UdpSocket) {
    let options = options(&core);
    let mut buffer = vec![0u8; SYSLOG_UDP_DATAGRAM_BYTES_MAX * 2];
    let mut datagrams: Vec<std::ops::Range<usize>> = Vec::with_capacity(SYSLOG_UDP_BATCH_DATAGRAMS_MAX);
    let in_flight = InFlight::new();
    let batch_bytes_max = SYSLOG_UDP_DATAGRAM_BYTES_MAX * 16;
    loop {
        in_flight.room().await;
        datagrams.clear();
        let first = match socket.recv_from(&mut buffer[..SYSLOG_UDP_DATAGRAM_BYTES_MAX]).await {
            Ok((length, _)) => length,
            Err(error) => {
                tracing::warn!(%error, "syslog udp: receive failed");
                glommio::timer::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        datagrams.push(0..first);
        let mut used = first;
        // The datagrams already queued join this batch, without waiting.
        while datagrams.len() < SYSLOG_UDP_BATCH_DATAGRAMS_MAX
            && used + SYSLOG_UDP_DATAGRAM_BYTES_MAX <= batch_bytes_max
        {
            if buffer.len() < used + SYSLOG_UDP_DATAGRAM_BYTES_MAX {
                buffer.resize(used + SYSLOG_UDP_DATAGRAM_BYTES_MAX, 0);
            }
            let room = &mut buffer[used..used + SYSLOG_UDP_DATAGRAM_BYTES_MAX];
            // SAFETY: `room` is a valid, writable buffer of `room.len()`
            // bytes for the duration of the call, and the fd is the socket
            // this task owns.
            let received =
                unsafe { libc::recv(socket.as_raw_fd(), room.as_mut_ptr().cast(), room.len(), libc::MSG_DONTWAIT) };
            if received < 0 {
                break; // EAGAIN: nothing more queued (or an error the next receive reports)
            }
            let received = received as usize;
            datagrams.push(used..used + received);
            used += received;
        }
        if core.closing.get() {
            core.count_dropped(Protocol::SyslogUdp, datagrams.len() as u64);
            continue;
        }
        let now = crate::ingest::unix_now_ns();
        let messages: Vec<Message<'_>> = datagrams
            .iter()
            .filter(|range| !range.is_empty())
            .map(|range| syslog::parse(syslog::trim_line_end(&buffer[range.clone()]), now, &options))
            .collect();
        if messages.is_empty() {
            continue;
        }
        let wire_bytes = used as u64;
        if core.tier.is_some() {
            let entries = messages.iter().map(Message::to_log_entry).collect();
            if core.store(Protocol::SyslogUdp, entries, wire_bytes).await.is_err() {
                core.count_dropped(Protocol::SyslogUdp, messages.len() as u64);
            }
            continue;
        }
        match syslog::with_entry_refs(&messages, |refs| core.shard.append(refs)) {
            Ok(wait) => in_flight.track(&core, Protocol::SyslogUdp, wait, messages.len() as u64, wire_bytes),
            Err(error) => {
                let refused = Refused::from(error);
                core.count_refused(Protocol::SyslogUdp, refused.kind);
                core.count_dropped(Protocol::SyslogUdp, messages.len() as u64);
            }
        }
    }
}
