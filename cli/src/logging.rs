//! Log set-up for the command-line tools (`sealpost-pub`, `sealpost-sub`): one
//! human-readable line per event on stderr, and optionally the KDC's audit lines as JSON
//! lines in a file of their own.
//!
//! Without `RUST_LOG` the tools log warnings and errors only, plus the KDC's audit lines
//! (target [`AUDIT_TARGET`]), which an operator of a KDC wants whether or not anything
//! goes wrong; `-d` adds sealpost's debug lines. `RUST_LOG`, when set, replaces that
//! default. Colours are used only when stderr is a terminal, so logs redirected to a file
//! or a journal carry no escape codes.

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use sealpost_publisher::kdc::AUDIT_TARGET;

/// The filter without `RUST_LOG`: warnings and the KDC's audit lines; with `debug`,
/// sealpost's own debug lines too and the libraries' at info.
fn default_filter(debug: bool) -> String {
    let base = if debug {
        "info,sealpost_publisher=debug,sealpost_subscriber=debug,sealpost_client=debug,\
         sealpost_protocol=debug"
    } else {
        "warn"
    };
    format!("{base},{AUDIT_TARGET}=info")
}

/// Installs the process-wide log subscriber: stderr filtered by `RUST_LOG` (or the
/// default, raised by `debug`), and, with `audit_log`, the audit lines appended to that
/// file as JSON lines (created mode 0600) instead of stderr. Call once, first thing in
/// `main`. Errors name what is wrong: an unparsable `RUST_LOG`, an unwritable file.
pub fn init(debug: bool, audit_log: Option<&Path>) -> Result<(), String> {
    let mut filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| format!("RUST_LOG={value:?}: {e}"))?
        }
        _ => EnvFilter::new(default_filter(debug)),
    };
    let audit = match audit_log {
        Some(path) => {
            // The file has the audit lines: do not repeat them on stderr.
            let off = format!("{AUDIT_TARGET}=off")
                .parse()
                .map_err(|e| format!("log filter: {e}"))?;
            filter = filter.add_directive(off);
            let file = open_append(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(Mutex::new(file))
                .with_filter(Targets::new().with_target(AUDIT_TARGET, Level::INFO));
            Some(layer)
        }
        None => None,
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(stderr)
        .with(audit)
        .try_init()
        .map_err(|e| format!("log set-up: {e}"))
}

/// Opens `path` for appending, creating it readable by its owner only (it names readers
/// and their addresses).
fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}
