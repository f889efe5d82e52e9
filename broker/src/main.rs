//! `sealpost-broker`: run the broker, or manage its password file.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use sealpost_broker::auth::{add_user, HashCost};
use sealpost_broker::config::ListenerConfig;
use sealpost_broker::{Broker, Config, ListenerKind};
use std::io::{BufRead, IsTerminal};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "sealpost-broker", version, about = "sealpost MQTT broker")]
struct Cli {
    /// TOML configuration file (see broker/broker.example.toml). Without it the broker
    /// listens on 127.0.0.1:1883 and allows anonymous clients.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Port of a plain TCP listener, as Mosquitto's `-p`. Without --config it replaces
    /// the default listener; with it, it is added to the configured ones.
    #[arg(long, short)]
    port: Option<u16>,
    /// Address of that listener (default 127.0.0.1; 0.0.0.0 listens on every
    /// interface). Alone, it listens on port 1883.
    #[arg(long, value_name = "ADDR")]
    bind: Option<IpAddr>,
    /// Verbose logs (debug level); RUST_LOG, when set, takes precedence.
    #[arg(long, short)]
    verbose: bool,
    /// Data directory (the same as `[storage] path`, which it overrides): persistent
    /// sessions, their queued messages, delayed wills and retained messages survive
    /// restarts and crashes.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Repair the data directory's store and exit: values that cannot be read are
    /// deleted; a file that cannot be opened at all is moved aside (kept, renamed
    /// `sealpost.redb.corrupt-TIME`) so that the broker starts with an empty store.
    #[arg(long)]
    repair: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Add or replace a user in a password file; the password is read from the first
    /// line of standard input and stored only as an argon2id hash.
    Passwd {
        /// Password file (created if absent).
        file: PathBuf,
        /// User name.
        user: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if cli.verbose {
                    "debug,rumqttd=warn"
                } else {
                    "info,rumqttd=warn"
                })
            }),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: escapes make log files and journals unreadable.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Some(Command::Passwd { file, user }) => passwd(&file, &user),
        None => serve(&cli),
    }
}

/// `--repair`: see the option's help.
fn repair_store(config: &Config) -> ExitCode {
    let Some(file) = config.storage.file() else {
        eprintln!("--repair needs a data directory (--data-dir or [storage] path)");
        return ExitCode::FAILURE;
    };
    match sealpost_broker::store::repair(&file) {
        Ok(sealpost_broker::store::Repaired::Nothing) => {
            println!(
                "store {}: every value is readable; nothing changed",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Ok(sealpost_broker::store::Repaired::ValuesDeleted) => {
            println!(
                "store {}: unreadable values deleted (each is named in the log above)",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Ok(sealpost_broker::store::Repaired::MovedAside(aside)) => {
            println!(
                "store {} could not be opened: moved to {}; the broker starts with an empty store",
                file.display(),
                aside.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Applies the command line's listener and data directory to the configuration.
fn apply_options(config: &mut Config, cli: &Cli) {
    if cli.port.is_some() || cli.bind.is_some() {
        let listener = ListenerConfig {
            kind: ListenerKind::Tcp,
            bind: SocketAddr::new(
                cli.bind.unwrap_or(IpAddr::from([127, 0, 0, 1])),
                cli.port.unwrap_or(1883),
            ),
            tls: None,
        };
        if cli.config.is_some() {
            config.listeners.push(listener);
        } else {
            config.listeners = vec![listener];
        }
    }
    if let Some(dir) = &cli.data_dir {
        config.storage.path = Some(dir.clone());
    }
}

fn passwd(file: &std::path::Path, user: &str) -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        eprintln!("cannot read the password from standard input");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("empty password refused");
        return ExitCode::FAILURE;
    }
    match add_user(file, user, password, HashCost::default()) {
        Ok(()) => {
            println!("user {user} saved in {}", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(cli: &Cli) -> ExitCode {
    let mut config = match &cli.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        None => Config::default(),
    };
    apply_options(&mut config, cli);
    if cli.repair {
        return repair_store(&config);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let broker = match Broker::start(config).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("cannot start the broker: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Before anything says the broker is up: SIGHUP would otherwise end it.
        reload_on_sighup(broker.crl_reloader());
        for l in broker.listeners() {
            println!("sealpost-broker listening on {:?} {}", l.kind, l.addr);
        }
        if let Some(m) = broker.metrics_addr() {
            println!("sealpost-broker metrics on http://{m}/metrics");
        }
        wait_for_signal().await;
        println!("sealpost-broker shutting down");
        broker.shutdown(Duration::from_secs(5)).await;
        ExitCode::SUCCESS
    })
}

/// SIGHUP reads the revocation lists again at once (they are also read every
/// `limits.crl_reload_interval_ms`).
fn reload_on_sighup(reloader: sealpost_broker::CrlReloader) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        let installed = reloader.reload().await;
                        tracing::info!(installed, "SIGHUP: revocation lists read again");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot handle SIGHUP"),
        }
    }
    #[cfg(not(unix))]
    let _ = reloader;
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
