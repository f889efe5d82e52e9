//! TLS with rustls and the ring provider, and client certificates from the security
//! center.
//!
//! Client certificates are checked by the security center's own [`Verifier`] (CA
//! signature, validity, revocation, role) rather than by WebPKI rules, because sealpost
//! certificates carry roles and topic lists, not TLS extended key usages. rustls still
//! verifies the handshake signature that proves the client holds the key.
//!
//! The revocation list is not read once: [`Revocation`] reloads it while the broker
//! runs (every `crl_reload_interval_ms`, and on SIGHUP), and every connection that
//! authenticated with a certificate watches it ([`CertificateWatch`]), so that a
//! certificate revoked later can neither connect again nor keep the connection it has.
//! A new list that cannot be read, is not signed by the CA, or is older than the one
//! in force is refused and the list in force stays: revocation never falls back to
//! "nothing is revoked".

use crate::acl::{CertRole, Identity};
use crate::config::TlsConfig;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sealpost_certs::{CertificateInfo, Role, Verifier};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No certificate or key in a PEM file.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA certificate or revocation list is invalid.
    #[error("security center material: {0}")]
    Certs(#[from] sealpost_certs::CertError),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The crypto provider of all sealpost TLS code: ring, chosen explicitly because the
/// dependency tree also contains aws-lc-rs users.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS listener's acceptor, and the revocation state of its client certificates.
#[derive(Clone)]
pub struct ServerTls {
    /// Performs the handshake.
    pub acceptor: TlsAcceptor,
    /// With `client_ca`: the CA and revocation list client certificates are checked
    /// against, now and while their connection lasts.
    pub revocation: Option<Arc<Revocation>>,
}

/// Builds the acceptor of a TLS listener.
pub fn acceptor(config: &TlsConfig) -> Result<ServerTls, TlsError> {
    let cert_pem = read(&config.cert)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("{}: {e}", config.cert.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(format!(
            "no certificate in {}",
            config.cert.display()
        )));
    }
    let key_pem = read(&config.key)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| TlsError::Pem(format!("{}: {e}", config.key.display())))?
        .ok_or_else(|| TlsError::Pem(format!("no private key in {}", config.key.display())))?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let (server, revocation) = match &config.client_ca {
        Some(ca) => {
            let ca_pem = String::from_utf8_lossy(&read(ca)?).into_owned();
            let revocation = Arc::new(Revocation::new(
                Verifier::new(&ca_pem)?,
                config.crl.clone(),
            )?);
            let v = SecurityCenterVerifier {
                revocation: revocation.clone(),
                mandatory: config.require_client_cert,
                algorithms: provider.signature_verification_algorithms,
            };
            let server = builder
                .with_client_cert_verifier(Arc::new(v))
                .with_single_cert(certs, key)?;
            (server, Some(revocation))
        }
        None => (
            builder.with_no_client_auth().with_single_cert(certs, key)?,
            None,
        ),
    };
    Ok(ServerTls {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        revocation,
    })
}

/// The CA and revocation list of a listener, replaced as a whole when a new list is
/// installed, with a signal for the connections that must check their certificate
/// again.
pub struct Revocation {
    verifier: RwLock<Arc<Verifier>>,
    /// Where the list is read from (`None`: no list is configured).
    crl: Option<PathBuf>,
    /// The file's bytes when the list in force was read, to skip unchanged files.
    installed: Mutex<Vec<u8>>,
    /// Counts installed lists; connections wait for it to change.
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocation")
            .field("crl", &self.crl)
            .finish_non_exhaustive()
    }
}

impl Revocation {
    /// Trusts `verifier`'s CA and reads the list at `crl`, which must be valid (a
    /// broker that cannot read its revocation list does not start).
    pub fn new(verifier: Verifier, crl: Option<PathBuf>) -> Result<Revocation, TlsError> {
        let revocation = Revocation {
            verifier: RwLock::new(Arc::new(verifier)),
            crl,
            installed: Mutex::new(Vec::new()),
            changes: watch::channel(0).0,
        };
        revocation.reload()?;
        Ok(revocation)
    }

