//! The health of the MQTT connection, shared by the publisher and subscriber SDKs: why a
//! connection failed, in words an operator can act on, and the pause between reconnect
//! attempts.
//!
//! rumqttc reports a refused login as a bare return code, and TLS failures as I/O errors
//! wrapping a rustls error; [`explain`] names the cause (refused login and why, nothing
//! listening, unknown CA, revoked or expired certificate, name mismatch). rumqttc also
//! reconnects on the next poll without any pause, and to one address only: [`Backoff`]
//! spaces the attempts out (exponentially, with jitter, so that clients that lost the same
//! broker do not all come back at once), and after every failure the [`Route`] moves on to
//! the next broker address, if several were given (failover).

use std::time::Duration;

use rand::Rng;

use rumqttc::{ConnectReturnCode, ConnectionError};
use rustls::{AlertDescription, CertificateError};
use tokio::sync::watch;

use crate::tunnel::Route;

/// First pause after a failed attempt.
const FIRST_PAUSE: Duration = Duration::from_millis(500);
/// Longest pause between attempts.
const LONGEST_PAUSE: Duration = Duration::from_secs(30);

/// Why a connection to the broker failed, in words (never a secret: no password, no key).
pub fn explain(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(code) => refused(*code),
        ConnectionError::Io(e) => explain_io(e),
        ConnectionError::Tls(rumqttc::TlsError::Io(e)) => explain_io(e),
        ConnectionError::Tls(rumqttc::TlsError::TLS(e)) => tls(e),
        ConnectionError::NetworkTimeout => "the broker did not answer in time".into(),
        other => other.to_string(),
    }
}

/// A refused CONNACK, as `mosquitto_sub` words it, with the return code (and the MQTT 5
/// reason code a broker sends for the same refusal).
fn refused(code: ConnectReturnCode) -> String {
    let (number, reason, words) = match code {
        ConnectReturnCode::Success => (0, 0x00, "accepted"),
        ConnectReturnCode::RefusedProtocolVersion => (1, 0x84, "unacceptable protocol version"),
        ConnectReturnCode::BadClientId => (2, 0x85, "identifier rejected"),
        ConnectReturnCode::ServiceUnavailable => (3, 0x88, "broker unavailable"),
        ConnectReturnCode::BadUserNamePassword => (4, 0x86, "bad user name or password"),
        ConnectReturnCode::NotAuthorized => (5, 0x87, "not authorised"),
    };
    format!(
        "connection refused by the broker: {words} (CONNACK return code {number}; \
         MQTT 5 reason code {reason:#04x})"
    )
}

/// An I/O failure, looking inside for the TLS error that caused it (tokio-rustls wraps
/// handshake failures, and alerts from the broker, in I/O errors).
pub(crate) fn explain_io(e: &std::io::Error) -> String {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return tls(inner);
    }
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            "connection refused: nothing listens at that address".into()
        }
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
            "the broker closed the connection without an answer (refused the client \
             certificate, or not an MQTT listener?)"
                .into()
        }
        _ => format!("network error: {e}"),
    }
}

/// A TLS failure: the broker's certificate failed our checks, or the broker refused ours.
fn tls(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(cert) => {
            let why = match cert {
                CertificateError::UnknownIssuer => {
                    "unknown CA: it is not issued by the CA given (--cafile)"
                }
                CertificateError::Revoked => "it is revoked",
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "it has expired"
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "it is not valid yet"
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    "name mismatch: it does not name the host connected to"
                }
                _ => return format!("TLS: the broker's certificate is refused: {e}"),
            };
            format!("TLS: the broker's certificate is refused: {why}")
        }
        rustls::Error::AlertReceived(alert) => {
            let why = match alert {
                AlertDescription::UnknownCA => "unknown CA",
                AlertDescription::CertificateRevoked => "it is revoked",
                AlertDescription::CertificateExpired => "it has expired",
                AlertDescription::CertificateRequired => {
                    "the broker requires one (--cert and --key)"
                }
                AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateUnknown => "bad certificate",
                _ => return format!("TLS: the broker sent the alert {alert:?}"),
            };
            format!("TLS: the broker refused our client certificate: {why}")
        }
        other => format!("TLS: {other}"),
    }
}

/// The state of the connection to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStatus {
    /// The first attempt is under way.
    Connecting,
    /// The broker accepted the connection.
    Connected,
    /// The first attempt failed, for this reason: nothing was ever connected.
    Failed(String),
    /// A connection was lost (or a reconnect refused), for this reason; attempts go on,
    /// spaced out by [`Backoff`]. Set once per series of failed attempts.
    Reconnecting(String),
}

/// The polling task's side of the connection: counts accepted connections (the
/// republishing and resubscribing tasks wait on the count), keeps [`LinkStatus`], paces
/// and reports reconnect attempts, and moves the [`Route`] on to the next broker after
/// every failure.
#[derive(Debug)]
pub struct Link {
    connected: watch::Sender<u64>,
    status: watch::Sender<LinkStatus>,
    backoff: Backoff,
    route: Route,
    /// Failed attempts since the last accepted connection.
    failures: usize,
}

impl Link {
    /// A link over `route` with no connection yet, and receivers for its count of
    /// accepted connections and its status.
    pub fn new(route: Route) -> (Link, watch::Receiver<u64>, watch::Receiver<LinkStatus>) {
        let (connected, connected_rx) = watch::channel(0);
        let (status, status_rx) = watch::channel(LinkStatus::Connecting);
        let link = Link {
            connected,
            status,
            backoff: Backoff::default(),
            route,
            failures: 0,
        };
        (link, connected_rx, status_rx)
    }

