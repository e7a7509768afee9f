//! Replication over gRPC, hand-rolled on h2: the framing and status codes
//! ([`frame`], [`status`]), HTTP/2 plumbing for servers and clients
//! ([`grpc`]), the exactly-once rule ([`watermark`]), the services every
//! node serves ([`service`]: ingest, query and the leader's archive) and
//! the follower's pusher ([`follower`]).
//!
//! A follower stores every entry locally first; one pusher per shard then
//! streams the shard's durable entries to the leader (`Replicate`), which
//! archives each (follower, shard, seq) exactly once and acks continuously.
//! The follower's log is the queue: a slow or absent leader costs no
//! memory and loses nothing.

pub mod batch;
pub mod follower;
pub mod frame;
pub mod grpc;
pub mod restore;
pub mod service;
pub mod status;
pub mod watermark;

use std::cell::Cell;
use std::rc::Rc;

use crate::node::Core;

/// gRPC connections one core serves at once; more are closed on accept.
pub const CONNECTIONS_PER_CORE_MAX: usize = 4096;

/// Accepts gRPC connections until cancelled, serving each on its own task.
pub async fn accept_loop(core: Rc<Core>, listener: glommio::net::TcpListener) {
    let services = Rc::new(service::Services::new(core.clone()));
    let closing = core.clone();
    let options = Rc::new(grpc::ServerOptions {
        max_message_bytes: crate::limits::MESSAGE_BYTES_MAX,
        closing: Rc::new(move || closing.closing.get()),
    });
    let open = Rc::new(Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "grpc accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.get() >= CONNECTIONS_PER_CORE_MAX {
            tracing::warn!("grpc: {CONNECTIONS_PER_CORE_MAX} connections open on this core; closing a new one");
            continue;
        }
        open.set(open.get() + 1);
        let (services, options, open) = (services.clone(), options.clone(), open.clone());
        glommio::spawn_local(async move {
            grpc::serve_connection(stream, services, options).await;
            open.set(open.get() - 1);
        })
        .detach();
    }
}
