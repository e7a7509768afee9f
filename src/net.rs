//! Connections as the front doors see them: glommio's sockets as tokio
//! `AsyncRead` + `AsyncWrite`, which hyper (via `hyper_util::rt::TokioIo`)
//! and h2 expect, and who is at the other end ([`Peer`]).
//!
//! `tokio_util::compat::Compat` does the same, but zeroes all of a read
//! buffer's unfilled space on every read, because it cannot trust the inner
//! reader not to look at it. hyper and h2 pass their whole spare buffer
//! (hundreds of KiB while a large body is read), and tokio's `ReadBuf` is
//! new on each call, so nothing stays known-initialized: a saturated node
//! spent 8 % of its CPU in `memset` (perf, 2-shard node, wrk with 1000-entry
//! requests). [`TokioStream`] initializes at most [`READ_WINDOW_BYTES`] per
//! read: about what one read returns under load, so a read costs at most
//! one zeroing of the bytes it may fill.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};

pub use crate::limits::NET_READ_WINDOW_BYTES as READ_WINDOW_BYTES;

/// Who is at the other end of an accepted connection, as its transport
/// proved it. Handlers decide from it (and from a token in the request)
/// what the call may do (DESIGN.md section 10).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// Its address, when known.
    pub addr: Option<SocketAddr>,
    /// What its client certificate names, once the TLS layer verified it
    /// against `--tls-client-ca` (`None`: plaintext, or no certificate).
    pub identity: Option<Identity>,
}

impl Peer {
    /// A peer at `addr` that proved nothing.
    pub fn at(addr: Option<SocketAddr>) -> Peer {
        Peer { addr, identity: None }
    }
}

/// What a verified client certificate names (its DNS SAN, or its CN).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// `follower-<id>`: the follower node `id`.
    Follower(u32),
    /// `node-<id>`: the tier member `id`.
    Node(u32),
    /// Any other name: a client of the node, trusted by the CA, with no
    /// role of its own.
    Other(String),
}

impl Identity {
    /// The identity a certificate name stands for.
    pub fn from_name(name: &str) -> Identity {
        let id =
            |prefix: &str| name.strip_prefix(prefix).filter(|id| !id.starts_with('+')).and_then(|id| id.parse().ok());
        match (id("follower-"), id("node-")) {
            (Some(id), _) => Identity::Follower(id),
            (_, Some(id)) => Identity::Node(id),
            _ => Identity::Other(name.to_string()),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Follower(id) => write!(out, "follower-{id}"),
            Identity::Node(id) => write!(out, "node-{id}"),
            Identity::Other(name) => out.write_str(name),
        }
    }
}

/// A futures-io stream (a glommio `TcpStream`) as a tokio stream.
#[derive(Debug)]
pub struct TokioStream<S> {
    inner: S,
}

impl<S> TokioStream<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        TokioStream { inner }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> tokio::io::AsyncRead for TokioStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let window = buf.remaining().min(READ_WINDOW_BYTES);
        let read = ready!(Pin::new(&mut self.inner).poll_read(context, buf.initialize_unfilled_to(window)))?;
        buf.advance(read);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> tokio::io::AsyncWrite for TokioStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, context: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_map_to_identities() {
        assert_eq!(Identity::from_name("follower-7"), Identity::Follower(7));
        assert_eq!(Identity::from_name("node-3"), Identity::Node(3));
        for other in ["follower-", "follower-x", "node--1", "node-+1", "node-4294967296", "client", "Node-1"] {
            assert_eq!(Identity::from_name(other), Identity::Other(other.to_string()), "{other}");
        }
        assert_eq!(Identity::Follower(12).to_string(), "follower-12");
    }
    use tokio::io::AsyncRead as _;

    /// A reader that hands out `data` in reads of at most `step` bytes and
    /// records how large a slice each read was given.
    struct Chunked {
        data: Vec<u8>,
        position: usize,
        step: usize,
        offered: Vec<usize>,
    }

    impl AsyncRead for Chunked {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            self.offered.push(buf.len());
            let count = buf.len().min(self.step).min(self.data.len() - self.position);
            buf[..count].copy_from_slice(&self.data[self.position..self.position + count]);
            self.position += count;
            Poll::Ready(Ok(count))
        }
    }

    #[test]
    fn reads_everything_through_windows_of_bounded_size() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut stream =
            TokioStream::new(Chunked { data: data.clone(), position: 0, step: 100_000, offered: Vec::new() });
        let mut storage = vec![std::mem::MaybeUninit::<u8>::uninit(); 1 << 20];
        let mut buf = tokio::io::ReadBuf::uninit(&mut storage);
        let mut context = Context::from_waker(std::task::Waker::noop());
        loop {
            let before = buf.filled().len();
            let polled = Pin::new(&mut stream).poll_read(&mut context, &mut buf);
            assert!(matches!(polled, Poll::Ready(Ok(()))));
            if buf.filled().len() == before {
                break;
            }
        }
        assert_eq!(buf.filled(), &data[..], "every byte arrives, in order");
        let offered = &stream.get_ref().offered;
        assert!(offered.iter().all(|&len| len <= READ_WINDOW_BYTES), "{offered:?}");
        assert!(
            buf.initialized().len() <= data.len() + READ_WINDOW_BYTES,
            "only the windows read into were initialized: {} bytes",
            buf.initialized().len()
        );
    }
}
