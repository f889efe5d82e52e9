//! Broker addresses and the MQTT connection options both SDKs use.
//!
//! TLS always uses rustls with the `ring` provider, chosen explicitly: rumqttc would
//! otherwise pull in aws-lc-rs, and the workspace standardises on one provider.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, NetworkOptions, TlsConfiguration, Transport};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::tunnel::{Route, Tunnel};
use crate::ClientError;

/// Largest MQTT packet the SDKs send or accept (rumqttc defaults to 10 KiB, too small for
/// key messages and real payloads). Matches the opener's default envelope limit plus
/// headroom for the topic.
pub const MAX_PACKET_SIZE: usize = 1024 * 1024 + 64 * 1024;

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerAddress {
    /// Plain MQTT over TCP: `mqtt://host:port` (or just `host:port`).
    Tcp {
        /// Host name or IP.
        host: String,
        /// Port.
        port: u16,
    },
    /// MQTT over TLS: `mqtts://host:port`.
    Tls {
        /// Host name or IP (checked against the server certificate).
        host: String,
        /// Port.
        port: u16,
    },
    /// MQTT over WebSocket: `ws://host:port/path`.
    Ws {
        /// The full URL.
        url: String,
        /// Port.
        port: u16,
    },
    /// MQTT over WebSocket over TLS: `wss://host:port/path`.
    Wss {
        /// The full URL.
        url: String,
        /// Port.
        port: u16,
    },
}

impl BrokerAddress {
    /// Parses `mqtt://h:p`, `tcp://h:p`, `h:p`, `mqtts://h:p`, `ssl://h:p`, `ws://h:p/path`
    /// or `wss://h:p/path`.
    pub fn parse(s: &str) -> Result<BrokerAddress, ClientError> {
        let bad = || ClientError::InvalidAddress(s.to_owned());
        let (scheme, rest) = s.split_once("://").unwrap_or(("mqtt", s));
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| bad())?)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err(bad());
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(match scheme {
            "mqtt" | "tcp" => BrokerAddress::Tcp {
                host,
                port: port.unwrap_or(1883),
            },
            "mqtts" | "ssl" | "tls" => BrokerAddress::Tls {
                host,
                port: port.unwrap_or(8883),
            },
            "ws" => BrokerAddress::Ws {
                url: s.to_owned(),
                port: port.unwrap_or(80),
            },
            "wss" => BrokerAddress::Wss {
                url: s.to_owned(),
                port: port.unwrap_or(443),
            },
            _ => return Err(bad()),
        })
    }

    /// Does this address need TLS settings?
    pub fn is_tls(&self) -> bool {
        matches!(self, BrokerAddress::Tls { .. } | BrokerAddress::Wss { .. })
    }
}

impl std::fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BrokerAddress::Tcp { host, port } => write!(f, "mqtt://{host}:{port}"),
            BrokerAddress::Tls { host, port } => write!(f, "mqtts://{host}:{port}"),
            BrokerAddress::Ws { url, .. } | BrokerAddress::Wss { url, .. } => f.write_str(url),
        }
    }
}

