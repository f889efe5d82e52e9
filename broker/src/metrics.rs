//! Counters and the Prometheus text endpoint.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Broker counters; all monotonic except the gauges `connections_open` and
/// `connections_linked`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections currently open (gauge).
    pub connections_open: AtomicU64,
    /// Open connections that hold a router link of their own (gauge; see
    /// `limits.router_link_idle_ms`).
    pub connections_linked: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections closed at accept because the limit was reached.
    pub connections_rejected: AtomicU64,
    /// CONNECTs refused by authentication.
    pub auth_failures: AtomicU64,
    /// CONNECTs refused because their client id names another identity's session.
    pub session_owner_refused: AtomicU64,
    /// PUBLISH packets accepted from clients.
    pub messages_in: AtomicU64,
    /// PUBLISH packets sent to clients.
    pub messages_out: AtomicU64,
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    /// PUBLISH packets dropped by the ACL.
    pub denied_publish: AtomicU64,
    /// Subscriptions refused by the ACL.
    pub denied_subscribe: AtomicU64,
    /// Subscriptions refused because the client holds
    /// `limits.max_subscriptions_per_client` already.
    pub subscriptions_over_quota: AtomicU64,
    /// CONNECTs refused because the identity holds `limits.max_sessions_per_identity`
    /// persistent sessions already.
    pub sessions_over_quota: AtomicU64,
    /// Retained messages refused because the identity created
    /// `limits.max_retained_per_client` retained topics already.
    pub retained_over_quota: AtomicU64,
    /// Messages not delivered to a client because its session's queue held
    /// `limits.max_queued_messages` (`limits.slow_subscriber = "drop"`).
    pub dropped_queue_full: AtomicU64,
    /// Messages not delivered to a client because they were larger than its MQTT 5
    /// maximum packet size.
    pub dropped_oversized: AtomicU64,
    /// Messages a connection held for its client when another connection resumed the
    /// session before it ended, which could not be handed over.
    pub dropped_taken_over: AtomicU64,
    /// Messages the router skipped for a client (never forwarded to the edge): it
    /// fell behind the filter's log (`[router]` segments), or the message expired
    /// there (see `router_gaps`).
    pub dropped_router_skipped: AtomicU64,
    /// Password logins refused without checking the password because the client's
    /// address failed too many recently (`auth.max_failed_logins`).
    pub logins_throttled: AtomicU64,
    /// Revocation lists installed while running (`[listener.tls] crl`).
    pub crl_reloads: AtomicU64,
    /// Revocation list reloads refused (unreadable, badly signed, older): the previous
    /// list stays in force.
    pub crl_reload_failures: AtomicU64,
    /// Connections closed because their client certificate was revoked while open.
    pub revoked_disconnects: AtomicU64,
    /// Connections closed for malformed or forbidden packets.
    pub malformed: AtomicU64,
    /// Connections closed by the keep-alive, connect or handshake timeouts.
    pub timeouts: AtomicU64,
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let items: [(&str, &str, &str, &AtomicU64); 21] = [
            (
                "sealpost_connections_open",
                "gauge",
                "Open client connections.",
                &self.connections_open,
            ),
            (
                "sealpost_connections_linked",
                "gauge",
                "Open client connections holding a router link (quiet publish-only ones do not).",
                &self.connections_linked,
            ),
            (
                "sealpost_connections_total",
                "counter",
                "Client connections accepted.",
                &self.connections_total,
            ),
            (
                "sealpost_connections_rejected_total",
                "counter",
                "Connections refused at the connection limit.",
                &self.connections_rejected,
            ),
            (
                "sealpost_auth_failures_total",
                "counter",
                "CONNECTs refused by authentication.",
                &self.auth_failures,
            ),
            (
                "sealpost_session_owner_refused_total",
                "counter",
                "CONNECTs refused because the client id is another identity's session.",
                &self.session_owner_refused,
            ),
            (
                "sealpost_messages_in_total",
                "counter",
                "PUBLISH packets accepted from clients.",
                &self.messages_in,
            ),
            (
                "sealpost_messages_out_total",
                "counter",
                "PUBLISH packets sent to clients.",
                &self.messages_out,
            ),
            (
                "sealpost_bytes_in_total",
                "counter",
                "Bytes read from clients.",
                &self.bytes_in,
            ),
            (
                "sealpost_bytes_out_total",
                "counter",
                "Bytes written to clients.",
                &self.bytes_out,
            ),
            (
                "sealpost_denied_publish_total",
                "counter",
                "PUBLISH packets denied by the ACL.",
                &self.denied_publish,
            ),
            (
                "sealpost_denied_subscribe_total",
                "counter",
                "Subscriptions denied by the ACL.",
                &self.denied_subscribe,
            ),
            (
                "sealpost_subscriptions_over_quota_total",
                "counter",
                "Subscriptions refused at limits.max_subscriptions_per_client.",
                &self.subscriptions_over_quota,
            ),
            (
                "sealpost_sessions_over_quota_total",
                "counter",
                "CONNECTs refused at limits.max_sessions_per_identity.",
                &self.sessions_over_quota,
            ),
            (
                "sealpost_retained_over_quota_total",
                "counter",
                "Retained messages refused at limits.max_retained_per_client.",
                &self.retained_over_quota,
            ),
            (
                "sealpost_logins_throttled_total",
                "counter",
                "Password logins refused after too many failures from the address.",
                &self.logins_throttled,
            ),
            (
                "sealpost_crl_reloads_total",
                "counter",
                "Revocation lists installed while running.",
                &self.crl_reloads,
            ),
            (
                "sealpost_crl_reload_failures_total",
                "counter",
                "Revocation list reloads refused; the previous list stays in force.",
                &self.crl_reload_failures,
            ),
            (
                "sealpost_revoked_disconnects_total",
                "counter",
                "Connections closed because their certificate was revoked.",
                &self.revoked_disconnects,
            ),
            (
                "sealpost_malformed_total",
                "counter",
                "Connections closed for malformed or forbidden packets.",
                &self.malformed,
            ),
            (
                "sealpost_timeouts_total",
                "counter",
                "Connections closed by a timeout.",
                &self.timeouts,
            ),
        ];
        for (name, kind, help, value) in items {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        // One family with a label per reason, so that a new reason needs no new query.
        let _ = writeln!(
            out,
            "# HELP sealpost_dropped_messages_total Messages not delivered to a client, by reason."
        );
        let _ = writeln!(out, "# TYPE sealpost_dropped_messages_total counter");
        for (reason, value) in [
            ("queue_full", &self.dropped_queue_full),
            ("oversized", &self.dropped_oversized),
            ("taken_over", &self.dropped_taken_over),
            ("router_skipped", &self.dropped_router_skipped),
        ] {
            let _ = writeln!(
                out,
                "sealpost_dropped_messages_total{{reason=\"{reason}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// Serves `GET /metrics` until shutdown. Deliberately minimal HTTP/1.1: one request per
/// connection, bounded in size and time.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (mut stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let ok = buf.starts_with(b"GET /metrics ") || buf.starts_with(b"GET / ");
            let (status, body) = if ok {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", "not found\n".to_owned())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Binds the metrics endpoint.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
