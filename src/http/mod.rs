//! The HTTP API (DESIGN.md section 7): ingest, query, tail, stats, metrics;
//! and the shippers' protocols of section 11, whose decoding is
//! [`crate::ingest`]'s.
//!
//! - [`budget`]: the per-core budget of request body bytes in flight. Pure.
//! - [`ndjson`]: NDJSON ingest parsing (borrowed, no per-field allocation)
//!   and NDJSON output of entries. Pure.
//! - [`params`]: query-string parsing. Pure.
//! - [`metrics`]: Prometheus text rendering. Pure.
//! - [`server`]: hyper on glommio; routing and handlers.
//! - [`timer`]: glommio-backed timer for hyper's header-read timeout.
//! - [`otlp`] (`/v1/logs`), [`loki`] (`/loki/api/v1/push`, `/ready`),
//!   [`es`] (`/es`, `/v1/jsonline`): the shippers' protocols over HTTP.

pub mod budget;
pub mod es;
pub mod loki;
pub mod metrics;
pub mod ndjson;
pub mod otlp;
pub mod params;
pub mod server;
pub mod timer;
