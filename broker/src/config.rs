//! Broker configuration: a TOML file, every field optional with a safe default.
//!
//! With no file at all the broker listens on plain TCP `127.0.0.1:1883`, allows anonymous
//! clients and keeps retained messages in memory only.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid configuration {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: Box<toml::de::Error>,
    },
    /// The values are inconsistent (for example a TLS listener without a certificate).
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole broker configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where clients connect. Defaults to one plain TCP listener on 127.0.0.1:1883.
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Resource limits and timeouts.
    pub limits: Limits,
    /// Who may connect.
    pub auth: AuthConfig,
    /// What each identity may publish and subscribe to.
    pub acl: AclConfig,
    /// Where retained messages are persisted (without `[storage]`).
    pub retained: RetainedConfig,
    /// The data directory: durable sessions and retained messages.
    pub storage: StorageConfig,
    /// The Prometheus text endpoint.
    pub metrics: MetricsConfig,
    /// Sizing of the rumqttd router's in-memory logs.
    pub router: RouterSizing,
    /// Session settings.
    pub session: SessionConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: vec![ListenerConfig::default()],
            limits: Limits::default(),
            auth: AuthConfig::default(),
            acl: AclConfig::default(),
            retained: RetainedConfig::default(),
            storage: StorageConfig::default(),
            metrics: MetricsConfig::default(),
            router: RouterSizing::default(),
            session: SessionConfig::default(),
        }
    }
}

impl Config {
    /// Reads and validates a TOML configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.storage.path.is_some() && self.retained.path.is_some() {
            return Err(ConfigError::Invalid(
                "retained.path and storage.path are both set: with a data directory the \
                 retained messages live in its database (see broker/README.md, Durable \
                 sessions, to move them)"
                    .into(),
            ));
        }
        if self.storage.sync == SyncMode::Periodic && self.storage.sync_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "storage.sync_interval_ms is 0 (use sync = \"always\")".into(),
            ));
        }
        if self.listeners.is_empty() {
            return Err(ConfigError::Invalid("no [[listener]] configured".into()));
        }
        for l in &self.listeners {
            let tls_kind = matches!(l.kind, ListenerKind::Tls | ListenerKind::Wss);
            if tls_kind && l.tls.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "TLS listener {} has no [listener.tls] section",
                    l.bind
                )));
            }
            // A [listener.tls] section on a plain listener would not be used: refused,
            // so that nobody believes a plain port to be encrypted.
            if !tls_kind && l.tls.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "listener {} is not kind = \"tls\" or \"wss\" but has a [listener.tls] section",
                    l.bind
                )));
            }
            if let Some(tls) = &l.tls {
                if tls.require_client_cert && tls.client_ca.is_none() {
                    return Err(ConfigError::Invalid(format!(
                        "listener {} requires client certificates but has no client_ca",
                        l.bind
                    )));
                }
            }
        }
        if self.limits.max_connections == 0 {
            return Err(ConfigError::Invalid("limits.max_connections is 0".into()));
        }
        if self.limits.max_packet_size < 64 {
            return Err(ConfigError::Invalid(
                "limits.max_packet_size must be at least 64 bytes".into(),
            ));
        }
        // MQTT 5 §2.2.2.2: maximum packet size is a four-byte integer, and no packet
        // can be longer than 268,435,460 bytes (a 4-byte remaining length).
        if self.limits.max_packet_size > 268_435_460 {
            return Err(ConfigError::Invalid(
                "limits.max_packet_size must be at most 268435460 bytes".into(),
            ));
        }
        // MQTT 5 §3.2.2.3.3: a receive maximum of 0 is a protocol error (and the edge
        // would never read a PUBLISH).
        if self.limits.max_inflight == 0 {
            return Err(ConfigError::Invalid("limits.max_inflight is 0".into()));
        }
        if self.limits.max_subscriptions_per_client == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_subscriptions_per_client is 0".into(),
            ));
        }
        let auth = &self.auth;
        if auth.max_failed_logins == 0
            || auth.max_failed_logins_per_address == 0
            || auth.failed_login_window_secs == 0
        {
            return Err(ConfigError::Invalid(
                "auth.max_failed_logins, max_failed_logins_per_address and \
                 failed_login_window_secs must be at least 1"
                    .into(),
            ));
        }
        if self.router.max_segment_size < self.limits.max_packet_size {
            return Err(ConfigError::Invalid(
                "router.max_segment_size must be at least limits.max_packet_size".into(),
            ));
        }
        if self.router.max_segment_count == 0 {
            return Err(ConfigError::Invalid("router.max_segment_count is 0".into()));
        }
        Ok(())
    }
}

