//! The REST publishing gateway (issue 17, item 4): an application backend that holds no
//! keys POSTs a message over HTTP, and the gateway seals it with the publisher's identity
//! and publishes it. Operators grant, revoke and list readers over the same API. The API
//! is described in `publisher-sdk/gateway.openapi.json` (checked by
//! `tests/tests/gateway.rs`).
//!
//! - Plain HTTP on loopback only (put a TLS-terminating proxy in front for anything
//!   else): [`Gateway::start`] refuses any other address.
//! - Bearer tokens ([`tokens`]): issued by `sealpost-gateway token add`, stored hashed,
//!   each scoped to topic filters; operator tokens may manage readers.
//! - Every error is JSON `{"error": "<code>", "message": "<text>"}`; texts never contain
//!   a token, key or payload.

pub mod tokens;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rumqttc::QoS;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{Publisher, PublisherError};
use tokens::{TokenEntry, TokenStore};

/// Largest request body (a message, or a certificate), in bytes.
pub const MAX_BODY: usize = 256 * 1024;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// Plain HTTP is served on loopback addresses only.
    #[error(
        "the gateway serves plain HTTP on loopback only, not on {0}; put a TLS proxy in front"
    )]
    NotLoopback(SocketAddr),
    /// Listening failed.
    #[error("gateway cannot listen on {addr}: {detail}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        detail: String,
    },
    /// The token store is unusable.
    #[error(transparent)]
    Tokens(#[from] tokens::TokenError),
}

struct Shared {
    publisher: Arc<Publisher>,
    tokens: Mutex<TokenStore>,
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl Gateway {
    /// Serves the API on `listen` (loopback only) for `publisher`, with the tokens of
    /// `state_dir`.
    pub async fn start(
        listen: SocketAddr,
        publisher: Arc<Publisher>,
        state_dir: PathBuf,
    ) -> Result<Gateway, GatewayError> {
        if !listen.ip().is_loopback() {
            return Err(GatewayError::NotLoopback(listen));
        }
        let tokens = TokenStore::open(&state_dir)?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| GatewayError::Bind {
                addr: listen,
                detail: e.to_string(),
            })?;
        let local = listener.local_addr().map_err(|e| GatewayError::Bind {
            addr: listen,
            detail: e.to_string(),
        })?;
        let shared = Arc::new(Shared {
            publisher,
            tokens: Mutex::new(tokens),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(tcp), service);
                    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
                });
            }
        });
        Ok(Gateway { local, task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops serving.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

type Answer = Response<Full<Bytes>>;

fn json_answer(status: StatusCode, body: &serde_json::Value) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An error answer: `{"error": code, "message": text}`.
fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    let mut r = json_answer(status, &json!({ "error": code, "message": message }));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sealpost-gateway\""),
        );
    }
    r
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_owned();
    let route = if let Some(topic) = path.strip_prefix("/v1/topics/") {
        Route::Topic(topic.to_owned())
    } else if path == "/v1/readers" {
        Route::Readers
    } else if let Some(id) = path.strip_prefix("/v1/readers/") {
        Route::Reader(id.to_owned())
    } else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    };
    let allowed = matches!(
        (&route, req.method()),
        (Route::Topic(_), &Method::POST)
            | (Route::Readers, &Method::GET | &Method::POST)
            | (Route::Reader(_), &Method::DELETE)
    );
    if !allowed {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint",
        );
    }
    let token = match authenticate(shared, &req) {
        Ok(t) => t,
        Err(answer) => return *answer,
    };
    match route {
        Route::Topic(raw) => publish(shared, &token, &raw, req).await,
        Route::Readers | Route::Reader(_) if !token.operator => error(
            StatusCode::FORBIDDEN,
            "not_operator",
            "this token may not manage readers",
        ),
        Route::Readers if req.method() == Method::GET => {
            let readers = shared.publisher.granted().await;
            json_answer(StatusCode::OK, &json!({ "readers": readers }))
        }
        Route::Readers => grant(shared, req).await,
        Route::Reader(id) => revoke(shared, &id).await,
    }
}

enum Route {
    Topic(String),
    Readers,
    Reader(String),
}

/// A refusal on the way (boxed: a response is large, and the happy path should not pay).
type Refused = Box<Answer>;

