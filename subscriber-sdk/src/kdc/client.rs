//! The HTTPS client of a publisher's KDC: log in, fetch the key of an epoch.
//!
//! TLS is rustls on the `ring` provider, trusting only the sealpost CA, with the host of
//! the KDC address checked against the server certificate, and the certificate pinned:
//! it must be exactly the one whose SHA-256 the credentials name
//! ([`KdcCredentials::kdc_certificate_sha256`]). The CA issues certificates for other
//! servers too (the broker's names the same host), so without the pin any of them could
//! pose as the KDC and receive the password. With a revocation list, the KDC certificate
//! must not be on it either. All of this is checked during the handshake, before the
//! password is sent. There is no way to turn verification off, and no plain-HTTP mode: an
//! `http://` address is refused before any connection is made.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sealpost_certs::{Role, Verifier};
use sealpost_client::kdc::api::{
    ErrorBody, ErrorCode, KdcAddress, KeyResponse, LoginRequest, LoginResponse, MAX_RESPONSE_BODY,
};
use sealpost_client::kdc::KdcCredentials;
use sealpost_protocol::ContentKey;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::KdcError;

/// Longest any one KDC request may take, connection and TLS handshake included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A bearer token from a login. `Debug` does not show it.
#[derive(Clone)]
pub struct AccessToken {
    value: String,
    /// When the client stops using it (a little before the KDC's expiry).
    pub expires_at: Instant,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl AccessToken {
    /// A token from its value, valid until `expires_at` (for tests of expiry).
    pub fn new(value: impl Into<String>, expires_at: Instant) -> AccessToken {
        AccessToken {
            value: value.into(),
            expires_at,
        }
    }

    /// Is this the same token as `other`?
    pub(crate) fn value_eq(&self, other: &AccessToken) -> bool {
        self.value == other.value
    }

    /// Has the client-side lifetime passed?
    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.expires_at
    }
}

/// A content key fetched from the KDC.
#[derive(Debug, Clone)]
pub struct FetchedKey {
    /// Publisher the key belongs to.
    pub publisher: String,
    /// Its epoch.
    pub epoch: u64,
    /// The key.
    pub key: ContentKey,
    /// The publisher's certificate (DER), to be verified against the CA before use.
    pub certificate_der: Vec<u8>,
}

/// A client for one KDC with one set of credentials.
#[derive(Clone)]
pub struct KdcClient {
    address: KdcAddress,
    credentials: KdcCredentials,
    tls: TlsConnector,
    /// Local address to connect from (multi-homed hosts); the system's choice if `None`.
    local: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for KdcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KdcClient")
            .field("kdc", &self.address.url)
            .field("reader", &self.credentials.reader)
            .finish_non_exhaustive()
    }
}

impl KdcClient {
    /// A client for the KDC named in `credentials`, trusting only the CA in `ca_pem` and,
    /// of its certificates, only the one pinned in `credentials`.
    pub fn new(credentials: KdcCredentials, ca_pem: &str) -> Result<KdcClient, KdcError> {
        let verifier = Verifier::new(ca_pem).map_err(|e| KdcError::Tls(e.to_string()))?;
        KdcClient::with_verifier(credentials, verifier)
    }

    /// Like [`KdcClient::new`], and the KDC certificate must not be on the CA's
    /// revocation list `crl_pem` (which must be current).
    pub fn with_revocation_list(
        credentials: KdcCredentials,
        ca_pem: &str,
        crl_pem: &str,
    ) -> Result<KdcClient, KdcError> {
        let verifier = Verifier::new(ca_pem)
            .and_then(|v| v.with_revocation_list(crl_pem))
            .map_err(|e| KdcError::Tls(e.to_string()))?;
        KdcClient::with_verifier(credentials, verifier)
    }

