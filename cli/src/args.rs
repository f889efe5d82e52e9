//! The command-line arguments the tools share, declared once: where the broker is
//! (`-h`/`-p` or repeated `-L`, as in mosquitto_pub/sub), how to log in (`-i`, `-u`,
//! `-P`), and reading the PEM files the tools are given.

use std::path::Path;

use clap::Args;
use sealpost_client::{BrokerAddress, ClientError};

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
