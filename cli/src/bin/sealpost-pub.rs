//! `sealpost-pub`: publish sealed messages, in the manner of `mosquitto_pub`.
//!
//! Readers are granted from a directory of subscriber certificates (`--grant-dir`): every
//! `*.pem` in it is granted, and a granted subscriber whose file disappears is revoked
//! (which rotates the key). Granting a new reader rotates the key too, unless
//! `--no-rotate-on-grant`. With `-l` the directory is re-read while stdin lines are sent.
//! A new grant's key message is read back from the broker: one the broker dropped (the
//! sealpost broker does, for key topics written without the publisher's certificate) is
//! an error, and the grant is undone (`--no-grant-check` skips this).
//!
//! The CA's revocation list (`--crl`) is required (`--insecure-no-crl` to run without
//! one): every granted certificate is checked against it at start, on every rekey and,
//! with the file read again, every `--crl-reload` seconds; a reader that fails is dropped
//! and the key rotates.
//!
//! Key distribution center: `--kdc LISTEN_ADDR` (with `--kdc-cert`/`--kdc-key`) serves
//! the content keys over HTTPS to readers holding credentials from
//! `sealpost-pub kdc add-reader ID`, and keeps serving after the input is sent, until
//! Ctrl-C. `--kdc-only` sends no key messages.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use sealpost_cli::args::{read_pem, BrokerArgs, KdcArgs, LoginArgs, PublisherArgs};
use sealpost_cli::{lifecycle, logging};
use sealpost_publisher::{Publisher, PublisherError, QoS};

#[derive(Parser)]
#[command(
    name = "sealpost-pub",
    version,
    disable_help_flag = true,
    about = "Publish sealed MQTT messages",
    after_help = "KDC readers: sealpost-pub kdc add-reader ID [-o FILE] | sealpost-pub kdc readers \
                  (see sealpost-pub kdc --help)"
)]
struct Cli {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    publisher: PublisherArgs,
    /// Topic to publish to.
    #[arg(short = 't', long)]
    topic: String,
    /// Message to send.
    #[arg(short = 'm', long, group = "input")]
    message: Option<String>,
    /// Send the contents of a file as one message.
    #[arg(short = 'f', long, group = "input")]
    file: Option<PathBuf>,
    /// Send each line of stdin as a message.
    #[arg(short = 'l', long, group = "input")]
    lines: bool,
    /// Send all of stdin as one message.
    #[arg(short = 's', long, group = "input")]
    stdin: bool,
    /// QoS 0 or 1 (2 is sent as 1: sealed messages are de-duplicated by the subscriber).
    #[arg(short = 'q', long, default_value_t = 1)]
    qos: u8,
    /// Publish retained.
    #[arg(short = 'r', long)]
    retain: bool,
    /// Directory of subscriber certificates (*.pem) to grant.
    #[arg(long)]
    grant_dir: Option<PathBuf>,
    /// Do not rotate the key when a new reader is granted: the new reader can then open
    /// what was sealed earlier in the current epoch (retained messages included).
    #[arg(long)]
    no_rotate_on_grant: bool,
    /// Do not read the key messages of new grants back from the broker (for brokers
    /// whose ACL lets the publisher write its key topics but not read them). Without
    /// this, a grant whose key message the broker dropped is an error.
    #[arg(long)]
    no_grant_check: bool,
    /// Revoke these subscribers (rotates the key).
    #[arg(long, num_args = 1..)]
    revoke: Vec<String>,
    /// Rotate the content key before publishing.
    #[arg(long)]
    rotate: bool,
    /// Rotate the content key when older than this many seconds.
    #[arg(long)]
    key_lifetime: Option<u64>,
    #[command(flatten)]
    login: LoginArgs,
    /// Print what is granted and sent, and log sealpost's debug lines (`RUST_LOG`, when
    /// set, chooses the log lines instead).
    #[arg(short = 'd', long)]
    debug: bool,
    #[command(flatten)]
    kdc: KdcArgs,
}

/// `sealpost-pub kdc ...`: parsed apart from the publishing options, which it needs none of.
#[derive(Parser)]
#[command(
    name = "sealpost-pub kdc",
    bin_name = "sealpost-pub kdc",
    version,
    about = "Manage KDC readers"
)]
struct KdcCli {
    #[command(subcommand)]
    command: KdcCommand,
}

