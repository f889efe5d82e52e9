//! The command-line arguments the tools share, declared once: where the broker is
//! (`-h`/`-p` or repeated `-L`, as in mosquitto_pub/sub), how to log in (`-i`, `-u`,
//! `-P`), the publisher's identity and its KDC (`sealpost-pub`, `sealpost-gateway`), and
//! reading the PEM files the tools are given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use sealpost_client::{BrokerAddress, ClientError};
use sealpost_publisher::kdc::{KdcConfig, LoginLimit};
use sealpost_publisher::PublisherConfig;

/// Where the broker is: `-h`/`-p`, or `-L` URLs (repeated: failover). Also `--help`,
/// since `-h` is the host here.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Print help (`-h` is the host, as in mosquitto_pub/sub).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Broker host (ignored with -L).
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port (ignored with -L).
    #[arg(short = 'p', long, default_value_t = 1883)]
    pub port: u16,
    /// Broker URL: mqtt://, mqtts://, ws:// or wss://host:port[/path]. Repeat it to fail
    /// over: when the broker is lost, the next one (mqtt:// and mqtts:// only) is used.
    #[arg(short = 'L', long)]
    pub url: Vec<String>,
}

impl BrokerArgs {
    /// The broker and the failover brokers from `-L` options (in order), or from
    /// `-h`/`-p` without any.
    pub fn brokers(&self) -> Result<(BrokerAddress, Vec<BrokerAddress>), ClientError> {
        let mut addresses = self
            .url
            .iter()
            .map(|u| BrokerAddress::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        if addresses.is_empty() {
            addresses.push(BrokerAddress::Tcp {
                host: self.host.clone(),
                port: self.port,
            });
        }
        let first = addresses.remove(0);
        Ok((first, addresses))
    }
}

/// How the MQTT client identifies itself to the broker.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Client id.
    #[arg(short = 'i', long)]
    pub id: Option<String>,
    /// User name.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password.
    #[arg(short = 'P', long)]
    pub password: Option<String>,
}

impl LoginArgs {
    /// User name and password (empty if only `-u` was given), if a user name was given.
    pub fn credentials(&self) -> Option<(String, String)> {
        let user = self.username.clone()?;
        Some((user, self.password.clone().unwrap_or_default()))
    }
}

/// The text of a PEM (or any text) file; the error names the file.
pub fn read_pem(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A publisher's identity, what it trusts, and where it keeps its state.
#[derive(Debug, Args)]
pub struct PublisherArgs {
    /// Publisher certificate (PEM).
    #[arg(long)]
    pub cert: PathBuf,
    /// Publisher private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// sealpost CA certificate (PEM); also trusted for the broker's TLS certificate.
    #[arg(long)]
    pub cafile: PathBuf,
    /// The CA's revocation list (PEM), e.g. pki/crl.pem: granted readers are checked
    /// against it at start, on every rekey and periodically (reloaded from the file).
    #[arg(long, value_name = "FILE", required_unless_present = "insecure_no_crl")]
    pub crl: Option<PathBuf>,
    /// INSECURE: run without a revocation list; readers whose certificates the CA revoked
    /// keep receiving new keys until their certificates expire.
    #[arg(long, conflicts_with = "crl")]
    pub insecure_no_crl: bool,
    /// Reload the revocation list and check every granted reader again this often, in
    /// seconds (0: only at start and on every rekey).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub crl_reload: u64,
    /// State directory (sequence numbers, keys, grants, and the gateway's tokens).
    #[arg(long, default_value = ".sealpost-pub")]
    pub state_dir: PathBuf,
}

impl PublisherArgs {
    /// The publisher's configuration for `broker`. Running without a revocation list
    /// is said on stderr, naming `tool`.
    pub fn config(&self, tool: &str, broker: BrokerAddress) -> Result<PublisherConfig, String> {
        let mut config = PublisherConfig::new(
            broker,
            read_pem(&self.cert)?,
            read_pem(&self.key)?,
            read_pem(&self.cafile)?,
            self.state_dir.clone(),
        );
        // The sealpost broker lets only the publisher's certificate write its key topics.
        config.present_certificate_over_tls();
        config.crl = self.crl.clone();
        config.crl_reload_interval = Duration::from_secs(self.crl_reload);
        if self.insecure_no_crl {
            eprintln!(
                "{tool}: WARNING: --insecure-no-crl: readers whose certificates the CA \
                 revoked keep receiving new keys"
            );
            config.insecure_no_crl = true;
        }
        Ok(config)
    }
}

/// Serving the content keys from a key distribution center (HTTPS) too.
#[derive(Debug, Args)]
pub struct KdcArgs {
    /// Serve content keys from a key distribution center (HTTPS) listening here, e.g.
    /// 127.0.0.1:8443.
    #[arg(long, value_name = "LISTEN_ADDR", requires_all = ["kdc_cert", "kdc_key"])]
    pub kdc: Option<SocketAddr>,
    /// The KDC's TLS server certificate (PEM), issued by the sealpost CA.
    #[arg(long, value_name = "FILE")]
    pub kdc_cert: Option<PathBuf>,
    /// The KDC's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub kdc_key: Option<PathBuf>,
    /// The KDC address put in envelopes and credentials (default
    /// https://<listen ip>:<port>); its host must be named by the KDC certificate.
    #[arg(long, value_name = "URL", requires = "kdc")]
    pub kdc_address: Option<String>,
    /// Deliver keys through the KDC only: no key messages.
    #[arg(long, requires = "kdc")]
    pub kdc_only: bool,
    /// Lifetime of KDC access tokens, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub kdc_token_lifetime: u64,
    /// Failed KDC logins allowed per client address per minute (logins being checked
    /// count too).
    #[arg(long, value_name = "COUNT", default_value_t = 5)]
    pub kdc_max_failed_logins: u32,
    /// Append the KDC's audit lines (one per login and key fetch: reader, epoch, time,
    /// client address, outcome) to this file as JSON lines instead of stderr.
    #[arg(long, value_name = "FILE", requires = "kdc")]
    pub kdc_audit_log: Option<PathBuf>,
    /// Let web pages of this origin (http(s)://host[:port]) call the KDC (CORS); may be
    /// repeated. Only these origins are answered, never "*".
    #[arg(long, value_name = "ORIGIN", requires = "kdc")]
    pub kdc_allow_origin: Vec<String>,
}

impl KdcArgs {
    /// Adds the KDC to `config`, if `--kdc` was given.
    pub fn apply(&self, config: &mut PublisherConfig) -> Result<(), String> {
        let (Some(listen), Some(cert), Some(key)) = (self.kdc, &self.kdc_cert, &self.kdc_key)
        else {
            return Ok(());
        };
        let mut kdc = KdcConfig::new(listen, read_pem(cert)?, read_pem(key)?);
        kdc.public_address = self.kdc_address.clone();
        kdc.token_lifetime = Duration::from_secs(self.kdc_token_lifetime.max(1));
        kdc.login_limit = LoginLimit {
            max_failures: self.kdc_max_failed_logins.max(1),
            window: Duration::from_secs(60),
        };
        kdc.allowed_origins = self.kdc_allow_origin.clone();
        config.kdc = Some(kdc);
        config.key_messages = !self.kdc_only;
        Ok(())
    }
}
