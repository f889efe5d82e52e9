//! # sealpost-testkit: one throwaway security center for every test
//!
//! [`TestPki`] is a CA in memory with a scratch directory, issuing what sealpost's tests
//! need: publisher certificates for topics, subscriber certificates with RSA, X25519 or
//! X-Wing keys, TLS server certificates for 127.0.0.1 and localhost (broker, KDC), TLS
//! client certificates, and revocation lists (in memory, or as the file an SDK or broker
//! reloads). The protocol tests turn its certificates into identities, the broker tests
//! into listener configurations, the end-to-end tests into SDK configurations; each keeps
//! those conversions, this crate keeps the certificates.
//!
//! A `TestPki` dereferences to its [`CertificateAuthority`], for tests that issue with
//! unusual profiles or validity periods themselves.
//!
//! Failures panic: this is test code, and a failed fixture must stop the test at once.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use sealpost_certs::{
    pemfile, CertificateAuthority, Issued, Profile, RevokedSerial, SubscriberKey, Validity,
    Verifier,
};
use tempfile::TempDir;

/// How long the CA and the certificates a [`TestPki`] issues are valid: longer than any
/// test runs.
pub const VALID_DAYS: u32 = 1;

/// The CA's own validity, in days (longer than its certificates', so that tests can
/// issue certificates valid past theirs).
pub const CA_VALID_DAYS: u32 = 30;

/// File name of the revocation list in [`TestPki::dir`] ([`TestPki::crl_path`]).
pub const CRL_FILE: &str = "crl.pem";

/// A throwaway CA, with a scratch directory for the files tests hand to brokers, SDKs and
/// command-line tools.
pub struct TestPki {
    /// The CA.
    pub ca: CertificateAuthority,
    /// Scratch directory, created on first use (tests that need no files leave none).
    dir: OnceLock<TempDir>,
}

impl std::ops::Deref for TestPki {
    type Target = CertificateAuthority;

    fn deref(&self) -> &CertificateAuthority {
        &self.ca
    }
}

