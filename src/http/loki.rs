//! Loki's push API (DESIGN.md section 11): `POST /loki/api/v1/push`, JSON
//! or snappy protobuf; and `GET /ready`.
//!
//! The answers are Loki's, so that a shipper built for Loki reads them as
//! it would Loki's: `204` with no body once every entry is durable; a
//! plain-text message with `400` (bad data, never retried), `413` (over
//! `--max-body-bytes`, inflated or not), `415` (an unknown
//! `Content-Encoding`); `429` or `503` with `Retry-After` when the shipper
//! should send the same request again later. Decoding is
//! [`crate::ingest::loki`]'s; storing (all or nothing) is
//! [`Core::store`]'s.
//!
//! The protobuf form is snappy-compressed by definition, and some clients
//! (the `tracing-loki` crate) say so with `Content-Encoding: snappy`: that
//! header names the payload's own compression, not a transfer encoding to
//! undo first, so it is set aside before the body is read.

use std::rc::Rc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::budget::BodyBudget;
use super::server::{full, rate_refusal, read_body, Body};
use crate::auth::Grant;
use crate::ingest::loki::{self as decode, LokiError};
use crate::ingest::streams::Streams;
use crate::ingest::Protocol;
use crate::node::{Core, InFlight, Refused, RefusedKind};
use crate::proto::LogEntry;

/// `POST /loki/api/v1/push`.
pub async fn push(
    core: Rc<Core>,
    body_budget: &Rc<BodyBudget>,
    grant: &Grant,
    request: Request<Incoming>,
) -> Response<Body> {
    let _in_flight = InFlight::new(&core);
    match receive(&core, body_budget, grant, request).await {
        Ok(()) => {
            let mut response = Response::new(full(""));
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        Err(refused) => refused_text(&refused),
    }
}

/// Reads, decodes and stores one push; every refusal is counted once
/// (here before [`Core::store`], by it after).
async fn receive(
    core: &Rc<Core>,
    body_budget: &Rc<BodyBudget>,
    grant: &Grant,
    mut request: Request<Incoming>,
) -> Result<(), Refused> {
    let counted = |refused: Refused| {
        core.count_refused(Protocol::Loki, refused.kind);
        refused
    };
    if core.closing.get() {
        return Err(counted(Refused::new(RefusedKind::Unavailable, "shutting down")));
    }
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    let json = decode::is_json(content_type);
    let snappy_encoding = request
        .headers()
        .get(header::CONTENT_ENCODING)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"snappy"));
    if snappy_encoding && !json {
        request.headers_mut().remove(header::CONTENT_ENCODING);
    }
    let (body, wire_bytes, mut reservation) = read_body(core, body_budget, request).await.map_err(counted)?;
    let now_ns = crate::ingest::unix_now_ns();
    let max_body = core.config.max_body_bytes;
    let streams = if json {
        // The JSON form is rare and small next to the protobuf one: its
        // entries come owned, in one stream.
        let entries = decode::decode_json(&body, now_ns).map_err(|error| counted(refusal(error)))?;
        drop(body);
        return store(core, grant, Batch::Owned(entries), wire_bytes).await;
    } else {
        // Reserve the inflated bytes before inflating them.
        let declared = decode::snappy_len(&body).map_err(|error| counted(refusal(error)))?;
        if declared <= max_body && !reservation.grow_to(reservation.bytes() + declared) {
            return Err(counted(Refused::new(
                RefusedKind::Backpressure,
                format!(
                    "request bodies in flight on this core would pass {} bytes (--max-body-bytes-in-flight); retry later",
                    body_budget.max_bytes()
                ),
            )));
        }
        decode::decode_protobuf(&body, max_body, now_ns).map_err(|error| counted(refusal(error)))?
    };
    drop(body);
    store(core, grant, Batch::Streams(streams), wire_bytes).await
}

/// A decoded push: owned entries (JSON) or streams sharing their labels
/// (protobuf).
enum Batch {
    Owned(Vec<LogEntry>),
    Streams(Streams),
}