#[derive(Subcommand)]
enum KdcCommand {
    /// Issue (or re-issue) KDC credentials for a reader; prints them as JSON, or writes
    /// them (mode 0600) with -o. The reader gets no key until the publisher has started
    /// a new epoch for it: at its next start, or within a second if one serves on the
    /// same state directory now.
    AddReader {
        /// Reader id (letters, digits, `.`, `_`, `-`).
        id: String,
        /// Publisher state directory.
        #[arg(long, default_value = ".sealpost-pub")]
        state_dir: PathBuf,
        /// KDC address to write into the credentials (default: the one last served).
        #[arg(long, value_name = "URL")]
        kdc_address: Option<String>,
        /// The KDC's TLS certificate (PEM): the reader will accept this certificate and no
        /// other (default: the one the KDC last served with).
        #[arg(long, value_name = "FILE")]
        kdc_cert: Option<PathBuf>,
        /// Write the credentials to this file instead of printing them.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// List the readers with live KDC credentials.
    Readers {
        /// Publisher state directory.
        #[arg(long, default_value = ".sealpost-pub")]
        state_dir: PathBuf,
    },
}

/// Runs a `kdc` subcommand (no broker, no publisher needed).
fn run_kdc_command(command: KdcCommand) -> Result<(), Error> {
    match command {
        KdcCommand::AddReader {
            id,
            state_dir,
            kdc_address,
            kdc_cert,
            output,
        } => {
            let kdc_cert = match &kdc_cert {
                Some(p) => Some(read_pem(p)?),
                None => None,
            };
            let credentials = sealpost_publisher::kdc::add_reader_offline(
                &state_dir,
                &id,
                kdc_address.as_deref(),
                kdc_cert.as_deref(),
            )?;
            match output {
                Some(path) => {
                    credentials.save(&path)?;
                    eprintln!("credentials for {id} written to {}", path.display());
                }
                None => print!("{}", credentials.to_json()),
            }
        }
        KdcCommand::Readers { state_dir } => {
            for reader in sealpost_publisher::kdc::readers_offline(&state_dir)? {
                println!("{reader}");
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "kdc") {
        let kdc = KdcCli::parse_from(&args[1..]);
        if let Err(e) = logging::init(false, None) {
            eprintln!("sealpost-pub kdc: {e}");
            return ExitCode::FAILURE;
        }
        return match run_kdc_command(kdc.command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sealpost-pub kdc: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    if let Err(e) = logging::init(cli.debug, cli.kdc.kdc_audit_log.as_deref()) {
        eprintln!("sealpost-pub: {e}");
        return ExitCode::FAILURE;
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealpost-pub: {e}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error>;

async fn run(cli: Cli) -> Result<(), Error> {
    let (broker, failover) = cli.broker.brokers()?;
    let mut config = cli.publisher.config("sealpost-pub", broker)?;
    config.failover = failover;
    config.client_id = cli.login.id.clone();
    config.credentials = cli.login.credentials();
    config.key_lifetime = cli.key_lifetime.map(Duration::from_secs);
    config.rotate_on_grant = !cli.no_rotate_on_grant;
    if cli.no_grant_check {
        config.confirm_key_messages = None;
    }
    cli.kdc.apply(&mut config)?;
    let qos = match cli.qos {
        0 => QoS::AtMostOnce,
        1 | 2 => QoS::AtLeastOnce,
        other => return Err(format!("invalid QoS {other}").into()),
    };
    let stop = lifecycle::stop_signal()?;
    tokio::pin!(stop);
    // Signals are caught from here on: one while connecting still ends the program.
    let publisher = tokio::select! {
        publisher = Publisher::connect(config) => publisher?,
        () = &mut stop => return Err("interrupted while connecting".into()),
    };
    tokio::spawn(lifecycle::report_link(
        "sealpost-pub",
        publisher.link_status(),
    ));
    let mut stopped = false;
    if let Some(address) = publisher.kdc_address().await {
        eprintln!("sealpost-pub: KDC serving keys at {address}");
    }
    for id in &cli.revoke {
        publisher.revoke(id).await?;
        if cli.debug {
            eprintln!("revoked {id}");
        }
    }
    let mut seen = BTreeMap::new();
    if let Some(dir) = &cli.grant_dir {
        sync_grants(&publisher, dir, &mut seen, cli.debug).await?;
    }
    if cli.rotate {
        publisher.rotate().await?;
    }
    let send = |payload: Vec<u8>| {
        let publisher = &publisher;
        let topic = cli.topic.clone();
        let debug = cli.debug;
        async move {
            let seq = publisher.publish(&topic, &payload, qos, cli.retain).await?;
            if debug {
                // Numbers are reserved (and saved) in blocks, so each run starts a block
                // above the last: large and with gaps, never reused.
                eprintln!(
                    "sent {} bytes to {topic} (sequence number {seq}; reserved in blocks of \
                     {}, so it jumps at every start)",
                    payload.len(),
                    sealpost_publisher::DEFAULT_RESERVE_BLOCK
                );
            }
            Ok::<(), Error>(())
        }
    };
    if let Some(m) = &cli.message {
        send(m.clone().into_bytes()).await?;
    } else if let Some(f) = &cli.file {
        send(std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?).await?;
    } else if cli.stdin {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        send(buf).await?;
    } else if cli.lines {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
        // Reading stdin blocks: keep it off the async threads.
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        let mut rescan = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                line = rx.recv() => match line {
                    Some(line) => send(line.into_bytes()).await?,
                    None => break,
                },
                // Ctrl-C or SIGTERM: disconnect cleanly (below) rather than die mid-stream.
                _ = &mut stop => {
                    stopped = true;
                    break;
                }
                _ = rescan.tick() => {
                    if let Some(dir) = &cli.grant_dir {
                        sync_grants(&publisher, dir, &mut seen, cli.debug).await?;
                    }
                }
            }
        }
    } else if cli.grant_dir.is_none()
        && cli.revoke.is_empty()
        && !cli.rotate
        && cli.kdc.kdc.is_none()
    {
        return Err("nothing to send: give -m, -f, -l or -s".into());
    }
    if cli.kdc.kdc.is_some() && !stopped {
        // Readers fetch keys after the messages are sent: keep the KDC up.
        eprintln!("sealpost-pub: serving keys until Ctrl-C");
        stop.await;
    }
    publisher.disconnect().await?;
    Ok(())
}

/// Grants every certificate in `dir` that is new or changed, and revokes granted
/// subscribers whose certificate left the directory.
async fn sync_grants(
    publisher: &Publisher,
    dir: &Path,
    seen: &mut BTreeMap<PathBuf, (SystemTime, String)>,
    debug: bool,
) -> Result<(), Error> {
    let mut present = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pem") {
            continue;
        }
        let modified = std::fs::metadata(&path)?.modified()?;
        present.insert(path, modified);
    }
    // New and changed certificates are granted together: new readers rotate the key,
    // and one rotation for all of them is one round of key messages, not one per reader.
    let mut changed = Vec::new();
    for (path, modified) in &present {
        if seen.get(path).is_some_and(|(m, _)| m == modified) {
            continue;
        }
        let pem = std::fs::read_to_string(path)?;
        match sealpost_certs::pemfile::decode(&pem, sealpost_certs::pemfile::CERTIFICATE) {
            Ok(der) => changed.push((path.clone(), *modified, der)),
            Err(e) => eprintln!("sealpost-pub: not granting {}: {e}", path.display()),
        }
    }
    if changed.is_empty() {
        return revoke_missing(publisher, dir, &present, seen, debug).await;
    }
    let ders: Vec<Vec<u8>> = changed.iter().map(|(_, _, der)| der.clone()).collect();
    // Granted in an earlier run (state directory): granting again changes nothing.
    let granted_before = publisher.granted().await;
    let granted: Vec<Result<String, _>> = match publisher.grant_many(&ders).await {
        Ok((_, ids)) => ids.into_iter().map(Ok).collect(),
        // The broker dropped the key messages: no reader can read, whatever the others.
        Err(e @ PublisherError::KeyMessagesRefused { .. }) => return Err(e.into()),
        // One of them is refused: grant the others one by one, to name the culprits.
        Err(_) if ders.len() > 1 => {
            let mut results = Vec::with_capacity(ders.len());
            for der in &ders {
                results.push(
                    publisher
                        .grant_many(std::slice::from_ref(der))
                        .await
                        .map(|(_, mut ids)| ids.remove(0)),
                );
            }
            results
        }
        Err(e) => vec![Err(e)],
    };
    for ((path, modified, _), result) in changed.into_iter().zip(granted) {
        match result {
            Ok(id) => {
                if debug && !granted_before.contains(&id) {
                    eprintln!("granted {id} ({})", path.display());
                }
                seen.insert(path, (modified, id));
            }
            Err(e) => eprintln!("sealpost-pub: not granting {}: {e}", path.display()),
        }
    }
    revoke_missing(publisher, dir, &present, seen, debug).await
}

/// Revokes the granted subscribers whose certificate is not (or no longer) in `dir`.
async fn revoke_missing(
    publisher: &Publisher,
    dir: &Path,
    present: &BTreeMap<PathBuf, SystemTime>,
    seen: &mut BTreeMap<PathBuf, (SystemTime, String)>,
    debug: bool,
) -> Result<(), Error> {
    let removed: Vec<PathBuf> = seen
        .keys()
        .filter(|p| !present.contains_key(*p))
        .cloned()
        .collect();
    for path in removed {
        if let Some((_, id)) = seen.remove(&path) {
            match publisher.revoke(&id).await {
                // Dropped already: its certificate failed a check (revoked, expired).
                Ok(_) | Err(PublisherError::NotGranted(_)) => {}
                Err(e) => return Err(e.into()),
            }
            if debug {
                eprintln!("revoked {id} ({} removed)", path.display());
            }
        }
    }
    // Granted earlier (state directory) but no longer in the directory: revoke too, so
    // the directory is the single source of truth.
    let listed: Vec<&String> = seen.values().map(|(_, id)| id).collect();
    for id in publisher.granted().await {
        if !listed.contains(&&id) {
            publisher.revoke(&id).await?;
            if debug {
                eprintln!("revoked {id} (not in {})", dir.display());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
        <super::KdcCli as clap::CommandFactory>::command().debug_assert();
    }
}
