//! The certificate authority: creates itself, issues certificates, signs CSRs and
//! revocation lists.

use std::fmt;

use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rand::rngs::OsRng;
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rsa::pkcs8::LineEnding;
use time::{Duration, OffsetDateTime};

use crate::identity::{PUBLISH_URI_PREFIX, ROLE_URI_PREFIX};
use crate::topic::encode_for_uri;
use crate::{pemfile, topic, validate_id, CertError, Role};

use crate::SUBSCRIBER_RSA_BITS;

/// When a certificate starts and stops being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// First instant of validity.
    pub not_before: OffsetDateTime,
    /// Last instant of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Valid from five minutes ago (to absorb clock skew between devices) for `days` days.
    pub fn days_from_now(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(i64::from(days)),
        }
    }
}

/// What to put in a certificate besides its key: the role and the facts that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// A publisher that may publish to the listed MQTT topic filters.
    Publisher {
        /// Identity (subject common name).
        id: String,
        /// Topic filters this publisher may publish to.
        topics: Vec<String>,
    },
    /// A subscriber, whose RSA key receives wrapped content keys (for an X25519 key see
    /// [`CertificateAuthority::issue_subscriber`]).
    Subscriber {
        /// Identity (subject common name).
        id: String,
    },
    /// A TLS server (broker or key distribution center) answering to these DNS names or IPs.
    Server {
        /// DNS names or IP addresses.
        names: Vec<String>,
    },
    /// A TLS client of the broker.
    Client {
        /// Identity (subject common name).
        id: String,
    },
}

impl Profile {
    /// The role this profile issues.
    pub fn role(&self) -> Role {
        match self {
            Profile::Publisher { .. } => Role::Publisher,
            Profile::Subscriber { .. } => Role::Subscriber,
            Profile::Server { .. } => Role::Server,
            Profile::Client { .. } => Role::Client,
        }
    }

    fn params(&self, validity: Validity) -> Result<CertificateParams, CertError> {
        let mut params = CertificateParams::default();
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let role_uri = format!("{ROLE_URI_PREFIX}{}", self.role());
        params
            .subject_alt_names
            .push(SanType::URI(role_uri.try_into()?));
        let common_name = match self {
            Profile::Publisher { id, topics } => {
                validate_id(id)?;
                if topics.is_empty() {
                    return Err(CertError::InvalidTopicFilter(String::new()));
                }
                for filter in topics {
                    if !topic::validate_filter(filter) {
                        return Err(CertError::InvalidTopicFilter(filter.clone()));
                    }
                    let uri = format!("{PUBLISH_URI_PREFIX}{}", encode_for_uri(filter));
                    params.subject_alt_names.push(SanType::URI(uri.try_into()?));
                }
                params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                id.clone()
            }
            Profile::Subscriber { id } | Profile::Client { id } => {
                validate_id(id)?;
                params.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                id.clone()
            }
            Profile::Server { names } => {
                if names.is_empty() {
                    return Err(CertError::Generation(
                        "a server certificate needs at least one DNS name or IP".into(),
                    ));
                }
                for name in names {
                    params.subject_alt_names.push(match name.parse() {
                        Ok(ip) => SanType::IpAddress(ip),
                        Err(_) => SanType::DnsName(name.clone().try_into()?),
                    });
                }
                params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                names[0].clone()
            }
        };
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        Ok(params)
    }
}

/// A freshly issued certificate with its private key, both PEM.
///
/// `Debug` never shows the private key.
#[derive(Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The PKCS#8 private key, PEM. Store it with [`pemfile::write_private`].
    pub private_key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("certificate_pem", &self.certificate_pem)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

/// The key type of a subscriber certificate: what the publisher wraps content keys under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscriberKey {
    /// RSA-2048, for RSA-OAEP-256 key wrapping (the default, readable by every release).
    #[default]
    Rsa,
    /// X25519, for HPKE key wrapping (RFC 9180): smaller key messages, much faster
    /// unwrapping and key generation.
    X25519,
    /// X-Wing (X25519 combined with ML-KEM-768), for HPKE key wrapping that also resists a
    /// quantum computer: key messages about 1.1 KB larger per epoch than X25519's.
    XWing,
}