/// Transport of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// Plain MQTT over TCP.
    Tcp,
    /// MQTT over TLS 1.2/1.3 (rustls, ring provider).
    Tls,
    /// MQTT over WebSocket (binary frames, subprotocol `mqtt`).
    Ws,
    /// MQTT over WebSocket over TLS (`wss://`), with the TLS options of `Tls`.
    Wss,
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Transport.
    pub kind: ListenerKind,
    /// Address to bind; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Certificate and key for `kind = "tls"` and `kind = "wss"` (and only for them).
    pub tls: Option<TlsConfig>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            kind: ListenerKind::Tcp,
            bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            tls: None,
        }
    }
}

/// TLS material of a listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the broker.
    pub cert: PathBuf,
    /// PEM private key of the broker.
    pub key: PathBuf,
    /// PEM CA certificate that client certificates must chain to (the security center's
    /// CA). When set, clients may authenticate with a certificate.
    pub client_ca: Option<PathBuf>,
    /// Optional PEM revocation list of the security center, read again while the broker
    /// runs (see [`Limits::crl_reload_interval_ms`]).
    pub crl: Option<PathBuf>,
    /// Refuse TLS clients without a valid certificate.
    #[serde(default)]
    pub require_client_cert: bool,
}

/// Resource limits; the defaults suit a small deployment. Those that MQTT 5 clients must
/// know are advertised in CONNACK.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open client connections, all listeners together; more are closed at accept.
    pub max_connections: usize,
    /// Largest MQTT packet accepted (whole packet, header included); larger ones close
    /// the connection (MQTT 5: DISCONNECT 0x95). Advertised as maximum packet size. The
    /// default of 1 MiB leaves room for key messages. At most 268,435,460.
    pub max_packet_size: usize,
    /// Time allowed between TCP accept and a complete CONNECT, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Time allowed for a TLS or WebSocket handshake, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// Receive maximum: QoS 1/2 flows a client may have open towards the broker
    /// (default 100, at least 1): for MQTT 5, QoS 1 until PUBACK and QoS 2 until
    /// PUBCOMP; for 3.1.1, until the router has the message. Advertised to MQTT 5
    /// clients; the edge stops reading a client's QoS 1/2 PUBLISHes when it reaches it,
    /// and an MQTT 5 client that sends more gets DISCONNECT 0x93. Also accepted under
    /// the name `receive_maximum`. It is also the window the other way: at most this
    /// many QoS 1/2 messages (or the MQTT 5 client's receive maximum, if smaller) are
    /// sent to a client unacknowledged; the rest wait in its queue.
    #[serde(alias = "receive_maximum")]
    pub max_inflight: u16,
    /// Topic alias maximum: topic aliases an MQTT 5 client may use towards the broker
    /// (default 64; 0 forbids aliases). Advertised in CONNACK; an alias above it gets
    /// DISCONNECT 0x94.
    pub topic_alias_max: u16,
    /// Server keep alive in seconds (default: none, the client's keep-alive applies).
    /// When set, MQTT 5 clients whose keep-alive differs are told this value in CONNACK
    /// and it is enforced instead of theirs (silence for 1.5 times it closes the
    /// connection; 0 disables the timeout). MQTT 3.1.1 has no way to tell a client, so
    /// 3.1.1 clients keep their own keep-alive.
    pub server_keep_alive: Option<u16>,
    /// QoS 1/2 messages the edge queues for a connected session above those sent and
    /// not yet acknowledged (at most `max_inflight`), as Mosquitto's (default 1,000;
    /// 0: no limit). The edge takes every message off the router at once, so a slow
    /// subscriber never falls behind the router's window; beyond this limit
    /// `slow_subscriber` decides. A resumed session's
    /// backlog comes through the same queue. While a session is offline its messages
    /// wait in each filter's router log (`[router]`), which bounds them.
    pub max_queued_messages: usize,
    /// What the broker does for a connected subscriber that takes QoS 1/2 messages
    /// slower than they come, once its queue holds `max_queued_messages`: `"drop"`
    /// (default) drops by `drop_policy`, each drop counted in
    /// `sealpost_dropped_messages_total{reason="queue_full"}` and logged at warn with
    /// the client id; `"backpressure"` drops nothing and stops reading every QoS 1/2
    /// publisher until the queue is below the limit again, so one subscriber that
    /// never acknowledges stops them all: only for trusted subscribers.
    pub slow_subscriber: SlowSubscriber,
    /// Which message a full queue drops with `slow_subscriber = "drop"`: `"newest"`
    /// (default, as Mosquitto: the one that does not fit) or `"oldest"` (the oldest
    /// not yet sent; messages already sent are never taken back).
    pub drop_policy: DropPolicy,
    /// Longest time, in seconds, a session outlives its connection (default: none, as
    /// the client asks). MQTT 5 clients that ask for longer, or for never (0xFFFFFFFF),
    /// get this interval and are told it in CONNACK; MQTT 3.1.1 persistent sessions
    /// (clean session 0), which would never expire, end this long after their
    /// connection. 0 ends every session with its connection. Bounds what clients that
    /// never come back leave behind.
    pub max_session_expiry: Option<u32>,
    /// Subscriptions (topic filters, shared ones included) one client may hold
    /// (default 1,000, at least 1). A filter beyond it is refused in SUBACK (3.1.1:
    /// 0x80; 5: 0x97 quota exceeded); renewing a filter the client already has is
    /// always allowed. Bounds the edge's work per message and per SUBSCRIBE.
    pub max_subscriptions_per_client: usize,
    /// Retained topics one identity may have created and still hold (default 10,000; 0:
    /// no limit): a retained message on a new topic beyond it is refused (MQTT 5:
    /// PUBACK/PUBREC 0x97 quota exceeded; 3.1.1 has no refusal, so it is acknowledged
    /// and dropped), and counted in `sealpost_retained_over_quota_total`. Replacing or
    /// deleting one of its own retained messages is always allowed. An identity is a
    /// user name or a certificate; anonymous clients count together. Retained
    /// messages restored at start and retained wills count for nobody.
    pub max_retained_per_client: usize,
    /// Persistent sessions (session expiry not 0, MQTT 3.1.1 clean session 0) one
    /// identity may hold at once, connected or not (default 1,000; 0: no limit). A
    /// CONNECT that would create one more is refused (MQTT 5 CONNACK 0x97 quota
    /// exceeded, 3.1.1: 0x03 server unavailable); resuming or replacing one of its own
    /// is allowed. Anonymous clients count together.
    pub max_sessions_per_identity: usize,
    /// How often, in milliseconds, each TLS listener's revocation list (`[listener.tls]
    /// crl`) is read again (default 5,000; 0: only at SIGHUP). A new list signed by the
    /// CA is installed, and connections whose certificate it revokes are closed (MQTT
    /// 5: DISCONNECT 0x98); a list that cannot be read, is not signed by the CA or is
    /// older than the one in force is refused with an error in the log, and the list in
    /// force stays.
    pub crl_reload_interval_ms: u64,
    /// How long, in milliseconds, a connection that needs no router link of its own
    /// keeps one after its last message (default 10,000; 0: until it ends). Such a
    /// connection (a clean session, no subscription, no message of its on the way) gets
    /// a link at its first message and gives it back after this quiet time, so that
    /// idle publish-only devices hold no router memory (see `connection::link`).
    pub router_link_idle_ms: u64,
}

