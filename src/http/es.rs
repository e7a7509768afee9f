//! The Elasticsearch bulk API under `/es` and JSON lines at
//! `/v1/jsonline` (DESIGN.md section 11; docs/ingest.md for the mapping).
//!
//! A shipper pointed at `http://HOST:8080/es` first probes what it takes
//! for an Elasticsearch 8 cluster (`GET /`, `/_license`, templates, ILM
//! policies), then sends `_bulk` requests. The probes get the smallest
//! answers that satisfy the shippers; every answer under `/es` carries
//! `X-Elastic-Product: Elasticsearch`, without which the official clients
//! (8.x) refuse to talk.
//!
//! **All or nothing, with per-item statuses.** The bulk answer has a status
//! per document, and shippers act on it: they retry the items marked 429
//! and drop the ones marked 400. So a bulk request is stored like this: the
//! documents that cannot be stored (bad JSON, a bad time, over a limit,
//! `delete`, `update`) get a 400 each; all the others go to storage in ONE
//! [`Core::store`] call, which keeps them all or none and answers once they
//! are durable, so they are either all 201 or the request is refused whole:
//! a refusal of storage (backpressure, shutting down, disk full, the token's
//! rate) answers the whole request with its status (`429` or `503` with
//! `Retry-After`, `507`, ...) in Elasticsearch's error form, and the client
//! sends it again whole. A body whose structure cannot be followed (an
//! action line that is not JSON, an unknown action, an action without its
//! document) is refused whole with `400`, nothing stored.
//!
//! JSON lines have no per-line status: one bad line refuses the request
//! (`400` naming the line) and nothing of it is stored.

use std::rc::Rc;
use std::time::Instant;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::budget::{BodyBudget, BodyReservation};
use super::params::percent_decode;
use super::server::{full, json, rate_refusal, read_body, refused_json, Body};
use crate::auth::Grant;
use crate::ingest::es::{self as bulk_body, BulkError, Item};
use crate::ingest::fields::{self, FieldChoice};
use crate::ingest::{jsonline as jsonline_body, Protocol};
use crate::limits::HTTP_ENTRIES_PER_REQUEST_MAX;
use crate::node::{Core, InFlight, Refused, RefusedKind};

/// The Elasticsearch version wormdb answers as: a recent 8.x, which every
/// shipper that speaks Elasticsearch 8 accepts.
pub const ES_VERSION: &str = "8.17.0";

/// The header the official clients (8.x) insist on.
const PRODUCT_HEADER: &str = "x-elastic-product";

/// Marks a response as coming from "Elasticsearch" (every answer under
/// `/es`, refusals of authentication included).
pub fn mark(response: &mut Response<Body>) {
    response.headers_mut().insert(PRODUCT_HEADER, HeaderValue::from_static("Elasticsearch"));
}

/// Every request under `/es`.
pub async fn handle(
    core: Rc<Core>,
    body_budget: &Rc<BodyBudget>,
    grant: &Grant,
    request: Request<Incoming>,
) -> Response<Body> {
    let mut response = route(core, body_budget, grant, request).await;
    mark(&mut response);
    response
}