/// Stores a decoded push after its token's rate allows it.
async fn store(core: &Rc<Core>, grant: &Grant, batch: Batch, wire_bytes: u64) -> Result<(), Refused> {
    let count = match &batch {
        Batch::Owned(entries) => entries.len(),
        Batch::Streams(streams) => streams.len(),
    };
    if count == 0 {
        // Loki answers an empty push with 204 too.
        core.count_stored(Protocol::Loki, 0, wire_bytes);
        return Ok(());
    }
    if let Some(refused) = rate_refusal(grant, count) {
        core.count_refused(Protocol::Loki, refused.kind);
        return Err(refused);
    }
    match batch {
        Batch::Owned(entries) => core.store(Protocol::Loki, entries, wire_bytes).await.map(|_stored| ()),
        Batch::Streams(streams) => core.store_streams(Protocol::Loki, streams, wire_bytes).await.map(|_stored| ()),
    }
}

fn refusal(error: LokiError) -> Refused {
    if error.is_too_large() {
        Refused::too_large(error.to_string())
    } else {
        Refused::malformed(error.to_string())
    }
}

/// A refusal as Loki answers it: the status, the message as plain text,
/// and `Retry-After` (seconds) on the retryable ones.
fn refused_text(refused: &Refused) -> Response<Body> {
    let status = StatusCode::from_u16(refused.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(full(format!("{}\n", refused.message)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Some(seconds) = refused.retry_after_seconds() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// One archive group as `/ready` judges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupReadiness {
    /// The group.
    pub group: u32,
    /// Its leader as this node's replica knows it (0: none known).
    pub leader: u64,
    /// This node was removed from the group.
    pub removed: bool,
}

/// Whether a node accepts writes: not while it shuts down, and on a tier
/// member only when every one of its groups (one per core; any core may
/// take a request) has a leader it can forward to and still counts this
/// node in. `Err` says why not.
pub fn readiness(closing: bool, groups: &[GroupReadiness]) -> Result<(), String> {
    if closing {
        return Err("shutting down".into());
    }
    for group in groups {
        if group.removed {
            return Err(format!("removed from archive group {}", group.group));
        }
        if group.leader == 0 {
            return Err(format!("archive group {} has no known leader", group.group));
        }
    }
    Ok(())
}

/// `GET /ready`: `200` when the node accepts writes, else `503` with why.
pub async fn ready(core: &Core) -> Response<Body> {
    let verdict = if core.tier.is_none() || core.closing.get() {
        readiness(core.closing.get(), &[])
    } else {
        match core.reports().await {
            Ok(reports) => {
                let groups: Vec<GroupReadiness> = reports
                    .iter()
                    .filter_map(|report| report.tier.as_ref())
                    .map(|tier| GroupReadiness { group: tier.group, leader: tier.status.leader, removed: tier.removed })
                    .collect();
                readiness(false, &groups)
            }
            Err(shutting_down) => Err(shutting_down.to_string()),
        }
    };
    let (status, text) = match verdict {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
    };
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_every_group_has_a_leader() {
        let led = |group| GroupReadiness { group, leader: 2, removed: false };
        assert_eq!(readiness(false, &[]), Ok(()));
        assert_eq!(readiness(false, &[led(0), led(1)]), Ok(()));
        assert_eq!(readiness(true, &[led(0)]), Err("shutting down".into()));
        assert_eq!(
            readiness(false, &[led(0), GroupReadiness { leader: 0, ..led(1) }]),
            Err("archive group 1 has no known leader".into())
        );
        assert_eq!(
            readiness(false, &[GroupReadiness { removed: true, ..led(3) }]),
            Err("removed from archive group 3".into())
        );
    }

    #[test]
    fn refusals_are_plain_text_with_retry_after_when_retryable() {
        let busy = refused_text(&Refused::new(RefusedKind::Backpressure, "busy"));
        assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        assert_eq!(busy.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        let bad = refused_text(&refusal(LokiError::Json("x".into())));
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert!(bad.headers().get(header::RETRY_AFTER).is_none());
        let large = refused_text(&refusal(LokiError::SnappyTooLarge { declared: 2, limit: 1 }));
        assert_eq!(large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