/// What the broker does when a session's queue is full (`limits.slow_subscriber`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowSubscriber {
    /// Drop messages by `limits.drop_policy`, each one counted and logged.
    #[default]
    Drop,
    /// Drop nothing: hold every QoS 1/2 publisher until the queue drains.
    Backpressure,
}

/// Which message a full queue drops (`limits.drop_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DropPolicy {
    /// The message that does not fit (Mosquitto's behaviour).
    #[default]
    Newest,
    /// The oldest message not yet sent (messages already sent to the client, and a
    /// resumed session's unacknowledged ones, are never taken back).
    Oldest,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_packet_size: 1024 * 1024,
            connect_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
            max_inflight: 100,
            max_queued_messages: 1000,
            slow_subscriber: SlowSubscriber::Drop,
            drop_policy: DropPolicy::Newest,
            topic_alias_max: 64,
            server_keep_alive: None,
            max_session_expiry: None,
            max_subscriptions_per_client: 1000,
            max_retained_per_client: 10_000,
            max_sessions_per_identity: 1000,
            crl_reload_interval_ms: 5000,
            router_link_idle_ms: 10_000,
        }
    }
}

impl Limits {
    /// The session expiry interval granted for `requested` (seconds; `None`: never).
    pub fn session_expiry(&self, requested: Option<u32>) -> Option<u32> {
        match (requested, self.max_session_expiry) {
            (r, None) => r,
            (None, Some(max)) => Some(max),
            (Some(r), Some(max)) => Some(r.min(max)),
        }
    }