async fn route(
    core: Rc<Core>,
    body_budget: &Rc<BodyBudget>,
    grant: &Grant,
    request: Request<Incoming>,
) -> Response<Body> {
    let path = request.uri().path().strip_prefix("/es").unwrap_or("").trim_matches('/').to_owned();
    let segments: Vec<&str> = if path.is_empty() { Vec::new() } else { path.split('/').collect() };
    let method = request.method().clone();
    let read = method == Method::GET || method == Method::HEAD;
    match segments.as_slice() {
        [] if read => json(StatusCode::OK, &version_document(&core)),
        [] => not_allowed(&method, "GET, HEAD"),
        ["_bulk"] | [_, "_bulk"] if method == Method::POST || method == Method::PUT => {
            let index = match segments.as_slice() {
                [index, _] => match percent_decode(index) {
                    Ok(index) => Some(index),
                    Err(message) => {
                        core.count_refused(Protocol::EsBulk, RefusedKind::Malformed);
                        return es_error(StatusCode::BAD_REQUEST, "illegal_argument_exception", &message);
                    }
                },
                _ => None,
            };
            bulk(core, body_budget, grant, request, index).await
        }
        ["_bulk"] | [_, "_bulk"] => not_allowed(&method, "POST, PUT"),
        ["_license"] if read => json(
            StatusCode::OK,
            &serde_json::json!({ "license": {
                "status": "active", "uid": "wormdb", "type": "basic", "mode": "basic",
                "issued_to": "wormdb", "issuer": "wormdb", "max_nodes": 1000,
                "issue_date_in_millis": 0, "start_date_in_millis": -1,
            }}),
        ),
        ["_xpack"] if read => json(
            StatusCode::OK,
            &serde_json::json!({
                "build": { "hash": "wormdb", "date": "" },
                "license": { "uid": "wormdb", "type": "basic", "mode": "basic", "status": "active" },
                "features": {},
                "tagline": "You know, for X",
            }),
        ),
        ["_nodes", ..] if read => json(
            StatusCode::OK,
            // No node to sniff: a sniffing client must keep the URL it was
            // given (the `/es` prefix would be lost on a node's address).
            &serde_json::json!({
                "_nodes": { "total": 0, "successful": 0, "failed": 0 },
                "cluster_name": "wormdb",
                "nodes": {},
            }),
        ),
        ["_cluster", "health", ..] if read => json(StatusCode::OK, &health_document(&core)),
        // rsyslog's omelasticsearch checks a server with `GET _cat/health`.
        ["_cat", "health"] if read => {
            let status = if core.closing.get() { "red" } else { "green" };
            let mut response =
                Response::new(super::server::full(format!("0 00:00:00 wormdb {status} 1 1 0 0 0 0 0 0 - 100.0%\n")));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=UTF-8"));
            response
        }
        ["_index_template" | "_template" | "_component_template" | "_ilm" | "_ingest", ..] => {
            setup_probe(&method, segments[0])
        }
        _ => es_error(
            StatusCode::NOT_FOUND,
            "resource_not_found_exception",
            &format!(
                "wormdb does not serve {method} {}: under /es it takes _bulk and the probes of shippers",
                request.uri().path()
            ),
        ),
    }
}

/// `GET /es/`: the version document shippers check (8.x, default flavor).
fn version_document(core: &Core) -> serde_json::Value {
    serde_json::json!({
        "name": format!("wormdb-{}", core.config.node_id),
        "cluster_name": "wormdb",
        "cluster_uuid": "wormdb",
        "version": {
            "number": ES_VERSION,
            "build_flavor": "default",
            "build_type": "wormdb",
            "build_hash": "wormdb",
            "build_date": "2024-12-11T12:08:05.663969764Z",
            "build_snapshot": false,
            "lucene_version": "9.12.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "You Know, for Search",
    })
}

/// `GET /es/_cluster/health`: green while the node takes writes.
fn health_document(core: &Core) -> serde_json::Value {
    serde_json::json!({
        "cluster_name": "wormdb",
        "status": if core.closing.get() { "red" } else { "green" },
        "timed_out": false,
        "number_of_nodes": 1,
        "number_of_data_nodes": 1,
        "active_primary_shards": 0,
        "active_shards": 0,
        "relocating_shards": 0,
        "initializing_shards": 0,
        "unassigned_shards": 0,
        "delayed_unassigned_shards": 0,
        "number_of_pending_tasks": 0,
        "number_of_in_flight_fetch": 0,
        "task_max_waiting_in_queue_millis": 0,
        "active_shards_percent_as_number": 100.0,
    })
}

/// Index templates, ILM policies and ingest pipelines, which shippers
/// check for (`HEAD`/`GET`) and install (`PUT`): wormdb has no mappings to
/// keep, so each exists already and every install is acknowledged.
fn setup_probe(method: &Method, what: &str) -> Response<Body> {
    match *method {
        Method::HEAD => json(StatusCode::OK, &serde_json::json!({})),
        Method::GET if what == "_index_template" => json(StatusCode::OK, &serde_json::json!({ "index_templates": [] })),
        Method::GET if what == "_component_template" => {
            json(StatusCode::OK, &serde_json::json!({ "component_templates": [] }))
        }
        Method::GET => json(StatusCode::OK, &serde_json::json!({})),
        Method::PUT | Method::POST | Method::DELETE => {
            json(StatusCode::OK, &serde_json::json!({ "acknowledged": true }))
        }
        _ => not_allowed(method, "GET, HEAD, PUT, POST, DELETE"),
    }
}

/// Elasticsearch's error document.
fn es_error(status: StatusCode, kind: &str, reason: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({
            "error": { "root_cause": [{ "type": kind, "reason": reason }], "type": kind, "reason": reason },
            "status": status.as_u16(),
        }),
    )
}

