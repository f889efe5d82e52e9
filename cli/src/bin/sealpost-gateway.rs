//! `sealpost-gateway`: the REST publishing gateway (issue 17, item 4). An application
//! backend POSTs messages over HTTP with a bearer token; the gateway seals them with the
//! publisher's identity and publishes them. API: `publisher-sdk/gateway.openapi.json`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sealpost_cli::args::{KdcArgs, PublisherArgs};
use sealpost_cli::logging;
use sealpost_publisher::gateway::tokens::TokenStore;
use sealpost_publisher::gateway::Gateway;
use sealpost_publisher::{BrokerAddress, Publisher};

#[derive(Parser)]
#[command(
    version,
    about = "REST publishing gateway: seal and publish what backends POST"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (plain HTTP, loopback only) for a publisher identity.
    Serve(Box<Serve>),
    /// Issue, revoke and list bearer tokens (stored hashed in the state directory).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Parser)]
struct Serve {
    /// Where to listen, e.g. 127.0.0.1:8080 (loopback addresses only).
    #[arg(long, value_name = "ADDR")]
    http: SocketAddr,
    /// Broker URL: mqtt://, mqtts://, ws:// or wss://host:port[/path].
    #[arg(short = 'L', long)]
    url: String,
    /// MQTT client id.
    #[arg(short = 'i', long)]
    id: Option<String>,
    #[command(flatten)]
    publisher: PublisherArgs,
    #[command(flatten)]
    kdc: KdcArgs,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a token (printed once; only its hash is stored).
    Add {
        /// Token name.
        name: String,
        /// Topic filters the token may publish to.
        #[arg(long, num_args = 1..)]
        topics: Vec<String>,
        /// May also grant, revoke and list readers.
        #[arg(long)]
        operator: bool,
        /// Publisher state directory.
        #[arg(long, default_value = ".sealpost-pub")]
        state_dir: PathBuf,
    },
    /// Revoke a token by name.
    Revoke {
        /// Token name.
        name: String,
        /// Publisher state directory.
        #[arg(long, default_value = ".sealpost-pub")]
        state_dir: PathBuf,
    },
    /// List tokens (names and scopes, never secrets).
    List {
        /// Publisher state directory.
        #[arg(long, default_value = ".sealpost-pub")]
        state_dir: PathBuf,
    },
}

type Error = Box<dyn std::error::Error>;

fn token_command(command: TokenCommand) -> Result<(), Error> {
    match command {
        TokenCommand::Add {
            name,
            topics,
            operator,
            state_dir,
        } => {
            let token = TokenStore::open(&state_dir)?.issue(&name, &topics, operator)?;
            println!("{token}");
        }
        TokenCommand::Revoke { name, state_dir } => {
            TokenStore::open(&state_dir)?.revoke(&name)?;
            eprintln!("revoked token {name}");
        }
        TokenCommand::List { state_dir } => {
            for e in TokenStore::open(&state_dir)?.entries() {
                let role = if e.operator { " operator" } else { "" };
                println!("{}{role} {}", e.name, e.topics.join(" "));
            }
        }
    }
    Ok(())
}

async fn serve(s: Serve) -> Result<(), Error> {
    let broker = BrokerAddress::parse(&s.url)?;
    let mut config = s.publisher.config("sealpost-gateway", broker)?;
    config.client_id = s.id;
    s.kdc.apply(&mut config)?;
    let publisher = Arc::new(Publisher::connect(config).await?);
    let gateway = Gateway::start(s.http, publisher, s.publisher.state_dir).await?;
    eprintln!(
        "sealpost-gateway: listening on http://{}",
        gateway.local_addr()
    );
    tokio::signal::ctrl_c().await?;
    gateway.shutdown();
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let audit_log = match &cli.command {
        Command::Serve(s) => s.kdc.kdc_audit_log.clone(),
        Command::Token { .. } => None,
    };
    if let Err(e) = logging::init(false, audit_log.as_deref()) {
        eprintln!("sealpost-gateway: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Serve(s) => serve(*s).await,
        Command::Token { command } => token_command(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealpost-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
