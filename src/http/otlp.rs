//! OTLP logs over HTTP (DESIGN.md section 11): `POST /v1/logs`, protobuf
//! (`application/x-protobuf`) or OTLP/JSON (`application/json`), optional
//! gzip (`Content-Encoding`, through [`read_body`]).
//!
//! The answers are OTLP/HTTP's, in the request's encoding:
//! - success: `200` with an `ExportLogsServiceResponse` (empty: full
//!   success), never `204`, which some SDKs count as a failure;
//! - bad data: `400` (`413` over `--max-body-bytes`, `415` for another
//!   content type or encoding) with a `google.rpc.Status`; OTLP exporters
//!   never retry these;
//! - busy or unavailable: `429` (over the token's rate, a full append
//!   queue) or `503` (shutting down, no tier leader, a full disk: OTLP
//!   exporters retry only 429, 502, 503 and 504, so a full disk is 503
//!   here, not 507) with `Retry-After` and a `google.rpc.Status` whose
//!   details hold a `RetryInfo`.
//!
//! An empty request (no log records) is a success that stores nothing.

use std::rc::Rc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::budget::BodyBudget;
use super::server::{full, rate_refusal, read_body, Body};
use crate::auth::Grant;
use crate::ingest::otlp;
use crate::ingest::Protocol;
use crate::node::{Core, InFlight, Refused, RefusedKind};
use crate::proto::google::rpc::{RetryInfo, Status};
use crate::proto::opentelemetry::proto::collector::logs::v1::ExportLogsServiceResponse;

const PROTOCOL: Protocol = Protocol::OtlpHttp;

/// `google.rpc.Code` values of the `Status` bodies.
const CODE_INVALID_ARGUMENT: i32 = 3;
const CODE_INTERNAL: i32 = 13;
const CODE_UNAVAILABLE: i32 = 14;
/// The `Any` type URL of a `google.rpc.RetryInfo`.
const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The encoding of a request, and so of its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// The format a `Content-Type` names (parameters such as `charset`
/// ignored); `None` for any other.
fn format_of(content_type: Option<&HeaderValue>) -> Option<Format> {
    let value = content_type?.to_str().ok()?;
    match value.split(';').next().unwrap_or("").trim().to_ascii_lowercase().as_str() {
        "application/x-protobuf" | "application/protobuf" => Some(Format::Protobuf),
        "application/json" => Some(Format::Json),
        _ => None,
    }
}

/// `POST /v1/logs`.
pub async fn export(
    core: Rc<Core>,
    body_budget: &Rc<BodyBudget>,
    grant: &Grant,
    request: Request<Incoming>,
) -> Response<Body> {
    let _in_flight = InFlight::new(&core);
    let Some(format) = format_of(request.headers().get(header::CONTENT_TYPE)) else {
        let refused = Refused::new(
            RefusedKind::UnsupportedMediaType,
            "OTLP/HTTP takes Content-Type application/x-protobuf or application/json",
        );
        return refuse(&core, Format::Json, refused);
    };
    let (body, wire_bytes, _reservation) = match read_body(&core, body_budget, request).await {
        Ok(read) => read,
        Err(refused) => return refuse(&core, format, refused),
    };
    let decoded = match format {
        Format::Protobuf => otlp::decode_protobuf(&body),
        Format::Json => otlp::json::decode(&body),
    };
    let entries = match decoded
        .and_then(|request| otlp::streams(request, &core.config.otlp_tag_attributes, crate::ingest::unix_now_ns()))
    {
        Ok(entries) => entries,
        Err(error) => return refuse(&core, format, Refused::malformed(error.to_string())),
    };
    drop(body);
    if entries.is_empty() {
        core.count_stored(PROTOCOL, 0, wire_bytes);
        return success(format);
    }
    if let Some(refused) = rate_refusal(grant, entries.len()) {
        return refuse(&core, format, refused);
    }
    match core.store_streams(PROTOCOL, entries, wire_bytes).await {
        Ok(_) => success(format),
        // Counted by Core::store.
        Err(refused) => answer(format, &refused),
    }
}

/// Counts a refusal made before [`Core::store`] and answers it.
fn refuse(core: &Core, format: Format, refused: Refused) -> Response<Body> {
    core.count_refused(PROTOCOL, refused.kind);
    answer(format, &refused)
}

/// `200` with an empty `ExportLogsServiceResponse`.
fn success(format: Format) -> Response<Body> {
    let body = match format {
        Format::Protobuf => prost::Message::encode_to_vec(&ExportLogsServiceResponse::default()),
        Format::Json => b"{}".to_vec(),
    };
    response(StatusCode::OK, format, body)
}

