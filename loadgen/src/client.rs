//! Thin clients on glommio: HTTP/1.1 keep-alive (hyper 1 over a glommio
//! `TcpStream`, as the server side in `src/http/server.rs` does) and gRPC
//! (the wormdb library's own `Channel`), each under TLS when the target
//! carries a client configuration (`--tls-ca`).

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use wormdb::grpc::status::{Code, Status};
use wormdb::grpc::transport::Channel;
use wormdb::proto::WriteResponse;

use crate::cli::Target;

/// `WormIngest.Write`.
pub const WRITE: &str = "/wormdb.v1.WormIngest/Write";
/// `WormIngest.Query`.
pub const QUERY: &str = "/wormdb.v1.WormIngest/Query";
/// `WormReplication.Replicate`.
pub const REPLICATE: &str = "/wormdb.v1.WormReplication/Replicate";
/// `WormReplication.GetWatermark`.
pub const GET_WATERMARK: &str = "/wormdb.v1.WormReplication/GetWatermark";
/// `WormReplication.ReplayFrom`.
pub const REPLAY_FROM: &str = "/wormdb.v1.WormReplication/ReplayFrom";

/// Largest HTTP response body read (verification queries are bounded by
/// their `limit`; ingest answers are tiny).
pub const RESPONSE_BYTES_MAX: usize = 512 * 1024 * 1024;

/// The `authorization` value of every HTTP request, when `--token` is given.
static AUTHORIZATION: OnceLock<HeaderValue> = OnceLock::new();

/// Presents `secret` as a bearer token on every request and call from now
/// on (`--token`): HTTP requests here, gRPC calls through the library's
/// process-wide default.
pub fn set_bearer(secret: &str) -> Result<(), String> {
    wormdb::grpc::transport::set_default_bearer(secret).map_err(|error| format!("--token: {error}"))?;
    let mut value = HeaderValue::try_from(format!("Bearer {secret}")).map_err(|error| format!("--token: {error}"))?;
    value.set_sensitive(true);
    AUTHORIZATION.set(value).map_err(|_| "--token: already set".to_string())
}

/// What the node answered to a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteAck {
    /// The shard that stored the entries.
    pub shard: u32,
    /// Their seqs, `first_seq..=last_seq`.
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
}

/// A failed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Counted by this: `http 429`, `grpc UNAVAILABLE`, `connection`, `timeout`, ...
    pub kind: String,
    /// What happened, for the report.
    pub message: String,
    /// The connection is unusable; open a new one.
    pub reconnect: bool,
}

impl Failure {
    /// A connection-level failure.
    pub fn connection(message: impl std::fmt::Display) -> Failure {
        Failure { kind: "connection".into(), message: message.to_string(), reconnect: true }
    }

    /// No answer in time.
    pub fn timeout(after: Duration) -> Failure {
        Failure { kind: "timeout".into(), message: format!("no answer within {after:?}"), reconnect: true }
    }

    /// A gRPC status.
    pub fn grpc(status: &Status) -> Failure {
        Failure {
            kind: format!("grpc {}", status.code.as_str()),
            message: status.message.clone(),
            // h2 errors surface as UNAVAILABLE: the channel may be gone.
            reconnect: matches!(status.code, Code::Unavailable | Code::Cancelled),
        }
    }
}

/// Runs `work` until `deadline`; `None` if it did not finish.
pub async fn until<T>(deadline: Instant, work: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(work.await) }, async {
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
        None
    })
    .await
}

/// An HTTP/1.1 keep-alive connection.
pub struct HttpClient {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

impl HttpClient {
    /// Connects within `timeout`.
    pub async fn connect(target: &Target, timeout: Duration) -> Result<HttpClient, Failure> {
        let addr = target.addr;
        let connecting = async {
            let stream = glommio::net::TcpStream::connect(addr)
                .await
                .map_err(|error| Failure::connection(format!("connect {addr}: {error}")))?;
            let _ = stream.set_nodelay(true);
            let stream = match &target.tls {
                None => wormdb::tls::Stream::Plain(stream),
                Some(config) => wormdb::tls::connect(stream, config.clone(), addr.ip())
                    .await
                    .map_err(|error| Failure::connection(format!("TLS handshake with {addr}: {error}")))?,
            };
            let io = TokioIo::new(wormdb::net::TokioStream::new(stream));
            let (sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|error| Failure::connection(format!("HTTP/1.1 handshake with {addr}: {error}")))?;
            glommio::spawn_local(async move {
                // Ends when the sender is dropped or the peer closes.
                let _ = connection.await;
            })
            .detach();
            Ok(sender)
        };
        let sender = until(Instant::now() + timeout, connecting)
            .await
            .unwrap_or_else(|| Err(Failure::connection(format!("connect {addr}: timed out after {timeout:?}"))))?;
        Ok(HttpClient { sender, authority: target.authority.clone() })
    }

