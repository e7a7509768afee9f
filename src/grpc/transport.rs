//! gRPC over HTTP/2 on glommio: the request/response plumbing between the
//! pure framing ([`super::frame`], [`super::status`]) and the services.
//!
//! h2 runs on a glommio `TcpStream` through [`crate::net::TokioStream`] (tokio is
//! only there for its io traits). h2 has no timers, so `grpc-timeout` and
//! keepalive pings use glommio timers. Flow control is explicit in both
//! directions: senders reserve capacity and send at most what h2 grants;
//! receivers release capacity for every DATA chunk as it reaches the
//! [`Decoder`](super::frame::Decoder), whose buffering is bounded by the
//! max message size (so releasing early never buffers without limit).
//!
//! Server side: [`serve_connection`] accepts streams and runs each call as
//! a task: `Service::call` gets a [`Call`] (its request messages and a
//! response sink) and returns a [`Status`]; the plumbing sends it as
//! trailers, or as a trailers-only response when nothing was sent yet
//! (either way with its leader hint, see [`super::status::LeaderHint`]).
//! Client side: [`Channel`] (one HTTP/2 connection) starts [`ClientCall`]s;
//! the status a call ends with carries the server's leader hint. A node's
//! own calls (its follower pusher, restore, the Raft transport, forwarded
//! writes, join) and the command-line tools present one bearer token in
//! the `authorization` metadata of every call: set once for the process
//! ([`set_default_bearer`], from `--peer-token-file` or `--token-file`),
//! or per channel ([`Channel::with_bearer`]).
//!
//! A method whose service [accepts gzip](Service::accepts_gzip) (OTLP's
//! `LogsService/Export`) takes calls with `grpc-encoding: gzip` and
//! messages flagged compressed, inflated here within the maximum message
//! size ([`super::compression`]), and advertises `grpc-accept-encoding:
//! gzip` in its responses; every other method refuses a `grpc-encoding`
//! with `UNIMPLEMENTED` and a compressed message with `INTERNAL`.
//!
//! A server may answer before it has read the request (a replica refusing
//! a call it does not lead) and then resets the request half, as HTTP/2
//! asks (`RST_STREAM(NO_ERROR)`). The client's send then fails with a bare
//! HTTP/2 error while the answer is waiting to be read, so a unary call
//! whose send fails reports the server's status when one arrives within
//! [`SEND_ERROR_STATUS_WAIT`] ([`ClientCall::status_after_send_error`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::future;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Request, Response};

use super::compression::{self, DecompressError, Encoding};
use super::frame::{self, Decoder, FrameError};
use super::status::{self, Code, Status};
use crate::limits;
use crate::net::Peer;

/// How often an idle connection is pinged, and how long a pong may take.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a client whose send failed waits for the server's status (see
/// the module doc): the status is normally there already; a dead server
/// sends none, and this bounds the wait for it.
pub const SEND_ERROR_STATUS_WAIT: Duration = Duration::from_secs(1);
/// How long a keepalive pong may take before the peer counts as dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

const CONTENT_TYPE: &str = "application/grpc";

/// The glommio stream h2 runs on (plaintext or TLS), as a tokio stream.
type Io = crate::net::TokioStream<crate::tls::Stream>;

/// The `authorization` value every new [`Channel`] sends, when set.
static DEFAULT_AUTHORIZATION: OnceLock<HeaderValue> = OnceLock::new();

/// `Bearer SECRET` as a header value that HPACK never indexes (a secret
/// must not sit in a compression table a later header could probe).
fn bearer_value(secret: &str) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::try_from(format!("Bearer {secret}"))
        .ok()
        .filter(|_| !secret.is_empty() && secret.bytes().all(|byte| byte.is_ascii_graphic()))
        .ok_or_else(|| "a bearer token must be visible ASCII, without spaces".to_string())?;
    value.set_sensitive(true);
    Ok(value)
}