    /// [`Limits::connect_timeout_ms`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    /// [`Limits::handshake_timeout_ms`] as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    /// [`Limits::router_link_idle_ms`] as a duration; `None`: links are kept.
    pub fn router_link_idle(&self) -> Option<Duration> {
        (self.router_link_idle_ms > 0).then(|| Duration::from_millis(self.router_link_idle_ms))
    }
}

/// Authentication settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accept clients that present neither a password nor a certificate.
    pub allow_anonymous: bool,
    /// File of `username:argon2-hash` lines (see `sealpost-broker passwd`).
    pub password_file: Option<PathBuf>,
    /// Failed password logins for one user name from one client address within
    /// `failed_login_window_secs` (default 5); further logins for that user from that
    /// address are refused without checking the password (3.1.1: CONNACK 0x03 server
    /// unavailable; 5: 0x9F connection rate exceeded) until the window ends.
    pub max_failed_logins: u32,
    /// Failed password logins from one client address (an IPv6 address's /64), all
    /// user names together, within the window (default 20); beyond, every password
    /// login from it is refused as above.
    pub max_failed_logins_per_address: u32,
    /// How long failed logins are remembered, in seconds from an address's first
    /// failure (default 60).
    pub failed_login_window_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let limits = crate::auth::LoginLimits::default();
        AuthConfig {
            allow_anonymous: true,
            password_file: None,
            max_failed_logins: limits.per_user,
            max_failed_logins_per_address: limits.per_address,
            failed_login_window_secs: limits.window.as_secs(),
        }
    }
}

impl AuthConfig {
    /// The failed-login limits these settings give.
    pub fn login_limits(&self) -> crate::auth::LoginLimits {
        crate::auth::LoginLimits {
            per_user: self.max_failed_logins,
            per_address: self.max_failed_logins_per_address,
            window: Duration::from_secs(self.failed_login_window_secs),
        }
    }
}

/// Default decision of the ACL when no rule names an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AclDefault {
    /// Identities without rules may publish and subscribe anywhere (except key-message
    /// topics, which are always reserved to their publisher).
    #[default]
    Allow,
    /// Identities without rules may do nothing.
    Deny,
}

/// Access control rules.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AclConfig {
    /// Decision for identities that no rule names.
    pub default: AclDefault,
    /// Rules; an identity named by at least one rule gets exactly what its rules allow.
    pub rules: Vec<AclRule>,
    /// Who receives key messages (`sealpost/keys/<publisher>/<subscriber>[/...]`).
    pub key_topic_readers: KeyTopicReaders,
}

/// Who may read key-message topics. A key message is sealed to its subscriber, but who
/// was granted what, and when the key rotates, is itself worth hiding from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyTopicReaders {
    /// Only its recipients: `sealpost/keys/<p>/<s>[/...]` is delivered to the subscriber
    /// certificate `s`, the publisher certificate `p`, and to identities whose own rule
    /// (not a `*` rule) lists a `subscribe` filter matching the topic. Anyone else's
    /// subscription (`#` included) is accepted but gets no key messages.
    #[default]
    Recipients,
    /// The ordinary rules decide, as for any topic (anyone who may subscribe reads).
    Rules,
}

/// Permissions of one identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// `user:<name>`, a certificate's role and id (`publisher:<id>`, `subscriber:<id>`,
    /// `client:<id>`, `server:<id>`), `anonymous` or `*` (every identity). Anything
    /// else, including the role-less `cert:<id>`, is refused at start.
    pub identity: String,
    /// Topic filters the identity may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic filters the identity may subscribe within.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// Retained message persistence (before `[storage]`; kept so that existing files work).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RetainedConfig {
    /// redb database file for retained messages only. Superseded by `[storage] path`,
    /// whose database keeps them; both together are refused (to migrate, copy this file
    /// to `DIR/sealpost.redb` before the first start with the data directory).
    pub path: Option<PathBuf>,
}

/// The data directory (`[storage]`, or `--data-dir`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory of the broker's database (`sealpost.redb`; the directory is created
    /// with mode 0700 if absent):
    /// persistent sessions, the messages queued for them, delayed wills and retained
    /// messages survive a restart and a crash. Without it, all of this lives in memory.
    pub path: Option<PathBuf>,
    /// When a write to the store counts as done: `always` (default) on disk before the
    /// PUBACK/PUBREC (or acknowledged by every persistent session the message is for);
    /// `periodic`, the PUBACK/PUBREC does not wait, and what the store holds reaches
    /// the disk within `sync_interval_ms` (a crash loses at most that much, as
    /// Mosquitto's `autosave_interval`).
    pub sync: SyncMode,
    /// With `sync = "periodic"`, the longest time in milliseconds between writes to disk
    /// (default 1,000).
    pub sync_interval_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: None,
            sync: SyncMode::Always,
            sync_interval_ms: 1000,
        }
    }
}

