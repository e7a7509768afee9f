//! OTLP logs over gRPC (DESIGN.md section 11):
//! `opentelemetry.proto.collector.logs.v1.LogsService/Export` on the gRPC
//! port, through our own transport, gzip-compressed messages included
//! ([`Services::accepts_gzip`](super::Services)).
//!
//! One request message, decoded and mapped by [`crate::ingest::otlp`],
//! stored whole by [`Core::store`] and answered with an empty
//! `ExportLogsServiceResponse` (full success) once durable. Refusals keep
//! to what OTLP exporters do with each code:
//! - bad data (malformed protobuf, corrupt gzip, a message over the size
//!   limit, an entry over its limits): `INVALID_ARGUMENT`, which they never
//!   retry. An oversize message is not `RESOURCE_EXHAUSTED` here, as gRPC
//!   would have it, because OTLP exporters retry that code, and the same
//!   message can never fit;
//! - busy (over the token's rate, a full append queue), shutting down, no
//!   tier leader, a full disk: `UNAVAILABLE` with a `google.rpc.RetryInfo`
//!   saying when (in `grpc-status-details-bin` and
//!   `google.rpc.retryinfo-bin`), which they retry after that delay;
//! - a failure of the node: `INTERNAL`.
//!
//! An empty request is a success that stores nothing.

use crate::auth::Grant;
use crate::grpc::status::{Code, Status};
use crate::grpc::transport::Call;
use crate::ingest::otlp;
use crate::ingest::Protocol;
use crate::node::{Core, Refused, RefusedKind};
use crate::proto::opentelemetry::proto::collector::logs::v1::ExportLogsServiceResponse;

const PROTOCOL: Protocol = Protocol::OtlpGrpc;

/// `LogsService/Export`.
pub(super) async fn export(core: &Core, call: &mut Call, grant: &Grant) -> Result<(), Status> {
    let refuse = |refused: Refused| {
        core.count_refused(PROTOCOL, refused.kind);
        status(&refused)
    };
    let message = match request_message(call).await {
        Ok(message) => message,
        Err((Some(kind), status)) => {
            core.count_refused(PROTOCOL, kind);
            return Err(status);
        }
        Err((None, status)) => return Err(status),
    };
    let wire_bytes = call.messages.received_bytes();
    let request = otlp::decode_protobuf(&message).map_err(|error| refuse(Refused::malformed(error.to_string())))?;
    drop(message);
    let entries = otlp::streams(request, &core.config.otlp_tag_attributes, crate::ingest::unix_now_ns())
        .map_err(|error| refuse(Refused::malformed(error.to_string())))?;
    if entries.is_empty() {
        core.count_stored(PROTOCOL, 0, wire_bytes);
    } else {
        if let Some(refused) = rate_refusal(grant, entries.len()) {
            return Err(refuse(refused));
        }
        core.store_streams(PROTOCOL, entries, wire_bytes).await.map_err(|refused| status(&refused))?;
    }
    call.send(&ExportLogsServiceResponse::default()).await
}

/// The one request message of the unary call; an error with the kind to
/// count it as (`None`: the client went away, nothing to count).
async fn request_message(call: &mut Call) -> Result<bytes::Bytes, (Option<RefusedKind>, Status)> {
    let message = call
        .messages
        .next_bytes()
        .await
        .map_err(read_refusal)?
        .ok_or_else(|| (Some(RefusedKind::Malformed), Status::invalid_argument("no ExportLogsServiceRequest")))?;
    match call.messages.next_bytes().await.map_err(read_refusal)? {
        None => Ok(message),
        Some(_) => Err((Some(RefusedKind::Malformed), Status::invalid_argument("more than one request message"))),
    }
}

/// What a failed read of the request means (see the module doc).
fn read_refusal(status: Status) -> (Option<RefusedKind>, Status) {
    match status.code {
        Code::ResourceExhausted => (Some(RefusedKind::TooLarge), Status::invalid_argument(status.message)),
        Code::InvalidArgument => (Some(RefusedKind::Malformed), status),
        // A framing violation (a truncated message, a bad flag): gRPC's
        // INTERNAL, counted as the bad data it is.
        Code::Internal => (Some(RefusedKind::Malformed), status),
        _ => (None, status),
    }
}

/// The status of a refusal (see the module doc).
fn status(refused: &Refused) -> Status {
    let message = refused.message.clone();
    match refused.kind {
        RefusedKind::Malformed | RefusedKind::TooLarge | RefusedKind::UnsupportedMediaType => {
            Status::invalid_argument(message)
        }
        RefusedKind::Backpressure | RefusedKind::Unavailable | RefusedKind::DiskFull => Status::unavailable(message)
            .with_retry_info(refused.retry_after.unwrap_or(crate::node::RETRY_AFTER_DEFAULT)),
        RefusedKind::Internal => Status::internal(message),
    }
}

/// The refusal of `count` entries over their token's rate, with the exact
/// wait after which the same request is let through.
fn rate_refusal(grant: &Grant, count: usize) -> Option<Refused> {
    let rate = grant.rate()?;
    let wait = rate.take(count as u64).err()?;
    Some(Refused::over_rate(grant.holder(), rate.entries_per_s(), wait))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn refusals_map_to_the_codes_otlp_exporters_act_on() {
        let of = |kind| status(&Refused::new(kind, "why"));
        for kind in [RefusedKind::Malformed, RefusedKind::TooLarge, RefusedKind::UnsupportedMediaType] {
            assert_eq!((of(kind).code, of(kind).retry_info), (Code::InvalidArgument, None), "{kind:?}");
        }
        for kind in [RefusedKind::Backpressure, RefusedKind::Unavailable, RefusedKind::DiskFull] {
            assert_eq!(of(kind).code, Code::Unavailable, "{kind:?}");
            assert_eq!(of(kind).retry_info, Some(crate::node::RETRY_AFTER_DEFAULT), "{kind:?}");
        }
        assert_eq!(of(RefusedKind::Internal).code, Code::Internal);
        let exact =
            Refused { retry_after: Some(Duration::from_millis(1500)), ..Refused::new(RefusedKind::Backpressure, "x") };
        assert_eq!(status(&exact).retry_info, Some(Duration::from_millis(1500)));
        assert_eq!(status(&exact).message, "x");
    }

    #[test]
    fn read_failures_are_counted_as_what_they_are() {
        let (kind, status) = read_refusal(Status::resource_exhausted("too big"));
        assert_eq!(
            (kind, status.code, status.message.as_str()),
            (Some(RefusedKind::TooLarge), Code::InvalidArgument, "too big")
        );
        assert_eq!(read_refusal(Status::invalid_argument("gzip")).0, Some(RefusedKind::Malformed));
        assert_eq!(read_refusal(Status::internal("truncated")).1.code, Code::Internal);
        assert_eq!(read_refusal(Status::cancelled("gone")).0, None);
    }
}
