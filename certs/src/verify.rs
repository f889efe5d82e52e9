//! Verification of certificates against the trusted CA and its revocation list.

use std::collections::HashMap;
use std::fmt;

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::identity::{PUBLISH_URI_PREFIX, ROLE_URI_PREFIX};
use crate::topic::decode_from_uri;
use crate::{pemfile, topic, CertError, Role};

/// Size of the RSA keys generated for subscribers, and the least a subscriber
/// certificate's RSA key may have.
pub const SUBSCRIBER_RSA_BITS: usize = 2048;

/// The public key a certificate carries, in the forms sealpost uses.
#[derive(Clone, PartialEq, Eq)]
pub enum SubjectKey {
    /// A raw Ed25519 public key (publishers, the CA).
    Ed25519([u8; 32]),
    /// An RSA public key as SubjectPublicKeyInfo DER (subscribers).
    Rsa(Vec<u8>),
    /// A raw X25519 public key (subscribers whose keys are wrapped with HPKE).
    X25519([u8; 32]),
    /// An X-Wing (X25519 + ML-KEM-768) encapsulation key, 1,216 bytes (subscribers whose
    /// keys are wrapped with hybrid post-quantum HPKE).
    XWing(Vec<u8>),
    /// Another key type (TLS certificates), by algorithm OID.
    Other(String),
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubjectKey::Ed25519(k) => write!(f, "Ed25519({})", hex::encode(k)),
            SubjectKey::Rsa(der) => write!(f, "Rsa({} bytes)", der.len()),
            SubjectKey::X25519(k) => write!(f, "X25519({})", hex::encode(k)),
            SubjectKey::XWing(k) => write!(f, "XWing({} bytes)", k.len()),
            SubjectKey::Other(oid) => write!(f, "Other({oid})"),
        }
    }
}

/// What the security center's certificate says, parsed (and, from [`Verifier::verify`],
/// verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Identity: the subject common name.
    pub id: String,
    /// The role named in the certificate.
    pub role: Role,
    /// Topic filters a publisher may publish to (empty for other roles).
    pub topics: Vec<String>,
    /// DNS names and IP addresses (servers).
    pub names: Vec<String>,
    /// SHA-256 of the certificate DER: a stable identifier of this exact certificate.
    pub fingerprint: [u8; 32],
    /// Serial number, big-endian without leading zeros.
    pub serial: Vec<u8>,
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// End of validity, unix seconds.
    pub not_after: i64,
    /// The subject's public key.
    pub public_key: SubjectKey,
    /// The certificate itself, DER.
    pub der: Vec<u8>,
}

impl CertificateInfo {
    /// May this publisher publish to the topic name `topic`? Always `false` for roles other
    /// than [`Role::Publisher`].
    pub fn may_publish(&self, topic_name: &str) -> bool {
        self.role == Role::Publisher
            && self
                .topics
                .iter()
                .any(|filter| topic::filter_matches(filter, topic_name))
    }

    /// The fingerprint as lowercase hex.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }

    /// The serial number as lowercase hex.
    pub fn serial_hex(&self) -> String {
        hex::encode(&self.serial)
    }

    /// Fails with [`CertError::WrongRole`] unless the certificate has role `expected`.
    pub fn require_role(&self, expected: Role) -> Result<(), CertError> {
        if self.role == expected {
            Ok(())
        } else {
            Err(CertError::WrongRole {
                subject: self.id.clone(),
                expected,
                found: self.role,
            })
        }
    }

    /// The Ed25519 key of a publisher certificate.
    pub fn ed25519_public_key(&self) -> Result<VerifyingKey, CertError> {
        match &self.public_key {
            SubjectKey::Ed25519(bytes) => VerifyingKey::from_bytes(bytes)
                .map_err(|_| CertError::UnsupportedKey("invalid Ed25519 public key".into())),
            other => Err(CertError::UnsupportedKey(format!(
                "{:?} key where Ed25519 is required",
                other
            ))),
        }
    }

    /// The RSA key of a subscriber certificate (at least 2048 bits).
    pub fn rsa_public_key(&self) -> Result<rsa::RsaPublicKey, CertError> {
        use rsa::pkcs8::DecodePublicKey;
        use rsa::traits::PublicKeyParts;
        match &self.public_key {
            SubjectKey::Rsa(der) => {
                let key = rsa::RsaPublicKey::from_public_key_der(der)
                    .map_err(|e| CertError::UnsupportedKey(format!("bad RSA key: {e}")))?;
                if key.size() * 8 < SUBSCRIBER_RSA_BITS {
                    return Err(CertError::UnsupportedKey(format!(
                        "RSA key of {} bits; at least {} required",
                        key.size() * 8,
                        SUBSCRIBER_RSA_BITS
                    )));
                }
                Ok(key)
            }
            other => Err(CertError::UnsupportedKey(format!(
                "{:?} key where RSA is required",
                other
            ))),
        }
    }