impl StorageConfig {
    /// The database file in the data directory, if one is configured.
    pub fn file(&self) -> Option<PathBuf> {
        self.path.as_ref().map(|d| d.join(crate::store::FILE_NAME))
    }

    /// The store's sync setting.
    pub fn store_sync(&self) -> crate::store::Sync {
        match self.sync {
            SyncMode::Always => crate::store::Sync::Always,
            SyncMode::Periodic => {
                crate::store::Sync::Periodic(Duration::from_millis(self.sync_interval_ms))
            }
        }
    }
}

/// `[storage] sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Acknowledged means on disk.
    Always,
    /// Acknowledged at once; on disk within `sync_interval_ms`.
    Periodic,
}

/// Metrics endpoint.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint serving `/metrics`; disabled when absent.
    pub bind: Option<SocketAddr>,
}

/// Session settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Response information sent in CONNACK to MQTT 5 clients that ask for it (request
    /// response information = 1): this prefix followed by the client id, with `% + $ #
    /// /` in the id percent-encoded so that the result is one topic level that no other
    /// client id produces. Default `response/`; empty: no response information is sent.
    /// The ACL still decides who may publish and subscribe there.
    pub response_information_prefix: String,
    /// A session belongs to the identity that created it. A client of another identity
    /// (another user, another certificate, or the same name with other credentials)
    /// that connects with its client id is refused by default (CONNACK 0x05 / 0x87).
    /// With `true`, while the owner is not connected, it gets a new, clean session
    /// instead, which discards the owner's session and the messages queued for it; it
    /// is still refused while the owner is connected, and never resumes the owner's
    /// session. Default `false`.
    pub new_session_for_other_identity: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            response_information_prefix: "response/".into(),
            new_session_for_other_identity: false,
        }
    }
}

/// Router log sizing: every subscription filter keeps up to
/// `max_segment_size * max_segment_count` bytes in memory. This is the only bound on
/// the messages kept for a session: the router has none per session (see the README's
/// known gaps).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterSizing {
    /// Bytes per segment; must hold the largest packet.
    pub max_segment_size: usize,
    /// Segments kept per filter.
    pub max_segment_count: usize,
    /// QoS 0 messages the router reads from a filter's log for one connection at a time
    /// (QoS 1/2 are bounded by the router's inflight window); the rest wait in the log,
    /// which the segments above bound per filter, not per session.
    pub max_outgoing_packet_count: u64,
}

impl Default for RouterSizing {
    fn default() -> Self {
        RouterSizing {
            max_segment_size: 4 * 1024 * 1024,
            max_segment_count: 4,
            max_outgoing_packet_count: 200,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_listens_on_1883() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.listeners[0].bind.to_string(), "127.0.0.1:1883");
    }

    #[test]
    fn a_session_expiry_maximum_shortens_longer_and_endless_sessions_only() {
        let mut limits = Limits::default();
        for requested in [None, Some(0), Some(60)] {
            assert_eq!(limits.session_expiry(requested), requested, "no maximum");
        }
        limits.max_session_expiry = Some(30);
        assert_eq!(limits.session_expiry(None), Some(30));
        assert_eq!(limits.session_expiry(Some(60)), Some(30));
        assert_eq!(limits.session_expiry(Some(10)), Some(10));
        assert_eq!(limits.session_expiry(Some(0)), Some(0));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
    }

    fn listener(kind: &str, tls_section: bool) -> Result<(), ConfigError> {
        let mut text = format!("[[listener]]\nkind = \"{kind}\"\nbind = \"127.0.0.1:0\"\n");
        if tls_section {
            text += "[listener.tls]\ncert = \"b.pem\"\nkey = \"b.key\"\n";
        }
        toml::from_str::<Config>(&text).unwrap().validate()
    }

    #[test]
    fn tls_listeners_need_a_tls_section_and_plain_ones_may_not_have_one() {
        for kind in ["tls", "wss"] {
            assert!(
                listener(kind, false).is_err(),
                "{kind} without [listener.tls]"
            );
            assert!(listener(kind, true).is_ok(), "{kind} with [listener.tls]");
        }
        // A plain port with TLS settings would look encrypted and not be.
        for kind in ["tcp", "ws"] {
            assert!(listener(kind, true).is_err(), "{kind} with [listener.tls]");
            assert!(listener(kind, false).is_ok(), "{kind}");
        }
    }
}
