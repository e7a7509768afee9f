//! The HTTP API (DESIGN.md section 7): ingest, query, tail, stats, metrics.
//!
//! - [`budget`]: the per-core budget of request body bytes in flight. Pure.
//! - [`ndjson`]: NDJSON ingest parsing (borrowed, no per-field allocation)
//!   and NDJSON output of entries. Pure.
//! - [`params`]: query-string parsing. Pure.
//! - [`metrics`]: Prometheus text rendering. Pure.
//! - [`server`]: hyper on glommio; routing and handlers.
//! - [`timer`]: glommio-backed timer for hyper's header-read timeout.

pub mod budget;
pub mod metrics;
pub mod ndjson;
pub mod params;
pub mod server;
pub mod timer;
