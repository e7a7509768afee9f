//! gRPC status: the codes, the `grpc-status` and `grpc-message` trailers
//! (or trailers-only response headers), and `grpc-timeout` values, as the
//! gRPC over HTTP/2 spec defines them. Pure: builds and reads
//! [`http::HeaderMap`]s, never touches a connection.
//!
//! A `grpc-message` is percent-encoded (bytes outside `0x20..=0x7E`, and
//! `%`, become `%XX`) and bounded by
//! [`crate::limits::STATUS_MESSAGE_BYTES_MAX`] both ways: what we send and
//! what we keep from a peer.
//!
//! A status may also carry a [`LeaderHint`] (DESIGN.md section 9, "Leader
//! discovery"): a tier replica that does not lead what a call belongs to
//! refuses it with `UNAVAILABLE` ([`Status::not_leader`]) and, when it knows
//! the leader, names it in three more trailers, [`WORMDB_LEADER_ID`],
//! [`WORMDB_LEADER_ADDR`] and [`WORMDB_TERM`]. The three travel together:
//! a hint is sent whole or not at all, and one read back with any of them
//! missing or malformed is dropped (a client with no hint tries the next
//! address it knows, which is always safe). They are plain custom metadata,
//! so any gRPC client sees them (tonic's `Status::metadata`).
//!
//! A refusal that says when to come back (a token over its ingest rate)
//! carries [`GRPC_RETRY_PUSHBACK_MS`], the server pushback of gRPC's retry
//! design (A6): the milliseconds a client should wait before it retries.
//!
//! A status may also carry a `google.rpc.RetryInfo` ([`Status::retry_info`]),
//! the rich error model's retry delay, which OTLP exporters read: it is sent
//! twice, as the `RetryInfo` itself in [`GOOGLE_RPC_RETRY_INFO_BIN`] (where
//! the OpenTelemetry SDKs look) and inside a whole `google.rpc.Status` in
//! [`GRPC_STATUS_DETAILS_BIN`] (where gRPC's status libraries look, with
//! the same code and message as `grpc-status` and `grpc-message`). Both are
//! binary metadata: base64, sent unpadded, read padded or not.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use crate::limits::{LEADER_HINT_ADDR_BYTES_MAX, STATUS_MESSAGE_BYTES_MAX};
use crate::proto::google::rpc::{RetryInfo, Status as RpcStatus};

/// Header (or trailer) carrying the status code, in decimal.
pub const GRPC_STATUS: &str = "grpc-status";
/// Header (or trailer) carrying the percent-encoded status message.
pub const GRPC_MESSAGE: &str = "grpc-message";
/// Request header carrying the deadline (see [`parse_timeout`]).
pub const GRPC_TIMEOUT: &str = "grpc-timeout";
/// Trailer of a [`LeaderHint`]: the leader's node id, in decimal.
pub const WORMDB_LEADER_ID: &str = "wormdb-leader-id";
/// Trailer of a [`LeaderHint`]: the leader's gRPC address, `HOST:PORT`.
pub const WORMDB_LEADER_ADDR: &str = "wormdb-leader-addr";
/// Trailer of a [`LeaderHint`]: the term in which that node leads, in decimal.
pub const WORMDB_TERM: &str = "wormdb-term";

/// Trailer of a refusal that names its retry delay, in decimal
/// milliseconds (gRPC's server pushback, see the module doc).
pub const GRPC_RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

/// Trailer of a status with details: a `google.rpc.Status` (code, message,
/// details as `Any`s), base64 (binary metadata).
pub const GRPC_STATUS_DETAILS_BIN: &str = "grpc-status-details-bin";
/// Trailer of a status with a retry delay: a `google.rpc.RetryInfo`,
/// base64 (binary metadata), as the OpenTelemetry exporters read it.
pub const GOOGLE_RPC_RETRY_INFO_BIN: &str = "google.rpc.retryinfo-bin";
/// The `Any` type URL of a `google.rpc.RetryInfo`.
pub const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// Appended to a `grpc-message` cut at [`STATUS_MESSAGE_BYTES_MAX`].
const TRUNCATION_MARKER: &str = "...";

/// A gRPC status code, numbered as in the gRPC spec (`google.rpc.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// Not an error.
    Ok = 0,
    /// The operation was cancelled, typically by the caller.
    Cancelled,
    /// An error with no better code, including unknown codes from a peer.
    Unknown,
    /// The request is malformed whatever the system's state.
    InvalidArgument,
    /// The deadline expired before the operation completed.
    DeadlineExceeded,
    /// A requested entity was not found.
    NotFound,
    /// An entity the caller tried to create already exists.
    AlreadyExists,
    /// The caller may not do this.
    PermissionDenied,
    /// A resource (a quota, memory, a message size) ran out.
    ResourceExhausted,
    /// The system is not in the state the operation needs (wormdb: a
    /// replication gap; the message names the expected sequence).
    FailedPrecondition,
    /// The operation was aborted, typically by a concurrency conflict.
    Aborted,
    /// The operation went past the valid range.
    OutOfRange,
    /// The method is not implemented or supported.
    Unimplemented,
    /// An invariant broke (including a protocol violation by the peer).
    Internal,
    /// The service is unavailable for now; retrying may succeed.
    Unavailable,
    /// Unrecoverable data loss or corruption.
    DataLoss,
    /// The request lacks valid authentication credentials.
    Unauthenticated,
}

impl Code {
    /// The code numbered `value`; [`Code::Unknown`] for numbers the spec
    /// does not define (as gRPC clients do).
    pub fn from_u32(value: u32) -> Code {
        match value {
            0 => Code::Ok,
            1 => Code::Cancelled,
            2 => Code::Unknown,
            3 => Code::InvalidArgument,
            4 => Code::DeadlineExceeded,
            5 => Code::NotFound,
            6 => Code::AlreadyExists,
            7 => Code::PermissionDenied,
            8 => Code::ResourceExhausted,
            9 => Code::FailedPrecondition,
            10 => Code::Aborted,
            11 => Code::OutOfRange,
            12 => Code::Unimplemented,
            13 => Code::Internal,
            14 => Code::Unavailable,
            15 => Code::DataLoss,
            16 => Code::Unauthenticated,
            _ => Code::Unknown,
        }
    }

