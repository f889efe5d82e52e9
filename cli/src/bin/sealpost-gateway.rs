//! `sealpost-gateway`: the REST publishing gateway (issue 17, item 4). An application
//! backend POSTs messages over HTTP with a bearer token; the gateway seals them with the
//! publisher's identity and publishes them. API: `publisher-sdk/gateway.openapi.json`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sealpost_cli::args::read_pem;
use sealpost_publisher::gateway::tokens::TokenStore;
use sealpost_publisher::gateway::Gateway;
use sealpost_publisher::kdc::KdcConfig;
use sealpost_publisher::{BrokerAddress, Publisher, PublisherConfig};

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
    /// Publisher certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Publisher private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// sealpost CA certificate (PEM).
    #[arg(long)]
    cafile: PathBuf,
    /// The CA's revocation list (PEM).
    #[arg(long, value_name = "FILE", required_unless_present = "insecure_no_crl")]
    crl: Option<PathBuf>,
    /// INSECURE: run without a revocation list.
    #[arg(long)]
    insecure_no_crl: bool,
    /// Publisher state directory (sequence numbers, keys, grants, gateway tokens).
    #[arg(long, default_value = ".sealpost-pub")]
    state_dir: PathBuf,
    /// MQTT client id.
    #[arg(short = 'i', long)]
    id: Option<String>,
    /// Also serve content keys from a KDC (HTTPS) listening here (see sealpost-pub --kdc).
    #[arg(long, value_name = "LISTEN_ADDR", requires_all = ["kdc_cert", "kdc_key"])]
    kdc: Option<SocketAddr>,
    /// The KDC's TLS server certificate (PEM), issued by the sealpost CA.
    #[arg(long, value_name = "FILE")]
    kdc_cert: Option<PathBuf>,
    /// The KDC's private key (PEM).
    #[arg(long, value_name = "FILE")]
    kdc_key: Option<PathBuf>,
    /// Deliver keys through the KDC only: no key messages.
    #[arg(long, requires = "kdc")]
    kdc_only: bool,
    /// Let web pages of this origin (http(s)://host[:port]) call the KDC (CORS); may be
    /// repeated. Only these origins are answered, never "*".
    #[arg(long, value_name = "ORIGIN", requires = "kdc")]
    kdc_allow_origin: Vec<String>,
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
    let mut config = PublisherConfig::new(
        broker.clone(),
        read_pem(&s.cert)?,
        read_pem(&s.key)?,
        read_pem(&s.cafile)?,
        s.state_dir.clone(),
    );
    // As sealpost-pub: the sealpost broker lets only the publisher's certificate write
    // its key topics.
    config.present_certificate_over_tls();
    config.client_id = s.id;
    config.crl = s.crl;
    config.insecure_no_crl = s.insecure_no_crl;
    if s.insecure_no_crl {
        eprintln!(
            "sealpost-gateway: WARNING: --insecure-no-crl: revoked readers keep receiving keys"
        );
    }
    if let (Some(listen), Some(cert), Some(key)) = (s.kdc, &s.kdc_cert, &s.kdc_key) {
        let mut kdc = KdcConfig::new(listen, read_pem(cert)?, read_pem(key)?);
        kdc.allowed_origins = s.kdc_allow_origin;
        config.kdc = Some(kdc);
        config.key_messages = !s.kdc_only;
    }
    let publisher = Arc::new(Publisher::connect(config).await?);
    let gateway = Gateway::start(s.http, publisher, s.state_dir).await?;
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
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
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
