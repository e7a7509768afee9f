//! The stream every connection runs on ([`Stream`]: a glommio socket,
//! plaintext or under TLS, server or client side) and the two handshakes
//! that make one: [`accept`] and [`connect`].
//!
//! [`Stream`] is a futures-io stream like the socket it wraps, so
//! [`crate::net::TokioStream`] turns it into what hyper and h2 expect and
//! neither knows whether TLS is there.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::{Preallocated, TcpStream};

use super::{count_handshake_failure, identity, Listener};
use crate::limits::{TLS_HANDSHAKE_TIMEOUT, TLS_READ_BUFFER_BYTES};
use crate::net::Identity;

/// The socket under TLS: read through a buffer of its own (see the module
/// doc of [`super`]).
type Socket = TcpStream<Preallocated>;

/// A connection's byte stream.
pub enum Stream {
    /// No TLS.
    Plain(TcpStream),
    /// An accepted TLS connection (boxed: rustls' state is a few KiB).
    Server(Box<futures_rustls::server::TlsStream<Socket>>),
    /// A dialled TLS connection.
    Client(Box<futures_rustls::client::TlsStream<Socket>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.write_str(match self {
            Stream::Plain(_) => "Stream::Plain",
            Stream::Server(_) => "Stream::Server",
            Stream::Client(_) => "Stream::Client",
        })
    }
}

impl From<TcpStream> for Stream {
    fn from(socket: TcpStream) -> Stream {
        Stream::Plain(socket)
    }
}

impl Stream {
    /// Whether it runs under TLS.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// The ALPN protocol the handshake agreed on, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            Stream::Plain(_) => None,
            Stream::Server(stream) => stream.get_ref().1.alpn_protocol(),
            Stream::Client(stream) => stream.get_ref().1.alpn_protocol(),
        }
    }

    /// Sets `TCP_NODELAY` on the socket.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        let result = match self {
            Stream::Plain(socket) => socket.set_nodelay(nodelay),
            Stream::Server(stream) => stream.get_ref().0.set_nodelay(nodelay),
            Stream::Client(stream) => stream.get_ref().0.set_nodelay(nodelay),
        };
        result.map_err(io::Error::from)
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, context: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(socket) => Pin::new(socket).poll_read(context, buf),
            Stream::Server(stream) => Pin::new(stream.as_mut()).poll_read(context, buf),
            Stream::Client(stream) => Pin::new(stream.as_mut()).poll_read(context, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(socket) => Pin::new(socket).poll_write(context, buf),
            Stream::Server(stream) => Pin::new(stream.as_mut()).poll_write(context, buf),
            Stream::Client(stream) => Pin::new(stream.as_mut()).poll_write(context, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(socket) => Pin::new(socket).poll_write_vectored(context, bufs),
            Stream::Server(stream) => Pin::new(stream.as_mut()).poll_write_vectored(context, bufs),
            Stream::Client(stream) => Pin::new(stream.as_mut()).poll_write_vectored(context, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(socket) => Pin::new(socket).poll_flush(context),
            Stream::Server(stream) => Pin::new(stream.as_mut()).poll_flush(context),
            Stream::Client(stream) => Pin::new(stream.as_mut()).poll_flush(context),
        }
    }

    fn poll_close(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(socket) => Pin::new(socket).poll_close(context),
            Stream::Server(stream) => Pin::new(stream.as_mut()).poll_close(context),
            Stream::Client(stream) => Pin::new(stream.as_mut()).poll_close(context),
        }
    }
}

/// Runs `handshake` for at most [`TLS_HANDSHAKE_TIMEOUT`].
async fn bounded<T>(handshake: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    futures_lite::future::or(handshake, async {
        glommio::timer::sleep(TLS_HANDSHAKE_TIMEOUT).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no TLS handshake within {TLS_HANDSHAKE_TIMEOUT:?} (TLS_HANDSHAKE_TIMEOUT)"),
        ))
    })
    .await
}

/// Makes an accepted connection the stream its listener serves: plaintext
/// when `config` is `None`, else the server side of a TLS handshake,
/// bounded by [`TLS_HANDSHAKE_TIMEOUT`]. Returns the stream and who its
/// verified client certificate names (`None` without one). Run it in the
/// connection's task: a slow client holds only its own connection.
///
/// A failed handshake is counted ([`super::handshake_failures`]), logged at
/// debug level (a scanner must not flood the log) and returns `None`; the
/// socket is closed.
pub async fn accept(
    socket: TcpStream,
    config: Option<Arc<rustls::ServerConfig>>,
    listener: Listener,
) -> Option<(Stream, Option<Identity>)> {
    let Some(config) = config else {
        return Some((Stream::Plain(socket), None));
    };
    let addr = socket.peer_addr().ok();
    let socket = socket.buffered_with(Preallocated::new(TLS_READ_BUFFER_BYTES));
    let acceptor = futures_rustls::TlsAcceptor::from(config);
    match bounded(acceptor.accept(socket)).await {
        Ok(stream) => {
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| identity::identity_of_certificate(leaf));
            Some((Stream::Server(Box::new(stream)), identity))
        }
        Err(error) => {
            count_handshake_failure(listener);
            tracing::debug!(listener = listener.label(), peer = ?addr, %error, "tls handshake failed");
            None
        }
    }
}

/// The client side of a TLS handshake on `socket` with `config`, checking
/// that the server's certificate is valid for the IP address `server`
/// (the address dialled). The caller bounds the time it takes.
pub async fn connect(socket: TcpStream, config: Arc<rustls::ClientConfig>, server: IpAddr) -> io::Result<Stream> {
    let socket = socket.buffered_with(Preallocated::new(TLS_READ_BUFFER_BYTES));
    let name = rustls::pki_types::ServerName::IpAddress(server.into());
    let stream = futures_rustls::TlsConnector::from(config).connect(name, socket).await?;
    Ok(Stream::Client(Box::new(stream)))
}
