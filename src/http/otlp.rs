//! OTLP logs over HTTP (DESIGN.md section 11): `POST /v1/logs`, protobuf
//! or OTLP/JSON, optional gzip.

use std::rc::Rc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::budget::BodyBudget;
use super::server::{refused_json, Body};
use crate::auth::Grant;
use crate::node::{Core, Refused, RefusedKind};

/// `POST /v1/logs`.
pub async fn export(
    _core: Rc<Core>,
    _body_budget: &Rc<BodyBudget>,
    _grant: &Grant,
    _request: Request<Incoming>,
) -> Response<Body> {
    refused_json(&Refused::new(RefusedKind::Internal, "OTLP over HTTP is not built yet"))
}