fn not_allowed(method: &Method, allow: &'static str) -> Response<Body> {
    let mut response = es_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "illegal_argument_exception",
        &format!("{method} is not allowed here; allowed: {allow}"),
    );
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Elasticsearch's error type for a refusal of the whole request.
fn refused_type(kind: RefusedKind) -> &'static str {
    match kind {
        RefusedKind::Malformed | RefusedKind::TooLarge | RefusedKind::UnsupportedMediaType => {
            "illegal_argument_exception"
        }
        // What Elasticsearch answers when its write queue is full.
        RefusedKind::Backpressure => "es_rejected_execution_exception",
        RefusedKind::Unavailable => "unavailable_shards_exception",
        // What Elasticsearch answers past its flood-stage disk watermark.
        RefusedKind::DiskFull => "cluster_block_exception",
        RefusedKind::Internal => "exception",
    }
}

/// A refused request in Elasticsearch's error form, with `Retry-After`
/// when it is worth retrying.
fn es_refused(refused: &Refused) -> Response<Body> {
    let status = StatusCode::from_u16(refused.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = es_error(status, refused_type(refused.kind), &refused.message);
    if let Some(seconds) = refused.retry_after_seconds() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The field choice of a request: the query arguments `_msg_field`,
/// `_time_field`, `_stream_fields`, else the headers `VL-Msg-Field`,
/// `VL-Time-Field`, `VL-Stream-Fields`, else the defaults.
fn field_choice(query: Option<&str>, request_headers: &HeaderMap) -> Result<FieldChoice, String> {
    let params = [fields::MSG_FIELD_PARAM, fields::TIME_FIELD_PARAM, fields::STREAM_FIELDS_PARAM];
    let headers = [fields::MSG_FIELD_HEADER, fields::TIME_FIELD_HEADER, fields::STREAM_FIELDS_HEADER];
    let mut given: [Option<String>; 3] = Default::default();
    for pair in query.unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if let Some(slot) = params.iter().position(|param| *param == name) {
            if given[slot].is_none() {
                given[slot] = Some(percent_decode(value).map_err(|message| format!("{name}: {message}"))?);
            }
        }
    }
    for (slot, name) in headers.iter().enumerate() {
        if given[slot].is_none() {
            if let Some(value) = request_headers.get(*name) {
                let value = value.to_str().map_err(|_| format!("the {name} header is not visible ASCII"))?;
                given[slot] = Some(value.to_owned());
            }
        }
    }
    FieldChoice::from_params(given[0].as_deref(), given[1].as_deref(), given[2].as_deref())
        .map_err(|error| error.to_string())
}

/// `POST|PUT /es/_bulk` and `/es/{index}/_bulk`.
async fn bulk(
    core: Rc<Core>,
    body_budget: &Rc<BodyBudget>,
    grant: &Grant,
    request: Request<Incoming>,
    url_index: Option<String>,
) -> Response<Body> {
    let started = Instant::now();
    let _in_flight = InFlight::new(&core);
    let refuse = |refused: Refused| {
        core.count_refused(Protocol::EsBulk, refused.kind);
        es_refused(&refused)
    };
    let (choice, body, wire_bytes, _reservation) = match read_with_choice(&core, body_budget, request).await {
        Ok(read) => read,
        Err(refused) => return refuse(refused),
    };
    let mut items = match bulk_body::decode(
        &body,
        url_index.as_deref(),
        &choice,
        crate::ingest::unix_now_ns(),
        HTTP_ENTRIES_PER_REQUEST_MAX,
    ) {
        Ok(items) => items,
        Err(error) => {
            let kind = match error {
                BulkError::TooManyItems { .. } => RefusedKind::TooLarge,
                _ => RefusedKind::Malformed,
            };
            core.count_refused(Protocol::EsBulk, kind);
            let status = StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            return es_error(status, error.es_type(), &error.to_string());
        }
    };
    drop(body);
    // The documents to store leave their items; the items keep their order
    // and their outcome for the answer.
    let entries: Vec<_> = items.iter_mut().filter_map(|item| item.outcome.as_mut().ok().map(std::mem::take)).collect();
    let failed = items.len() - entries.len();
    let stored = if entries.is_empty() {
        None
    } else {
        if let Some(refused) = rate_refusal(grant, entries.len()) {
            return refuse(refused);
        }
        match core.store(Protocol::EsBulk, entries, wire_bytes).await {
            Ok(stored) => Some(stored),
            // Counted by `store`.
            Err(refused) => return es_refused(&refused),
        }
    };
    if failed > 0 {
        core.count_refused(Protocol::EsBulk, RefusedKind::Malformed);
    }
    let mut next_seq = stored.map(|stored| stored.first_seq);
    let shard = stored.map_or(0, |stored| stored.shard);
    // The answer is written straight to bytes: built as a `serde_json::Value`
    // (a map per item), it took about a third of a bulk request's CPU.
    let mut out = Vec::with_capacity(64 + items.len() * 192);
    out.extend_from_slice(b"{\"took\":");
    out.extend_from_slice(started.elapsed().as_millis().to_string().as_bytes());
    out.extend_from_slice(if failed > 0 { b",\"errors\":true,\"items\":[" } else { b",\"errors\":false,\"items\":[" });
    for (position, item) in items.iter().enumerate() {
        let seq =
            if item.outcome.is_ok() { next_seq.as_mut().map(|seq| std::mem::replace(seq, *seq + 1)) } else { None };
        if position > 0 {
            out.push(b',');
        }
        write_item_answer(&mut out, item, shard, seq);
    }
    out.extend_from_slice(b"]}\n");
    let mut response = Response::new(full(out));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `_shards` of a stored item: one copy, stored.
#[derive(Serialize)]
struct ItemShards {
    total: u8,
    successful: u8,
    failed: u8,
}

/// A stored item's answer.
#[derive(Serialize)]
struct Created<'a> {
    _index: &'a Option<String>,
    _id: std::borrow::Cow<'a, str>,
    _version: u8,
    result: &'static str,
    _shards: ItemShards,
    _seq_no: u64,
    _primary_term: u8,
    status: u16,
}

/// A refused item's answer.
#[derive(Serialize)]
struct NotCreated<'a> {
    _index: &'a Option<String>,
    _id: &'a Option<String>,
    status: u16,
    error: ItemErrorBody<'a>,
}

