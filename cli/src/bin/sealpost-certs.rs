//! `sealpost-certs`: the security center on the command line.
//!
//! Keeps the CA in a directory (default `./pki`): `ca.pem`, `ca.key` (mode 0600) and
//! `crl.pem`. Issued certificates go to `<dir>/<id>.pem` with the key in `<dir>/<id>.key`
//! unless `--out` names another prefix.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sealpost_certs::{
    now_unix, parse, pemfile, CertError, CertificateAuthority, Profile, RevokedSerial,
    SubscriberKey, Validity, Verifier,
};

#[derive(Parser)]
#[command(
    name = "sealpost-certs",
    version,
    about = "sealpost security center: CA, certificates, revocation"
)]
struct Cli {
    /// Directory holding the CA (ca.pem, ca.key, crl.pem).
    #[arg(long, global = true, default_value = "pki")]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new CA (refuses to overwrite an existing one).
    Init {
        /// CA name (subject common name).
        #[arg(long, default_value = "sealpost CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a certificate with a freshly generated private key.
    Issue {
        /// Replace an existing certificate and private key of the same name.
        #[arg(long, global = true)]
        force: bool,
        #[command(subcommand)]
        kind: IssueKind,
    },
    /// Sign a device's certificate signing request (the device keeps its private key).
    SignCsr {
        /// The CSR, PEM.
        csr: PathBuf,
        /// Role of the certificate to issue.
        #[arg(long, value_enum)]
        role: CliRole,
        /// Identity (publisher, subscriber, client).
        #[arg(long)]
        id: Option<String>,
        /// Topic filters a publisher may publish to.
        #[arg(long, num_args = 1..)]
        topics: Vec<String>,
        /// DNS names or IPs of a server.
        #[arg(long, num_args = 1..)]
        dns: Vec<String>,
        /// Where to write the certificate.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        validity: Days,
    },
    /// Make a key and CSR on a device, to be signed by `sign-csr` at the CA.
    Csr {
        /// Key type: ed25519 for a publisher, rsa for a subscriber.
        #[arg(long, value_enum)]
        key: CsrKey,
        /// Identity to request (the CA decides what it grants).
        #[arg(long)]
        id: String,
        /// Output prefix: writes PREFIX.csr and PREFIX.key.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing key and CSR of the same name.
        #[arg(long)]
        force: bool,
    },
    /// Revoke certificates and write a new signed revocation list (crl.pem).
    Revoke {
        /// Certificates (PEM) to revoke.
        #[arg(required = true)]
        certificates: Vec<PathBuf>,
        /// Days until the revocation list must be replaced.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Show a certificate in human terms.
    Show {
        /// The certificate, PEM.
        certificate: PathBuf,
    },
    /// Verify a certificate against the CA and its revocation list.
    Verify {
        /// The certificate, PEM.
        certificate: PathBuf,
    },
    /// Print a NATS server authorization block giving each certificate the publish and
    /// subscribe permissions the sealpost broker enforces (docs/DEPLOYMENT.md). Revoked
    /// and expired certificates are left out: run it again after each revocation.
    ExportNats {
        /// Certificates (PEM) of publishers, subscribers and TLS clients.
        #[arg(required = true)]
        certificates: Vec<PathBuf>,
        /// A topic filter that subscribers and clients may subscribe to (repeat for
        /// more; not key topics: each subscriber always gets its own).
        #[arg(long)]
        read: Vec<String>,
    },
}

#[derive(Subcommand)]
enum IssueKind {
    /// Ed25519 publisher certificate listing the topic filters it may publish.
    Publisher {
        #[command(flatten)]
        common: Common,
        /// Topic filters this publisher may publish to.
        #[arg(long, num_args = 1.., required = true)]
        topics: Vec<String>,
    },
    /// Subscriber certificate (content keys are wrapped under its key).
    Subscriber {
        #[command(flatten)]
        common: Common,
        /// Key type: rsa (RSA-2048, RSA-OAEP key wrapping), x25519 (HPKE key wrapping:
        /// smaller key messages, much faster wrapping and issuing) or xwing (HPKE with the
        /// X-Wing hybrid of X25519 and ML-KEM-768: also safe from a quantum computer).
        #[arg(long, value_enum, default_value = "rsa")]
        key: SubscriberKeyArg,
    },
    /// TLS server certificate (broker, key distribution center).
    Server {
        /// DNS names or IP addresses.
        #[arg(long, num_args = 1.., required = true)]
        dns: Vec<String>,
        /// Output prefix (default <dir>/<first name>).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        validity: Days,
    },
    /// TLS client certificate.
    Client {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
struct Common {
    /// Identity: 1-64 of A-Z a-z 0-9 . _ -
    #[arg(long)]
    id: String,
    /// Output prefix: writes PREFIX.pem and PREFIX.key (default <dir>/<id>).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    validity: Days,
}

#[derive(Args)]
struct Days {
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
}

#[derive(Clone, Copy, ValueEnum)]
enum CliRole {
    Publisher,
    Subscriber,
    Server,
    Client,
}

#[derive(Clone, Copy, ValueEnum)]
enum SubscriberKeyArg {
    Rsa,
    X25519,
    Xwing,
}

#[derive(Clone, Copy, ValueEnum)]
enum CsrKey {
    Ed25519,
    Rsa,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealpost-certs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let dir = cli.dir;
    match cli.command {
        Command::Init { name, days } => {
            let cert_path = dir.join("ca.pem");
            if cert_path.exists() {
                return Err(CertError::Io {
                    path: cert_path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "a CA already exists here; refusing to overwrite it",
                    ),
                }
                .into());
            }
            let ca = CertificateAuthority::create(&name, Validity::days_from_now(days))?;
            pemfile::write_private(&dir.join("ca.key"), &ca.private_key_pem())?;
            pemfile::write_public(&cert_path, &ca.certificate_pem())?;
            // An empty list from the start, so verifiers can always be given one.
            let crl = ca.revocation_list(&[], 1, Validity::days_from_now(365))?;
            pemfile::write_public(&dir.join("crl.pem"), &crl)?;
            println!("created CA {name:?} in {}", dir.display());
        }
        Command::Issue { force, kind } => {
            let ca = load_ca(&dir)?;
            let mut subscriber_key = SubscriberKey::Rsa;
            let (profile, out, days) = match kind {
                IssueKind::Publisher { common, topics } => (
                    Profile::Publisher {
                        id: common.id.clone(),
                        topics,
                    },
                    common.out.unwrap_or_else(|| dir.join(&common.id)),
                    common.validity.days,
                ),
                IssueKind::Subscriber { common, key } => {
                    subscriber_key = match key {
                        SubscriberKeyArg::Rsa => SubscriberKey::Rsa,
                        SubscriberKeyArg::X25519 => SubscriberKey::X25519,
                        SubscriberKeyArg::Xwing => SubscriberKey::XWing,
                    };
                    (
                        Profile::Subscriber {
                            id: common.id.clone(),
                        },
                        common.out.unwrap_or_else(|| dir.join(&common.id)),
                        common.validity.days,
                    )
                }
                IssueKind::Client { common } => (
                    Profile::Client {
                        id: common.id.clone(),
                    },
                    common.out.unwrap_or_else(|| dir.join(&common.id)),
                    common.validity.days,
                ),
                IssueKind::Server { dns, out, validity } => {
                    let out = out.unwrap_or_else(|| dir.join(&dns[0]));
                    (Profile::Server { names: dns }, out, validity.days)
                }
            };
            let (cert_path, key_path) = (with_ext(&out, "pem"), with_ext(&out, "key"));
            refuse_to_overwrite(&[&cert_path, &key_path], force)?;
            let validity = Validity::days_from_now(days);
            let issued = match &profile {
                Profile::Subscriber { id } => ca.issue_subscriber(id, subscriber_key, validity)?,
                _ => ca.issue(&profile, validity)?,
            };
            pemfile::write_private(&key_path, &issued.private_key_pem)?;
            pemfile::write_public(&cert_path, &issued.certificate_pem)?;
            println!(
                "issued {} certificate {} (key {})",
                profile.role(),
                cert_path.display(),
                key_path.display()
            );
        }
        Command::SignCsr {
            csr,
            role,
            id,
            topics,
            dns,
            out,
            validity,
        } => {
            let ca = load_ca(&dir)?;
            let need_id = || {
                id.clone().ok_or_else(|| {
                    let role = role.to_possible_value().expect("no skipped roles");
                    format!("--id is required for role {}", role.get_name())
                })
            };
            let profile = match role {
                CliRole::Publisher => Profile::Publisher {
                    id: need_id()?,
                    topics,
                },
                CliRole::Subscriber => Profile::Subscriber { id: need_id()? },
                CliRole::Client => Profile::Client { id: need_id()? },
                CliRole::Server => Profile::Server { names: dns },
            };
            let cert = ca.sign_csr(
                &pemfile::read(&csr)?,
                &profile,
                Validity::days_from_now(validity.days),
            )?;
            pemfile::write_public(&out, &cert)?;
            println!("signed {} certificate {}", profile.role(), out.display());
        }
        Command::Csr {
            key,
            id,
            out,
            force,
        } => {
            refuse_to_overwrite(&[&with_ext(&out, "key"), &with_ext(&out, "csr")], force)?;
            let (csr, key_pem) = make_csr(key, &id)?;
            pemfile::write_private(&with_ext(&out, "key"), &key_pem)?;
            pemfile::write_public(&with_ext(&out, "csr"), &csr)?;
            println!(
                "wrote {} (send it to the CA)",
                with_ext(&out, "csr").display()
            );
        }
        Command::Revoke { certificates, days } => {
            let ca = load_ca(&dir)?;
            let verifier = Verifier::new(&ca.certificate_pem())?;
            let crl_path = dir.join("crl.pem");
            let (mut revoked, number) = if crl_path.exists() {
                let current =
                    verifier.parse_revocation_list(&pemfile::read_der(&crl_path, pemfile::CRL)?)?;
                let entries = current
                    .entries()
                    .map(|(serial, at)| RevokedSerial {
                        serial: serial.to_vec(),
                        revoked_at: time::OffsetDateTime::from_unix_timestamp(at)
                            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
                    })
                    .collect::<Vec<_>>();
                (entries, current.number + 1)
            } else {
                (Vec::new(), 1)
            };
            for path in &certificates {
                let info = parse(&pemfile::read_der(path, pemfile::CERTIFICATE)?)?;
                if !revoked.iter().any(|r| r.serial == info.serial) {
                    revoked.push(RevokedSerial {
                        serial: info.serial.clone(),
                        revoked_at: time::OffsetDateTime::now_utc(),
                    });
                }
                println!(
                    "revoked {} {} (serial {})",
                    info.role,
                    info.id,
                    info.serial_hex()
                );
            }
            let crl = ca.revocation_list(&revoked, number, Validity::days_from_now(days))?;
            pemfile::write_public(&crl_path, &crl)?;
            println!("wrote {} (CRL number {number})", crl_path.display());
        }
        Command::Show { certificate } => {
            print!(
                "{}",
                parse(&pemfile::read_der(&certificate, pemfile::CERTIFICATE)?)?
            );
        }
        Command::Verify { certificate } => {
            let verifier = load_verifier(&dir)?;
            let der = pemfile::read_der(&certificate, pemfile::CERTIFICATE)?;
            let info = verifier.verify(&der, now_unix())?;
            println!(
                "OK: {} {} issued by {}",
                info.role,
                info.id,
                verifier.authority().id
            );
        }
        Command::ExportNats { certificates, read } => {
            let verifier = load_verifier(&dir)?;
            let mut valid = Vec::new();
            for path in &certificates {
                let der = pemfile::read_der(path, pemfile::CERTIFICATE)?;
                match verifier.verify(&der, now_unix()) {
                    Ok(info) => valid.push(info),
                    // Left out, so the cluster refuses them (NATS reads no sealpost CRL).
                    Err(e @ (CertError::Revoked { .. } | CertError::Expired { .. })) => {
                        eprintln!("sealpost-certs: leaving out {}: {e}", path.display());
                    }
                    Err(e) => return Err(format!("{}: {e}", path.display()).into()),
                }
            }
            print!("{}", sealpost_certs::nats::authorization(&valid, &read)?);
        }
    }
    Ok(())
}

/// The CA's verifier, with its revocation list if there is one.
fn load_verifier(dir: &Path) -> Result<Verifier, CertError> {
    let mut verifier = Verifier::new(&pemfile::read(&dir.join("ca.pem"))?)?;
    let crl_path = dir.join("crl.pem");
    if crl_path.exists() {
        verifier.set_revocation_list(&pemfile::read(&crl_path)?)?;
    }
    Ok(verifier)
}

fn load_ca(dir: &Path) -> Result<CertificateAuthority, CertError> {
    CertificateAuthority::from_pem(
        &pemfile::read(&dir.join("ca.pem"))?,
        &pemfile::read(&dir.join("ca.key"))?,
    )
}

/// Refuses to replace an existing file unless `--force` was given: a second `issue` with
/// the same id would otherwise silently destroy a private key a device may be using.
fn refuse_to_overwrite(paths: &[&Path], force: bool) -> Result<(), String> {
    match paths.iter().find(|p| p.exists()) {
        Some(existing) if !force => Err(format!(
            "{} already exists; refusing to overwrite it (--force replaces it)",
            existing.display()
        )),
        _ => Ok(()),
    }
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn make_csr(key: CsrKey, id: &str) -> Result<(String, String), CertError> {
    sealpost_certs::validate_id(id)?;
    let key_pair = match key {
        CsrKey::Ed25519 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?,
        CsrKey::Rsa => {
            use rsa::pkcs8::EncodePrivateKey;
            let rsa = rsa::RsaPrivateKey::new(
                &mut rand::rngs::OsRng,
                sealpost_certs::SUBSCRIBER_RSA_BITS,
            )
            .map_err(|e| CertError::Generation(e.to_string()))?;
            let der = rsa
                .to_pkcs8_der()
                .map_err(|e| CertError::Generation(e.to_string()))?;
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
                &der.as_bytes().into(),
                &rcgen::PKCS_RSA_SHA256,
            )?
        }
    };
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, id);
    let csr = params.serialize_request(&key_pair)?;
    Ok((csr.pem()?, key_pair.serialize_pem()))
}
