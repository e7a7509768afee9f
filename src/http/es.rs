//! The Elasticsearch bulk API under `/es` and JSON lines at
//! `/v1/jsonline` (DESIGN.md section 11).

use std::rc::Rc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::budget::BodyBudget;
use super::server::{refused_json, Body};
use crate::auth::Grant;
use crate::node::{Core, Refused, RefusedKind};

/// Every request under `/es`.
pub async fn handle(
    _core: Rc<Core>,
    _body_budget: &Rc<BodyBudget>,
    _grant: &Grant,
    _request: Request<Incoming>,
) -> Response<Body> {
    refused_json(&Refused::new(RefusedKind::Internal, "the Elasticsearch API is not built yet"))
}

/// `POST /v1/jsonline`.
pub async fn jsonline(
    _core: Rc<Core>,
    _body_budget: &Rc<BodyBudget>,
    _grant: &Grant,
    _request: Request<Incoming>,
) -> Response<Body> {
    refused_json(&Refused::new(RefusedKind::Internal, "JSON lines are not built yet"))
}