fn response(status: StatusCode, format: Format, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    response
}

/// The HTTP status of a refusal (see the module doc).
fn http_status(kind: RefusedKind) -> StatusCode {
    match kind {
        RefusedKind::DiskFull => StatusCode::SERVICE_UNAVAILABLE,
        kind => StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// The `google.rpc.Status` of a refusal, with a `RetryInfo` detail when it
/// is retryable.
fn rpc_status(refused: &Refused) -> Status {
    let code = match refused.kind {
        RefusedKind::Malformed | RefusedKind::TooLarge | RefusedKind::UnsupportedMediaType => CODE_INVALID_ARGUMENT,
        RefusedKind::Backpressure | RefusedKind::Unavailable | RefusedKind::DiskFull => CODE_UNAVAILABLE,
        RefusedKind::Internal => CODE_INTERNAL,
    };
    let details = refused
        .retry_after_seconds()
        .map(|seconds| {
            let retry_info =
                RetryInfo { retry_delay: Some(prost_types::Duration { seconds: seconds as i64, nanos: 0 }) };
            prost_types::Any {
                type_url: RETRY_INFO_TYPE_URL.to_string(),
                value: prost::Message::encode_to_vec(&retry_info),
            }
        })
        .into_iter()
        .collect();
    Status { code, message: refused.message.clone(), details }
}

/// A `google.rpc.Status` as OTLP/JSON (the protobuf JSON mapping: a
/// `RetryInfo` detail as an `Any` with `@type` and its `retryDelay` as a
/// duration string).
fn status_json(status: &Status) -> serde_json::Value {
    let details: Vec<serde_json::Value> = status
        .details
        .iter()
        .filter_map(|any| {
            let info: RetryInfo = prost::Message::decode(any.value.as_slice()).ok()?;
            let delay = info.retry_delay.unwrap_or_default();
            Some(serde_json::json!({ "@type": any.type_url, "retryDelay": format!("{}s", delay.seconds) }))
        })
        .collect();
    let mut value = serde_json::json!({ "code": status.code, "message": status.message });
    if !details.is_empty() {
        value["details"] = serde_json::Value::Array(details);
    }
    value
}

/// The answer to a refusal: its status, a `google.rpc.Status` body in
/// `format`, and `Retry-After` when retryable.
fn answer(format: Format, refused: &Refused) -> Response<Body> {
    let status = rpc_status(refused);
    let body = match format {
        Format::Protobuf => prost::Message::encode_to_vec(&status),
        Format::Json => {
            let mut body = serde_json::to_vec(&status_json(&status)).unwrap_or_default();
            body.push(b'\n');
            body
        }
    };
    let mut response = response(http_status(refused.kind), format, body);
    if let Some(seconds) = refused.retry_after_seconds() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn content_types_name_the_format() {
        let of = |text: &'static str| format_of(Some(&HeaderValue::from_static(text)));
        assert_eq!(of("application/x-protobuf"), Some(Format::Protobuf));
        assert_eq!(of("application/protobuf"), Some(Format::Protobuf));
        assert_eq!(of("Application/JSON; charset=utf-8"), Some(Format::Json));
        assert_eq!(of("text/plain"), None);
        assert_eq!(format_of(None), None);
    }

    #[test]
    fn refusals_answer_with_a_status_in_the_request_encoding() {
        let bad = answer(Format::Protobuf, &Refused::malformed("log record 3: bad"));
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert!(bad.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(bad.headers()[header::CONTENT_TYPE], "application/x-protobuf");
        assert_eq!(rpc_status(&Refused::malformed("x")), Status { code: 3, message: "x".into(), details: vec![] });

        let busy = Refused {
            retry_after: Some(Duration::from_millis(1200)),
            ..Refused::new(RefusedKind::Backpressure, "busy")
        };
        let response = answer(Format::Json, &busy);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2", "rounded up");
        let status = rpc_status(&busy);
        assert_eq!(status.code, 14);
        assert_eq!(status.details[0].type_url, RETRY_INFO_TYPE_URL);
        assert_eq!(
            status_json(&status),
            serde_json::json!({"code": 14, "message": "busy",
                "details": [{"@type": RETRY_INFO_TYPE_URL, "retryDelay": "2s"}]})
        );
        assert_eq!(http_status(RefusedKind::DiskFull), StatusCode::SERVICE_UNAVAILABLE, "OTLP exporters retry 503");
        assert_eq!(http_status(RefusedKind::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(http_status(RefusedKind::TooLarge), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(http_status(RefusedKind::UnsupportedMediaType), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
