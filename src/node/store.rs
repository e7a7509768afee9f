//! Storing one request of a shipper's protocol: the one path every
//! protocol of [`crate::ingest`] takes, all of a batch or none, answered
//! once durable (on a tier member, once committed by its group).
//!
//! The native front doors (`POST /v1/entries`, `WormIngest.Write`) keep
//! their own borrowed-entry path: NDJSON entries there point into the
//! request body and are never copied. The shippers' protocols decode into
//! owned [`LogEntry`]s (their fields are renamed and flattened on the way),
//! so they come here.

use std::time::Duration;

use super::core::{Core, ProtocolCounters};
use crate::codec::block::{self, with_log_entry_refs};
use crate::ingest::streams::Streams;
use crate::ingest::Protocol;
use crate::proto::LogEntry;
use crate::shard;

/// Why a request was refused, as every protocol must tell it apart: each
/// maps these to its own error form (an HTTP status, a gRPC code, a
/// per-item status), and whether the client should retry follows from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedKind {
    /// Bad data: never retry (HTTP 400, `INVALID_ARGUMENT`).
    Malformed,
    /// Over a size or count limit: never retry as it is (HTTP 413).
    TooLarge,
    /// The media or content encoding is not one wormdb reads (HTTP 415).
    UnsupportedMediaType,
    /// Busy: retry later (HTTP 429, `RESOURCE_EXHAUSTED` or `UNAVAILABLE`).
    Backpressure,
    /// Shutting down, or no tier leader reachable: retry, maybe elsewhere
    /// (HTTP 503, `UNAVAILABLE`).
    Unavailable,
    /// The disk is full: retry once space is freed (HTTP 507).
    DiskFull,
    /// A failure of the node (HTTP 500, `INTERNAL`).
    Internal,
}

impl RefusedKind {
    /// Whether a client should send the same request again later.
    pub fn retryable(self) -> bool {
        matches!(self, RefusedKind::Backpressure | RefusedKind::Unavailable | RefusedKind::DiskFull)
    }

    /// The HTTP status of this refusal, for protocols that use the usual one.
    pub fn http_status(self) -> u16 {
        match self {
            RefusedKind::Malformed => 400,
            RefusedKind::TooLarge => 413,
            RefusedKind::UnsupportedMediaType => 415,
            RefusedKind::Backpressure => 429,
            RefusedKind::Unavailable => 503,
            RefusedKind::DiskFull => 507,
            RefusedKind::Internal => 500,
        }
    }
}

/// A refused request: nothing of it was stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    /// Why.
    pub kind: RefusedKind,
    /// For the client, naming what was wrong.
    pub message: String,
    /// When to retry (`Retry-After`, `RetryInfo`), for retryable kinds.
    pub retry_after: Option<Duration>,
}

/// How long a client is told to wait after a refusal the node expects to
/// clear by itself (a full pending batch, a leader election).
pub const RETRY_AFTER_DEFAULT: Duration = Duration::from_secs(1);

impl Refused {
    /// A refusal of `kind`, with the default wait for retryable kinds.
    pub fn new(kind: RefusedKind, message: impl Into<String>) -> Refused {
        let retry_after = kind.retryable().then_some(RETRY_AFTER_DEFAULT);
        Refused { kind, message: message.into(), retry_after }
    }

    /// Bad data.
    pub fn malformed(message: impl Into<String>) -> Refused {
        Refused::new(RefusedKind::Malformed, message)
    }

    /// Over a limit.
    pub fn too_large(message: impl Into<String>) -> Refused {
        Refused::new(RefusedKind::TooLarge, message)
    }

    /// Over the ingest rate of `holder` (a token), `entries_per_s`; the
    /// same request is let through after `wait`.
    pub fn over_rate(holder: impl std::fmt::Display, entries_per_s: u64, wait: Duration) -> Refused {
        Refused {
            kind: RefusedKind::Backpressure,
            message: format!(
                "{holder} is over its rate of {entries_per_s} entries/s; retry in {} ms",
                wait.as_millis() + 1
            ),
            retry_after: Some(wait),
        }
    }

