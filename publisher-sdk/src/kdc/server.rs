//! The HTTPS server: TLS accept loop (rustls on `ring`), HTTP/1.1 (hyper), the two
//! endpoints, and the audit log.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sealpost_certs::{now_unix, Role, Verifier};
use sealpost_protocol::{ContentKey, PublisherIdentity};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::api::{
    ErrorBody, ErrorCode, KdcAddress, KeyResponse, LoginRequest, LoginResponse, EPOCHS_PATH,
    LOGIN_PATH, MAX_PASSWORD_LEN, MAX_READER_LEN, MAX_REQUEST_BODY,
};
use super::cors::Cors;
use super::limiter::{address_key, Limiter, PasswordChecks};
use super::readers::{verify_password, ReaderStore};
use super::tokens::{TokenRefusal, Tokens};
use super::{KdcConfig, KdcCredentials, KdcError};

/// Log target of the audit lines (one per key fetch, one per failed login).
pub const AUDIT_TARGET: &str = "sealpost::kdc::audit";
/// Longest TLS handshake allowed; a client that stalls longer is dropped. Short, because
/// until then the connection holds a slot: an honest handshake takes milliseconds (a few
/// round trips), an idle socket nothing but the slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for a request's headers once TLS is up.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection may live (bounds slow-body clients).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// What the handlers share.
struct Shared {
    publisher: String,
    certificate_b64: String,
    address: KdcAddress,
    /// Recent `(epoch, key)` pairs, newest last, as the publisher keeps them.
    keys: RwLock<Vec<(u64, ContentKey)>>,
    readers: Mutex<ReaderStore>,
    tokens: Mutex<Tokens>,
    limiter: Arc<Mutex<Limiter>>,
    /// Bounds the argon2 runs at once (19 MiB of memory each).
    password_checks: PasswordChecks,
    /// SHA-256 of the KDC certificate (hex), written into credentials for pinning.
    certificate_sha256: String,
    /// Web origins allowed to call the KDC.
    cors: Cors,
}

impl Shared {
    fn new(
        config: &KdcConfig,
        publisher: &PublisherIdentity,
        address: KdcAddress,
        state_dir: &Path,
        keys: Vec<(u64, ContentKey)>,
        certificate_sha256: String,
    ) -> Result<Shared, KdcError> {
        let cors = Cors::new(&config.allowed_origins)?;
        let mut readers = ReaderStore::open(state_dir)?;
        readers.set_served(&address.url, &certificate_sha256)?;
        Ok(Shared {
            publisher: publisher.id().to_owned(),
            certificate_b64: base64::engine::general_purpose::STANDARD
                .encode(&publisher.certificate().der),
            address,
            keys: RwLock::new(keys),
            readers: Mutex::new(readers),
            tokens: Mutex::new(Tokens::new(config.token_lifetime)),
            limiter: Arc::new(Mutex::new(Limiter::new(config.login_limit))),
            password_checks: PasswordChecks::new(config.max_password_checks),
            certificate_sha256,
            cors,
        })
    }

    /// Issues credentials for `reader`, granted from `epoch` on; any earlier password
    /// and tokens of that reader stop working.
    fn add_reader(&self, reader: &str, epoch: u64) -> Result<KdcCredentials, KdcError> {
        let password = lock(&self.readers).add_reader(reader, epoch)?;
        lock(&self.tokens).revoke_reader(reader);
        Ok(KdcCredentials {
            kdc: self.address.url.clone(),
            reader: reader.to_owned(),
            password,
            kdc_certificate_sha256: self.certificate_sha256.clone(),
        })
    }
}

/// The KDC's HTTP service without TLS or a listener: the seam the fuzz targets (`fuzz/`)
/// feed requests through. The handlers, limits and reader store are the real ones; only
/// the TLS layer in front of them is missing. Not a supported API.
#[doc(hidden)]
pub struct PlainKdc {
    shared: Arc<Shared>,
}

