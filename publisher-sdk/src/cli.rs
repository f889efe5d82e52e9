//! What the command-line tools (`sealpost-pub`, `sealpost-sub`) share about their
//! connection: the broker addresses of repeated `-L` options, reporting a lost broker
//! and the reconnect, and the signals that end them cleanly.

use tokio::sync::watch;

use crate::link::LinkStatus;
use crate::transport::BrokerAddress;
use crate::PublisherError;

/// The broker and the failover brokers from `-L` options (in order), or from `-h`/`-p`
/// without any.
pub fn brokers(
    urls: &[String],
    host: &str,
    port: u16,
) -> Result<(BrokerAddress, Vec<BrokerAddress>), PublisherError> {
    let mut addresses = urls
        .iter()
        .map(|u| BrokerAddress::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    if addresses.is_empty() {
        addresses.push(BrokerAddress::Tcp {
            host: host.to_owned(),
            port,
        });
    }
    let first = addresses.remove(0);
    Ok((first, addresses))
}

/// Prints on stderr, as `PROGRAM: ...`, that the connection was lost and is being
/// re-established (once per series of failed attempts: the SDK paces them), and that it
/// is back. Runs until the status has no sender left.
pub async fn report_link(program: &'static str, mut status: watch::Receiver<LinkStatus>) {
    let mut reconnecting = false;
    while status.changed().await.is_ok() {
        match &*status.borrow_and_update() {
            LinkStatus::Reconnecting(reason) => {
                reconnecting = true;
                eprintln!("{program}: connection lost: {reason}; reconnecting");
            }
            LinkStatus::Connected if reconnecting => {
                reconnecting = false;
                eprintln!("{program}: reconnected");
            }
            _ => {}
        }
    }
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM, after which the tools disconnect cleanly (MQTT
/// DISCONNECT, then TLS close_notify) and exit.
pub async fn stop_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted,
        _ = term.recv() => Ok(()),
    }
}
