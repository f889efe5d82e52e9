//! TLS with rustls and the ring provider, and client certificates from the security
//! center.
//!
//! Client certificates are checked by the security center's own [`Verifier`] (CA
//! signature, validity, revocation, role) rather than by WebPKI rules, because sealpost
//! certificates carry roles and topic lists, not TLS extended key usages. rustls still
//! verifies the handshake signature that proves the client holds the key.

use crate::acl::{CertRole, Identity};
use crate::config::TlsConfig;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sealpost_certs::{Role, Verifier};
use std::path::Path;
use std::sync::Arc;
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

/// Builds the acceptor of a TLS listener.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
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
    let server = match &config.client_ca {
        Some(ca) => {
            let ca_pem = String::from_utf8_lossy(&read(ca)?).into_owned();
            let mut verifier = Verifier::new(&ca_pem)?;
            if let Some(crl) = &config.crl {
                verifier.set_revocation_list(&String::from_utf8_lossy(&read(crl)?))?;
            }
            let v = SecurityCenterVerifier {
                verifier: Arc::new(verifier),
                mandatory: config.require_client_cert,
                algorithms: provider.signature_verification_algorithms,
            };
            builder
                .with_client_cert_verifier(Arc::new(v))
                .with_single_cert(certs, key)?
        }
        None => builder.with_no_client_auth().with_single_cert(certs, key)?,
    };
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Identity of a verified client certificate; `None` without one.
pub fn identity(peer: Option<&[CertificateDer<'static>]>) -> Option<Identity> {
    // The handshake already verified the certificate; parse it again for role and topics.
    let der = peer?.first()?;
    let info = sealpost_certs::parse(der.as_ref()).ok()?;
    let role = match info.role {
        Role::Publisher => CertRole::Publisher,
        Role::Subscriber => CertRole::Subscriber,
        Role::Client => CertRole::Client,
        Role::Server | Role::Authority => CertRole::Server,
    };
    Some(Identity::Certificate {
        id: info.id,
        role,
        topics: info.topics,
    })
}

#[derive(Debug)]
struct SecurityCenterVerifier {
    verifier: Arc<Verifier>,
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
        match self.verifier.verify(end_entity.as_ref(), now) {
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