impl TestPki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestPki {
        TestPki {
            ca: CertificateAuthority::create(name, Validity::days_from_now(CA_VALID_DAYS))
                .expect("create the test CA"),
            dir: OnceLock::new(),
        }
    }

    /// A test PKI around an existing CA (one `sealpost-certs init` made, say).
    pub fn with_ca(ca: CertificateAuthority) -> TestPki {
        TestPki {
            ca,
            dir: OnceLock::new(),
        }
    }

    /// The scratch directory (certificates, revocation lists, state directories),
    /// deleted with the `TestPki`.
    pub fn dir(&self) -> &Path {
        self.dir
            .get_or_init(|| tempfile::tempdir().expect("temp dir"))
            .path()
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.certificate_pem()
    }

    /// A verifier trusting this CA.
    pub fn verifier(&self) -> Verifier {
        Verifier::new(&self.ca_pem()).expect("verifier for the test CA")
    }

    /// Issues `profile`, valid for [`VALID_DAYS`].
    pub fn issue(&self, profile: Profile) -> Issued {
        self.ca
            .issue(&profile, Validity::days_from_now(VALID_DAYS))
            .expect("issue a test certificate")
    }

    /// A publisher certificate (Ed25519) that may publish to `topics`.
    pub fn publisher(&self, id: &str, topics: &[&str]) -> Issued {
        self.publisher_valid(id, topics, Validity::days_from_now(VALID_DAYS))
    }

    /// A publisher certificate valid for `validity` (expired or not yet valid ones
    /// included).
    pub fn publisher_valid(&self, id: &str, topics: &[&str], validity: Validity) -> Issued {
        self.ca
            .issue(
                &Profile::Publisher {
                    id: id.into(),
                    topics: topics.iter().map(|t| t.to_string()).collect(),
                },
                validity,
            )
            .expect("issue a publisher certificate")
    }

    /// A subscriber certificate with an RSA key (RSA-OAEP key wrapping).
    pub fn subscriber(&self, id: &str) -> Issued {
        self.issue(Profile::Subscriber { id: id.into() })
    }

    /// A subscriber certificate with a KEM key (X25519 or X-Wing: HPKE key wrapping).
    pub fn kem_subscriber(&self, id: &str, key: SubscriberKey) -> Issued {
        self.ca
            .issue_subscriber(id, key, Validity::days_from_now(VALID_DAYS))
            .expect("issue a KEM subscriber certificate")
    }

    /// A subscriber certificate with an X25519 key.
    pub fn x25519_subscriber(&self, id: &str) -> Issued {
        self.kem_subscriber(id, SubscriberKey::X25519)
    }

    /// A subscriber certificate with an X-Wing (X25519 + ML-KEM-768) key.
    pub fn xwing_subscriber(&self, id: &str) -> Issued {
        self.kem_subscriber(id, SubscriberKey::XWing)
    }

    /// A TLS server certificate (broker, KDC) for 127.0.0.1 and localhost.
    pub fn server(&self) -> Issued {
        server(&self.ca)
    }

    /// A TLS client certificate for `id`.
    pub fn client(&self, id: &str) -> Issued {
        self.issue(Profile::Client { id: id.into() })
    }

    /// Writes `text` to `name` in [`TestPki::dir`]; returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir().join(name);
        std::fs::write(&path, text).expect("write a test file");
        path
    }

    /// A revocation list of this CA naming `revoked` (revoked a minute ago), with CRL
    /// number `number`.
    pub fn crl(&self, revoked: &[&Issued], number: u64) -> String {
        let revoked_at = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
        let entries: Vec<RevokedSerial> = revoked
            .iter()
            .map(|issued| RevokedSerial {
                serial: serial(issued),
                revoked_at,
            })
            .collect();
        self.crl_of(&entries, number)
    }

    /// A revocation list with these entries and CRL `number`.
    pub fn crl_of(&self, revoked: &[RevokedSerial], number: u64) -> String {
        self.ca
            .revocation_list(revoked, number, Validity::days_from_now(VALID_DAYS))
            .expect("sign a revocation list")
    }

    /// The revocation list file in [`TestPki::dir`], PEM; written the first time it is
    /// asked for, naming no certificate (CRL number 1).
    pub fn crl_path(&self) -> PathBuf {
        let path = self.dir().join(CRL_FILE);
        if !path.exists() {
            self.write_crl(&[], 1);
        }
        path
    }

    /// Replaces the revocation list file by one revoking `revoked`, with CRL number
    /// `number` (which must grow with every list).
    pub fn write_crl(&self, revoked: &[&Issued], number: u64) {
        self.install_crl(&self.crl(revoked, number));
    }

    /// Revokes `issued`: replaces the revocation list file by one (the next CRL number)
    /// naming it and every certificate revoked before.
    pub fn revoke(&self, issued: &Issued) {
        let der = pemfile::read_der(&self.crl_path(), pemfile::CRL).expect("read CRL");
        let current = self
            .verifier()
            .parse_revocation_list(&der)
            .expect("parse CRL");
        let mut revoked: Vec<RevokedSerial> = current
            .entries()
            .map(|(serial, at)| RevokedSerial {
                serial: serial.to_vec(),
                revoked_at: time::OffsetDateTime::from_unix_timestamp(at).expect("time"),
            })
            .collect();
        revoked.push(RevokedSerial {
            serial: serial(issued),
            revoked_at: time::OffsetDateTime::now_utc(),
        });
        self.install_crl(&self.crl_of(&revoked, current.number + 1));
    }

    /// Replaces the revocation list file atomically, so a reloading subscriber, publisher
    /// or broker never reads half a file.
    fn install_crl(&self, pem: &str) {
        let path = self.dir().join(CRL_FILE);
        let tmp = self.dir().join(format!("{CRL_FILE}.tmp"));
        std::fs::write(&tmp, pem).expect("write revocation list");
        std::fs::rename(&tmp, &path).expect("install revocation list");
    }

    /// A path in [`TestPki::dir`] for a state directory named `name`.
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// A state directory path no other call returns (subscribers of one test must not
    /// share replay windows unless a test says so).
    pub fn fresh_state_dir(&self, name: &str) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        self.state_dir(&format!("{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed)))
    }
}

/// The serial number of an issued certificate.
pub fn serial(issued: &Issued) -> Vec<u8> {
    let der =
        pemfile::decode(&issued.certificate_pem, pemfile::CERTIFICATE).expect("certificate PEM");
    sealpost_certs::parse(&der).expect("certificate").serial
}

/// A TLS server certificate (broker, KDC) for 127.0.0.1 and localhost, issued by `ca`.
fn server(ca: &CertificateAuthority) -> Issued {
    ca.issue(
        &Profile::Server {
            names: vec!["127.0.0.1".into(), "localhost".into()],
        },
        Validity::days_from_now(VALID_DAYS),
    )
    .expect("issue a server certificate")
}

/// Writes a TLS server certificate for 127.0.0.1 and localhost, issued by `ca`, into
/// `dir` as `server.pem` and `server.key`; returns their paths.
pub fn write_server_certificate(ca: &CertificateAuthority, dir: &Path) -> (PathBuf, PathBuf) {
    let issued = server(ca);
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    std::fs::write(&cert, issued.certificate_pem).expect("write server certificate");
    std::fs::write(&key, issued.private_key_pem).expect("write server key");
    (cert, key)
}
