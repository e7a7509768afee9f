//! A gRPC server that leads nothing, as an archive-tier replica refuses what
//! it does not lead: every call gets `UNAVAILABLE` with the leader hint it
//! was started with (or none), built on our own transport. A path ending in
//! `/AfterMessage` first gets one response message (`WatermarkResponse`
//! with seq 42), so that its refusal travels as trailers rather than as a
//! trailers-only response. Requests are never read: a refusing server may
//! answer first, and clients must still see its status.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use wormdb::grpc::status::{LeaderHint, Status};
use wormdb::grpc::transport::{serve_connection, Call, LocalFuture, ServerOptions, Service};
use wormdb::proto::WatermarkResponse;

/// The running server; it lives until the test process ends.
pub struct NotLeader {
    /// Where it listens (`127.0.0.1`, an ephemeral port).
    pub addr: SocketAddr,
    /// Calls refused so far.
    pub calls: Arc<AtomicU64>,
}

impl NotLeader {
    /// Calls refused so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Acquire)
    }
}

struct Refuse {
    hint: Option<LeaderHint>,
    calls: Arc<AtomicU64>,
}

impl Service for Refuse {
    fn call<'a>(self: Rc<Self>, path: &'a str, call: &'a mut Call) -> LocalFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::AcqRel);
            if path.ends_with("/AfterMessage") {
                call.send(&WatermarkResponse { acked_seq: 42 }).await?;
                call.flush().await?;
            }
            Err(Status::not_leader(format!("{path}: this node leads nothing"), self.hint.clone()))
        })
    }
}

/// Starts the server on an executor thread of its own.
pub fn start(hint: Option<LeaderHint>) -> NotLeader {
    wormdb::runtime::ensure_memlock(wormdb::runtime::MEMLOCK_BYTES_PER_EXECUTOR).unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let service = Refuse { hint, calls: calls.clone() };
    let (bound, addr) = std::sync::mpsc::channel();
    let executor = glommio::LocalExecutorBuilder::default()
        .name("not-leader")
        .spawn(move || async move {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            bound.send(listener.local_addr().unwrap()).unwrap();
            let service = Rc::new(service);
            let options = Rc::new(ServerOptions { max_message_bytes: 1 << 20, closing: Rc::new(|| false) });
            loop {
                let Ok(stream) = listener.accept().await else { continue };
                let peer = wormdb::net::Peer::default();
                glommio::spawn_local(serve_connection(stream, peer, service.clone(), options.clone())).detach();
            }
        })
        .unwrap();
    // Detached: the server serves until the test process exits.
    drop(executor);
    NotLeader { addr: addr.recv().unwrap(), calls }
}