/// Makes every [`Channel`] connected from now on, in this process, send
/// `authorization: Bearer SECRET` with each call. Set once, at startup;
/// a second call is refused.
pub fn set_default_bearer(secret: &str) -> Result<(), String> {
    DEFAULT_AUTHORIZATION.set(bearer_value(secret)?).map_err(|_| "the default bearer token is already set".into())
}

/// A boxed, thread-local future.
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Maps an h2 error to the status a gRPC peer would see.
fn h2_status(error: &h2::Error) -> Status {
    if error.reason() == Some(Reason::CANCEL) {
        Status::cancelled(format!("stream cancelled: {error}"))
    } else {
        Status::unavailable(format!("http/2: {error}"))
    }
}

fn frame_status(error: FrameError) -> Status {
    match error {
        FrameError::TooLarge { .. } => Status::resource_exhausted(error.to_string()),
        _ => Status::internal(format!("grpc framing: {error}")),
    }
}

/// The request messages of a call (or the response messages a client
/// reads): DATA chunks reassembled into messages.
pub struct MessageStream {
    body: RecvStream,
    decoder: Decoder,
    ended: bool,
    /// The call's `grpc-encoding`, for messages flagged compressed.
    encoding: Encoding,
    /// Message bytes received, as sent (compressed or not).
    received_bytes: u64,
}

fn decompress_status(error: DecompressError) -> Status {
    match error {
        DecompressError::NoEncoding => Status::internal(error.to_string()),
        // The client's bytes are bad: the request is malformed.
        DecompressError::Corrupt(_) => Status::invalid_argument(error.to_string()),
        DecompressError::TooLarge { .. } => Status::resource_exhausted(error.to_string()),
    }
}

impl MessageStream {
    fn new(body: RecvStream, max_message_bytes: usize) -> MessageStream {
        MessageStream {
            body,
            decoder: Decoder::new(max_message_bytes),
            ended: false,
            encoding: Encoding::Identity,
            received_bytes: 0,
        }
    }

    /// The message bytes received so far, as sent: compressed ones at
    /// their compressed size, prefixes not counted.
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    /// The next message's bytes (inflated, if it came compressed), `None`
    /// at the end of the stream.
    pub async fn next_bytes(&mut self) -> Result<Option<Bytes>, Status> {
        loop {
            if let Some(message) = self.decoder.next_frame().map_err(frame_status)? {
                self.received_bytes += message.bytes.len() as u64;
                if !message.compressed {
                    return Ok(Some(message.bytes));
                }
                let max = self.decoder.max_message_bytes();
                return compression::decompress(self.encoding, &message.bytes, max)
                    .map(Some)
                    .map_err(decompress_status);
            }
            if self.ended {
                self.decoder.finish().map_err(frame_status)?;
                return Ok(None);
            }
            match self.body.data().await {
                Some(Ok(chunk)) => {
                    // The decoder bounds what it buffers, so the window can be
                    // given back as soon as a chunk arrives.
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.decoder.push(chunk);
                }
                Some(Err(error)) => return Err(h2_status(&error)),
                None => self.ended = true,
            }
        }
    }

    /// The next message decoded as `M`; malformed protobuf is
    /// `INVALID_ARGUMENT`.
    pub async fn next<M: prost::Message + Default>(&mut self) -> Result<Option<M>, Status> {
        match self.next_bytes().await? {
            None => Ok(None),
            Some(bytes) => M::decode(bytes)
                .map(Some)
                .map_err(|error| Status::invalid_argument(format!("malformed {}: {error}", short_type_name::<M>()))),
        }
    }

    /// The trailers after the last message (client side).
    async fn trailers(&mut self) -> Result<Option<HeaderMap>, Status> {
        self.body.trailers().await.map_err(|error| h2_status(&error))
    }
}

fn short_type_name<M>() -> &'static str {
    let name = std::any::type_name::<M>();
    name.rsplit("::").next().unwrap_or(name)
}

