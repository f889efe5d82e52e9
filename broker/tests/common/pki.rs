//! A security center for tests: a CA, certificates, revocation lists, and broker and
//! client TLS configurations from them.

use super::{tcp_config, v4_options};
use rumqttc::{TlsConfiguration, Transport};
use sealpost_broker::config::{ListenerConfig, ListenerKind, TlsConfig};
use sealpost_broker::Config;
use sealpost_certs::{CertificateAuthority, Issued, Profile, Validity};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: CertificateAuthority,
}

impl Pki {
    pub fn new() -> Pki {
        let ca =
            CertificateAuthority::create("sealpost test CA", Validity::days_from_now(1)).unwrap();
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
        }
    }

    pub fn issue(&self, profile: Profile) -> Issued {
        self.ca.issue(&profile, Validity::days_from_now(1)).unwrap()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn config(&self, require_client_cert: bool) -> Config {
        self.config_with_crl(require_client_cert, None)
    }

    pub fn config_with_crl(&self, require_client_cert: bool, crl: Option<&str>) -> Config {
        let server = self.issue(Profile::Server {
            names: vec!["127.0.0.1".into(), "localhost".into()],
        });
        let tls = TlsConfig {
            cert: self.write("server.pem", &server.certificate_pem),
            key: self.write("server.key", &server.private_key_pem),
            client_ca: Some(self.write("ca.pem", &self.ca.certificate_pem())),
            crl: crl.map(|c| self.write("ca.crl.pem", c)),
            require_client_cert,
        };
        let mut c = tcp_config();
        c.limits.handshake_timeout_ms = 500;
        c.listeners.push(ListenerConfig {
            kind: ListenerKind::Tls,
            bind: "127.0.0.1:0".parse().unwrap(),
            tls: Some(tls.clone()),
        });
        c.listeners.push(ListenerConfig {
            kind: ListenerKind::Wss,
            bind: "127.0.0.1:0".parse().unwrap(),
            tls: Some(tls),
        });
        c.listeners.push(ListenerConfig {
            kind: ListenerKind::Ws,
            bind: "127.0.0.1:0".parse().unwrap(),
            tls: None,
        });
        c
    }

    pub fn client_tls(&self, identity: Option<&Issued>) -> TlsConfiguration {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.ca.certificate_pem().as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match identity {
            Some(id) => {
                let chain: Vec<CertificateDer<'static>> =
                    rustls_pemfile::certs(&mut id.certificate_pem.as_bytes())
                        .map(|c| c.unwrap())
                        .collect();
                let key: PrivateKeyDer<'static> =
                    rustls_pemfile::private_key(&mut id.private_key_pem.as_bytes())
                        .unwrap()
                        .unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        TlsConfiguration::Rustls(Arc::new(config))
    }

    /// A revocation list of this CA naming `revoked`, with CRL number `number`.
    pub fn crl(&self, revoked: &[&Issued], number: u64) -> String {
        let serials: Vec<_> = revoked
            .iter()
            .map(|i| sealpost_certs::RevokedSerial {
                serial: serial(i),
                revoked_at: time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
            })
            .collect();
        self.ca
            .revocation_list(&serials, number, Validity::days_from_now(1))
            .unwrap()
    }
}

/// rumqttc options for a TLS client.
pub fn tls_options(id: &str, addr: SocketAddr, tls: TlsConfiguration) -> rumqttc::MqttOptions {
    let mut o = v4_options(id, addr);
    o.set_transport(Transport::tls_with_config(tls));
    o
}

/// The serial number of an issued certificate.
pub fn serial(issued: &Issued) -> Vec<u8> {
    let der = rustls_pemfile::certs(&mut issued.certificate_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    sealpost_certs::parse(der.as_ref()).unwrap().serial
}