/// One entry of a revocation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedSerial {
    /// Serial number, big-endian bytes without leading zeros.
    pub serial: Vec<u8>,
    /// When the revocation was recorded.
    pub revoked_at: OffsetDateTime,
}

/// The security center's CA: an Ed25519 key and its self-signed certificate.
pub struct CertificateAuthority {
    certificate: rcgen::Certificate,
    key: KeyPair,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("certificate", &self.certificate.pem())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a new CA named `name` with a fresh Ed25519 key.
    pub fn create(name: &str, validity: Validity) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let mut params = CertificateParams::default();
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, name);
        let role_uri = format!("{ROLE_URI_PREFIX}{}", Role::Authority);
        params
            .subject_alt_names
            .push(SanType::URI(role_uri.try_into()?));
        let certificate = params.self_signed(&key)?;
        Ok(CertificateAuthority { certificate, key })
    }

    /// Loads a CA from its certificate and private key (both PEM).
    pub fn from_pem(certificate_pem: &str, private_key_pem: &str) -> Result<Self, CertError> {
        let der = pemfile::decode(certificate_pem, pemfile::CERTIFICATE)?;
        pemfile::decode(private_key_pem, pemfile::PRIVATE_KEY)?;
        let key = KeyPair::from_pem(private_key_pem)?;
        if key.public_key_der() != public_key_info_der(&der)? {
            return Err(CertError::UnsupportedKey(
                "the CA private key does not belong to the CA certificate".into(),
            ));
        }
        // rcgen signs with an issuer `Certificate`; re-creating it from the stored one keeps
        // the subject name and key identifier, which is all that issuing uses.
        let params = CertificateParams::from_ca_cert_der(&der.into())?;
        let certificate = params.self_signed(&key)?;
        Ok(CertificateAuthority { certificate, key })
    }

    /// The CA certificate, PEM. Distribute it to every party as the trust anchor.
    pub fn certificate_pem(&self) -> String {
        self.certificate.pem()
    }

    /// The CA private key, PKCS#8 PEM. Keep it offline; store with [`pemfile::write_private`].
    pub fn private_key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues a certificate with a freshly generated key of the kind the role needs:
    /// Ed25519 for publishers, RSA-2048 for subscribers, ECDSA P-256 for TLS servers
    /// and clients (the most widely supported TLS key type).
    pub fn issue(&self, profile: &Profile, validity: Validity) -> Result<Issued, CertError> {
        let params = profile.params(validity)?;
        let (public_key_der, private_key_pem) = match profile {
            Profile::Publisher { .. } => {
                let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
                let public = key
                    .verifying_key()
                    .to_public_key_der()
                    .map_err(generation)?;
                // PKCS#8 v1 (the seed alone, RFC 8410 §7): OpenSSL 3.0, and so
                // mosquitto_pub and most C MQTT clients, cannot read the v2 form with
                // the public key that `SigningKey` writes.
                let private = ed25519_dalek::pkcs8::KeypairBytes {
                    secret_key: key.to_bytes(),
                    public_key: None,
                }
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(generation)?;
                (public.as_bytes().to_vec(), private.to_string())
            }
            Profile::Subscriber { .. } => {
                let key =
                    rsa::RsaPrivateKey::new(&mut OsRng, SUBSCRIBER_RSA_BITS).map_err(generation)?;
                let public = key
                    .to_public_key()
                    .to_public_key_der()
                    .map_err(generation)?;
                let private = key.to_pkcs8_pem(LineEnding::LF).map_err(generation)?;
                (public.as_bytes().to_vec(), private.to_string())
            }
            Profile::Server { .. } | Profile::Client { .. } => {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                (key.public_key_der(), key.serialize_pem())
            }
        };
        let public_key = SubjectPublicKeyInfo::from_der(&public_key_der)?;
        let cert = params.signed_by(&public_key, &self.certificate, &self.key)?;
        Ok(Issued {
            certificate_pem: cert.pem(),
            private_key_pem,
        })
    }

    /// Issues a subscriber certificate for `id` with a freshly generated key of type `key`.
    /// [`SubscriberKey::Rsa`] is the same as [`CertificateAuthority::issue`] with
    /// [`Profile::Subscriber`].
    pub fn issue_subscriber(
        &self,
        id: &str,
        key: SubscriberKey,
        validity: Validity,
    ) -> Result<Issued, CertError> {
        match key {
            SubscriberKey::Rsa => self.issue(&Profile::Subscriber { id: id.into() }, validity),
            SubscriberKey::X25519 => {
                let (private_key_pem, public) = crate::x25519::generate()?;
                self.issue_kem_subscriber(
                    id,
                    crate::x25519::OID_X25519,
                    &public,
                    private_key_pem,
                    validity,
                )
            }
            SubscriberKey::XWing => {
                let (private_key_pem, public) = crate::xwing::generate()?;
                self.issue_kem_subscriber(
                    id,
                    crate::xwing::OID_XWING,
                    &public,
                    private_key_pem,
                    validity,
                )
            }
        }
    }

    fn issue_kem_subscriber(
        &self,
        id: &str,
        oid: pkcs8::ObjectIdentifier,
        public: &[u8],
        private_key_pem: zeroize::Zeroizing<String>,
        validity: Validity,
    ) -> Result<Issued, CertError> {
        crate::kem_certificate::issue_certificate(
            self.certificate.der(),
            &self.key.serialize_der(),
            id,
            oid,
            public,
            private_key_pem,
            validity,
        )
    }

    /// Signs a device's certificate signing request, so its private key never leaves it.
    ///
    /// Only the public key is taken from the request (after checking the request's own
    /// signature); the subject, role and permissions come from `profile`, which the CA
    /// operator decides. The key type must suit the role: Ed25519 for a publisher, RSA of at
    /// least 2048 bits for a subscriber.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        profile: &Profile,
        validity: Validity,
    ) -> Result<String, CertError> {
        pemfile::decode(csr_pem, pemfile::CSR)?;
        let mut request = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            CertError::Malformed {
                what: "certificate signing request",
                detail: e.to_string(),
            }
        })?;
        let alg = request.public_key.algorithm();
        let suitable = match profile.role() {
            Role::Publisher => alg == &rcgen::PKCS_ED25519,
            Role::Subscriber => {
                alg == &rcgen::PKCS_RSA_SHA256
                    || alg == &rcgen::PKCS_RSA_SHA384
                    || alg == &rcgen::PKCS_RSA_SHA512
            }
            _ => true,
        };
        if !suitable {
            return Err(CertError::UnsupportedKey(format!(
                "a {} certificate cannot carry a {alg:?} key",
                profile.role()
            )));
        }
        request.params = profile.params(validity)?;
        let cert = request.signed_by(&self.certificate, &self.key)?;
        let pem = cert.pem();
        if profile.role() == Role::Subscriber {
            // Enforce the minimum RSA size on what we actually signed.
            let info = crate::verify::parse(&pemfile::decode(&pem, pemfile::CERTIFICATE)?)?;
            info.rsa_public_key()?;
        }
        Ok(pem)
    }

    /// Signs a revocation list naming `revoked`, with the given CRL number (which must grow
    /// with every list issued) and validity.
    pub fn revocation_list(
        &self,
        revoked: &[RevokedSerial],
        crl_number: u64,
        validity: Validity,
    ) -> Result<String, CertError> {
        let params = CertificateRevocationListParams {
            this_update: validity.not_before,
            next_update: validity.not_after,
            crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|r| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&r.serial),
                    revocation_time: r.revoked_at,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.certificate, &self.key)?;
        Ok(crl.pem()?)
    }
}

fn generation(e: impl std::fmt::Display) -> CertError {
    CertError::Generation(e.to_string())
}

fn random_serial() -> SerialNumber {
    SerialNumber::from_slice(&random_serial_bytes())
}

/// 16 random bytes, top bit clear so the DER INTEGER stays positive, first byte non-zero
/// so it stays 16 bytes long.
pub(crate) fn random_serial_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    bytes
}

fn public_key_info_der(cert_der: &[u8]) -> Result<Vec<u8>, CertError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| CertError::Malformed {
            what: "certificate",
            detail: e.to_string(),
        })?;
    Ok(cert.public_key().raw.to_vec())
}