    /// The X25519 key of a subscriber certificate (HPKE key wrapping).
    pub fn x25519_public_key(&self) -> Result<[u8; 32], CertError> {
        match &self.public_key {
            SubjectKey::X25519(bytes) => Ok(*bytes),
            other => Err(CertError::UnsupportedKey(format!(
                "{:?} key where X25519 is required",
                other
            ))),
        }
    }
}

impl fmt::Display for CertificateInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "id:          {}", self.id)?;
        writeln!(f, "role:        {}", self.role)?;
        writeln!(f, "serial:      {}", self.serial_hex())?;
        writeln!(f, "fingerprint: sha256:{}", self.fingerprint_hex())?;
        writeln!(f, "valid from:  {}", format_time(self.not_before))?;
        writeln!(f, "valid until: {}", format_time(self.not_after))?;
        let key = match &self.public_key {
            SubjectKey::Ed25519(_) => "Ed25519".to_owned(),
            SubjectKey::X25519(_) => "X25519".to_owned(),
            SubjectKey::XWing(_) => "X-Wing (X25519 + ML-KEM-768)".to_owned(),
            SubjectKey::Rsa(_) => match self.rsa_public_key() {
                Ok(k) => format!("RSA-{}", rsa::traits::PublicKeyParts::size(&k) * 8),
                Err(_) => "RSA (unusable)".to_owned(),
            },
            SubjectKey::Other(oid) if oid == "1.2.840.10045.2.1" => "ECDSA".to_owned(),
            SubjectKey::Other(oid) => oid.clone(),
        };
        writeln!(f, "key:         {key}")?;
        for t in &self.topics {
            writeln!(f, "may publish: {t}")?;
        }
        for n in &self.names {
            writeln!(f, "name:        {n}")?;
        }
        Ok(())
    }
}

fn format_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn malformed(what: &'static str, detail: impl fmt::Display) -> CertError {
    CertError::Malformed {
        what,
        detail: detail.to_string(),
    }
}

fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| malformed("certificate", e))?;
    if !rest.is_empty() {
        return Err(malformed(
            "certificate",
            "trailing bytes after the certificate",
        ));
    }
    Ok(cert)
}

fn strip_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

/// Parses a certificate without verifying it (for display, or before verification).
pub fn parse(der: &[u8]) -> Result<CertificateInfo, CertError> {
    let cert = parse_x509(der)?;
    let id = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut role = None;
    let mut topics = Vec::new();
    let mut names = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                match name {
                    GeneralName::URI(uri) => {
                        if let Some(r) = uri.strip_prefix(ROLE_URI_PREFIX) {
                            let parsed = Role::parse(r)
                                .ok_or_else(|| malformed("certificate", "unknown role"))?;
                            if role.replace(parsed).is_some() {
                                return Err(malformed("certificate", "more than one role"));
                            }
                        } else if let Some(f) = uri.strip_prefix(PUBLISH_URI_PREFIX) {
                            let filter =
                                decode_from_uri(f)
                                    .filter(|f| topic::validate_filter(f))
                                    .ok_or_else(|| malformed("certificate", "bad topic filter"))?;
                            topics.push(filter);
                        }
                    }
                    GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                    GeneralName::IPAddress(ip) => match ip.len() {
                        4 => names.push(
                            std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
                                .to_string(),
                        ),
                        16 => names.push(
                            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
                                .to_string(),
                        ),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
    }
    let role = role.ok_or_else(|| malformed("certificate", "no sealpost role"))?;
    let spki = cert.public_key();
    let public_key = if spki.algorithm.algorithm == OID_SIG_ED25519 {
        let bytes: [u8; 32] = spki
            .subject_public_key
            .data
            .as_ref()
            .try_into()
            .map_err(|_| malformed("certificate", "bad Ed25519 key length"))?;
        SubjectKey::Ed25519(bytes)
    } else if spki.algorithm.algorithm.to_id_string() == crate::x25519::OID_X25519.to_string() {
        let bytes: [u8; 32] = spki
            .subject_public_key
            .data
            .as_ref()
            .try_into()
            .map_err(|_| malformed("certificate", "bad X25519 key length"))?;
        SubjectKey::X25519(bytes)
    } else if spki.algorithm.algorithm.to_id_string() == crate::xwing::OID_XWING.to_string() {
        let bytes = spki.subject_public_key.data.as_ref();
        if bytes.len() != crate::xwing::PUBLIC_KEY_LEN {
            return Err(malformed("certificate", "bad X-Wing key length"));
        }
        SubjectKey::XWing(bytes.to_vec())
    } else if spki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION {
        SubjectKey::Rsa(spki.raw.to_vec())
    } else {
        SubjectKey::Other(spki.algorithm.algorithm.to_id_string())
    };
    Ok(CertificateInfo {
        id,
        role,
        topics,
        names,
        fingerprint: Sha256::digest(der).into(),
        serial: strip_leading_zeros(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        public_key,
        der: der.to_vec(),
    })
}

/// A verified revocation list: the serials the CA has revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    revoked: HashMap<Vec<u8>, i64>,
    /// CRL number (grows with every list the CA issues).
    pub number: u64,
    /// Issue time, unix seconds.
    pub this_update: i64,
    /// Time by which a newer list is due, unix seconds; past it the list is stale.
    pub next_update: i64,
}

impl RevocationList {
    /// Is this serial (big-endian, leading zeros ignored) revoked?
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        self.revoked.contains_key(&strip_leading_zeros(serial))
    }

    /// The revoked serials with the time (unix seconds) each was revoked.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], i64)> {
        self.revoked.iter().map(|(s, t)| (s.as_slice(), *t))
    }
}