#[derive(Serialize)]
struct ItemErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<&'a Option<String>>,
}

/// Writes one item of the bulk answer, shaped as Elasticsearch 8 shapes
/// it; a stored document without an `_id` of its own is named by where it
/// is stored, `{shard}-{seq}`.
fn write_item_answer(out: &mut Vec<u8>, item: &Item, shard: u32, seq: Option<u64>) {
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(item.action.name().as_bytes());
    out.extend_from_slice(b"\":");
    let written = match (&item.outcome, seq) {
        (Ok(_), Some(seq)) => serde_json::to_writer(
            &mut *out,
            &Created {
                _index: &item.index,
                _id: match &item.id {
                    Some(id) => std::borrow::Cow::Borrowed(id.as_str()),
                    None => std::borrow::Cow::Owned(format!("{shard}-{seq}")),
                },
                _version: 1,
                result: "created",
                _shards: ItemShards { total: 1, successful: 1, failed: 0 },
                _seq_no: seq,
                _primary_term: 1,
                status: 201,
            },
        ),
        (Ok(_), None) => serde_json::to_writer(
            &mut *out,
            &NotCreated {
                _index: &item.index,
                _id: &item.id,
                status: 500,
                error: ItemErrorBody { kind: "exception", reason: "the document was not stored", index: None },
            },
        ),
        (Err(error), _) => serde_json::to_writer(
            &mut *out,
            &NotCreated {
                _index: &item.index,
                _id: &item.id,
                status: 400,
                error: ItemErrorBody { kind: error.kind, reason: &error.reason, index: Some(&item.index) },
            },
        ),
    };
    // Serializing these plain structs into a Vec cannot fail.
    debug_assert!(written.is_ok());
    out.push(b'}');
}

/// The field choice of a request (its query arguments or headers) and its
/// body, as the bulk API and JSON lines both read them.
async fn read_with_choice(
    core: &Core,
    body_budget: &Rc<BodyBudget>,
    request: Request<Incoming>,
) -> Result<(FieldChoice, bytes::Bytes, u64, BodyReservation), Refused> {
    let choice = field_choice(request.uri().query(), request.headers()).map_err(Refused::malformed)?;
    let (body, wire_bytes, reservation) = read_body(core, body_budget, request).await?;
    Ok((choice, body, wire_bytes, reservation))
}