    /// The verifier in force.
    pub fn current(&self) -> Arc<Verifier> {
        // Plain data, replaced whole: a panic elsewhere cannot leave it half-written.
        self.verifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a revocation list file is configured.
    pub fn has_list(&self) -> bool {
        self.crl.is_some()
    }

    /// Reads the list file again and installs it if it changed. `Ok(true)`: a new list
    /// is in force (and open connections check their certificates against it);
    /// `Ok(false)`: the file is unchanged (or none is configured). On error the list
    /// in force stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let Some(path) = &self.crl else {
            return Ok(false);
        };
        let bytes = read(path)?;
        let mut installed = self.installed.lock().unwrap_or_else(|e| e.into_inner());
        if *installed == bytes {
            return Ok(false);
        }
        let pem = std::str::from_utf8(&bytes)
            .map_err(|_| TlsError::Pem(format!("{}: not a PEM file", path.display())))?;
        // Checked on a copy: the CA's signature, and a CRL number no older than the
        // list in force (an old list replayed cannot undo a revocation).
        let mut next = Verifier::clone(&self.current());
        next.set_revocation_list(pem)?;
        *self.verifier.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        *installed = bytes;
        self.changes.send_modify(|n| *n += 1);
        Ok(true)
    }

    /// What a connection authenticated with `certificate` watches.
    pub fn watch(self: &Arc<Self>, certificate: CertificateInfo) -> CertificateWatch {
        CertificateWatch {
            revocation: self.clone(),
            certificate: Arc::new(certificate),
            changes: self.changes.subscribe(),
        }
    }
}

/// A connection's client certificate, checked again whenever a new revocation list is
/// installed.
#[derive(Debug, Clone)]
pub struct CertificateWatch {
    revocation: Arc<Revocation>,
    certificate: Arc<CertificateInfo>,
    changes: watch::Receiver<u64>,
}

impl CertificateWatch {
    /// Checks the certificate against the list in force now (revocation, validity, a
    /// stale list).
    pub fn check(&self) -> Result<(), sealpost_certs::CertError> {
        self.revocation
            .current()
            .check_time_and_revocation(&self.certificate, sealpost_certs::now_unix())
    }

    /// Resolves when the certificate is no longer valid under the list in force: at
    /// once if it already is not, otherwise at the first new list that revokes it.
    pub async fn invalidated(&mut self) -> sealpost_certs::CertError {
        loop {
            if let Err(e) = self.check() {
                return e;
            }
            if self.changes.changed().await.is_err() {
                // The listener is gone (shutdown): no list will come.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Identity of a verified client certificate; `None` without one.
pub fn identity(peer: Option<&[CertificateDer<'static>]>) -> Option<Identity> {
    certificate(peer).map(|info| certificate_identity(&info))
}

/// The parsed client certificate (already verified by the handshake).
pub fn certificate(peer: Option<&[CertificateDer<'static>]>) -> Option<CertificateInfo> {
    sealpost_certs::parse(peer?.first()?.as_ref()).ok()
}

/// The identity a verified certificate gives its holder.
pub fn certificate_identity(info: &CertificateInfo) -> Identity {
    let role = match info.role {
        Role::Publisher => CertRole::Publisher,
        Role::Subscriber => CertRole::Subscriber,
        Role::Client => CertRole::Client,
        Role::Server | Role::Authority => CertRole::Server,
    };
    Identity::Certificate {
        id: info.id.clone(),
        role,
        topics: info.topics.clone(),
    }
}

#[derive(Debug)]
struct SecurityCenterVerifier {
    revocation: Arc<Revocation>,
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for SecurityCenterVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        match self.revocation.current().verify(end_entity.as_ref(), now) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(e) => {
                tracing::info!(error = %e, "client certificate refused");
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