    /// The spec's name of the code, for example `"FAILED_PRECONDITION"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

/// Who leads what a refused call belongs to, as the refusing replica knows
/// it: sent with [`Status::not_leader`] so that the client goes straight
/// there. A replica that does not know the leader (an election under way)
/// sends no hint at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's node id.
    pub leader_id: u32,
    /// The leader's gRPC address, `HOST:PORT`: visible ASCII, at most
    /// [`LEADER_HINT_ADDR_BYTES_MAX`] bytes (a hint with another address is
    /// not sent). Clients connect to it without a DNS lookup, so a replica
    /// should send an `IP:PORT`.
    pub addr: String,
    /// The Raft term in which `leader_id` leads: clients ignore a hint older
    /// than one they already followed.
    pub term: u64,
}

impl std::fmt::Display for LeaderHint {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "leader {} at {}, term {}", self.leader_id, self.addr, self.term)
    }
}

/// The outcome of a gRPC call: a code, a human-readable message and, for a
/// not-leader refusal, where the leader is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}{}", leader_suffix(.leader.as_ref()))]
pub struct Status {
    /// The status code.
    pub code: Code,
    /// The message, plain text (not percent-encoded); may be empty.
    pub message: String,
    /// The leader the refusing replica knows of (see [`Status::not_leader`]);
    /// `None` on every other status.
    pub leader: Option<LeaderHint>,
    /// How long the client should wait before it retries
    /// ([`GRPC_RETRY_PUSHBACK_MS`]); `None` on most statuses.
    pub retry_pushback: Option<Duration>,
    /// The delay of a `google.rpc.RetryInfo` detail
    /// ([`GOOGLE_RPC_RETRY_INFO_BIN`], [`GRPC_STATUS_DETAILS_BIN`]); `None`
    /// on most statuses.
    pub retry_info: Option<Duration>,
}

/// ` (leader 2 at 10.0.0.2:50051, term 7)` after a status message, so that
/// logs show where a refusal pointed.
fn leader_suffix(leader: Option<&LeaderHint>) -> String {
    leader.map(|hint| format!(" ({hint})")).unwrap_or_default()
}

impl Status {
    /// A status with `code` and `message`, and no leader hint.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status { code, message: message.into(), leader: None, retry_pushback: None, retry_info: None }
    }

    /// A replica refuses a call because it does not lead what the call
    /// belongs to: [`Code::Unavailable`] (retrying elsewhere may succeed),
    /// with `hint` when it knows the leader and `None` when it does not (an
    /// election under way: the client then tries its next address with
    /// backoff).
    pub fn not_leader(message: impl Into<String>, hint: Option<LeaderHint>) -> Status {
        Status { leader: hint, ..Status::new(Code::Unavailable, message) }
    }

    /// Success: [`Code::Ok`] with no message.
    pub fn ok() -> Status {
        Status::new(Code::Ok, String::new())
    }

    /// [`Code::InvalidArgument`] with `message`.
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, message)
    }

    /// [`Code::FailedPrecondition`] with `message`.
    pub fn failed_precondition(message: impl Into<String>) -> Status {
        Status::new(Code::FailedPrecondition, message)
    }

    /// [`Code::ResourceExhausted`] with `message`.
    pub fn resource_exhausted(message: impl Into<String>) -> Status {
        Status::new(Code::ResourceExhausted, message)
    }

    /// [`Code::ResourceExhausted`] with `message` and the delay after which
    /// a retry may succeed ([`GRPC_RETRY_PUSHBACK_MS`]).
    pub fn resource_exhausted_for(message: impl Into<String>, retry_after: Duration) -> Status {
        Status { retry_pushback: Some(retry_after), ..Status::resource_exhausted(message) }
    }

    /// The status with a `google.rpc.RetryInfo` of `delay` (see the module
    /// doc): the client should retry no sooner.
    pub fn with_retry_info(self, delay: Duration) -> Status {
        Status { retry_info: Some(delay), ..self }
    }

    /// [`Code::Unimplemented`] with `message`.
    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(Code::Unimplemented, message)
    }

    /// [`Code::Unavailable`] with `message`.
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(Code::Unavailable, message)
    }

    /// [`Code::Internal`] with `message`.
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::Internal, message)
    }

    /// [`Code::DeadlineExceeded`] with `message`.
    pub fn deadline_exceeded(message: impl Into<String>) -> Status {
        Status::new(Code::DeadlineExceeded, message)
    }

    /// [`Code::Cancelled`] with `message`.
    pub fn cancelled(message: impl Into<String>) -> Status {
        Status::new(Code::Cancelled, message)
    }

    /// [`Code::NotFound`] with `message`.
    pub fn not_found(message: impl Into<String>) -> Status {
        Status::new(Code::NotFound, message)
    }

    /// `grpc-status` (decimal) and, when the message is not empty,
    /// `grpc-message`: the message percent-encoded and cut at whole
    /// characters so that the value is at most
    /// [`STATUS_MESSAGE_BYTES_MAX`] bytes (ending in `...` when cut). With a
    /// leader hint, also [`WORMDB_LEADER_ID`], [`WORMDB_LEADER_ADDR`] and
    /// [`WORMDB_TERM`]; a hint whose address is not visible ASCII of at most
    /// [`LEADER_HINT_ADDR_BYTES_MAX`] bytes is left out (no hint is always
    /// safe, a cut address never is). With a retry info, also
    /// [`GOOGLE_RPC_RETRY_INFO_BIN`] and [`GRPC_STATUS_DETAILS_BIN`] (whose
    /// message is the `grpc-message` as a client decodes it, cut or not).
    /// For the trailers of a response, or the headers of a trailers-only one.
    pub fn to_header_map(&self) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(7);
        headers.insert(GRPC_STATUS, HeaderValue::from(u16::from(self.code as u8)));
        let encoded = percent_encode_bounded(&self.message, STATUS_MESSAGE_BYTES_MAX);
        if !self.message.is_empty() {
            // Percent-encoding leaves only bytes 0x20..=0x7E, all valid in a header value.
            let value = HeaderValue::try_from(encoded.as_str()).expect("a percent-encoded message is visible ASCII");
            headers.insert(GRPC_MESSAGE, value);
        }
        if let Some(delay) = self.retry_info {
            // The message a client reads back from grpc-message, so that
            // libraries that compare the two find them equal.
            let message = percent_decode_message(encoded.as_bytes());
            let (retry_info, details) = retry_info_values(self.code, message, delay);
            headers.insert(GOOGLE_RPC_RETRY_INFO_BIN, retry_info);
            headers.insert(GRPC_STATUS_DETAILS_BIN, details);
        }
        if let Some(hint) = &self.leader {
            if let Some(addr) = leader_addr_value(hint.addr.as_bytes()) {
                headers.insert(WORMDB_LEADER_ID, HeaderValue::from(hint.leader_id));
                headers.insert(WORMDB_LEADER_ADDR, addr);
                headers.insert(WORMDB_TERM, HeaderValue::from(hint.term));
            }
        }
        if let Some(wait) = self.retry_pushback {
            // Rounded up: a client that waits this long is not early.
            let millis = wait.as_nanos().div_ceil(1_000_000).min(u128::from(u64::MAX)) as u64;
            headers.insert(GRPC_RETRY_PUSHBACK_MS, HeaderValue::from(millis));
        }
        headers
    }

    /// The status in response trailers (or in the headers of a
    /// trailers-only response); `None` if `grpc-status` is absent. A
    /// `grpc-status` that is not a decimal number reads as
    /// [`Code::Unknown`]. The message is percent-decoded leniently (see
    /// [`percent_decode_message`]) and kept to at most
    /// [`STATUS_MESSAGE_BYTES_MAX`] bytes.
    pub fn from_header_map(headers: &HeaderMap) -> Option<Status> {
        let code = headers.get(GRPC_STATUS)?;
        let code = parse_decimal_u32(code.as_bytes()).map_or(Code::Unknown, Code::from_u32);
        let message = match headers.get(GRPC_MESSAGE) {
            Some(value) => {
                let value = value.as_bytes();
                // Decoding never lengthens ASCII; lossy UTF-8 repair may, so cut again after.
                let mut message = percent_decode_message(&value[..value.len().min(STATUS_MESSAGE_BYTES_MAX)]);
                truncate_at_char_boundary(&mut message, STATUS_MESSAGE_BYTES_MAX);
                message
            }
            None => String::new(),
        };
        let retry_pushback = headers
            .get(GRPC_RETRY_PUSHBACK_MS)
            .and_then(|value| parse_decimal_u64(value.as_bytes()))
            .map(Duration::from_millis);
        let retry_info = retry_info_from_header_map(headers);
        Some(Status { code, message, leader: leader_hint_from_header_map(headers), retry_pushback, retry_info })
    }
}