#[doc(hidden)]
impl PlainKdc {
    /// Sets up the handlers' state as [`Kdc`] does, at `config.public_address`.
    pub fn new(
        config: &KdcConfig,
        publisher: &PublisherIdentity,
        state_dir: &Path,
        keys: Vec<(u64, ContentKey)>,
    ) -> Result<PlainKdc, KdcError> {
        let address = KdcAddress::parse(config.public_address.as_deref().unwrap_or_default())?;
        // No TLS, so no certificate to pin: credentials it issues name none.
        let shared = Shared::new(config, publisher, address, state_dir, keys, String::new())?;
        Ok(PlainKdc {
            shared: Arc::new(shared),
        })
    }

    /// Issues credentials for `reader`, granted from `epoch` on.
    pub fn add_reader(&self, reader: &str, epoch: u64) -> Result<KdcCredentials, KdcError> {
        self.shared.add_reader(reader, epoch)
    }

    /// Serves one HTTP/1.1 connection from `peer` over `io` to its end.
    pub async fn serve<S>(&self, io: S, peer: SocketAddr)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        serve_http(io, self.shared.clone(), peer).await;
    }
}

/// A running KDC. Serving stops when it is dropped.
pub struct Kdc {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Kdc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kdc")
            .field("address", &self.shared.address.url)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Kdc {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

impl Kdc {
    /// Binds, checks the server certificate against the CA, and starts serving the keys
    /// of `publisher` to the readers recorded in `state_dir`.
    pub(crate) async fn start(
        config: &KdcConfig,
        publisher: &PublisherIdentity,
        verifier: &Verifier,
        state_dir: &Path,
        keys: Vec<(u64, ContentKey)>,
    ) -> Result<Kdc, KdcError> {
        let tls = server_tls(config, verifier)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| KdcError::Bind {
                addr: config.listen,
                detail: e.to_string(),
            })?;
        let local_addr = listener.local_addr().map_err(|e| KdcError::Bind {
            addr: config.listen,
            detail: e.to_string(),
        })?;
        let address = match &config.public_address {
            Some(a) => KdcAddress::parse(a)?,
            None => {
                if local_addr.ip().is_unspecified() {
                    return Err(KdcError::Address(super::api::InvalidAddress {
                        address: local_addr.to_string(),
                        reason: "listening on all interfaces: give a public address",
                    }));
                }
                let host = match local_addr.ip() {
                    std::net::IpAddr::V4(ip) => ip.to_string(),
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                };
                KdcAddress::parse(&format!("https://{host}:{}", local_addr.port()))?
            }
        };
        let info = tls.1;
        let certificate_sha256 = info.fingerprint_hex();
        if !info
            .names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&address.host))
        {
            return Err(KdcError::CertificateName(address.host.clone()));
        }
        let shared = Arc::new(Shared::new(
            config,
            publisher,
            address,
            state_dir,
            keys,
            certificate_sha256,
        )?);
        tracing::info!(address = %shared.address.url, listen = %local_addr, "KDC serving");
        let task = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(Arc::new(tls.0)),
            shared.clone(),
            ConnectionLimits {
                total: config.max_connections.max(1),
                per_address: config.max_connections_per_address.max(1),
            },
        ));
        Ok(Kdc {
            shared,
            local_addr,
            task,
        })
    }

    /// Stops serving and waits until the listening socket is closed (so the address can
    /// be bound again at once, e.g. by a restarted publisher).
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// The address in key indexes and credentials.
    pub fn address(&self) -> &str {
        &self.shared.address.url
    }

    /// The socket address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Readers with live credentials.
    pub fn readers(&self) -> Vec<String> {
        let mut store = lock(&self.shared.readers);
        let _ = store.refresh();
        store.active()
    }

    /// Installs the publisher's current keys (after a rotation), before anything is
    /// sealed under the new one.
    pub(crate) fn set_keys(&self, keys: Vec<(u64, ContentKey)>) {
        *self.shared.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    /// Issues credentials for `reader`, granted from `epoch` on; any earlier password
    /// and tokens of that reader stop working.
    pub(crate) fn add_reader(&self, reader: &str, epoch: u64) -> Result<KdcCredentials, KdcError> {
        self.shared.add_reader(reader, epoch)
    }

    /// Whether `reader` has live credentials that are not pending: it may hold the
    /// current key already.
    pub(crate) fn holds_key(&self, reader: &str) -> Result<bool, KdcError> {
        let record = lock(&self.shared.readers).record(reader)?;
        Ok(record.is_some_and(|r| r.revoked_at.is_none() && !r.pending))
    }

    /// Whether a reader added elsewhere waits to be enabled (re-reads the reader file if
    /// it changed).
    pub(crate) fn has_pending_readers(&self) -> Result<bool, KdcError> {
        lock(&self.shared.readers).has_pending()
    }

    /// Enables the pending readers from `epoch` on (see
    /// [`super::readers::ReaderStore::enable_pending`]).
    pub(crate) fn enable_pending_readers(&self, epoch: u64) -> Result<Vec<String>, KdcError> {
        lock(&self.shared.readers).enable_pending(epoch)
    }

    /// Revokes `reader`'s credentials and tokens. Returns whether it was active.
    pub(crate) fn revoke_reader(&self, reader: &str) -> Result<bool, KdcError> {
        let was = lock(&self.shared.readers).revoke(reader)?;
        lock(&self.shared.tokens).revoke_reader(reader);
        Ok(was)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type ServerTls = (rustls::ServerConfig, sealpost_certs::CertificateInfo);

fn server_tls(config: &KdcConfig, verifier: &Verifier) -> Result<ServerTls, KdcError> {
    let tls_err = |e: &dyn std::fmt::Display| KdcError::Tls(e.to_string());
    let chain = crate::transport::pem_blocks(&config.certificate_pem, "CERTIFICATE")
        .map_err(|e| tls_err(&e))?;
    let leaf = chain
        .first()
        .ok_or_else(|| KdcError::Tls("no certificate in the KDC certificate file".into()))?;
    // Refuse to start with a certificate subscribers would refuse anyway.
    let info = verifier.verify(leaf, now_unix()).map_err(|e| tls_err(&e))?;
    info.require_role(Role::Server).map_err(|e| tls_err(&e))?;
    let key = crate::transport::pem_blocks(&config.key_pem, "PRIVATE KEY")
        .map_err(|e| tls_err(&e))?
        .into_iter()
        .next()
        .ok_or_else(|| KdcError::Tls("no PKCS#8 private key in the KDC key file".into()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_err(&e))?
    .with_no_client_auth()
    .with_single_cert(
        chain.iter().cloned().map(CertificateDer::from).collect(),
        PrivateKeyDer::Pkcs8(key.into()),
    )
    .map_err(|e| tls_err(&e))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((server, info))
}

/// How many connections are served at once.
#[derive(Clone, Copy)]
struct ConnectionLimits {
    total: usize,
    per_address: usize,
}

/// Open connections per client address (same keys as the login limit).
#[derive(Default)]
struct PerAddress(Mutex<HashMap<String, usize>>);

/// One open connection counted in [`PerAddress`]; uncounted when dropped.
struct AddressSlot {
    counts: Arc<PerAddress>,
    key: String,
}

impl PerAddress {
    /// Counts a connection from `key`, unless that address already has `max` open.
    fn enter(self: &Arc<Self>, key: String, max: usize) -> Option<AddressSlot> {
        let mut counts = lock(&self.0);
        let n = counts.entry(key.clone()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: self.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts.0);
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    limits: ConnectionLimits,
) {
    let slots = Arc::new(Semaphore::new(limits.total));
    let per_address = Arc::new(PerAddress::default());
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "KDC accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // One address may hold only a share of the slots: closed at once past it, so
        // idle sockets from one client cannot keep everybody else out.
        let Some(address_slot) = per_address.enter(address_key(peer.ip()), limits.per_address)
        else {
            tracing::debug!(%peer, "KDC connection refused: too many from this address");
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        connections.spawn(async move {
            let _slots = (permit, address_slot);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "KDC TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            serve_http(tls, shared, peer).await;
        });
    }
}

/// Serves HTTP/1.1 on one (decrypted) connection until it ends or times out.
async fn serve_http<S>(io: S, shared: Arc<Shared>, peer: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move {
            if let Some(preflight) = shared.cors.preflight(&req) {
                return Ok::<_, Infallible>(preflight);
            }
            let origin = shared.cors.allowed_origin(&req);
            let mut answer = handle(&shared, peer, req).await;
            shared.cors.decorate(&mut answer, origin);
            Ok(answer)
        }
    });
    // One request per connection (the SDK opens one per request anyway): an idle
    // keep-alive connection would hold its slot for nothing.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(io), service);
    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
}

type Answer = Response<Full<Bytes>>;

async fn handle(shared: &Shared, peer: SocketAddr, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(shared.address.prefix.as_str()) else {
        return error(ErrorCode::NotFound, "no such endpoint");
    };
    if rest == LOGIN_PATH {
        if req.method() != Method::POST {
            return error(ErrorCode::MethodNotAllowed, "use POST");
        }
        return login(shared, peer, req).await;
    }
    if let Some(epoch) = rest.strip_prefix(EPOCHS_PATH) {
        if req.method() != Method::GET {
            return error(ErrorCode::MethodNotAllowed, "use GET");
        }
        let epoch = epoch.to_owned();
        return fetch(shared, peer, &req, &epoch);
    }
    error(ErrorCode::NotFound, "no such endpoint")
}

/// A login attempt counted by the limiter as in progress; it is decided (and the count
/// released) exactly once, also when the request is abandoned midway.
struct Attempt {
    limiter: Arc<Mutex<Limiter>>,
    key: String,
    decided: bool,
}

impl Attempt {
    fn decide(mut self, failed: bool) {
        self.decided = true;
        lock(&self.limiter).finish(&self.key, failed, Instant::now());
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.decided {
            lock(&self.limiter).finish(&self.key, false, Instant::now());
        }
    }
}

async fn login(shared: &Shared, peer: SocketAddr, req: Request<Incoming>) -> Answer {
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(ErrorCode::TooLarge, "request body too large"),
    };
    let Ok(request) = serde_json::from_slice::<LoginRequest>(&body) else {
        return error(ErrorCode::BadRequest, "expected {\"reader\", \"password\"}");
    };
    if request.reader.len() > MAX_READER_LEN || request.password.len() > MAX_PASSWORD_LEN {
        return error(ErrorCode::BadRequest, "reader or password too long");
    }
    let key = address_key(peer.ip());
    if let Err(wait) = lock(&shared.limiter).begin(&key, Instant::now()) {
        tracing::warn!(target: AUDIT_TARGET, reader = ?request.reader, %peer, "login refused: rate limited");
        let mut answer = error(
            ErrorCode::RateLimited,
            "too many failed logins; retry later",
        );
        if let Ok(v) = header::HeaderValue::from_str(&wait.as_secs().to_string()) {
            answer.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return answer;
    }
    let attempt = Attempt {
        limiter: shared.limiter.clone(),
        key,
        decided: false,
    };
    let record = match lock(&shared.readers).record(&request.reader) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "KDC cannot read its reader file");
            return error(ErrorCode::Internal, "reader file unavailable");
        }
    };
    let hash = record.as_ref().map(|r| r.password_hash.clone());
    let password = request.password;
    let revoked = record.as_ref().is_some_and(|r| r.revoked_at.is_some());
    // argon2 takes tens of milliseconds of CPU and 19 MiB: a bounded number at once, off
    // the async threads. The attempt goes into the check, so a client that hangs up
    // cannot take it off the count while argon2 still runs.
    let ok = shared
        .password_checks
        .run(move || {
            let ok = verify_password(hash.as_deref(), &password);
            attempt.decide(!ok || revoked);
            ok
        })
        .await
        .unwrap_or(false);
    if !ok || revoked {
        tracing::warn!(target: AUDIT_TARGET, reader = ?request.reader, %peer, at = now_unix(),
            outcome = if ok { "revoked" } else { "invalid_credentials" }, "login failed");
        return if ok {
            error(ErrorCode::Revoked, "the publisher revoked this reader")
        } else {
            error(
                ErrorCode::InvalidCredentials,
                "unknown reader or wrong password",
            )
        };
    }
    let credential = record.map(|r| r.password_hash).unwrap_or_default();
    let (token, lifetime) = {
        let mut tokens = lock(&shared.tokens);
        (
            tokens.issue(&request.reader, &credential, Instant::now()),
            tokens.lifetime(),
        )
    };
    tracing::info!(target: AUDIT_TARGET, reader = %request.reader, %peer, at = now_unix(), "login");
    json(
        StatusCode::OK,
        &LoginResponse {
            access_token: token,
            token_type: "Bearer".into(),
            expires_in: lifetime.as_secs(),
        },
    )
}