/// What TLS trusts and (optionally) presents: the CA that issued the broker's server
/// certificate, and a client certificate for brokers that authenticate by certificate.
#[derive(Clone, Default)]
pub struct TlsIdentity {
    /// CA certificate(s), PEM, trusted for the broker's certificate.
    pub ca_pem: String,
    /// Client certificate and PKCS#8 key, PEM, if the broker asks for one.
    pub client: Option<(String, String)>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("client_certificate", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds the rumqttc options shared by both SDKs.
pub fn mqtt_options(
    client_id: &str,
    address: &BrokerAddress,
    tls: Option<&TlsIdentity>,
    keep_alive: Duration,
) -> Result<MqttOptions, ClientError> {
    let mut options = match address {
        BrokerAddress::Tcp { host, port } | BrokerAddress::Tls { host, port } => {
            MqttOptions::new(client_id, host.as_str(), *port)
        }
        BrokerAddress::Ws { url, port } | BrokerAddress::Wss { url, port } => {
            MqttOptions::new(client_id, url.as_str(), *port)
        }
    };
    common_options(&mut options, keep_alive);
    let tls_config = || -> Result<TlsConfiguration, ClientError> {
        let identity = tls.ok_or_else(|| ClientError::Tls("no CA given for TLS".into()))?;
        Ok(TlsConfiguration::Rustls(Arc::new(rustls_config(identity)?)))
    };
    match address {
        BrokerAddress::Tcp { .. } => {}
        BrokerAddress::Tls { .. } => {
            options.set_transport(Transport::tls_with_config(tls_config()?));
        }
        BrokerAddress::Ws { .. } => {
            options.set_transport(Transport::Ws);
        }
        BrokerAddress::Wss { .. } => {
            options.set_transport(Transport::wss_with_config(tls_config()?));
        }
    }
    Ok(options)
}

/// The settings of every connection, whatever carries it.
fn common_options(options: &mut MqttOptions, keep_alive: Duration) {
    options.set_keep_alive(keep_alive);
    options.set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
    // Bursts of key messages (one per subscriber) and publishes must not stall on a tiny
    // in-flight window.
    options.set_inflight(1000);
}

/// The rumqttc options for connecting along `route`, and the [`Tunnel`] that carries the
/// connection when the SDK owns it: for `mqtts://` (so that it ends with close_notify)
/// and for several addresses (failover; rumqttc knows only one). A single `mqtt://`,
/// `ws://` or `wss://` address is left to rumqttc. Failover lists take `mqtt://` and
/// `mqtts://` addresses.
pub fn connection_options(
    client_id: &str,
    route: &Route,
    tls: Option<&TlsIdentity>,
    keep_alive: Duration,
) -> Result<(MqttOptions, Option<Tunnel>), ClientError> {
    let current = route.current();
    if route.len() == 1 && !matches!(current, BrokerAddress::Tls { .. }) {
        return Ok((mqtt_options(client_id, current, tls, keep_alive)?, None));
    }
    let mut secure = false;
    for address in route.addresses() {
        match address {
            BrokerAddress::Tcp { .. } => {}
            BrokerAddress::Tls { .. } => secure = true,
            other => {
                return Err(ClientError::InvalidAddress(format!(
                    "{other}: several broker addresses must all be mqtt:// or mqtts://"
                )))
            }
        }
    }
    let tls_config = match (secure, tls) {
        (false, _) => None,
        (true, Some(identity)) => Some(Arc::new(rustls_config(identity)?)),
        (true, None) => return Err(ClientError::Tls("no CA given for TLS".into())),
    };
    let tunnel = Tunnel::start(route.clone(), tls_config)?;
    let socket = tunnel
        .socket()
        .to_str()
        .ok_or_else(|| ClientError::Tls("the temporary directory's path is not UTF-8".into()))?;
    let mut options = MqttOptions::new(client_id, socket, 0);
    options.set_transport(Transport::Unix);
    common_options(&mut options, keep_alive);
    Ok((options, Some(tunnel)))
}

/// Socket options of both SDKs' event loops. TCP_NODELAY: rumqttc already writes every
/// queued packet in one go, and with Nagle's algorithm on, a lone message behind an
/// unacknowledged one waited for the peer's delayed ACK (tens of milliseconds of latency
/// at 1 KiB in the benchmark).
pub fn network_options() -> NetworkOptions {
    let mut options = NetworkOptions::new();
    options.set_tcp_nodelay(true);
    options
}

/// A rustls client configuration on the `ring` provider.
pub fn rustls_config(identity: &TlsIdentity) -> Result<rustls::ClientConfig, ClientError> {
    let tls_err = |e: &dyn std::fmt::Display| ClientError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for block in pem_blocks(&identity.ca_pem, "CERTIFICATE")? {
        roots
            .add(CertificateDer::from(block))
            .map_err(|e| tls_err(&e))?;
    }
    if roots.is_empty() {
        return Err(ClientError::Tls("no CA certificate in the CA file".into()));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_err(&e))?
    .with_root_certificates(roots);
    match &identity.client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_pem, key_pem)) => {
            let chain = pem_blocks(cert_pem, "CERTIFICATE")?
                .into_iter()
                .map(CertificateDer::from)
                .collect();
            let key = pem_blocks(key_pem, "PRIVATE KEY")?
                .into_iter()
                .next()
                .ok_or_else(|| ClientError::Tls("no PKCS#8 private key".into()))?;
            builder
                .with_client_auth_cert(chain, PrivateKeyDer::Pkcs8(key.into()))
                .map_err(|e| tls_err(&e))
        }
    }
}

/// The DER of every `label` block in the PEM `text`, in order (a certificate chain, a
/// key): for TLS set-up here and in the publisher's KDC.
pub fn pem_blocks(text: &str, label: &'static str) -> Result<Vec<Vec<u8>>, ClientError> {
    let mut out = Vec::new();
    // Split on END markers so several certificates in one file are all read.
    let marker = format!("-----END {label}-----");
    for chunk in text.split_inclusive(marker.as_str()) {
        if chunk.contains(marker.as_str()) {
            out.push(sealpost_certs::pemfile::decode(chunk, label)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            BrokerAddress::parse("127.0.0.1:1884").unwrap(),
            BrokerAddress::Tcp {
                host: "127.0.0.1".into(),
                port: 1884
            }
        );
        assert_eq!(
            BrokerAddress::parse("mqtts://broker.example:8884").unwrap(),
            BrokerAddress::Tls {
                host: "broker.example".into(),
                port: 8884
            }
        );
        assert_eq!(
            BrokerAddress::parse("ws://localhost:9001/mqtt").unwrap(),
            BrokerAddress::Ws {
                url: "ws://localhost:9001/mqtt".into(),
                port: 9001
            }
        );
        assert!(BrokerAddress::parse("http://x:1").is_err());
        assert!(BrokerAddress::parse("mqtt://:1").is_err());
        assert!(BrokerAddress::parse("mqtt://h:notaport").is_err());
    }
}