/// `delay` as a `google.protobuf.Duration`, saturating (a delay past
/// `i64::MAX` seconds is never meant).
fn duration_proto(delay: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
        nanos: delay.subsec_nanos() as i32,
    }
}

/// The values of [`GOOGLE_RPC_RETRY_INFO_BIN`] and
/// [`GRPC_STATUS_DETAILS_BIN`] for a status of `code` and `message` that
/// asks for a retry after `delay`.
fn retry_info_values(code: Code, message: String, delay: Duration) -> (HeaderValue, HeaderValue) {
    use base64::Engine as _;
    use prost::Message as _;
    let retry_info = RetryInfo { retry_delay: Some(duration_proto(delay)) }.encode_to_vec();
    let details = RpcStatus {
        code: i32::from(code as u8),
        message,
        details: vec![prost_types::Any { type_url: RETRY_INFO_TYPE_URL.to_string(), value: retry_info.clone() }],
    }
    .encode_to_vec();
    let binary = |bytes: &[u8]| {
        // Base64 is visible ASCII, valid in any header value.
        HeaderValue::try_from(base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes))
            .expect("base64 is visible ASCII")
    };
    (binary(&retry_info), binary(&details))
}

/// A binary metadata value decoded: base64, padded or not.
fn binary_value(value: &HeaderValue) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let text = value.as_bytes();
    let unpadded = &text[..text.iter().rposition(|&byte| byte != b'=').map_or(0, |last| last + 1)];
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(unpadded).ok()
}

/// The retry delay a status's trailers carry: [`GOOGLE_RPC_RETRY_INFO_BIN`],
/// else the first `RetryInfo` among the details of
/// [`GRPC_STATUS_DETAILS_BIN`]; `None` if neither is there and well formed.
fn retry_info_from_header_map(headers: &HeaderMap) -> Option<Duration> {
    use prost::Message as _;
    let delay = |info: RetryInfo| {
        let delay = info.retry_delay?;
        Some(Duration::new(u64::try_from(delay.seconds).ok()?, u32::try_from(delay.nanos).ok()?))
    };
    if let Some(bytes) = headers.get(GOOGLE_RPC_RETRY_INFO_BIN).and_then(binary_value) {
        return RetryInfo::decode(bytes.as_slice()).ok().and_then(delay);
    }
    let details = RpcStatus::decode(headers.get(GRPC_STATUS_DETAILS_BIN).and_then(binary_value)?.as_slice()).ok()?;
    let any = details.details.into_iter().find(|any| any.type_url == RETRY_INFO_TYPE_URL)?;
    RetryInfo::decode(any.value.as_slice()).ok().and_then(delay)
}