/// Sends `data` on `stream`, never more than flow control grants.
async fn send_flow_controlled(stream: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> Result<(), Status> {
    if data.is_empty() {
        return stream.send_data(data, end).map_err(|error| h2_status(&error));
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        match future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            None => return Err(Status::cancelled("the peer closed the stream")),
            Some(Err(error)) => return Err(h2_status(&error)),
            Some(Ok(0)) => continue,
            Some(Ok(granted)) => {
                let chunk = data.split_to(granted.min(data.len()));
                stream.send_data(chunk, end && data.is_empty()).map_err(|error| h2_status(&error))?;
            }
        }
    }
    Ok(())
}

/// One server-side call: the request's headers and messages, and the
/// response sink. Messages are buffered up to [`limits::GRPC_FLUSH_BYTES`]; call
/// [`Call::flush`] when a message must go out now (an ack).
pub struct Call {
    /// The request headers.
    pub headers: HeaderMap,
    /// Who sent it (the connection's peer).
    pub peer: Rc<Peer>,
    /// The request messages.
    pub messages: MessageStream,
    respond: Option<h2::server::SendResponse<Bytes>>,
    stream: Option<SendStream<Bytes>>,
    pending: BytesMut,
    /// Whether the response advertises `grpc-accept-encoding`.
    accepts_gzip: bool,
}

impl Call {
    /// Queues a response message (sending the response headers first if
    /// this is the first one).
    pub async fn send<M: prost::Message>(&mut self, message: &M) -> Result<(), Status> {
        frame::encode_message(message, &mut self.pending);
        if self.pending.len() >= limits::GRPC_FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes out every queued message.
    pub async fn flush(&mut self) -> Result<(), Status> {
        self.response_stream()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let data = self.pending.split().freeze();
        let stream = self.stream.as_mut().ok_or_else(|| Status::internal("no response stream"))?;
        send_flow_controlled(stream, data, false).await
    }

    /// The response's send stream, sending the headers on first use.
    fn response_stream(&mut self) -> Result<&mut SendStream<Bytes>, Status> {
        if self.stream.is_none() {
            let respond = self.respond.as_mut().ok_or_else(|| Status::internal("response already finished"))?;
            let response = grpc_response(self.accepts_gzip);
            let stream = respond.send_response(response, false).map_err(|error| h2_status(&error))?;
            self.stream = Some(stream);
        }
        self.stream.as_mut().ok_or_else(|| Status::internal("no response stream"))
    }

    /// Ends the response with `status`: trailers after the messages, or a
    /// trailers-only response when nothing was sent.
    async fn finish(mut self, status: Status) {
        if status.code == Code::Ok || self.stream.is_some() || !self.pending.is_empty() {
            if let Err(error) = self.flush().await {
                tracing::debug!(%error, "grpc: response not delivered");
                return;
            }
        }
        match self.stream.as_mut() {
            Some(stream) => {
                let _ = stream.send_trailers(status.to_header_map());
            }
            None => {
                if let Some(respond) = self.respond.as_mut() {
                    let mut response = grpc_response(self.accepts_gzip);
                    response.headers_mut().extend(status.to_header_map());
                    let _ = respond.send_response(response, true);
                }
            }
        }
    }
}

/// A response's headers; with `accepts_gzip`, advertising it.
fn grpc_response(accepts_gzip: bool) -> Response<()> {
    let mut response = Response::new(());
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if accepts_gzip {
        response
            .headers_mut()
            .insert(compression::GRPC_ACCEPT_ENCODING, HeaderValue::from_static(compression::ACCEPTED_ENCODINGS));
    }
    response
}

/// A gRPC service: routes a method path to its handler.
pub trait Service: 'static {
    /// Handles the call to `path` (`/package.Service/Method`). Unknown
    /// methods return `UNIMPLEMENTED`.
    fn call<'a>(self: Rc<Self>, path: &'a str, call: &'a mut Call) -> LocalFuture<'a, Result<(), Status>>;

    /// Whether the method at `path` takes gzip-compressed messages
    /// (`grpc-encoding: gzip`; see the module doc). None does by default.
    fn accepts_gzip(&self, _path: &str) -> bool {
        false
    }
}

