//! What the command-line tools (`sealpost-pub`, `sealpost-sub`) share about running:
//! reporting a lost broker and the reconnect, and the signals that end them cleanly.

use tokio::sync::watch;

use sealpost_client::LinkStatus;

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

/// Listens for Ctrl-C (SIGINT) and SIGTERM from now on (so that a signal that arrives
/// before the returned future is first polled is not lost, nor kills the process), and
/// returns a future that ends at the first of them, after which the tools disconnect
/// cleanly (MQTT DISCONNECT, then TLS close_notify) and exit.
pub fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
