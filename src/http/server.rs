//! The HTTP/1.1 API on hyper, driven by glommio: each core accepts on its
//! own `SO_REUSEPORT` socket and serves its connections; ingest goes to the
//! core's own shard, queries, tails and stats fan out to every core.
//!
//! Every request is authorized ([`crate::auth`]) from its headers before
//! its route runs, so a refused one is answered before its body is read;
//! connections over `--max-connections` are closed at accept.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures_channel::mpsc;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;

use super::budget::{BodyBudget, BodyReservation};
use super::{es, loki, metrics, ndjson, otlp, params};
use crate::auth::{self, Grant, Refusal};
use crate::codec::block;
use crate::ingest;
use crate::limits::{
    ACCEPT_RETRY_DELAY, HTTP_ENTRIES_PER_REQUEST_MAX, HTTP_STREAM_CHUNKS_BUFFERED, HTTP_STREAM_CHUNK_BYTES,
};
use crate::net::Peer;
use crate::node::peers::ShardReport;
use crate::node::{Core, InFlight, Refused, RefusedKind};
use crate::proto::WriteRequest;
use crate::query::{self, QuerySpec};
use crate::shard::{EntryFilter, Error};

/// The response body type: whole or streamed.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

const NDJSON: &str = "application/x-ndjson";

/// Accepts connections until cancelled, serving each on its own task (its
/// TLS handshake too, when `tls` is given); `auth` is this core's view of
/// the node's authentication.
pub async fn accept_loop(
    core: Rc<Core>,
    listener: glommio::net::TcpListener,
    tls: Option<Arc<crate::tls::NodeTls>>,
    auth: Rc<auth::Local>,
) {
    let body_budget = BodyBudget::new(core.config.max_body_bytes_in_flight);
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                glommio::timer::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        let Some(slot) = auth.guard().http_connections.admit_logged("http") else { continue };
        let _ = stream.set_nodelay(true);
        let addr = stream.peer_addr().ok();
        let core = core.clone();
        let auth = auth.clone();
        let body_budget = body_budget.clone();
        let header_read_timeout = core.config.header_read_timeout;
        let tls = tls.clone();
        glommio::spawn_local(async move {
            let config = tls.and_then(|tls| tls.config(crate::tls::Listener::Http));
            // A failed handshake ends the task, and frees its slot.
            let Some((stream, identity)) = crate::tls::accept(stream, config, crate::tls::Listener::Http).await else {
                return;
            };
            let peer = Arc::new(Peer { addr, identity });
            let io = TokioIo::new(crate::net::TokioStream::new(stream));
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                let core = core.clone();
                let auth = auth.clone();
                let body_budget = body_budget.clone();
                // Handlers find who sent the request among its extensions.
                request.extensions_mut().insert(peer.clone());
                async move { Ok::<_, Infallible>(handle(core, &body_budget, &auth, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(super::timer::GlommioTimer)
                .header_read_timeout(header_read_timeout)
                .serve_connection(io, service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(slot);
        })
        .detach();
    }
}

pub(super) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

pub(super) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message.to_string() }))
}

/// The answer to a refused request: 401 with `WWW-Authenticate: Bearer`
/// for a caller not known, 403 for one whose credential does not cover it.
fn refused(refusal: &Refusal) -> Response<Body> {
    if refusal.reason.is_unauthenticated() {
        let mut response = error(StatusCode::UNAUTHORIZED, &refusal.message);
        let challenge = match refusal.reason {
            auth::Reason::Unknown => "Bearer error=\"invalid_token\"",
            _ => "Bearer",
        };
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        response
    } else {
        error(StatusCode::FORBIDDEN, &refusal.message)
    }
}

/// Authorizes `request` from its headers (and its connection's peer).
fn authorize(auth: &auth::Local, request: &Request<Incoming>) -> Result<Grant, Refusal> {
    let need = auth::http_need(request.method().as_str(), request.uri().path());
    let peer = request.extensions().get::<Arc<Peer>>();
    let authorization = request.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    let call = format_args!("{} {}", request.method(), request.uri().path());
    auth.authorize(
        peer.and_then(|peer| peer.identity.as_ref()),
        authorization,
        need,
        &call,
        peer.and_then(|peer| peer.addr),
    )
}