fn fetch(shared: &Shared, peer: SocketAddr, req: &Request<Incoming>, epoch: &str) -> Answer {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return unauthorized(ErrorCode::InvalidToken, "missing bearer token");
    };
    let checked = lock(&shared.tokens).check(token, Instant::now());
    let owner = match checked {
        Ok(o) => o,
        Err(TokenRefusal::Expired) => {
            return unauthorized(ErrorCode::TokenExpired, "the access token has expired")
        }
        Err(TokenRefusal::Invalid) => {
            return unauthorized(ErrorCode::InvalidToken, "unknown or invalidated token")
        }
    };
    let reader = owner.reader.clone();
    let Ok(epoch) = epoch.parse::<u64>() else {
        return error(ErrorCode::BadRequest, "the epoch must be a decimal number");
    };
    let audit = |outcome: &str| {
        tracing::info!(target: AUDIT_TARGET, reader = %reader, publisher = %shared.publisher,
            epoch, at = now_unix(), %peer, outcome, "key fetch");
    };
    let record = match lock(&shared.readers).record(&reader) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "KDC cannot read its reader file");
            return error(ErrorCode::Internal, "reader file unavailable");
        }
    };
    let Some(record) = record.filter(|r| r.revoked_at.is_none()) else {
        // Revoked (perhaps by another process) since the token was issued.
        lock(&shared.tokens).revoke_reader(&reader);
        audit("revoked");
        return unauthorized(ErrorCode::InvalidToken, "unknown or invalidated token");
    };
    if !owner.issued_under(&record.password_hash) {
        // The credentials were issued again (perhaps by another process) since: the
        // tokens of the old ones die with them (those of the new ones live on).
        audit("reissued");
        return unauthorized(ErrorCode::InvalidToken, "unknown or invalidated token");
    }
    if record.pending {
        // Added while no publisher could rotate for it: no key yet, not even the
        // current one, which may have sealed what was published before the reader.
        audit("pending");
        return error(
            ErrorCode::NotGranted,
            "this reader is enabled from the publisher's next epoch",
        );
    }
    if epoch < record.granted_epoch {
        audit("not_granted");
        return error(
            ErrorCode::NotGranted,
            "this reader was granted after that epoch",
        );
    }
    let key = shared
        .keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(e, _)| *e == epoch)
        .map(|(_, k)| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.as_bytes()));
    let Some(key) = key else {
        audit("unknown_epoch");
        return error(ErrorCode::UnknownEpoch, "no key for that epoch");
    };
    audit("granted");
    json(
        StatusCode::OK,
        &KeyResponse {
            publisher: shared.publisher.clone(),
            epoch,
            key,
            certificate: shared.certificate_b64.clone(),
        },
    )
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Answer {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    // Keys and tokens must never sit in a cache.
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn error(code: ErrorCode, message: &str) -> Answer {
    json(
        StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &ErrorBody {
            error: code.as_str().into(),
            message: message.into(),
        },
    )
}

fn unauthorized(code: ErrorCode, message: &str) -> Answer {
    let mut r = error(code, message);
    let value = format!("Bearer error=\"{}\"", code.as_str());
    if let Ok(v) = header::HeaderValue::from_str(&value) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}