/// What a server connection needs from its node.
pub struct ServerOptions {
    /// Largest request message.
    pub max_message_bytes: usize,
    /// Set when the node shuts down: the connection sends GOAWAY, lets
    /// running calls finish and closes.
    pub closing: Rc<dyn Fn() -> bool>,
}

fn h2_server_builder() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(limits::GRPC_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(limits::GRPC_CONNECTION_WINDOW_BYTES)
        .max_frame_size(limits::GRPC_FRAME_BYTES_MAX)
        .max_concurrent_streams(limits::GRPC_CONNECTION_STREAMS_MAX)
        .max_send_buffer_size(limits::GRPC_SEND_BUFFER_BYTES)
        .max_header_list_size(limits::GRPC_HEADER_BYTES_MAX);
    builder
}

/// Serves one accepted connection (its TLS handshake, if any, done:
/// [`crate::tls::accept`]) until the peer closes it, keepalive finds it
/// dead, or the node shuts down.
pub async fn serve_connection<S: Service>(
    stream: impl Into<crate::tls::Stream>,
    peer: Peer,
    service: Rc<S>,
    options: Rc<ServerOptions>,
) {
    let stream = stream.into();
    let _ = stream.set_nodelay(true);
    let peer = Rc::new(peer);
    let mut connection = match h2_server_builder().handshake::<Io, Bytes>(Io::new(stream)).await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::debug!(%error, "grpc: handshake failed");
            return;
        }
    };
    let ping_pong = connection.ping_pong();
    let accepting = async {
        let mut shutting_down = false;
        loop {
            let next = future::or(async { Some(connection.accept().await) }, async {
                if shutting_down {
                    std::future::pending::<()>().await;
                }
                while !(options.closing)() {
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
                None
            })
            .await;
            match next {
                None => {
                    shutting_down = true;
                    connection.graceful_shutdown();
                }
                Some(None) => return,
                Some(Some(Err(error))) => {
                    tracing::debug!(%error, "grpc: connection ended");
                    return;
                }
                Some(Some(Ok((request, respond)))) => {
                    let service = service.clone();
                    let max_message_bytes = options.max_message_bytes;
                    let peer = peer.clone();
                    glommio::spawn_local(run_call(request, respond, peer, service, max_message_bytes)).detach();
                }
            }
        }
    };
    match ping_pong {
        Some(ping_pong) => {
            future::or(accepting, async {
                keepalive(ping_pong).await;
                tracing::info!("grpc: peer missed keepalive pings; closing the connection");
            })
            .await
        }
        None => accepting.await,
    }
}

/// Pings every [`KEEPALIVE_INTERVAL`]; returns when a pong is late or the
/// connection is gone.
async fn keepalive(mut ping_pong: h2::PingPong) {
    loop {
        glommio::timer::sleep(KEEPALIVE_INTERVAL).await;
        let pong = future::or(async { ping_pong.ping(h2::Ping::opaque()).await.is_ok() }, async {
            glommio::timer::sleep(KEEPALIVE_TIMEOUT).await;
            false
        })
        .await;
        if !pong {
            return;
        }
    }
}

