//! Loki's push API (DESIGN.md section 11): `POST /loki/api/v1/push`, JSON
//! or snappy protobuf; and `GET /ready`.

use std::rc::Rc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::budget::BodyBudget;
use super::server::{full, refused_json, Body};
use crate::auth::Grant;
use crate::node::{Core, Refused, RefusedKind};

/// `POST /loki/api/v1/push`.
pub async fn push(
    _core: Rc<Core>,
    _body_budget: &Rc<BodyBudget>,
    _grant: &Grant,
    _request: Request<Incoming>,
) -> Response<Body> {
    refused_json(&Refused::new(RefusedKind::Internal, "Loki push is not built yet"))
}

/// `GET /ready`: `200` when the node accepts writes, else `503`.
pub fn ready(core: &Core) -> Response<Body> {
    let (status, text) = if core.closing.get() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ready\n")
    };
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}