/// `POST /v1/jsonline`: one JSON object a line, all stored or none.
pub async fn jsonline(
    core: Rc<Core>,
    body_budget: &Rc<BodyBudget>,
    grant: &Grant,
    request: Request<Incoming>,
) -> Response<Body> {
    let _in_flight = InFlight::new(&core);
    let refuse = |refused: Refused| {
        core.count_refused(Protocol::JsonLine, refused.kind);
        refused_json(&refused)
    };
    let (choice, body, wire_bytes, _reservation) = match read_with_choice(&core, body_budget, request).await {
        Ok(read) => read,
        Err(refused) => return refuse(refused),
    };
    let entries =
        match jsonline_body::decode(&body, &choice, crate::ingest::unix_now_ns(), HTTP_ENTRIES_PER_REQUEST_MAX) {
            Ok(entries) => entries,
            Err(error @ jsonline_body::JsonLineError::TooMany { .. }) => {
                return refuse(Refused::too_large(error.to_string()))
            }
            Err(error) => return refuse(Refused::malformed(error.to_string())),
        };
    drop(body);
    if entries.is_empty() {
        // Nothing to store is no error: shippers may flush an empty batch.
        return json(StatusCode::OK, &serde_json::json!({ "count": 0 }));
    }
    if let Some(refused) = rate_refusal(grant, entries.len()) {
        return refuse(refused);
    }
    match core.store(Protocol::JsonLine, entries, wire_bytes).await {
        Ok(stored) => json(
            StatusCode::OK,
            &serde_json::json!({
                "count": stored.count,
                "shard": stored.shard,
                "first_seq": stored.first_seq,
                "last_seq": stored.last_seq,
            }),
        ),
        // Counted by `store`.
        Err(refused) => refused_json(&refused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::es::{Action, ItemError};
    use crate::proto::LogEntry;

    #[test]
    fn query_arguments_win_over_headers_and_are_percent_decoded() {
        let mut headers = HeaderMap::new();
        headers.insert("vl-msg-field", HeaderValue::from_static("from_header"));
        headers.insert("VL-Time-Field", HeaderValue::from_static("when"));
        let choice =
            field_choice(Some("_msg_field=line%2Clog&x=%zz&_stream_fields=app,%40env&_msg_field=ignored"), &headers)
                .unwrap();
        assert_eq!(choice.msg_fields, ["line", "log"], "the first query argument, decoded");
        assert_eq!(choice.time_fields, ["when"], "the header, absent the argument");
        assert_eq!(choice.stream_fields, ["app", "@env"]);
        assert_eq!(field_choice(None, &HeaderMap::new()).unwrap(), FieldChoice::default());
        assert!(field_choice(Some("_time_field=%zz"), &HeaderMap::new()).unwrap_err().starts_with("_time_field"));
        let many = vec!["f"; crate::limits::FIELD_CHOICE_NAMES_MAX + 1].join(",");
        assert!(field_choice(Some(&format!("_stream_fields={many}")), &HeaderMap::new()).is_err());
    }

    fn item_answer(item: &Item, shard: u32, seq: Option<u64>) -> serde_json::Value {
        let mut out = Vec::new();
        write_item_answer(&mut out, item, shard, seq);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn items_are_answered_as_elasticsearch_8_answers_them() {
        let stored =
            Item { action: Action::Create, index: Some("logs".into()), id: None, outcome: Ok(LogEntry::default()) };
        assert_eq!(
            item_answer(&stored, 1, Some(17)),
            serde_json::json!({ "create": {
                "_index": "logs", "_id": "1-17", "_version": 1, "result": "created",
                "_shards": { "total": 1, "successful": 1, "failed": 0 },
                "_seq_no": 17, "_primary_term": 1, "status": 201,
            }})
        );
        let named = Item { id: Some("mine".into()), action: Action::Index, ..stored };
        assert_eq!(item_answer(&named, 1, Some(18))["index"]["_id"], "mine");
        let failed = Item {
            action: Action::Delete,
            index: None,
            id: Some("7".into()),
            outcome: Err(ItemError { kind: "illegal_argument_exception", reason: "no".into() }),
        };
        assert_eq!(
            item_answer(&failed, 1, None),
            serde_json::json!({ "delete": {
                "_index": null, "_id": "7", "status": 400,
                "error": { "type": "illegal_argument_exception", "reason": "no", "index": null },
            }})
        );
    }

    #[test]
    fn whole_request_refusals_take_elasticsearch_types_and_retry_after() {
        let refused = Refused::new(RefusedKind::Backpressure, "busy");
        let response = es_refused(&refused);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
        assert_eq!(refused_type(RefusedKind::Backpressure), "es_rejected_execution_exception");
        let response = es_refused(&Refused::malformed("bad"));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }
}