async fn run_call<S: Service>(
    request: Request<RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
    peer: Rc<Peer>,
    service: Rc<S>,
    max_message_bytes: usize,
) {
    let (parts, body) = request.into_parts();
    let mut respond = respond;
    let content_type = parts.headers.get(http::header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    if parts.method != http::Method::POST || !content_type.is_some_and(|value| value.starts_with(CONTENT_TYPE)) {
        // Not gRPC: plain HTTP status, as the gRPC HTTP/2 spec asks.
        let mut response = Response::new(());
        *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
        let _ = respond.send_response(response, true);
        return;
    }
    let accepts_gzip = service.accepts_gzip(parts.uri.path());
    let mut call = Call {
        messages: MessageStream::new(body, max_message_bytes),
        headers: parts.headers,
        peer,
        respond: Some(respond),
        stream: None,
        pending: BytesMut::new(),
        accepts_gzip,
    };
    let encoding = Encoding::from_header(call.headers.get(compression::GRPC_ENCODING).map(HeaderValue::as_bytes));
    let result = match encoding {
        Err(name) => {
            Err(Status::unimplemented(format!("message compression {name:?} is not supported (grpc-encoding)")))
        }
        Ok(Encoding::Gzip) if !accepts_gzip => {
            Err(Status::unimplemented("message compression is not supported by this method (grpc-encoding)"))
        }
        Ok(encoding) => {
            if accepts_gzip {
                call.messages.decoder.accept_compressed();
                call.messages.encoding = encoding;
            }
            run_service(&service, parts.uri.path(), &mut call).await
        }
    };
    let status = result.err().unwrap_or_else(Status::ok);
    call.finish(status).await;
}

/// Runs the service's handler for `path`, within the call's `grpc-timeout`.
async fn run_service<S: Service>(service: &Rc<S>, path: &str, call: &mut Call) -> Result<(), Status> {
    let timeout = match call.headers.get("grpc-timeout") {
        None => None,
        Some(value) => Some(
            status::parse_timeout(value.as_bytes())
                .map(|timeout| timeout.min(limits::GRPC_CALL_TIMEOUT_MAX))
                .ok_or_else(|| Status::invalid_argument("malformed grpc-timeout header"))?,
        ),
    };
    match timeout {
        None => service.clone().call(path, call).await,
        Some(timeout) => {
            future::or(service.clone().call(path, call), async {
                glommio::timer::sleep(timeout).await;
                Err(Status::deadline_exceeded(format!("the call took longer than its grpc-timeout {timeout:?}")))
            })
            .await
        }
    }
}

/// A client's HTTP/2 connection to a gRPC server. Calls may run
/// concurrently; the connection is driven by a task of its own, which also
/// pings the server so that a dead peer fails every call.
pub struct Channel {
    sender: h2::client::SendRequest<Bytes>,
    scheme: &'static str,
    authority: String,
    max_message_bytes: usize,
    driver: Option<glommio::task::JoinHandle<()>>,
    authorization: Option<HeaderValue>,
}

impl Drop for Channel {
    fn drop(&mut self) {
        if let Some(driver) = self.driver.take() {
            driver.cancel();
        }
    }
}

impl Channel {
    /// Connects (TCP, TLS when the process has a client configuration
    /// ([`crate::tls::client_config`]: `--peer-ca`, a tool's `--tls-ca`),
    /// and the HTTP/2 handshake) within `timeout`.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Channel, Status> {
        Channel::connect_with(addr, timeout, crate::tls::client_config()).await
    }

    /// [`Channel::connect`] with TLS as `tls` says: `None` is plaintext;
    /// otherwise the server's certificate must be valid for `addr`'s IP.
    pub async fn connect_with(
        addr: SocketAddr,
        timeout: Duration,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<Channel, Status> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let connecting = async {
            let socket = glommio::net::TcpStream::connect(addr)
                .await
                .map_err(|error| Status::unavailable(format!("connect {addr}: {error}")))?;
            let _ = socket.set_nodelay(true);
            let stream = match tls {
                None => crate::tls::Stream::Plain(socket),
                Some(config) => crate::tls::connect(socket, config, addr.ip())
                    .await
                    .map_err(|error| Status::unavailable(format!("tls handshake with {addr}: {error}")))?,
            };
            let mut builder = h2::client::Builder::new();
            builder
                .initial_window_size(limits::GRPC_STREAM_WINDOW_BYTES)
                .initial_connection_window_size(limits::GRPC_CONNECTION_WINDOW_BYTES)
                .max_frame_size(limits::GRPC_FRAME_BYTES_MAX)
                .max_send_buffer_size(limits::GRPC_SEND_BUFFER_BYTES)
                .max_header_list_size(limits::GRPC_HEADER_BYTES_MAX);
            builder
                .handshake::<Io, Bytes>(Io::new(stream))
                .await
                .map_err(|error| Status::unavailable(format!("http/2 handshake with {addr}: {error}")))
        };
        let (sender, mut connection) = future::or(connecting, async {
            glommio::timer::sleep(timeout).await;
            Err(Status::unavailable(format!("connect {addr}: timed out after {timeout:?}")))
        })
        .await?;
        let ping_pong = connection.ping_pong();
        let driver = glommio::spawn_local(async move {
            let driving = async {
                if let Err(error) = (&mut connection).await {
                    tracing::debug!(%error, "grpc client connection ended");
                }
            };
            match ping_pong {
                Some(ping_pong) => future::or(driving, keepalive(ping_pong)).await,
                None => driving.await,
            }
        })
        .detach();
        Ok(Channel {
            sender,
            scheme,
            authority: addr.to_string(),
            max_message_bytes: limits::MESSAGE_BYTES_MAX,
            driver: Some(driver),
            authorization: DEFAULT_AUTHORIZATION.get().cloned(),
        })
    }

    /// The channel, sending `authorization: Bearer SECRET` with every call
    /// (`None`: no `authorization` at all), whatever the process default.
    pub fn with_bearer(mut self, secret: Option<&str>) -> Result<Channel, Status> {
        self.authorization = secret.map(bearer_value).transpose().map_err(Status::invalid_argument)?;
        Ok(self)
    }

    /// Starts a call of `path`; `timeout` is sent as `grpc-timeout`.
    pub async fn start(&self, path: &str, timeout: Option<Duration>) -> Result<ClientCall, Status> {
        let uri = format!("{}://{}{}", self.scheme, self.authority, path);
        let mut request = Request::post(uri)
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(http::header::TE, "trailers")
            .body(())
            .map_err(|error| Status::internal(format!("request for {path}: {error}")))?;
        if let Some(timeout) = timeout {
            if let Ok(value) = HeaderValue::from_str(&status::format_timeout(timeout)) {
                request.headers_mut().insert("grpc-timeout", value);
            }
        }
        if let Some(value) = &self.authorization {
            request.headers_mut().insert(http::header::AUTHORIZATION, value.clone());
        }
        let mut sender = self.sender.clone().ready().await.map_err(|error| h2_status(&error))?;
        let (response, send) = sender.send_request(request, false).map_err(|error| h2_status(&error))?;
        Ok(ClientCall {
            sender: CallSender { send, pending: BytesMut::new() },
            receiver: CallReceiver {
                response: Some(response),
                messages: None,
                max_message_bytes: self.max_message_bytes,
                finished: false,
            },
        })
    }

    /// A unary call.
    pub async fn unary<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        path: &str,
        request: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, Status> {
        let mut call = self.start(path, timeout).await?;
        let sent = match call.send(request).await {
            Ok(()) => call.close_send().await,
            Err(error) => Err(error),
        };
        if let Err(error) = sent {
            return Err(call.status_after_send_error(error).await);
        }
        let response = call.next::<Resp>().await?.ok_or_else(|| Status::internal("no response message"))?;
        match call.next::<Resp>().await? {
            None => Ok(response),
            Some(_) => Err(Status::internal("more than one response message to a unary call")),
        }
    }
}