    fn with_verifier(credentials: KdcCredentials, ca: Verifier) -> Result<KdcClient, KdcError> {
        let address =
            KdcAddress::parse(&credentials.kdc).map_err(|e| KdcError::Address(e.to_string()))?;
        let pin = credentials
            .certificate_pin()
            .map_err(|e| KdcError::Address(e.to_string()))?;
        let tls_err = |e: &dyn std::fmt::Display| KdcError::Tls(e.to_string());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.authority().der.clone()))
            .map_err(|e| tls_err(&e))?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| tls_err(&e))?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(&e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedKdc { webpki, pin, ca }))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KdcClient {
            address,
            credentials,
            tls: TlsConnector::from(Arc::new(config)),
            local: None,
        })
    }

    /// Connects from the local address `ip` (on hosts with several) instead of the one the
    /// system picks.
    pub fn bind_local(mut self, ip: std::net::IpAddr) -> KdcClient {
        self.local = Some(ip);
        self
    }

    /// The KDC address (normalised), as key indexes name it.
    pub fn address(&self) -> &str {
        &self.address.url
    }

    /// The reader id logged in as.
    pub fn reader(&self) -> &str {
        &self.credentials.reader
    }

    /// Logs in and returns a fresh access token.
    pub async fn login(&self) -> Result<AccessToken, KdcError> {
        let body = serde_json::to_vec(&LoginRequest {
            reader: self.credentials.reader.clone(),
            password: self.credentials.password.clone(),
        })
        .map_err(|_| KdcError::BadResponse("cannot encode the login"))?;
        let started = Instant::now();
        let (status, headers, bytes) = self
            .request(Method::POST, &self.address.login_path(), None, Some(body))
            .await?;
        if status != StatusCode::OK {
            return Err(refusal(status, &headers, &bytes, None));
        }
        let answer: LoginResponse = serde_json::from_slice(&bytes)
            .map_err(|_| KdcError::BadResponse("login answer is not valid JSON"))?;
        // Stop using the token a little early so it does not expire in flight.
        let lifetime = Duration::from_secs(answer.expires_in);
        let margin = (lifetime / 10).min(Duration::from_secs(5));
        Ok(AccessToken {
            value: answer.access_token,
            expires_at: started + lifetime - margin,
        })
    }

    /// Fetches the key of `epoch` with `token`.
    pub async fn fetch_key(&self, token: &AccessToken, epoch: u64) -> Result<FetchedKey, KdcError> {
        let (status, headers, bytes) = self
            .request(
                Method::GET,
                &self.address.epoch_path(epoch),
                Some(&token.value),
                None,
            )
            .await?;
        if status != StatusCode::OK {
            return Err(refusal(status, &headers, &bytes, Some(epoch)));
        }
        let answer: KeyResponse = serde_json::from_slice(&bytes)
            .map_err(|_| KdcError::BadResponse("key answer is not valid JSON"))?;
        if answer.epoch != epoch {
            return Err(KdcError::BadResponse("key answer is for another epoch"));
        }
        let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(answer.key.as_bytes())
            .ok()
            .and_then(|k| ContentKey::from_slice(&k))
            .ok_or(KdcError::BadResponse("key answer holds no 32-byte key"))?;
        let certificate_der = base64::engine::general_purpose::STANDARD
            .decode(answer.certificate.as_bytes())
            .map_err(|_| KdcError::BadResponse("key answer holds no certificate"))?;
        Ok(FetchedKey {
            publisher: answer.publisher,
            epoch,
            key,
            certificate_der,
        })
    }

    /// One request on a fresh connection, bounded by [`REQUEST_TIMEOUT`].
    async fn request(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), KdcError> {
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.request_inner(method, path, bearer, body),
        )
        .await
        .map_err(|_| KdcError::Timeout)?
    }

    async fn request_inner(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), KdcError> {
        let host = self.address.host.as_str();
        let tcp = match self.local {
            None => TcpStream::connect((host, self.address.port)).await,
            Some(local) => connect_from(local, host, self.address.port).await,
        }
        .map_err(|e| KdcError::Connect(format!("{}: {}", self.address.url, e.kind())))?;
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| KdcError::Address(format!("bad host {host:?}")))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| KdcError::Tls(format!("{}: {e}", self.address.url)))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| KdcError::Http(e.to_string()))?;
        let driver = tokio::spawn(connection);
        let authority = if host.contains(':') {
            format!("[{host}]:{}", self.address.port)
        } else {
            format!("{host}:{}", self.address.port)
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, authority)
            .header(header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| KdcError::Http(e.to_string()))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| KdcError::Http(e.to_string()))?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
                .collect()
                .await
                .map_err(|_| KdcError::BadResponse("answer too large or cut short"))?
                .to_bytes();
            Ok((status, headers, bytes))
        }
        .await;
        driver.abort();
        result
    }
}

/// A TCP connection to `host:port` from the local address `local`.
async fn connect_from(
    local: std::net::IpAddr,
    host: &str,
    port: u16,
) -> std::io::Result<TcpStream> {
    let remote = tokio::net::lookup_host((host, port))
        .await?
        .find(|a| a.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrNotAvailable))?;
    let socket = if local.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(std::net::SocketAddr::new(local, 0))?;
    socket.connect(remote).await
}

/// The KDC's certificate check: the usual web PKI checks against the sealpost CA (chain,
/// validity, the host name), then the pin, then the sealpost checks (role `server`, and
/// the revocation list if there is one). Any failure aborts the handshake, so no request,
/// and no password, is ever sent to another server.
struct PinnedKdc {
    webpki: Arc<WebPkiServerVerifier>,
    pin: [u8; 32],
    ca: Verifier,
}

impl std::fmt::Debug for PinnedKdc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedKdc").finish_non_exhaustive()
    }
}

/// Why a KDC certificate that the CA issued is still refused.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refused(why: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(Refused(why)),
    )))
}

impl ServerCertVerifier for PinnedKdc {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let info =
            sealpost_certs::parse(end_entity.as_ref()).map_err(|e| refused(e.to_string()))?;
        if info.fingerprint != self.pin {
            return Err(refused(format!(
                "the server's certificate (SHA-256 {}) is not the KDC certificate pinned in \
                 the credentials",
                info.fingerprint_hex()
            )));
        }
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        self.ca
            .verify(end_entity.as_ref(), now)
            .and_then(|info| info.require_role(Role::Server))
            .map_err(|e| refused(e.to_string()))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The error an unsuccessful answer stands for.
fn refusal(
    status: StatusCode,
    headers: &http::HeaderMap,
    body: &[u8],
    epoch: Option<u64>,
) -> KdcError {
    let code = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| ErrorCode::parse(&b.error));
    match code {
        Some(ErrorCode::InvalidCredentials) => KdcError::InvalidCredentials,
        Some(ErrorCode::Revoked) => KdcError::Revoked,
        Some(ErrorCode::RateLimited) => KdcError::RateLimited {
            retry_after: headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        },
        Some(ErrorCode::TokenExpired) => KdcError::TokenExpired,
        Some(ErrorCode::InvalidToken) => KdcError::InvalidToken,
        Some(ErrorCode::NotGranted) => KdcError::NotGranted(epoch.unwrap_or_default()),
        Some(ErrorCode::UnknownEpoch) => KdcError::UnknownEpoch(epoch.unwrap_or_default()),
        other => KdcError::Server {
            status: status.as_u16(),
            code: other.map_or("unknown", ErrorCode::as_str),
        },
    }
}