/// Routes one request; `body_budget` is the core's budget of request body
/// bytes in flight, `auth` its view of the node's authentication.
pub async fn handle(
    core: Rc<Core>,
    body_budget: &Rc<BodyBudget>,
    auth: &auth::Local,
    request: Request<Incoming>,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let grant = match authorize(auth, &request) {
        Ok(grant) => grant,
        Err(refusal) => {
            let mut response = refused(&refusal);
            if is_es(&path) {
                es::mark(&mut response);
            }
            return response;
        }
    };
    match (request.method().clone(), path.as_str()) {
        (Method::POST, "/v1/entries") => ingest(core, body_budget, &grant, request).await,
        // The shippers' protocols (DESIGN.md section 11).
        (Method::POST, "/v1/logs") => otlp::export(core, body_budget, &grant, request).await,
        (Method::POST, "/loki/api/v1/push") => loki::push(core, body_budget, &grant, request).await,
        (Method::GET, "/ready") => loki::ready(&core).await,
        (Method::POST, "/v1/jsonline") => es::jsonline(core, body_budget, &grant, request).await,
        (_, path) if is_es(path) => es::handle(core, body_budget, &grant, request).await,
        (Method::GET, "/v1/entries") => query(core, request).await,
        (Method::GET, "/v1/tail") => tail(core, request).await,
        (Method::GET, "/v1/stats") => stats(core).await,
        (Method::GET, "/v1/cluster") => cluster(core).await,
        (Method::GET, "/metrics") => prometheus(core, auth).await,
        (Method::GET, "/healthz") => {
            let mut response = Response::new(full("ok\n"));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            response
        }
        (
            _,
            "/v1/entries" | "/v1/tail" | "/v1/stats" | "/v1/cluster" | "/metrics" | "/healthz" | "/v1/logs"
            | "/loki/api/v1/push" | "/ready" | "/v1/jsonline",
        ) => {
            let allow = match path.as_str() {
                "/v1/entries" => "GET, POST",
                "/v1/logs" | "/loki/api/v1/push" | "/v1/jsonline" => "POST",
                _ => "GET",
            };
            let mut response =
                error(StatusCode::METHOD_NOT_ALLOWED, format!("{} is not allowed on {path}", request.method()));
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
            response
        }
        _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

/// Whether `path` is under the Elasticsearch prefix `/es`.
fn is_es(path: &str) -> bool {
    path == "/es" || path.starts_with("/es/")
}

enum Format {
    Ndjson,
    Protobuf,
}

/// Counts a refusal and builds its response.
fn reject(core: &Core, status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    {
        let mut counters = core.counters.borrow_mut();
        let rejected = &mut counters.rejected;
        match status {
            StatusCode::BAD_REQUEST => rejected.malformed += 1,
            StatusCode::PAYLOAD_TOO_LARGE => rejected.too_large += 1,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => rejected.unsupported_media_type += 1,
            StatusCode::TOO_MANY_REQUESTS => rejected.backpressure += 1,
            StatusCode::SERVICE_UNAVAILABLE => rejected.shutting_down += 1,
            StatusCode::INSUFFICIENT_STORAGE => rejected.disk_full += 1,
            _ => rejected.internal += 1,
        }
    }
    let mut response = error(status, message);
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Maps a shard error to its HTTP status. Entries are named by their
/// 1-based position in the request (NDJSON line numbers are checked before
/// the shard sees the entries, so this is for protobuf requests).
fn shard_error(core: &Core, error: Error) -> Response<Body> {
    match error {
        Error::InvalidEntry { index, source } => {
            reject(core, StatusCode::BAD_REQUEST, format!("entry {}: {source}", index + 1))
        }
        Error::InvalidAppend(message) => reject(core, StatusCode::PAYLOAD_TOO_LARGE, message),
        error @ Error::Backpressure { .. } => reject(core, StatusCode::TOO_MANY_REQUESTS, error),
        error @ Error::DiskFull { .. } => reject(core, StatusCode::INSUFFICIENT_STORAGE, error),
        Error::Closed => reject(core, StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        error => {
            tracing::error!(%error, "ingest failed");
            reject(core, StatusCode::INTERNAL_SERVER_ERROR, error)
        }
    }
}

/// The refusal of `count` entries over their token's rate
/// (`rate_entries_per_s`), with the wait after which the same request is
/// let through; `None` when within it (or the token has no rate).
pub(super) fn rate_refusal(grant: &Grant, count: usize) -> Option<Refused> {
    let rate = grant.rate()?;
    let wait = rate.take(count as u64).err()?;
    Some(Refused::over_rate(grant.holder(), rate.entries_per_s(), wait))
}

/// The 429 of an ingest over its token's rate, with `Retry-After`.
fn over_rate(core: &Core, grant: &Grant, count: usize) -> Option<Response<Body>> {
    let refused = rate_refusal(grant, count)?;
    let mut response = reject(core, StatusCode::TOO_MANY_REQUESTS, &refused.message);
    let seconds = refused.retry_after_seconds().unwrap_or(1);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    Some(response)
}

async fn ingest(
    core: Rc<Core>,
    body_budget: &Rc<BodyBudget>,
    grant: &Grant,
    request: Request<Incoming>,
) -> Response<Body> {
    let _in_flight = InFlight::new(&core);
    if core.closing.get() {
        return reject(&core, StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap_or("?").split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let format = match content_type.as_deref() {
        None | Some("application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/json") => {
            Format::Ndjson
        }
        Some("application/x-protobuf" | "application/protobuf") => Format::Protobuf,
        Some(other) => {
            return reject(
                &core,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content-type {other:?} is not supported: use application/x-ndjson or application/x-protobuf"),
            )
        }
    };
    let (body, body_bytes, _reservation) = match read_body(&core, body_budget, request).await {
        Ok(read) => read,
        Err(refused) => {
            let status = StatusCode::from_u16(refused.kind.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            return reject(&core, status, refused);
        }
    };
    let appended = match format {
        Format::Ndjson => {
            let batch = match ndjson::parse_ndjson(&body, HTTP_ENTRIES_PER_REQUEST_MAX) {
                Ok(batch) => batch,
                Err(line_error) => return reject(&core, StatusCode::BAD_REQUEST, line_error),
            };
            let mut tags = Vec::new();
            let entries = batch.entry_refs(&mut tags);
            if entries.is_empty() {
                return reject(&core, StatusCode::BAD_REQUEST, "no entries in the body");
            }
            if let Some(response) = over_rate(&core, grant, entries.len()) {
                return response;
            }
            if core.tier.is_some() {
                return tier_ingest(&core, &entries, body_bytes).await;
            }
            core.shard.append(&entries).map(|wait| (wait, entries.len()))
        }
        Format::Protobuf => {
            let write: WriteRequest = match prost::Message::decode(body.clone()) {
                Ok(write) => write,
                Err(failure) => return reject(&core, StatusCode::BAD_REQUEST, format!("bad WriteRequest: {failure}")),
            };
            if write.entries.len() > HTTP_ENTRIES_PER_REQUEST_MAX {
                return reject(&core, StatusCode::PAYLOAD_TOO_LARGE, "too many entries in one request");
            }
            if write.entries.is_empty() {
                return reject(&core, StatusCode::BAD_REQUEST, "no entries in the WriteRequest");
            }
            if let Some(response) = over_rate(&core, grant, write.entries.len()) {
                return response;
            }
            if core.tier.is_some() {
                return tier_ingest_entries(&core, write.entries, body_bytes).await;
            }
            block::with_log_entry_refs(&write.entries, |entries| core.shard.append(entries))
                .map(|wait| (wait, write.entries.len()))
        }
    };
    let (wait, count) = match appended {
        Ok(appended) => appended,
        Err(failure) => return shard_error(&core, failure),
    };
    match wait.durable().await {
        Ok(range) => ingested(&core, core.shard.config().shard_id, (range.first, range.last), count, body_bytes),
        Err(failure) => shard_error(&core, failure),
    }
}

/// A request body read whole and decoded from its `Content-Encoding`
/// (gzip or identity), within `--max-body-bytes` before and after
/// inflating it, and within the core's budget of body bytes in flight: the
/// declared length is reserved before a byte is read, a chunked body
/// reserves as it arrives, and the inflated bytes are reserved too. The
/// reservation must be held until the request is answered. Also returns the
/// bytes as received, for the counters.
pub(super) async fn read_body(
    core: &Core,
    body_budget: &Rc<BodyBudget>,
    request: Request<Incoming>,
) -> Result<(Bytes, u64, BodyReservation), Refused> {
    let content_encoding = request.headers().get(header::CONTENT_ENCODING).map(|value| value.to_str().unwrap_or("?"));
    let encoding = ingest::body::encoding(content_encoding).map_err(body_refused)?;
    let max_body = core.config.max_body_bytes;
    let too_large = || Refused::too_large(format!("body is over the {max_body}-byte limit"));
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_body as u64) {
        return Err(too_large());
    }
    let over_budget = || {
        Refused::new(
            RefusedKind::Backpressure,
            format!(
                "request bodies in flight on this core would pass {} bytes (--max-body-bytes-in-flight, at most \
                 HTTP_BODY_BYTES_IN_FLIGHT_PER_CORE_MAX); retry later",
                body_budget.max_bytes()
            ),
        )
    };
    let Some(mut reservation) = body_budget.reserve(declared.unwrap_or(0) as usize) else {
        return Err(over_budget());
    };
    let mut incoming = request.into_body();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received = 0usize;
    while let Some(frame) = incoming.frame().await {
        let data = match frame.map(Frame::into_data) {
            Ok(Ok(data)) => data,
            Ok(Err(_trailers)) => continue,
            Err(failure) => return Err(Refused::malformed(format!("reading the body failed: {failure}"))),
        };
        received += data.len();
        if received > max_body {
            return Err(too_large());
        }
        if !reservation.grow_to(received) {
            return Err(over_budget());
        }
        chunks.push(data);
    }
    let body = match chunks.len() {
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    };
    if encoding == ingest::body::Encoding::Identity {
        return Ok((body, received as u64, reservation));
    }
    let decoded = ingest::body::decode(encoding, body, max_body).map_err(body_refused)?;
    if !reservation.grow_to(received + decoded.len()) {
        return Err(over_budget());
    }
    Ok((decoded, received as u64, reservation))
}

/// The refusal of a body that cannot be decoded.
fn body_refused(error: ingest::body::BodyError) -> Refused {
    use ingest::body::BodyError;
    let kind = match &error {
        BodyError::UnsupportedEncoding(_) => RefusedKind::UnsupportedMediaType,
        BodyError::Corrupt { .. } => RefusedKind::Malformed,
        BodyError::TooLarge { .. } => RefusedKind::TooLarge,
    };
    Refused::new(kind, error.to_string())
}

/// The answer to a refused request of a shipper's protocol whose errors
/// are plain JSON (`{"error": ...}`), with `Retry-After` on retryable ones.
/// (Counting is [`Core::store`]'s, or the caller's for refusals before it.)
pub(super) fn refused_json(refused: &Refused) -> Response<Body> {
    let status = StatusCode::from_u16(refused.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = error(status, &refused.message);
    if let Some(seconds) = refused.retry_after_seconds() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// Counts a successful ingest and answers it: its shard (or group) and
/// the (first, last) seq of its entries.
fn ingested(
    core: &Core,
    shard: u32,
    (first_seq, last_seq): (u64, u64),
    count: usize,
    body_bytes: u64,
) -> Response<Body> {
    {
        let mut counters = core.counters.borrow_mut();
        counters.ingest_requests += 1;
        counters.ingest_entries += count as u64;
        counters.ingest_bytes += body_bytes;
    }
    json(
        StatusCode::OK,
        &serde_json::json!({ "shard": shard, "first_seq": first_seq, "last_seq": last_seq, "count": count }),
    )
}

/// Ingest on a tier member: the entries are checked here, then replicated
/// through this core's group (forwarded to its leader's node when needed)
/// and answered once committed, with ids `(0, group, seq)`.
async fn tier_ingest(core: &Rc<Core>, entries: &[crate::shard::EntryRef<'_>], body_bytes: u64) -> Response<Body> {
    tier_ingest_entries(core, crate::tier::direct_entries(entries), body_bytes).await
}

async fn tier_ingest_entries(core: &Rc<Core>, entries: Vec<crate::proto::LogEntry>, body_bytes: u64) -> Response<Body> {
    let Some(replica) = core.tier.clone() else {
        return reject(core, StatusCode::INTERNAL_SERVER_ERROR, "not a tier member");
    };
    let checked = block::with_log_entry_refs(&entries, |refs| {
        refs.iter().enumerate().try_for_each(|(index, entry)| {
            block::validate_entry(entry).map_err(|failure| format!("entry {}: {failure}", index + 1))
        })
    });
    if let Err(message) = checked {
        return reject(core, StatusCode::BAD_REQUEST, message);
    }
    let count = entries.len();
    match replica.write(entries).await {
        Ok(seqs) => ingested(core, replica.group_id(), seqs, count, body_bytes),
        Err(failure) => {
            use crate::tier::Error as TierError;
            let status = match &failure {
                TierError::Malformed(_) | TierError::Replication(crate::replication::Error::Malformed(_)) => {
                    StatusCode::BAD_REQUEST
                }
                TierError::Exhausted(_) => StatusCode::TOO_MANY_REQUESTS,
                // One write is one Raft entry, whatever --max-body-bytes lets in.
                TierError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                TierError::Log(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut response = reject(core, status, &failure);
            if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            response
        }
    }
}

/// `GET /v1/cluster`: the tier as this node sees it.
async fn cluster(core: Rc<Core>) -> Response<Body> {
    let reports = match reports(&core).await {
        Ok(reports) => reports,
        Err(response) => return response,
    };
    let members = core.tier.as_ref().map(|replica| replica.members());
    json(StatusCode::OK, &crate::node::cluster::document(core.config.node_id, members.as_ref(), &reports))
}

/// A streamed NDJSON response fed by a channel of chunks.
fn streamed(receiver: mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = receiver.map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    response
}

async fn query(core: Rc<Core>, request: Request<Incoming>) -> Response<Body> {
    let allowed = ["from", "to", "tag", "field", "limit", "direction", "q", "contains"];
    let params = match params::parse(request.uri().query(), &allowed) {
        Ok(params) => params,
        Err(message) => return reject(&core, StatusCode::BAD_REQUEST, message),
    };
    core.counters.borrow_mut().queries += 1;
    let spec = Arc::new(QuerySpec {
        tags: params.tags,
        fields: params.fields,
        from_ts: params.from_ts,
        to_ts: params.to_ts,
        limit: params.limit,
        backward: params.backward,
        words: params.words,
        contains: params.contains,
    });
    let mut merged = match core.query(spec).await {
        Ok(merged) => merged,
        Err(query::Error::ShuttingDown) => return reject(&core, StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        Err(error @ query::Error::Shard { .. }) => return reject(&core, StatusCode::INTERNAL_SERVER_ERROR, error),
    };
    let (mut body, receiver) = mpsc::channel::<Bytes>(HTTP_STREAM_CHUNKS_BUFFERED);
    glommio::spawn_local(async move {
        let mut out = Vec::with_capacity(HTTP_STREAM_CHUNK_BYTES + 4096);
        loop {
            let entry = match merged.next().await {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(error) => {
                    out.extend_from_slice(serde_json::json!({ "error": error.to_string() }).to_string().as_bytes());
                    out.push(b'\n');
                    let _ = body.send(Bytes::from(out)).await;
                    return;
                }
            };
            ndjson::write_entry_line(&mut out, &entry);
            if out.len() >= HTTP_STREAM_CHUNK_BYTES {
                let chunk =
                    Bytes::from(std::mem::replace(&mut out, Vec::with_capacity(HTTP_STREAM_CHUNK_BYTES + 4096)));
                if body.send(chunk).await.is_err() {
                    return; // the client went away; dropping the streams stops the shards
                }
            }
        }
        if !out.is_empty() {
            let _ = body.send(Bytes::from(out)).await;
        }
    })
    .detach();
    streamed(receiver)
}

async fn tail(core: Rc<Core>, request: Request<Incoming>) -> Response<Body> {
    let params = match params::parse(request.uri().query(), &["tag", "field", "q", "contains"]) {
        Ok(params) => params,
        Err(message) => return reject(&core, StatusCode::BAD_REQUEST, message),
    };
    // Every predicate is checked on each shard's core, as for a query.
    let filter = EntryFilter {
        tags: params.tags,
        fields: params.fields,
        words: params.words,
        contains: params.contains,
        ..EntryFilter::default()
    };
    let (streams, lag_flags) = match core.tail(Arc::new(filter)).await {
        Ok(subscription) => subscription,
        Err(shutting_down) => return reject(&core, StatusCode::SERVICE_UNAVAILABLE, shutting_down),
    };
    let (mut body, receiver) = mpsc::channel::<Bytes>(HTTP_STREAM_CHUNKS_BUFFERED);
    glommio::spawn_local(async move {
        let mut merged = futures_util::stream::select_all(streams);
        while let Some(entries) = merged.next().await {
            let mut out = Vec::new();
            for entry in &entries {
                ndjson::write_entry_line(&mut out, entry);
            }
            if !out.is_empty() && body.send(Bytes::from(out)).await.is_err() {
                return; // the client went away
            }
            if lag_flags.iter().any(|flag| flag.load(Ordering::Acquire)) {
                break;
            }
        }
        if lag_flags.iter().any(|flag| flag.load(Ordering::Acquire)) {
            let line = serde_json::json!({ "error": "tail fell behind and was disconnected; reconnect to resume" });
            let _ = body.send(Bytes::from(format!("{line}\n"))).await;
        }
    })
    .detach();
    streamed(receiver)
}

/// Every core's report, in shard order.
async fn reports(core: &Core) -> Result<Vec<ShardReport>, Response<Body>> {
    core.reports().await.map_err(|shutting_down| error(StatusCode::SERVICE_UNAVAILABLE, shutting_down))
}

async fn stats(core: Rc<Core>) -> Response<Body> {
    let reports = match reports(&core).await {
        Ok(reports) => reports,
        Err(response) => return response,
    };
    let shards: Vec<serde_json::Value> = reports
        .iter()
        .map(|report| {
            let stats = &report.stats;
            serde_json::json!({
                "shard": stats.shard,
                "last_seq": stats.last_seq,
                "entries": stats.entries,
                "raw_bytes": stats.raw_bytes,
                "disk_bytes": stats.disk_bytes,
                "segments": stats.segments,
                "commits": stats.commits,
                "syncs": stats.syncs,
                "blocks_read": stats.blocks_read,
                "pending_appends": stats.pending_appends,
                "cold": {
                    "segments": stats.cold_segments,
                    "block_bytes_before": stats.cold_block_bytes_before,
                    "block_bytes_after": stats.cold_block_bytes_after,
                    "raw_bytes": stats.cold_raw_bytes,
                    "busy_us": stats.cold_busy_us,
                    "failures": stats.cold_failures,
                },
                "ingest_entries": report.http.ingest_entries,
                "replication": report.replication.follower.as_ref().map(|follower| serde_json::json!({
                    "acked_seq": follower.acked_seq,
                    "lag_entries": follower.lag_entries,
                    "lag_bytes": follower.lag_bytes,
                    "connected": follower.connected,
                    "sessions": follower.sessions,
                    "sent_entries": follower.sent_entries,
                    "last_error": follower.last_error,
                    "leader_addr": follower.leader_addr.map(|addr| addr.to_string()),
                })),
                "torn_tail": report.torn_tail.as_ref().map(|torn| serde_json::json!({
                    "path": torn.path.display().to_string(),
                    "offset": torn.offset,
                    "bytes": torn.bytes,
                    "reason": torn.reason,
                })),
            })
        })
        .collect();
    let watermarks: Vec<serde_json::Value> = reports
        .iter()
        .flat_map(|report| {
            report.replication.archive.iter().map(|(&(follower_id, shard), pair)| {
                serde_json::json!({
                    "follower_id": follower_id,
                    "shard": shard,
                    "owner_shard": report.stats.shard,
                    "acked_seq": pair.watermark,
                    "written": pair.written,
                    "duplicates": pair.duplicates,
                })
            })
        })
        .collect();
    let leaders = &core.config.leaders;
    let follower = (!leaders.is_empty()).then(|| {
        // One address as before; a tier's list as it was given (comma-separated).
        let leader = leaders.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let followers = reports.iter().filter_map(|report| report.replication.follower.as_ref());
        let (lag_entries, lag_bytes) =
            followers.fold((0, 0), |(entries, bytes), f| (entries + f.lag_entries, bytes + f.lag_bytes));
        serde_json::json!({ "leader": leader, "lag_entries": lag_entries, "lag_bytes": lag_bytes })
    });
    json(
        StatusCode::OK,
        &serde_json::json!({
            "node_id": core.config.node_id,
            "shards": shards,
            "follower": follower,
            "watermarks": watermarks,
        }),
    )
}

async fn prometheus(core: Rc<Core>, auth: &auth::Local) -> Response<Body> {
    match reports(&core).await {
        Ok(reports) => {
            let mut text = metrics::render(core.config.node_id, &reports);
            metrics::render_auth(&mut text, core.config.node_id, &auth.guard().counters());
            let failures =
                crate::tls::Listener::ALL.map(|listener| (listener.label(), crate::tls::handshake_failures(listener)));
            metrics::render_tls(&mut text, core.config.node_id, &failures);
            let mut response = Response::new(full(text));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            response
        }
        Err(response) => response,
    }
}