/// One client-side call: send request messages, read response messages;
/// the final status comes as `Ok(None)` (OK) or `Err` from
/// [`ClientCall::next`]. [`ClientCall::split`] gives the two directions to
/// two tasks (a follower sends batches while it reads acks).
pub struct ClientCall {
    sender: CallSender,
    receiver: CallReceiver,
}

impl ClientCall {
    /// Sends one request message now.
    pub async fn send<M: prost::Message>(&mut self, message: &M) -> Result<(), Status> {
        self.sender.send(message).await
    }

    /// Ends the request stream.
    pub async fn close_send(&mut self) -> Result<(), Status> {
        self.sender.close_send().await
    }

    /// The next response message; `Ok(None)` once the call ended with OK.
    pub async fn next<M: prost::Message + Default>(&mut self) -> Result<Option<M>, Status> {
        self.receiver.next().await
    }

    /// The sending and the receiving half.
    pub fn split(self) -> (CallSender, CallReceiver) {
        (self.sender, self.receiver)
    }

    /// What to report once sending failed with `error`: the status the
    /// server ended the call with, if it did within
    /// [`SEND_ERROR_STATUS_WAIT`] (a server may refuse a call, with a
    /// leader hint, before reading it, and reset the request half; see the
    /// module doc), else `error`. Response messages still unread are
    /// skipped.
    pub async fn status_after_send_error(&mut self, error: Status) -> Status {
        self.receiver.status_after_send_error(error).await
    }
}