/// Verifies certificates against one trusted CA and, optionally, its revocation list.
///
/// There is deliberately no way to skip a check: a certificate that passes [`verify`]
/// was signed by the CA, is within its validity period and is not on the revocation list.
///
/// [`verify`]: Verifier::verify
#[derive(Debug, Clone)]
pub struct Verifier {
    ca: CertificateInfo,
    ca_subject: Vec<u8>,
    ca_key: VerifyingKey,
    revocations: Option<RevocationList>,
}

impl Verifier {
    /// Trusts the CA certificate in `ca_pem`.
    pub fn new(ca_pem: &str) -> Result<Self, CertError> {
        Self::from_ca_der(&pemfile::decode(ca_pem, pemfile::CERTIFICATE)?)
    }

    /// Trusts the CA certificate `ca_der`. It must be a self-signed sealpost CA.
    pub fn from_ca_der(ca_der: &[u8]) -> Result<Self, CertError> {
        let ca = parse(ca_der)?;
        ca.require_role(Role::Authority)?;
        let ca_key = ca.ed25519_public_key()?;
        let x509 = parse_x509(ca_der)?;
        if !x509.is_ca() {
            return Err(malformed(
                "CA certificate",
                "basic constraints do not allow CA use",
            ));
        }
        let ca_subject = x509.subject().as_raw().to_vec();
        check_signature(&x509, &ca_key, &ca.id)?;
        Ok(Verifier {
            ca,
            ca_subject,
            ca_key,
            revocations: None,
        })
    }

    /// The trusted CA.
    pub fn authority(&self) -> &CertificateInfo {
        &self.ca
    }

    /// The revocation list in force, if any.
    pub fn revocation_list(&self) -> Option<&RevocationList> {
        self.revocations.as_ref()
    }

    /// Installs a revocation list (PEM) after checking it is signed by the CA.
    ///
    /// A list older (by CRL number) than the one installed is refused, so an attacker
    /// cannot roll revocations back by replaying an old list.
    pub fn set_revocation_list(&mut self, crl_pem: &str) -> Result<(), CertError> {
        let list = self.parse_revocation_list(&pemfile::decode(crl_pem, pemfile::CRL)?)?;
        if let Some(current) = &self.revocations {
            if list.number < current.number {
                return Err(CertError::BadRevocationList(format!(
                    "CRL number {} is older than the installed {}",
                    list.number, current.number
                )));
            }
        }
        self.revocations = Some(list);
        Ok(())
    }

    /// Builder form of [`Verifier::set_revocation_list`].
    pub fn with_revocation_list(mut self, crl_pem: &str) -> Result<Self, CertError> {
        self.set_revocation_list(crl_pem)?;
        Ok(self)
    }

