//! The hand-rolled gRPC transport over `h2` (DESIGN.md section 6): it knows
//! no wormdb service, so the node's services, the follower pusher, `restore`,
//! the load generator and later the Raft transport all use it.
//!
//! Layered like h2 itself:
//! - [`frame`]: the 5-byte length-prefixed message framing, pure;
//! - [`compression`]: `grpc-encoding: gzip` messages inflated within the
//!   message size bound, pure (only methods that ask for it take them);
//! - [`status`]: status codes, `grpc-status`/`grpc-message` trailers (and
//!   the leader hint of a not-leader refusal) and
//!   `grpc-timeout`, pure;
//! - [`transport`]: HTTP/2 plumbing on glommio: the server side
//!   ([`transport::serve_connection`] with a [`transport::Service`]) and the
//!   client side ([`transport::Channel`]), with flow control released per
//!   DATA chunk and every buffer bounded by [`crate::limits`].

pub mod compression;
pub mod frame;
pub mod status;
pub mod transport;

pub use status::{Code, LeaderHint, Status};