/// The request half of a [`ClientCall`].
pub struct CallSender {
    send: SendStream<Bytes>,
    pending: BytesMut,
}

impl CallSender {
    /// Sends one request message now.
    pub async fn send<M: prost::Message>(&mut self, message: &M) -> Result<(), Status> {
        frame::encode_message(message, &mut self.pending);
        let data = self.pending.split().freeze();
        send_flow_controlled(&mut self.send, data, false).await
    }

    /// Ends the request stream.
    pub async fn close_send(&mut self) -> Result<(), Status> {
        send_flow_controlled(&mut self.send, Bytes::new(), true).await
    }

    /// Sends a message the caller framed itself: the 5-byte prefix
    /// ([`frame::prefix`]) followed by the encoded message.
    pub async fn send_framed(&mut self, framed: Bytes) -> Result<(), Status> {
        send_flow_controlled(&mut self.send, framed, false).await
    }

    /// Abandons the call: the server sees it cancelled.
    pub fn cancel(&mut self) {
        self.send.send_reset(Reason::CANCEL);
    }
}

/// The response half of a [`ClientCall`].
pub struct CallReceiver {
    response: Option<h2::client::ResponseFuture>,
    messages: Option<MessageStream>,
    max_message_bytes: usize,
    finished: bool,
}

impl CallReceiver {
    /// See [`ClientCall::status_after_send_error`].
    pub async fn status_after_send_error(&mut self, error: Status) -> Status {
        let ended = future::or(
            async {
                loop {
                    // `()` decodes any message (it skips every field): only the end matters here.
                    match self.next::<()>().await {
                        Ok(Some(())) => continue,
                        Ok(None) => return None,
                        Err(status) => return Some(status),
                    }
                }
            },
            async {
                glommio::timer::sleep(SEND_ERROR_STATUS_WAIT).await;
                None
            },
        )
        .await;
        ended.unwrap_or(error)
    }

    /// The next response message; `Ok(None)` once the call ended with OK.
    pub async fn next<M: prost::Message + Default>(&mut self) -> Result<Option<M>, Status> {
        if self.finished {
            return Ok(None);
        }
        if let Some(response) = self.response.take() {
            let response = response.await.map_err(|error| h2_status(&error))?;
            let (parts, body) = response.into_parts();
            if parts.status != http::StatusCode::OK {
                self.finished = true;
                return Err(Status::new(
                    http_status_code(parts.status),
                    format!("http status {} from the server", parts.status),
                ));
            }
            if let Some(status) = Status::from_header_map(&parts.headers) {
                // Trailers-only response.
                self.finished = true;
                return if status.code == Code::Ok { Ok(None) } else { Err(status) };
            }
            self.messages = Some(MessageStream::new(body, self.max_message_bytes));
        }
        let messages = self.messages.as_mut().ok_or_else(|| Status::internal("no response stream"))?;
        if let Some(message) = messages.next::<M>().await? {
            return Ok(Some(message));
        }
        self.finished = true;
        let trailers = messages.trailers().await?;
        match trailers.as_ref().and_then(Status::from_header_map) {
            Some(status) if status.code == Code::Ok => Ok(None),
            Some(status) => Err(status),
            None => Err(Status::internal("response ended without grpc-status")),
        }
    }
}

/// The gRPC code for an HTTP status that is not 200 (gRPC HTTP/2 spec).
fn http_status_code(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}