/// `addr` as the value of [`WORMDB_LEADER_ADDR`]: `None` unless it is 1 to
/// [`LEADER_HINT_ADDR_BYTES_MAX`] bytes of visible ASCII (no space, which
/// no `HOST:PORT` holds).
fn leader_addr_value(addr: &[u8]) -> Option<HeaderValue> {
    let visible = addr.iter().all(|byte| byte.is_ascii_graphic());
    if addr.is_empty() || addr.len() > LEADER_HINT_ADDR_BYTES_MAX || !visible {
        return None;
    }
    HeaderValue::from_bytes(addr).ok()
}

/// The [`LeaderHint`] in `headers`: all three trailers present and well
/// formed, or `None`. A term alone (the leader unknown) is no hint.
fn leader_hint_from_header_map(headers: &HeaderMap) -> Option<LeaderHint> {
    let leader_id = parse_decimal_u32(headers.get(WORMDB_LEADER_ID)?.as_bytes())?;
    let term = parse_decimal_u64(headers.get(WORMDB_TERM)?.as_bytes())?;
    let addr = headers.get(WORMDB_LEADER_ADDR)?.as_bytes();
    leader_addr_value(addr)?;
    // Checked above: visible ASCII, so valid UTF-8.
    let addr = std::str::from_utf8(addr).ok()?.to_owned();
    Some(LeaderHint { leader_id, addr, term })
}

/// Whether the gRPC spec lets `byte` appear as itself in a `grpc-message`.
fn is_unreserved(byte: u8) -> bool {
    (0x20..=0x7e).contains(&byte) && byte != b'%'
}

const HEX_DIGITS: &[u8; 16] = b"0123456789ABCDEF";

/// `message` percent-encoded as the gRPC spec asks for `grpc-message`:
/// every byte outside `0x20..=0x7E`, and `%`, becomes `%XX` (upper-case
/// hex). Not bounded: see [`Status::to_header_map`] for the bounded form.
pub fn percent_encode_message(message: &str) -> String {
    percent_encode_bounded(message, usize::MAX)
}