    /// Sends one request and reads the whole answer.
    pub async fn request(
        &mut self,
        method: Method,
        uri: &Uri,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), Failure> {
        self.sender.ready().await.map_err(Failure::connection)?;
        let mut builder = Request::builder().method(method).uri(uri.clone()).header(header::HOST, &self.authority);
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(authorization) = AUTHORIZATION.get() {
            builder = builder.header(header::AUTHORIZATION, authorization.clone());
        }
        let request = builder.body(Full::new(body)).map_err(|error| Failure {
            kind: "request".into(),
            message: error.to_string(),
            reconnect: false,
        })?;
        let response = self.sender.send_request(request).await.map_err(Failure::connection)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
            .collect()
            .await
            .map_err(|error| Failure::connection(format!("reading the answer: {error}")))?
            .to_bytes();
        Ok((status, body))
    }

    /// `POST /v1/entries` of a pre-encoded NDJSON body.
    pub async fn write(&mut self, uri: &Uri, body: Bytes) -> Result<WriteAck, Failure> {
        let (status, answer) = self.request(Method::POST, uri, Some("application/x-ndjson"), body).await?;
        if status != StatusCode::OK {
            return Err(Failure {
                kind: format!("http {}", status.as_u16()),
                message: String::from_utf8_lossy(&answer[..answer.len().min(300)]).trim().to_string(),
                reconnect: false,
            });
        }
        parse_write_answer(&answer).ok_or_else(|| Failure {
            kind: "bad answer".into(),
            message: String::from_utf8_lossy(&answer).into(),
            reconnect: false,
        })
    }
}

impl HttpClient {
    /// `POST` of a pre-encoded request of a shipper's protocol, which
    /// answers `expected` with no seqs: `Ok` on that status (and, for a
    /// bulk answer, `"errors": false`).
    pub async fn ship(
        &mut self,
        uri: &Uri,
        content_type: &'static str,
        body: Bytes,
        expected: StatusCode,
    ) -> Result<(), Failure> {
        let (status, answer) = self.request(Method::POST, uri, Some(content_type), body).await?;
        let text = || String::from_utf8_lossy(&answer[..answer.len().min(300)]).trim().to_string();
        if status != expected {
            return Err(Failure { kind: format!("http {}", status.as_u16()), message: text(), reconnect: false });
        }
        if bulk_has_errors(uri, &answer) {
            return Err(Failure { kind: "bulk item errors".into(), message: text(), reconnect: false });
        }
        Ok(())
    }
}

/// Whether `answer` is an Elasticsearch bulk answer that reports failed
/// items (`"errors": true`, or not a bulk answer at all).
fn bulk_has_errors(uri: &Uri, answer: &[u8]) -> bool {
    if !uri.path().ends_with("/_bulk") {
        return false;
    }
    let value: Option<serde_json::Value> = serde_json::from_slice(answer).ok();
    value.and_then(|value| value.get("errors").and_then(serde_json::Value::as_bool)) != Some(false)
}

/// OTLP's `LogsService/Export`.
pub const OTLP_EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// One OTLP `Export` of a pre-framed `ExportLogsServiceRequest`; a partial
/// success (rejected records) is a failure.
pub async fn otlp_export(channel: &Channel, framed: Bytes, timeout: Duration) -> Result<(), Failure> {
    use wormdb::proto::opentelemetry::proto::collector::logs::v1::ExportLogsServiceResponse;
    let answer = async {
        let (mut sender, mut receiver) = channel.start(OTLP_EXPORT, Some(timeout)).await?.split();
        sender.send_framed(framed).await?;
        sender.close_send().await?;
        let response: ExportLogsServiceResponse =
            receiver.next().await?.ok_or_else(|| Status::internal("no ExportLogsServiceResponse"))?;
        Ok(response)
    };
    let response = answer.await.map_err(|status| Failure::grpc(&status))?;
    match response.partial_success {
        Some(partial) if partial.rejected_log_records > 0 => Err(Failure {
            kind: "otlp partial success".into(),
            message: format!("{} records rejected: {}", partial.rejected_log_records, partial.error_message),
            reconnect: false,
        }),
        _ => Ok(()),
    }
}

/// A plain TCP connection for syslog: nothing comes back.
pub async fn tcp_connect(target: &Target, timeout: Duration) -> Result<glommio::net::TcpStream, Failure> {
    let addr = target.addr;
    let connecting = async {
        let stream = glommio::net::TcpStream::connect(addr)
            .await
            .map_err(|error| Failure::connection(format!("connect {addr}: {error}")))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    };
    until(Instant::now() + timeout, connecting)
        .await
        .unwrap_or_else(|| Err(Failure::connection(format!("connect {addr}: timed out after {timeout:?}"))))
}

/// Parses `{"count":N,"first_seq":A,"last_seq":B,"shard":S}`.
pub fn parse_write_answer(answer: &[u8]) -> Option<WriteAck> {
    let value: serde_json::Value = serde_json::from_slice(answer).ok()?;
    let field = |name: &str| value.get(name).and_then(serde_json::Value::as_u64);
    let ack = WriteAck {
        shard: u32::try_from(field("shard")?).ok()?,
        first_seq: field("first_seq")?,
        last_seq: field("last_seq")?,
    };
    (ack.first_seq >= 1 && ack.first_seq <= ack.last_seq).then_some(ack)
}

/// Connects a gRPC channel within `timeout`.
pub async fn grpc_connect(target: &Target, timeout: Duration) -> Result<Channel, Failure> {
    Channel::connect_with(target.addr, timeout, target.tls.clone())
        .await
        .map_err(|status| Failure::connection(status.message))
}

/// One `WormIngest.Write` of a pre-framed `WriteRequest`.
pub async fn grpc_write(channel: &Channel, framed: Bytes, timeout: Duration) -> Result<WriteAck, Failure> {
    let answer = async {
        let (mut sender, mut receiver) = channel.start(WRITE, Some(timeout)).await?.split();
        sender.send_framed(framed).await?;
        sender.close_send().await?;
        let response: WriteResponse = receiver.next().await?.ok_or_else(|| Status::internal("no WriteResponse"))?;
        if receiver.next::<WriteResponse>().await?.is_some() {
            return Err(Status::internal("two WriteResponses"));
        }
        Ok(response)
    };
    let response = answer.await.map_err(|status| Failure::grpc(&status))?;
    if response.first_seq == 0 || response.first_seq > response.last_seq {
        return Err(Failure {
            kind: "bad answer".into(),
            message: format!("WriteResponse {response:?}"),
            reconnect: false,
        });
    }
    Ok(WriteAck { shard: response.shard, first_seq: response.first_seq, last_seq: response.last_seq })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_answers() {
        assert_eq!(
            parse_write_answer(br#"{"count":2,"first_seq":1,"last_seq":2,"shard":0}"#),
            Some(WriteAck { shard: 0, first_seq: 1, last_seq: 2 })
        );
        assert_eq!(parse_write_answer(br#"{"count":2,"first_seq":3,"last_seq":2,"shard":0}"#), None);
        assert_eq!(parse_write_answer(b"not json"), None);
        assert_eq!(parse_write_answer(br#"{"error":"x"}"#), None);
    }

    #[test]
    fn bulk_answers_with_failed_items_are_errors() {
        let bulk = Uri::from_static("/es/_bulk?_stream_fields=t0");
        assert!(!bulk_has_errors(&bulk, br#"{"took":1,"errors":false,"items":[]}"#));
        assert!(bulk_has_errors(&bulk, br#"{"took":1,"errors":true,"items":[]}"#));
        assert!(bulk_has_errors(&bulk, b"not json"));
        assert!(!bulk_has_errors(&Uri::from_static("/loki/api/v1/push"), b""));
    }
}