    /// The `Retry-After` of a retryable refusal, in whole seconds: its wait
    /// rounded up (a client told 0 would retry at once), at least one.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        if !self.kind.retryable() {
            return None;
        }
        let wait = self.retry_after.unwrap_or(RETRY_AFTER_DEFAULT);
        Some((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1))
    }
}

impl From<shard::Error> for Refused {
    fn from(error: shard::Error) -> Refused {
        match error {
            shard::Error::InvalidEntry { index, source } => {
                Refused::malformed(format!("entry {}: {source}", index + 1))
            }
            shard::Error::InvalidAppend(message) => Refused::too_large(message.to_string()),
            error @ shard::Error::Backpressure { .. } => Refused::new(RefusedKind::Backpressure, error.to_string()),
            error @ shard::Error::DiskFull { .. } => Refused::new(RefusedKind::DiskFull, error.to_string()),
            shard::Error::Closed => Refused::new(RefusedKind::Unavailable, "shutting down"),
            error => {
                tracing::error!(%error, "ingest failed");
                Refused::new(RefusedKind::Internal, error.to_string())
            }
        }
    }
}

impl From<crate::tier::Error> for Refused {
    fn from(error: crate::tier::Error) -> Refused {
        use crate::tier::Error as TierError;
        let kind = match &error {
            TierError::Malformed(_) | TierError::Replication(crate::replication::Error::Malformed(_)) => {
                RefusedKind::Malformed
            }
            TierError::Exhausted(_) => RefusedKind::Backpressure,
            TierError::TooLarge(_) => RefusedKind::TooLarge,
            TierError::Log(_) => RefusedKind::Internal,
            _ => RefusedKind::Unavailable,
        };
        Refused::new(kind, error.to_string())
    }
}

/// A stored request: where its entries went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The shard (or, on a tier member, the group) that holds them.
    pub shard: u32,
    /// Their seqs, `first_seq..=last_seq`.
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// How many.
    pub count: usize,
}

impl Core {
    /// Stores all of `entries` (one request of `protocol`, `wire_bytes` on
    /// the wire) or none, and answers once they are durable; counts the
    /// request either way. `entries` must not be empty: a protocol decides
    /// for itself whether an empty request is a success (OTLP, Loki) or an
    /// error.
    pub async fn store(&self, protocol: Protocol, entries: Vec<LogEntry>, wire_bytes: u64) -> Result<Stored, Refused> {
        let outcome = self.store_uncounted(entries).await;
        match &outcome {
            Ok(stored) => self.count_stored(protocol, stored.count as u64, wire_bytes),
            Err(refused) => self.count_refused(protocol, refused.kind),
        }
        outcome
    }

    async fn store_uncounted(&self, entries: Vec<LogEntry>) -> Result<Stored, Refused> {
        if self.closing.get() {
            return Err(Refused::new(RefusedKind::Unavailable, "shutting down"));
        }
        if entries.is_empty() {
            return Err(Refused::malformed("no entries in the request"));
        }
        let count = entries.len();
        if let Some(replica) = self.tier.clone() {
            // The shard checks entries as it appends; the tier proposes
            // them first, so they are checked here, all before any.
            with_log_entry_refs(&entries, |refs| {
                refs.iter().enumerate().try_for_each(|(index, entry)| {
                    block::validate_entry(entry)
                        .map_err(|failure| Refused::malformed(format!("entry {}: {failure}", index + 1)))
                })
            })?;
            let (first_seq, last_seq) = replica.write(entries).await?;
            return Ok(Stored { shard: replica.group_id(), first_seq, last_seq, count });
        }
        let wait = with_log_entry_refs(&entries, |refs| self.shard.append(refs))?;
        drop(entries);
        let range = wait.durable().await?;
        Ok(Stored { shard: self.shard_id(), first_seq: range.first, last_seq: range.last, count })
    }