fn authenticate(shared: &Shared, req: &Request<Incoming>) -> Result<TokenEntry, Refused> {
    let unauthorized = |m: &str| Box::new(error(StatusCode::UNAUTHORIZED, "unauthorized", m));
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("a bearer token is required"))?;
    let mut store = shared
        .tokens
        .lock()
        .map_err(|_| Box::new(error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "lock")))?;
    if let Err(e) = store.reload() {
        tracing::error!("gateway tokens: {e}");
        return Err(Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the token store is unreadable",
        )));
    }
    store
        .authenticate(token)
        .cloned()
        .ok_or_else(|| unauthorized("unknown or revoked token"))
}

async fn body(req: Request<Incoming>) -> Result<Bytes, Refused> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(_) => Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the body exceeds 256 KiB",
        ))),
    }
}

/// The JSON form of a message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonMessage {
    payload_base64: String,
    #[serde(default)]
    qos: Option<u8>,
    #[serde(default)]
    retain: Option<bool>,
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse_qos(v: Option<u8>) -> Result<QoS, Refused> {
    match v.unwrap_or(1) {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        _ => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "qos must be 0 or 1",
        ))),
    }
}

async fn publish(shared: &Shared, token: &TokenEntry, raw: &str, req: Request<Incoming>) -> Answer {
    let Some(topic) = percent_decode(raw).filter(|t| sealpost_certs::topic::validate_topic(t))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_topic",
            "not a valid MQTT topic name",
        );
    };
    if !token.may_publish(&topic) {
        return error(
            StatusCode::FORBIDDEN,
            "topic_not_in_scope",
            "this token may not publish to this topic",
        );
    }
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let query = req.uri().query().unwrap_or_default().to_owned();
    let bytes = match body(req).await {
        Ok(b) => b,
        Err(a) => return *a,
    };
    let (payload, qos, retain) = if is_json {
        let Ok(m) = serde_json::from_slice::<JsonMessage>(&bytes) else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "expected {\"payload_base64\": ..., \"qos\"?: 0|1, \"retain\"?: bool}",
            );
        };
        let Ok(payload) = base64::engine::general_purpose::STANDARD.decode(&m.payload_base64)
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "payload_base64 is not base64",
            );
        };
        (payload, m.qos, m.retain.unwrap_or(false))
    } else {
        let mut qos = None;
        let mut retain = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("qos", "0")) => qos = Some(0),
                Some(("qos", "1")) => qos = Some(1),
                Some(("retain", "true")) => retain = true,
                Some(("retain", "false")) => retain = false,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "query parameters: qos=0|1, retain=true|false",
                    )
                }
            }
        }
        (bytes.to_vec(), qos, retain)
    };
    let qos = match parse_qos(qos) {
        Ok(q) => q,
        Err(a) => return *a,
    };
    match shared
        .publisher
        .publish(&topic, &payload, qos, retain)
        .await
    {
        Ok(seq) => json_answer(StatusCode::OK, &json!({ "topic": topic, "seq": seq })),
        Err(PublisherError::Seal(sealpost_protocol::SealError::TopicNotPermitted(_))) => error(
            StatusCode::FORBIDDEN,
            "topic_not_permitted",
            "the publisher's certificate does not permit this topic",
        ),
        Err(e) => {
            tracing::warn!("gateway publish to {topic:?} failed: {e}");
            error(
                StatusCode::BAD_GATEWAY,
                "publish_failed",
                "sealing or publishing failed",
            )
        }
    }
}

async fn grant(shared: &Shared, req: Request<Incoming>) -> Answer {
    let bytes = match body(req).await {
        Ok(b) => b,
        Err(a) => return *a,
    };
    let Ok(pem) = std::str::from_utf8(&bytes) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_certificate",
            "expected a PEM certificate",
        );
    };
    match shared.publisher.grant_pem(pem).await {
        Ok(id) => json_answer(StatusCode::OK, &json!({ "reader": id })),
        Err(e @ PublisherError::Certificate(_)) => {
            error(StatusCode::BAD_REQUEST, "bad_certificate", &e.to_string())
        }
        Err(e) => {
            tracing::warn!("gateway grant failed: {e}");
            error(StatusCode::BAD_GATEWAY, "grant_failed", "granting failed")
        }
    }
}

async fn revoke(shared: &Shared, id: &str) -> Answer {
    match shared.publisher.revoke(id).await {
        Ok(_) => json_answer(
            StatusCode::OK,
            &json!({ "reader": id, "epoch": shared.publisher.epoch().await }),
        ),
        Err(PublisherError::NotGranted(_)) => error(
            StatusCode::NOT_FOUND,
            "unknown_reader",
            "no granted reader of this id",
        ),
        Err(e) => {
            tracing::warn!("gateway revoke failed: {e}");
            error(StatusCode::BAD_GATEWAY, "revoke_failed", "revoking failed")
        }
    }
}