/// Percent-encodes `message` if the result fits in `bytes_max` bytes;
/// otherwise encodes the longest run of whole characters that leaves room
/// for [`TRUNCATION_MARKER`] and appends it, so that the cut value still
/// decodes to valid UTF-8.
fn percent_encode_bounded(message: &str, bytes_max: usize) -> String {
    let bytes = message.as_bytes();
    let reserved = bytes.iter().filter(|&&byte| !is_unreserved(byte)).count();
    let encoded_bytes = bytes.len().saturating_add(2 * reserved);
    if reserved == 0 && encoded_bytes <= bytes_max {
        return message.to_owned();
    }
    let (budget, marker) = if encoded_bytes <= bytes_max {
        (encoded_bytes, "")
    } else if bytes_max >= TRUNCATION_MARKER.len() {
        (bytes_max - TRUNCATION_MARKER.len(), TRUNCATION_MARKER)
    } else {
        (0, "")
    };
    let mut encoded = String::with_capacity(budget + marker.len());
    let mut utf8 = [0_u8; 4];
    for character in message.chars() {
        let plain = character.is_ascii() && is_unreserved(character as u8);
        let character_bytes = if plain { 1 } else { 3 * character.len_utf8() };
        if encoded.len() + character_bytes > budget {
            break;
        }
        if plain {
            encoded.push(character);
            continue;
        }
        for &byte in character.encode_utf8(&mut utf8).as_bytes() {
            encoded.push('%');
            encoded.push(HEX_DIGITS[usize::from(byte >> 4)] as char);
            encoded.push(HEX_DIGITS[usize::from(byte & 0x0f)] as char);
        }
    }
    encoded.push_str(marker);
    debug_assert!(encoded.len() <= bytes_max);
    encoded
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// A `grpc-message` value percent-decoded, leniently as the spec asks of
/// receivers: a `%` not followed by two hex digits is kept as is, and
/// invalid UTF-8 is replaced with U+FFFD.
pub fn percent_decode_message(value: &[u8]) -> String {
    if !value.contains(&b'%') {
        return String::from_utf8_lossy(value).into_owned();
    }
    let mut decoded = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some(percent) = rest.iter().position(|&byte| byte == b'%') {
        decoded.extend_from_slice(&rest[..percent]);
        let escape = rest.get(percent + 1..percent + 3);
        match escape.and_then(|digits| Some(hex_value(digits[0])? << 4 | hex_value(digits[1])?)) {
            Some(byte) => {
                decoded.push(byte);
                rest = &rest[percent + 3..];
            }
            None => {
                decoded.push(b'%');
                rest = &rest[percent + 1..];
            }
        }
    }
    decoded.extend_from_slice(rest);
    match String::from_utf8(decoded) {
        Ok(message) => message,
        Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
    }
}

/// Cuts `text` to at most `bytes_max` bytes, at a character boundary.
fn truncate_at_char_boundary(text: &mut String, bytes_max: usize) {
    if text.len() <= bytes_max {
        return;
    }
    let mut end = bytes_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

/// ASCII decimal digits (1 to 10 of them) as a u32; `None` on anything else
/// or on overflow.
fn parse_decimal_u32(value: &[u8]) -> Option<u32> {
    if value.len() > 10 {
        return None;
    }
    u32::try_from(parse_decimal_u64(value)?).ok()
}

/// ASCII decimal digits (1 to 20 of them) as a u64; `None` on anything else
/// or on overflow.
fn parse_decimal_u64(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 20 {
        return None;
    }
    value.iter().try_fold(0_u64, |number, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        number.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// Most digits of a `grpc-timeout` value ("TimeoutValue → {positive integer
/// as ASCII string of at most 8 digits}").
const TIMEOUT_DIGITS_MAX: usize = 8;
/// The largest `grpc-timeout` number.
const TIMEOUT_VALUE_MAX: u64 = 99_999_999;

/// The `grpc-timeout` units, finest first, with their length in nanoseconds.
const TIMEOUT_UNITS: [(u8, u64); 6] = [
    (b'n', 1),
    (b'u', 1_000),
    (b'm', 1_000_000),
    (b'S', 1_000_000_000),
    (b'M', 60 * 1_000_000_000),
    (b'H', 3600 * 1_000_000_000),
];
// The largest value in the coarsest unit fits a Duration's nanoseconds.
const _: () = assert!((TIMEOUT_VALUE_MAX as u128) * (TIMEOUT_UNITS[5].1 as u128) < u64::MAX as u128 * 1_000_000_000);

/// A `grpc-timeout` value: 1 to 8 ASCII digits, then one unit of `H`
/// (hours), `M` (minutes), `S` (seconds), `m` (milliseconds), `u`
/// (microseconds) or `n` (nanoseconds). `None` if malformed.
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > TIMEOUT_DIGITS_MAX || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = digits.iter().fold(0_u64, |number, &digit| number * 10 + u64::from(digit - b'0'));
    let duration = match unit {
        b'H' => Duration::from_secs(number * 3600),
        b'M' => Duration::from_secs(number * 60),
        b'S' => Duration::from_secs(number),
        b'm' => Duration::from_millis(number),
        b'u' => Duration::from_micros(number),
        b'n' => Duration::from_nanos(number),
        _ => return None,
    };
    Some(duration)
}

/// `timeout` as a `grpc-timeout` value: in the finest unit whose count fits
/// 8 digits, rounded up, so that the peer's deadline is never earlier than
/// ours. Exact below 100 ms; otherwise off by less than one unit, which is
/// at most a hundred-thousandth of the timeout. Timeouts past 99,999,999 hours are
/// sent as that.
pub fn format_timeout(timeout: Duration) -> String {
    let nanos = timeout.as_nanos();
    for (unit, unit_nanos) in TIMEOUT_UNITS {
        let count = nanos.div_ceil(u128::from(unit_nanos));
        if count <= u128::from(TIMEOUT_VALUE_MAX) {
            return format!("{count}{}", unit as char);
        }
    }
    format!("{TIMEOUT_VALUE_MAX}H")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Codes, header round trips (non-ASCII, `%`, long messages), lenient
    //! decoding, and every `grpc-timeout` unit both ways.

    use proptest::prelude::*;

    use super::*;

    const ALL_CODES: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    #[test]
    fn codes_are_numbered_as_in_the_spec() {
        for (number, code) in ALL_CODES.into_iter().enumerate() {
            assert_eq!(code as u8 as usize, number);
            assert_eq!(Code::from_u32(number as u32), code);
        }
        assert_eq!(Code::from_u32(17), Code::Unknown);
        assert_eq!(Code::from_u32(u32::MAX), Code::Unknown);
        assert_eq!(Code::FailedPrecondition.as_str(), "FAILED_PRECONDITION");
        assert_eq!(Code::Ok.as_str(), "OK");
        assert_eq!(Code::Unauthenticated.as_str(), "UNAUTHENTICATED");
        assert_eq!(Code::DeadlineExceeded as u8, 4);
        assert_eq!(Code::Unavailable as u8, 14);
    }

    #[test]
    fn shorthand_constructors() {
        assert_eq!(Status::ok(), Status::new(Code::Ok, ""));
        assert_eq!(Status::invalid_argument("a").code, Code::InvalidArgument);
        assert_eq!(Status::failed_precondition("a").code, Code::FailedPrecondition);
        assert_eq!(Status::resource_exhausted("a").code, Code::ResourceExhausted);
        assert_eq!(Status::unimplemented("a").code, Code::Unimplemented);
        assert_eq!(Status::unavailable("a").code, Code::Unavailable);
        assert_eq!(Status::internal("a").code, Code::Internal);
        assert_eq!(Status::deadline_exceeded("a").code, Code::DeadlineExceeded);
        assert_eq!(Status::cancelled("a").code, Code::Cancelled);
        assert_eq!(Status::not_found("a"), Status::new(Code::NotFound, "a"));
        assert_eq!(Status::internal("boom").to_string(), "Internal: boom");
    }

    fn round_trip(status: &Status) -> Status {
        Status::from_header_map(&status.to_header_map()).unwrap()
    }

    fn unbase64(value: &HeaderValue) -> Vec<u8> {
        use base64::Engine as _;
        let text = value.to_str().unwrap();
        assert!(!text.ends_with('='), "binary metadata is sent unpadded: {text}");
        base64::engine::general_purpose::STANDARD_NO_PAD.decode(text).unwrap()
    }

    #[test]
    fn retry_info_goes_in_both_trailers_and_round_trips() {
        use prost::Message as _;
        let delay = Duration::new(2, 500_000_000);
        let status = Status::unavailable("over its rate: 100% é").with_retry_info(delay);
        let headers = status.to_header_map();
        assert_eq!(headers.get(GRPC_STATUS).unwrap(), "14");
        let retry_info =
            RetryInfo::decode(unbase64(headers.get(GOOGLE_RPC_RETRY_INFO_BIN).unwrap()).as_slice()).unwrap();
        assert_eq!(retry_info.retry_delay, Some(prost_types::Duration { seconds: 2, nanos: 500_000_000 }));
        let details = RpcStatus::decode(unbase64(headers.get(GRPC_STATUS_DETAILS_BIN).unwrap()).as_slice()).unwrap();
        assert_eq!(details.code, 14);
        assert_eq!(details.message, "over its rate: 100% é", "the message as grpc-message decodes");
        assert_eq!(details.details.len(), 1);
        assert_eq!(details.details[0].type_url, "type.googleapis.com/google.rpc.RetryInfo");
        assert_eq!(RetryInfo::decode(details.details[0].value.as_slice()).unwrap(), retry_info);
        assert_eq!(round_trip(&status), status);
        assert!(Status::unavailable("x").to_header_map().get(GRPC_STATUS_DETAILS_BIN).is_none(), "only when set");
        assert_eq!(round_trip(&Status::unavailable("x")).retry_info, None);
    }

    #[test]
    fn retry_info_details_carry_the_message_as_cut() {
        use prost::Message as _;
        let status = Status::unavailable("é".repeat(5000)).with_retry_info(Duration::from_secs(1));
        let headers = status.to_header_map();
        let details = RpcStatus::decode(unbase64(headers.get(GRPC_STATUS_DETAILS_BIN).unwrap()).as_slice()).unwrap();
        let sent = percent_decode_message(headers.get(GRPC_MESSAGE).unwrap().as_bytes());
        assert_eq!(details.message, sent);
        assert!(details.message.ends_with(TRUNCATION_MARKER));
    }

    #[test]
    fn retry_info_is_read_padded_from_either_trailer_and_garbage_is_ignored() {
        use base64::Engine as _;
        use prost::Message as _;
        let info = RetryInfo { retry_delay: Some(prost_types::Duration { seconds: 0, nanos: 250_000_000 }) };
        let padded = base64::engine::general_purpose::STANDARD.encode(info.encode_to_vec());
        let mut headers = Status::unavailable("x").to_header_map();
        headers.insert(GOOGLE_RPC_RETRY_INFO_BIN, HeaderValue::try_from(padded).unwrap());
        assert_eq!(Status::from_header_map(&headers).unwrap().retry_info, Some(Duration::from_millis(250)));

        let details = RpcStatus {
            code: 14,
            message: "x".into(),
            details: vec![
                prost_types::Any { type_url: "type.googleapis.com/google.rpc.DebugInfo".into(), value: vec![1, 2] },
                prost_types::Any { type_url: RETRY_INFO_TYPE_URL.into(), value: info.encode_to_vec() },
            ],
        };
        let mut headers = Status::unavailable("x").to_header_map();
        let value = base64::engine::general_purpose::STANDARD.encode(details.encode_to_vec());
        headers.insert(GRPC_STATUS_DETAILS_BIN, HeaderValue::try_from(value).unwrap());
        assert_eq!(Status::from_header_map(&headers).unwrap().retry_info, Some(Duration::from_millis(250)));

        for garbage in ["!!!", "AAAA", ""] {
            let mut headers = Status::unavailable("x").to_header_map();
            headers.insert(GOOGLE_RPC_RETRY_INFO_BIN, HeaderValue::from_static(garbage));
            headers.insert(GRPC_STATUS_DETAILS_BIN, HeaderValue::from_static(garbage));
            let read = Status::from_header_map(&headers).unwrap();
            assert_eq!(read.retry_info, None, "{garbage:?}");
        }
        let negative = RetryInfo { retry_delay: Some(prost_types::Duration { seconds: -1, nanos: 0 }) };
        let mut headers = Status::unavailable("x").to_header_map();
        let value = base64::engine::general_purpose::STANDARD_NO_PAD.encode(negative.encode_to_vec());
        headers.insert(GOOGLE_RPC_RETRY_INFO_BIN, HeaderValue::try_from(value).unwrap());
        assert_eq!(Status::from_header_map(&headers).unwrap().retry_info, None, "a negative delay is no delay");
    }

    #[test]
    fn status_round_trips_through_headers() {
        for code in ALL_CODES {
            for message in ["", "plain ascii", "100% done", "%", "%%41", "héllo wörld", "日本語 ✓ 🦀", "tab\there\nnl"]
            {
                let status = Status::new(code, message);
                assert_eq!(round_trip(&status), status, "{status:?}");
            }
        }
        let headers = Status::ok().to_header_map();
        assert_eq!(headers.get(GRPC_STATUS).unwrap(), "0");
        assert!(headers.get(GRPC_MESSAGE).is_none(), "no grpc-message for an empty message");
    }

    #[test]
    fn header_values_are_percent_encoded() {
        let headers = Status::failed_precondition("expected seq 42: 100% é").to_header_map();
        assert_eq!(headers.get(GRPC_STATUS).unwrap(), "9");
        assert_eq!(headers.get(GRPC_MESSAGE).unwrap(), "expected seq 42: 100%25 %C3%A9");
    }

    #[test]
    fn spec_examples() {
        assert_eq!(percent_encode_message("abc ~"), "abc ~");
        assert_eq!(percent_encode_message("a%b"), "a%25b");
        assert_eq!(percent_encode_message("\n\x7f"), "%0A%7F");
        assert_eq!(percent_encode_message("€"), "%E2%82%AC");
        assert_eq!(percent_decode_message(b"%E2%82%ac"), "€", "hex digits in either case");
    }

    #[test]
    fn lenient_decoding() {
        assert_eq!(percent_decode_message(b"100%"), "100%");
        assert_eq!(percent_decode_message(b"%4"), "%4");
        assert_eq!(percent_decode_message(b"%zz%41"), "%zzA");
        assert_eq!(percent_decode_message(b"%%41"), "%A");
        assert_eq!(percent_decode_message(b"%FF ok"), "\u{fffd} ok");
        assert_eq!(percent_decode_message(b"raw \xc3\xa9 \xff"), "raw é \u{fffd}");
        assert_eq!(percent_decode_message(b""), "");
    }

    #[test]
    fn long_messages_are_truncated_at_a_character_boundary() {
        for message in ["x".repeat(10_000), "é".repeat(10_000), "%".repeat(10_000), format!("a{}", "日".repeat(5000))]
        {
            let headers = Status::internal(message.clone()).to_header_map();
            let value = headers.get(GRPC_MESSAGE).unwrap().as_bytes();
            assert!(value.len() <= STATUS_MESSAGE_BYTES_MAX, "{} bytes", value.len());
            assert!(value.len() > STATUS_MESSAGE_BYTES_MAX - 12, "cut close to the bound");
            assert!(value.ends_with(TRUNCATION_MARKER.as_bytes()));
            let decoded = Status::from_header_map(&headers).unwrap().message;
            let kept = decoded.strip_suffix(TRUNCATION_MARKER).unwrap();
            assert!(message.starts_with(kept), "a prefix of the message, whole characters");
        }
        // Exactly at the bound: sent whole, with no marker.
        let message = "y".repeat(STATUS_MESSAGE_BYTES_MAX);
        assert_eq!(round_trip(&Status::internal(message.clone())).message, message);
        let message = format!("{}abcd", "é".repeat((STATUS_MESSAGE_BYTES_MAX - 4) / 6));
        assert_eq!(percent_encode_message(&message).len(), STATUS_MESSAGE_BYTES_MAX);
        assert_eq!(round_trip(&Status::internal(message.clone())).message, message);
    }

    #[test]
    fn long_messages_from_a_peer_are_bounded() {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_STATUS, HeaderValue::from_static("13"));
        headers.insert(GRPC_MESSAGE, HeaderValue::try_from("z".repeat(100_000)).unwrap());
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code, Code::Internal);
        assert_eq!(status.message.len(), STATUS_MESSAGE_BYTES_MAX);
    }

    #[test]
    fn status_from_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(Status::from_header_map(&headers), None, "no grpc-status");
        headers.insert(GRPC_MESSAGE, HeaderValue::from_static("orphan"));
        assert_eq!(Status::from_header_map(&headers), None, "a message alone is no status");
        for (value, code) in [("0", Code::Ok), ("16", Code::Unauthenticated), ("99", Code::Unknown)] {
            headers.insert(GRPC_STATUS, HeaderValue::from_static(value));
            assert_eq!(Status::from_header_map(&headers), Some(Status::new(code, "orphan")));
        }
        for malformed in ["", "abc", "+3", "-1", " 3", "99999999999"] {
            headers.insert(GRPC_STATUS, HeaderValue::from_static(malformed));
            assert_eq!(Status::from_header_map(&headers).unwrap().code, Code::Unknown, "{malformed:?}");
        }
    }

    fn hint(leader_id: u32, addr: &str, term: u64) -> LeaderHint {
        LeaderHint { leader_id, addr: addr.to_owned(), term }
    }

    #[test]
    fn a_leader_hint_round_trips_as_three_trailers() {
        let status = Status::not_leader("not the leader of group 3", Some(hint(2, "10.0.0.2:50051", 7)));
        assert_eq!(status.code, Code::Unavailable);
        let headers = status.to_header_map();
        assert_eq!(headers.get(GRPC_STATUS).unwrap(), "14");
        assert_eq!(headers.get(WORMDB_LEADER_ID).unwrap(), "2");
        assert_eq!(headers.get(WORMDB_LEADER_ADDR).unwrap(), "10.0.0.2:50051");
        assert_eq!(headers.get(WORMDB_TERM).unwrap(), "7");
        assert_eq!(round_trip(&status), status);
        for hint in [
            hint(0, "[::1]:1", 0),
            hint(u32::MAX, "node-3.tier.example:50051", u64::MAX),
            hint(5, &"a".repeat(LEADER_HINT_ADDR_BYTES_MAX), 1),
        ] {
            let status = Status::not_leader("", Some(hint));
            assert_eq!(round_trip(&status), status);
        }
        assert_eq!(
            status.to_string(),
            "Unavailable: not the leader of group 3 (leader 2 at 10.0.0.2:50051, term 7)",
            "logs show where a refusal pointed"
        );
    }

    #[test]
    fn a_retry_pushback_round_trips_in_whole_milliseconds_rounded_up() {
        let status = Status::resource_exhausted_for("over the rate", Duration::from_micros(1500));
        let headers = status.to_header_map();
        assert_eq!(headers.get(GRPC_RETRY_PUSHBACK_MS).unwrap(), "2");
        let back = Status::from_header_map(&headers).unwrap();
        assert_eq!((back.code, back.retry_pushback), (Code::ResourceExhausted, Some(Duration::from_millis(2))));
        assert!(Status::resource_exhausted("full").to_header_map().get(GRPC_RETRY_PUSHBACK_MS).is_none());
    }

    #[test]
    fn no_hint_sends_no_leader_trailers() {
        let status = Status::not_leader("election under way", None);
        assert_eq!(status, Status::unavailable("election under way"));
        let headers = status.to_header_map();
        for name in [WORMDB_LEADER_ID, WORMDB_LEADER_ADDR, WORMDB_TERM] {
            assert!(headers.get(name).is_none(), "{name}");
        }
        assert_eq!(round_trip(&status).leader, None);
        // An address that cannot travel whole is not sent at all.
        for addr in ["", "has space:1", "tab\t:1", "é:1", &"a".repeat(LEADER_HINT_ADDR_BYTES_MAX + 1)] {
            let headers = Status::not_leader("x", Some(hint(1, addr, 1))).to_header_map();
            assert!(headers.get(WORMDB_LEADER_ID).is_none() && headers.get(WORMDB_TERM).is_none(), "{addr:?}");
            assert!(headers.get(WORMDB_LEADER_ADDR).is_none(), "{addr:?}");
        }
    }

    #[test]
    fn a_partial_or_malformed_hint_from_a_peer_is_dropped() {
        let complete = Status::not_leader("x", Some(hint(2, "10.0.0.2:50051", 7))).to_header_map();
        assert!(Status::from_header_map(&complete).unwrap().leader.is_some());
        // Any one trailer missing: a term alone (leader unknown) is no hint.
        for missing in [WORMDB_LEADER_ID, WORMDB_LEADER_ADDR, WORMDB_TERM] {
            let mut headers = complete.clone();
            headers.remove(missing);
            let status = Status::from_header_map(&headers).unwrap();
            assert_eq!((status.code, status.leader), (Code::Unavailable, None), "without {missing}");
        }
        for (name, value) in [
            (WORMDB_LEADER_ID, "-1"),
            (WORMDB_LEADER_ID, "4294967296"),
            (WORMDB_LEADER_ID, "two"),
            (WORMDB_LEADER_ID, ""),
            (WORMDB_TERM, "18446744073709551616"),
            (WORMDB_TERM, "7.0"),
            (WORMDB_TERM, " 7"),
            (WORMDB_LEADER_ADDR, ""),
            (WORMDB_LEADER_ADDR, "10.0.0.2 :50051"),
        ] {
            let mut headers = complete.clone();
            headers.insert(name, HeaderValue::from_static(value));
            assert_eq!(Status::from_header_map(&headers).unwrap().leader, None, "{name}: {value:?}");
        }
        let mut headers = complete.clone();
        let long = HeaderValue::try_from("a".repeat(LEADER_HINT_ADDR_BYTES_MAX + 1)).unwrap();
        headers.insert(WORMDB_LEADER_ADDR, long);
        assert_eq!(Status::from_header_map(&headers).unwrap().leader, None, "an address over the bound");
        let mut headers = complete.clone();
        headers.insert(WORMDB_TERM, HeaderValue::from_static("18446744073709551615"));
        assert_eq!(Status::from_header_map(&headers).unwrap().leader.unwrap().term, u64::MAX);
    }

    #[test]
    fn every_timeout_unit_parses() {
        assert_eq!(parse_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout(b"4S"), Some(Duration::from_secs(4)));
        assert_eq!(parse_timeout(b"5m"), Some(Duration::from_millis(5)));
        assert_eq!(parse_timeout(b"6u"), Some(Duration::from_micros(6)));
        assert_eq!(parse_timeout(b"7n"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_timeout(b"0n"), Some(Duration::ZERO));
        assert_eq!(parse_timeout(b"00000010S"), Some(Duration::from_secs(10)), "leading zeros, 8 digits");
        assert_eq!(parse_timeout(b"99999999H"), Some(Duration::from_secs(99_999_999 * 3600)));
    }

    #[test]
    fn malformed_timeouts_are_refused() {
        for malformed in [
            &b""[..],
            b"S",
            b"5",
            b"123456789S",
            b"999999999n",
            b"5s",
            b"5h",
            b"5x",
            b"-5S",
            b"+5S",
            b" 5S",
            b"5S ",
            b"5 S",
            b"1.5S",
            b"5SS",
            b"\xff5S",
            b"garbage",
        ] {
            assert_eq!(parse_timeout(malformed), None, "{:?}", String::from_utf8_lossy(malformed));
        }
    }

    #[test]
    fn timeouts_format_in_the_finest_unit_that_fits() {
        assert_eq!(format_timeout(Duration::ZERO), "0n");
        assert_eq!(format_timeout(Duration::from_nanos(99_999_999)), "99999999n");
        assert_eq!(format_timeout(Duration::from_millis(100)), "100000u");
        assert_eq!(format_timeout(Duration::from_secs(30)), "30000000u");
        assert_eq!(format_timeout(Duration::from_secs(1000)), "1000000m");
        assert_eq!(format_timeout(Duration::from_nanos(100_000_001)), "100001u", "rounded up");
        assert_eq!(format_timeout(Duration::from_secs(100_000)), "100000S");
        assert_eq!(format_timeout(Duration::from_secs(100_000_000)), "1666667M");
        assert_eq!(format_timeout(Duration::from_secs(6_000_000_000)), "1666667H");
        assert_eq!(format_timeout(Duration::MAX), "99999999H");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn timeout_format_parse_round_trip(nanos in prop_oneof![0_u64..200_000_000, any::<u64>()]) {
            let timeout = Duration::from_nanos(nanos);
            let text = format_timeout(timeout);
            prop_assert!(text.len() <= TIMEOUT_DIGITS_MAX + 1);
            let parsed = parse_timeout(text.as_bytes()).unwrap();
            prop_assert!(parsed >= timeout, "never earlier: {text}");
            prop_assert!(parsed - timeout <= timeout / 100_000, "{text} for {timeout:?}");
            if nanos < 100_000_000 {
                prop_assert_eq!(parsed, timeout);
            }
        }

        #[test]
        fn any_message_round_trips(message in ".{0,200}", code in 0_u32..17) {
            let status = Status::new(Code::from_u32(code), message);
            let received = round_trip(&status);
            prop_assert_eq!(received.code, status.code);
            if percent_encode_message(&status.message).len() <= STATUS_MESSAGE_BYTES_MAX {
                prop_assert_eq!(received.message, status.message);
            } else {
                // Up to 800 bytes of UTF-8, up to 2400 encoded: cut, at whole characters.
                let kept = received.message.strip_suffix(TRUNCATION_MARKER).unwrap();
                prop_assert!(status.message.starts_with(kept));
            }
        }

        #[test]
        fn any_leader_hint_round_trips(
            leader_id: u32,
            term: u64,
            addr in prop::collection::vec(0x21_u8..0x7f, 1..=LEADER_HINT_ADDR_BYTES_MAX),
            code in 0_u32..17,
        ) {
            let addr = String::from_utf8(addr).unwrap();
            let status = Status { leader: Some(hint(leader_id, &addr, term)), ..Status::new(Code::from_u32(code), "m") };
            prop_assert_eq!(round_trip(&status), status);
        }

        #[test]
        fn any_header_bytes_decode(value in prop::collection::vec(any::<u8>(), 0..100)) {
            let decoded = percent_decode_message(&value);
            if !value.contains(&b'%') && std::str::from_utf8(&value).is_ok() {
                prop_assert_eq!(decoded.as_bytes(), &value[..]);
            }
        }
    }
}