    /// [`Core::store`] for a request decoded into [`Streams`]: on a plain
    /// node the shard appends the entries borrowed, with no tag map copied
    /// per entry; on a tier member they are proposed as owned entries.
    pub async fn store_streams(
        &self,
        protocol: Protocol,
        streams: Streams,
        wire_bytes: u64,
    ) -> Result<Stored, Refused> {
        if self.tier.is_some() {
            return self.store(protocol, streams.into_log_entries(), wire_bytes).await;
        }
        let outcome = self.append_streams(&streams).await;
        match &outcome {
            Ok(stored) => self.count_stored(protocol, stored.count as u64, wire_bytes),
            Err(refused) => self.count_refused(protocol, refused.kind),
        }
        outcome
    }

    async fn append_streams(&self, streams: &Streams) -> Result<Stored, Refused> {
        if self.closing.get() {
            return Err(Refused::new(RefusedKind::Unavailable, "shutting down"));
        }
        let count = streams.len();
        if count == 0 {
            return Err(Refused::malformed("no entries in the request"));
        }
        let wait = streams.with_entry_refs(|refs| self.shard.append(refs))?;
        let range = wait.durable().await?;
        Ok(Stored { shard: self.shard_id(), first_seq: range.first, last_seq: range.last, count })
    }

    fn with_protocol(&self, protocol: Protocol, update: impl FnOnce(&mut ProtocolCounters)) {
        update(&mut self.counters.borrow_mut().protocols[protocol.index()]);
    }

    /// Counts a stored request of `protocol`: `entries` entries, `wire_bytes`
    /// bytes as received. Syslog, whose frames are stored in batches of
    /// their own, counts its batches here too.
    pub fn count_stored(&self, protocol: Protocol, entries: u64, wire_bytes: u64) {
        self.with_protocol(protocol, |counters| {
            counters.requests += 1;
            counters.entries += entries;
            counters.bytes += wire_bytes;
        });
    }

    /// Counts a refused request of `protocol` (one refused before it
    /// reached [`Core::store`], such as a malformed body, too).
    pub fn count_refused(&self, protocol: Protocol, kind: RefusedKind) {
        self.with_protocol(protocol, |counters| {
            let refused = &mut counters.refused;
            match kind {
                RefusedKind::Malformed => refused.malformed += 1,
                RefusedKind::TooLarge => refused.too_large += 1,
                RefusedKind::UnsupportedMediaType => refused.unsupported_media_type += 1,
                RefusedKind::Backpressure => refused.backpressure += 1,
                RefusedKind::Unavailable => refused.shutting_down += 1,
                RefusedKind::DiskFull => refused.disk_full += 1,
                RefusedKind::Internal => refused.internal += 1,
            }
        });
    }

    /// Counts `count` messages of `protocol` dropped unread (syslog over
    /// UDP, which has no way to push back).
    pub fn count_dropped(&self, protocol: Protocol, count: u64) {
        self.with_protocol(protocol, |counters| counters.dropped += count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_refusals_are_retryable_and_carry_a_wait() {
        for kind in [RefusedKind::Backpressure, RefusedKind::Unavailable, RefusedKind::DiskFull] {
            assert!(kind.retryable());
            assert_eq!(Refused::new(kind, "x").retry_after, Some(RETRY_AFTER_DEFAULT));
        }
        for kind in
            [RefusedKind::Malformed, RefusedKind::TooLarge, RefusedKind::UnsupportedMediaType, RefusedKind::Internal]
        {
            assert!(!kind.retryable());
            assert_eq!(Refused::new(kind, "x").retry_after, None);
        }
        assert_eq!(RefusedKind::Backpressure.http_status(), 429);
        let over = Refused::over_rate("token \"a\"", 10, Duration::from_millis(1500));
        assert_eq!((over.kind, over.retry_after_seconds()), (RefusedKind::Backpressure, Some(2)));
        assert_eq!(Refused::over_rate("t", 10, Duration::from_millis(10)).retry_after_seconds(), Some(1));
        assert_eq!(Refused::malformed("x").retry_after_seconds(), None);
        assert_eq!(RefusedKind::Malformed.http_status(), 400);
    }
}
