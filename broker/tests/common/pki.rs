//! A security center for tests: a CA, certificates, revocation lists, and broker and
//! client TLS configurations from them.

use super::{tcp_config, v4_options};
use rumqttc::{TlsConfiguration, Transport};
use sealpost_broker::config::{ListenerConfig, ListenerKind, TlsConfig};
use sealpost_broker::Config;
use sealpost_certs::Issued;
use sealpost_testkit::TestPki;
use std::net::SocketAddr;
use std::sync::Arc;

/// The shared test CA ([`TestPki`], which it dereferences to: `issue`, `write`, `crl`,
/// `dir`, `ca`) with the broker's TLS listeners and clients built from it.
pub struct Pki(TestPki);

impl std::ops::Deref for Pki {
    type Target = TestPki;

    fn deref(&self) -> &TestPki {
        &self.0
    }
}

impl Pki {
    pub fn new() -> Pki {
        Pki(TestPki::new("sealpost test CA"))
    }

    pub fn config(&self, require_client_cert: bool) -> Config {
        self.config_with_crl(require_client_cert, None)
    }

    pub fn config_with_crl(&self, require_client_cert: bool, crl: Option<&str>) -> Config {
        let server = self.server();
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
}

/// rumqttc options for a TLS client.
pub fn tls_options(id: &str, addr: SocketAddr, tls: TlsConfiguration) -> rumqttc::MqttOptions {
    let mut o = v4_options(id, addr);
    o.set_transport(Transport::tls_with_config(tls));
    o
}