    /// Parses a DER revocation list and checks the CA signed it.
    pub fn parse_revocation_list(&self, der: &[u8]) -> Result<RevocationList, CertError> {
        let (rest, crl) =
            x509_parser::parse_x509_crl(der).map_err(|e| malformed("revocation list", e))?;
        if !rest.is_empty() {
            return Err(malformed("revocation list", "trailing bytes"));
        }
        self.check_crl_signature(&crl)?;
        let number = crl
            .crl_number()
            .and_then(|n| u64::try_from(n.clone()).ok())
            .ok_or_else(|| CertError::BadRevocationList("no CRL number".into()))?;
        Ok(RevocationList {
            revoked: crl
                .iter_revoked_certificates()
                .map(|r| {
                    (
                        strip_leading_zeros(r.raw_serial()),
                        r.revocation_date.timestamp(),
                    )
                })
                .collect(),
            number,
            this_update: crl.last_update().timestamp(),
            next_update: crl
                .next_update()
                .map(|t| t.timestamp())
                .ok_or_else(|| CertError::BadRevocationList("no next update time".into()))?,
        })
    }

    fn check_crl_signature(&self, crl: &CertificateRevocationList<'_>) -> Result<(), CertError> {
        let bad = |why: &str| CertError::BadRevocationList(why.to_owned());
        if crl.issuer().as_raw() != self.ca_subject.as_slice() {
            return Err(bad("issued by another CA"));
        }
        if crl.signature_algorithm.algorithm != OID_SIG_ED25519 {
            return Err(bad("not signed with Ed25519"));
        }
        let signature = Signature::from_slice(&crl.signature_value.data)
            .map_err(|_| bad("malformed signature"))?;
        self.ca_key
            .verify_strict(crl.tbs_cert_list.as_ref(), &signature)
            .map_err(|_| bad("signature does not verify with the CA key"))
    }

    /// Verifies `der` at time `now` (unix seconds): issued by the CA, within validity,
    /// not revoked, and (if a revocation list is installed) that list is not stale.
    pub fn verify(&self, der: &[u8], now: i64) -> Result<CertificateInfo, CertError> {
        let info = parse(der)?;
        let x509 = parse_x509(der)?;
        if x509.issuer().as_raw() != self.ca_subject.as_slice() {
            return Err(CertError::UntrustedIssuer { subject: info.id });
        }
        check_signature(&x509, &self.ca_key, &info.id)?;
        if info.role == Role::Authority || x509.is_ca() {
            return Err(CertError::WrongRole {
                subject: info.id,
                expected: Role::Publisher,
                found: Role::Authority,
            });
        }
        self.check_time_and_revocation(&info, now)?;
        Ok(info)
    }

    /// The checks that depend on time and on the revocation list, for a certificate that
    /// was already verified once (callers cache [`Verifier::verify`] results and re-run only
    /// this on every use).
    pub fn check_time_and_revocation(
        &self,
        info: &CertificateInfo,
        now: i64,
    ) -> Result<(), CertError> {
        if now < info.not_before {
            return Err(CertError::NotYetValid {
                subject: info.id.clone(),
                not_before: info.not_before,
            });
        }
        if now > info.not_after {
            return Err(CertError::Expired {
                subject: info.id.clone(),
                not_after: info.not_after,
            });
        }
        if let Some(list) = &self.revocations {
            if list.is_revoked(&info.serial) {
                return Err(CertError::Revoked {
                    subject: info.id.clone(),
                    serial: info.serial_hex(),
                });
            }
            if now > list.next_update {
                return Err(CertError::BadRevocationList(format!(
                    "the revocation list was due to be replaced at {}",
                    format_time(list.next_update)
                )));
            }
        }
        Ok(())
    }

    /// [`Verifier::verify`] for a PEM certificate.
    pub fn verify_pem(&self, pem: &str, now: i64) -> Result<CertificateInfo, CertError> {
        self.verify(&pemfile::decode(pem, pemfile::CERTIFICATE)?, now)
    }
}

fn check_signature(
    cert: &X509Certificate<'_>,
    key: &VerifyingKey,
    subject: &str,
) -> Result<(), CertError> {
    let untrusted = || CertError::UntrustedIssuer {
        subject: subject.to_owned(),
    };
    if cert.signature_algorithm.algorithm != OID_SIG_ED25519 {
        return Err(untrusted());
    }
    let signature = Signature::from_slice(&cert.signature_value.data).map_err(|_| untrusted())?;
    key.verify_strict(cert.tbs_certificate.as_ref(), &signature)
        .map_err(|_| untrusted())
}

/// The current time in unix seconds.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
