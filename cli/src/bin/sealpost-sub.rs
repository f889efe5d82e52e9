//! `sealpost-sub`: print verified, decrypted messages, in the manner of `mosquitto_sub`.
//! Rejections go to stderr.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sealpost_cli::args::{read_pem, BrokerArgs, LoginArgs};
use sealpost_cli::{lifecycle, logging};
use sealpost_subscriber::{Event, KdcCredentials, QoS, Subscriber, SubscriberConfig, TlsIdentity};

/// Exit status when -W expires, as `mosquitto_sub`'s (MOSQ_ERR_TIMEOUT).
const EXIT_TIMEOUT: u8 = 27;

#[derive(Parser)]
#[command(
    name = "sealpost-sub",
    version,
    disable_help_flag = true,
    about = "Receive sealed MQTT messages"
)]
struct Cli {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Topic filter(s) to subscribe to.
    #[arg(short = 't', long, required = true)]
    topic: Vec<String>,
    /// QoS 0 or 1.
    #[arg(short = 'q', long, default_value_t = 1)]
    qos: u8,
    /// Print topic and publisher before each payload.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Exit after this many messages.
    #[arg(short = 'C', long)]
    count: Option<u64>,
    /// Exit after this many seconds, with status 27 (as mosquitto_sub) unless -C was
    /// reached first.
    #[arg(short = 'W', long)]
    timeout: Option<u64>,
    /// Subscriber certificate (PEM); not needed with --kdc-credentials alone.
    #[arg(long, required_unless_present = "kdc_credentials", requires = "key")]
    cert: Option<PathBuf>,
    /// Subscriber private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// KDC credentials file (from `sealpost-pub kdc add-reader`): fetch content keys
    /// from that publisher's key distribution center. May be repeated.
    #[arg(long, value_name = "FILE")]
    kdc_credentials: Vec<PathBuf>,
    /// sealpost CA certificate (PEM); also trusted for the broker's TLS certificate.
    #[arg(long)]
    cafile: PathBuf,
    /// Revocation list from the CA (PEM), e.g. pki/crl.pem. Required (unless
    /// --insecure-no-crl); read again every --crl-reload seconds while running.
    #[arg(long, required_unless_present = "insecure_no_crl")]
    crl: Option<PathBuf>,
    /// Run without a revocation list: messages of revoked publishers are accepted. For
    /// tests and trials only.
    #[arg(long, conflicts_with = "crl")]
    insecure_no_crl: bool,
    /// Seconds between reloads of the revocation list.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    crl_reload: u64,
    /// State directory (replay window, one file per subscriber id), so a restart does not
    /// print messages again, nor accept captured ones re-published.
    #[arg(long, default_value = sealpost_subscriber::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Keep the replay window in memory only (no state directory): after a restart,
    /// messages younger than --max-age are accepted again.
    #[arg(long)]
    replay_in_memory: bool,
    /// Refuse messages published more than this many seconds ago (signed publication
    /// time).
    #[arg(long, default_value_t = sealpost_protocol::DEFAULT_MAX_AGE_SECS, value_name = "SECONDS")]
    max_age: u64,
    /// Seconds to hold a message waiting for its key.
    #[arg(long, default_value_t = 10)]
    hold: u64,
    #[command(flatten)]
    login: LoginArgs,
    /// Keep the session while away (clean session 0), as mosquitto_sub -c: QoS 1
    /// messages are queued for this client id. Needs -i.
    #[arg(short = 'c', long = "disable-clean-session")]
    persistent_session: bool,
    /// Log sealpost's debug lines (`RUST_LOG`, when set, chooses the log lines instead).
    #[arg(short = 'd', long)]
    debug: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = logging::init(cli.debug, None) {
        eprintln!("sealpost-sub: {e}");
        return ExitCode::FAILURE;
    }
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sealpost-sub: {e}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error>;

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    let (broker, failover) = cli.broker.brokers()?;
    let tls = broker.is_tls() || failover.iter().any(|b| b.is_tls());
    let ca_pem = read_pem(&cli.cafile)?;
    let (cert_pem, key_pem) = match (&cli.cert, &cli.key) {
        (Some(cert), Some(key)) => (read_pem(cert)?, read_pem(key)?),
        _ => (String::new(), String::new()),
    };
    let mut config =
        SubscriberConfig::new(broker, cert_pem.clone(), key_pem.clone(), ca_pem.clone());
    config.failover = failover;
    for path in &cli.kdc_credentials {
        config
            .kdc_credentials
            .push(KdcCredentials::load(path).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    if tls {
        // Offered to brokers that authenticate clients by certificate; the others never
        // ask for it.
        // A KDC-only reader has no certificate to offer.
        config.tls = Some(TlsIdentity {
            ca_pem,
            client: (!cert_pem.is_empty()).then_some((cert_pem, key_pem)),
        });
    }
    config.revocation_list = cli.crl.clone();
    config.insecure_no_crl = cli.insecure_no_crl;
    config.revocation_list_reload = Duration::from_secs(cli.crl_reload.max(1));
    if cli.insecure_no_crl {
        eprintln!(
            "sealpost-sub: WARNING: --insecure-no-crl: messages of revoked publishers are accepted"
        );
    }
    config.state_dir = (!cli.replay_in_memory).then(|| cli.state_dir.clone());
    config.max_age = Duration::from_secs(cli.max_age);
    config.hold_time = Duration::from_secs(cli.hold);
    config.client_id = cli.login.id.clone();
    config.persistent_session = cli.persistent_session;
    config.credentials = cli.login.credentials();
    let qos = if cli.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let stop = lifecycle::stop_signal()?;
    tokio::pin!(stop);
    // Signals are caught from here on: one while connecting still ends the program.
    let mut subscriber = tokio::select! {
        subscriber = Subscriber::connect(config) => subscriber?,
        () = &mut stop => return Err("interrupted while connecting".into()),
    };
    for filter in &cli.topic {
        subscriber.subscribe(filter, qos).await?;
    }
    let deadline = cli
        .timeout
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    tokio::spawn(lifecycle::report_link(
        "sealpost-sub",
        subscriber.link_status(),
    ));
    let mut code = ExitCode::SUCCESS;
    while !matches!(cli.count, Some(c) if printed >= c) {
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            event = subscriber.next() => event,
            () = expired => {
                code = ExitCode::from(EXIT_TIMEOUT);
                break;
            }
            _ = &mut stop => break,
        };
        let Some(event) = event else { break };
        match event {
            Event::Message(m) => {
                let mut out = stdout.lock();
                if cli.verbose {
                    write!(out, "{} [{}] ", m.topic, m.publisher)?;
                }
                out.write_all(&m.payload)?;
                writeln!(out)?;
                out.flush()?;
                printed += 1;
            }
            // Duplicates are expected after every reconnect (the publisher sends its
            // recent messages again) and harmless: reported with -d only.
            Event::Rejected(r) if r.reason.kind() == "replayed" && !cli.debug => {}
            Event::Rejected(r) => {
                eprintln!("rejected {}: {} ({})", r.topic, r.reason, r.reason.kind());
            }
            Event::KeyFetchFailed(f) => {
                eprintln!(
                    "key fetch failed: {} epoch {} from {}: {}",
                    f.publisher, f.epoch, f.kdc, f.error
                );
            }
        }
    }
    // A clean MQTT DISCONNECT (and, over TLS, close_notify), so the broker sees the
    // session end, not a dropped link: at -C, at -W, on Ctrl-C and on SIGTERM alike.
    let _ = subscriber.disconnect().await;
    Ok(code)
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