    /// The broker accepted a connection (CONNACK).
    pub fn accepted(&mut self) {
        let broker = self.route.current();
        if matches!(*self.status.borrow(), LinkStatus::Reconnecting(_)) {
            tracing::info!(%broker, "reconnected to the broker");
        } else {
            tracing::debug!(%broker, "connected to the broker");
        }
        self.backoff.connected();
        self.failures = 0;
        self.status.send_replace(LinkStatus::Connected);
        self.connected.send_modify(|n| *n += 1);
    }

    /// An attempt failed, or the connection was lost: records why, reports it (once per
    /// series of failures), moves on to the next broker address (if there are several),
    /// and waits before the next attempt (rumqttc makes it on the next poll, with no
    /// pause of its own). The first connection fails only once every address has failed.
    pub async fn failed(&mut self, error: &ConnectionError) {
        // The tunnel knows why dialling failed; rumqttc saw only its local socket close.
        let cause = self.route.take_cause().unwrap_or_else(|| explain(error));
        let broker = self.route.current().clone();
        let reason = if self.route.len() > 1 {
            format!("{broker}: {cause}")
        } else {
            cause
        };
        self.failures += 1;
        self.route.advance();
        let (pause, first) = self.backoff.failed();
        if *self.connected.borrow() == 0 {
            if self.failures >= self.route.len() {
                tracing::debug!(%reason, "connecting to the broker failed");
                self.status.send_replace(LinkStatus::Failed(reason));
            } else {
                tracing::debug!(%reason, next = %self.route.current(), "connecting failed; trying the next broker");
            }
        } else if first {
            tracing::warn!(%reason, "connection to the broker lost; reconnecting");
            self.status.send_replace(LinkStatus::Reconnecting(reason));
        } else {
            tracing::debug!(%reason, retry_in_ms = pause.as_millis() as u64, "reconnecting failed");
        }
        tokio::time::sleep(pause).await;
    }
}

/// Waits up to `timeout` for the first accepted connection. Fails at once, with the
/// reason, when the first attempt fails (a refused login, nothing listening, TLS); with
/// `None` on the timeout.
pub async fn first_connection(
    timeout: Duration,
    connected: &mut watch::Receiver<u64>,
    status: &mut watch::Receiver<LinkStatus>,
) -> Result<(), Option<String>> {
    let outcome = tokio::time::timeout(timeout, async {
        tokio::select! {
            _ = connected.wait_for(|n| *n > 0) => Ok(()),
            failed = status.wait_for(|s| matches!(s, LinkStatus::Failed(_))) => match failed {
                Ok(s) => match &*s {
                    LinkStatus::Failed(reason) => Err(Some(reason.clone())),
                    _ => Err(None),
                },
                Err(_) => Err(None),
            },
        }
    })
    .await;
    outcome.unwrap_or(Err(None))
}

/// Pauses between reconnect attempts: about 0.5 s after the first failure, doubling up
/// to 30 s, back to the start once a connection is accepted. Each pause is drawn at random
/// between half and all of its step ("equal jitter"), so that the clients of a broker
/// that went away spread their attempts out instead of coming back all at once.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Records a failed attempt; returns the pause before the next one and whether this
    /// failure starts a series (the first since the last accepted connection), which is
    /// the one worth reporting.
    pub fn failed(&mut self) -> (Duration, bool) {
        let first = self.failures == 0;
        let step = FIRST_PAUSE
            .saturating_mul(1u32 << self.failures.min(6))
            .min(LONGEST_PAUSE);
        let pause = step / 2 + step.mul_f64(rand::thread_rng().gen_range(0.0..=0.5));
        self.failures = self.failures.saturating_add(1);
        (pause, first)
    }

    /// Records an accepted connection (a CONNACK).
    pub fn connected(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_tls_failures_name_their_cause() {
        let text = explain(&ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword,
        ));
        assert!(text.contains("bad user name or password"), "{text}");
        assert!(
            text.contains("return code 4") && text.contains("0x86"),
            "{text}"
        );
        let text = explain(&ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized,
        ));
        assert!(
            text.contains("not authorised") && text.contains("0x87"),
            "{text}"
        );
        let wrapped = |e: rustls::Error| {
            explain(&ConnectionError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e,
            )))
        };
        let unknown = wrapped(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(unknown.contains("unknown CA"), "{unknown}");
        let name = wrapped(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        ));
        assert!(name.contains("name mismatch"), "{name}");
        let revoked = wrapped(rustls::Error::AlertReceived(
            AlertDescription::CertificateRevoked,
        ));
        assert!(
            revoked.contains("client certificate: it is revoked"),
            "{revoked}"
        );
        let refused = explain(&ConnectionError::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(refused.contains("connection refused"), "{refused}");
    }

    /// A pause is within [step / 2, step] of its step.
    fn within(pause: Duration, step: Duration) -> bool {
        pause >= step / 2 && pause <= step
    }

    #[test]
    fn backoff_doubles_to_a_limit_with_jitter_and_reports_once_per_series() {
        let mut b = Backoff::default();
        let (pause, first) = b.failed();
        assert!(
            first && within(pause, Duration::from_millis(500)),
            "{pause:?}"
        );
        let (pause, first) = b.failed();
        assert!(!first && within(pause, Duration::from_secs(1)), "{pause:?}");
        for _ in 0..10 {
            b.failed();
        }
        // Jittered: a hundred pauses at the limit are not all the same.
        let pauses: Vec<Duration> = (0..100).map(|_| b.failed().0).collect();
        assert!(pauses.iter().all(|p| within(*p, Duration::from_secs(30))));
        assert!(pauses.iter().any(|p| *p != pauses[0]), "no jitter");
        b.connected();
        let (pause, first) = b.failed();
        assert!(
            first && within(pause, Duration::from_millis(500)),
            "{pause:?}"
        );
    }
}
