//! The SDKs' own connection to the broker, for TLS and for lists of broker addresses.
//!
//! rumqttc opens the TLS stream itself, never shuts it down (no close_notify: the broker
//! sees a truncated stream at every exit) and does not export the type that would let a
//! stream be handed to it. So for `mqtts://` addresses, and whenever several addresses are
//! given (failover), the SDK dials the broker itself (TCP, then TLS with the SDK's rustls
//! configuration) and gives rumqttc a private local transport instead: a Unix socket in a
//! temporary directory of mode 0700 that only this process uses. A [`Tunnel`] accepts
//! rumqttc's connection there, dials the broker the [`Route`] points at, and pumps bytes
//! both ways. When rumqttc closes its side (after its DISCONNECT has left, or when the
//! client is dropped), the tunnel shuts the TLS stream down with close_notify before it
//! closes TCP. A single plain `mqtt://`, `ws://` or `wss://` address is left to rumqttc.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use crate::transport::BrokerAddress;
use crate::ClientError;

/// How long dialling the broker (TCP and the TLS handshake) may take: rumqttc's own
/// connection timeout, after which it gives up on the attempt anyway.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closed connection waits for the broker to close its side after our
/// close_notify (or DISCONNECT), before it is dropped.
const LINGER: Duration = Duration::from_secs(1);
/// Read buffer of each direction of the pump: a whole TLS record and more.
const PUMP_BUFFER: usize = 64 * 1024;

/// Where the connection to the broker goes: the broker addresses in order, the one in
/// use, and why the last attempt to dial it failed. Shared by the polling task (which
/// moves on to the next address after every failure) and the [`Tunnel`] (which dials the
/// current one).
#[derive(Debug, Clone)]
pub struct Route(Arc<RouteState>);

#[derive(Debug)]
struct RouteState {
    addresses: Vec<BrokerAddress>,
    current: AtomicUsize,
    cause: Mutex<Option<String>>,
}

impl Route {
    /// A route over `addresses` (at least one), starting at the first.
    pub fn new(addresses: Vec<BrokerAddress>) -> Route {
        assert!(!addresses.is_empty(), "a route needs an address");
        Route(Arc::new(RouteState {
            addresses,
            current: AtomicUsize::new(0),
            cause: Mutex::new(None),
        }))
    }

    /// A route over `broker`, then the `failover` brokers.
    pub fn with_failover(broker: &BrokerAddress, failover: &[BrokerAddress]) -> Route {
        Route::new(std::iter::once(broker).chain(failover).cloned().collect())
    }

    /// The broker address connections go to now.
    pub fn current(&self) -> &BrokerAddress {
        let i = self.0.current.load(Ordering::SeqCst) % self.0.addresses.len();
        &self.0.addresses[i]
    }

    /// Every address, in order.
    pub fn addresses(&self) -> &[BrokerAddress] {
        &self.0.addresses
    }

    /// How many addresses there are to fail over between.
    pub fn len(&self) -> usize {
        self.0.addresses.len()
    }

    /// Always false: a route has at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Moves on to the next address (back to the first after the last).
    pub fn advance(&self) {
        self.0.current.fetch_add(1, Ordering::SeqCst);
    }

    /// Records why dialling the broker failed (rumqttc then sees only a closed socket).
    fn record(&self, cause: String) {
        *self.0.cause.lock().unwrap_or_else(|p| p.into_inner()) = Some(cause);
    }

    /// Why the last dial failed, if it did since the last call.
    pub fn take_cause(&self) -> Option<String> {
        self.0
            .cause
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl std::fmt::Display for Route {
    /// The addresses, comma-separated.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, address) in self.0.addresses.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{address}")?;
        }
        Ok(())
    }
}

/// The local end rumqttc connects to, and the task that dials the broker for each of its
/// connections. Dropping it stops accepting; [`Tunnel::close`] also waits until the
/// connections have been shut down.
pub struct Tunnel {
    socket: PathBuf,
    accept: JoinHandle<()>,
    /// Number of connections still open (each one's pump holds a count).
    open: watch::Receiver<usize>,
    /// Removed on drop, with the socket in it. Declared last: dropped after the task.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Tunnel {
    /// Listens on a fresh private socket and, for every connection rumqttc makes to it,
    /// dials `route`'s current address (TLS with `tls` for `mqtts://`).
    pub fn start(
        route: Route,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Tunnel, ClientError> {
        let io_err = |e: std::io::Error| {
            ClientError::Tls(format!("local socket for the broker connection: {e}"))
        };
        // tempfile creates the directory with mode 0700: no other user can reach the socket.
        let dir = tempfile::Builder::new()
            .prefix("sealpost-link-")
            .tempdir()
            .map_err(io_err)?;
        let socket = dir.path().join("mqtt.sock");
        let listener = UnixListener::bind(&socket).map_err(io_err)?;
        let (count, open) = watch::channel(0usize);
        let connector = tls.map(TlsConnector::from);
        let accept = tokio::spawn(accept(listener, route, connector, count));
        Ok(Tunnel {
            socket,
            accept,
            open,
            _dir: dir,
        })
    }

    /// The socket rumqttc connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops accepting and waits (at most `within`) until every connection has been
    /// shut down (close_notify sent). Call it after the MQTT client has disconnected.
    pub async fn close(&mut self, within: Duration) {
        self.accept.abort();
        let _ = tokio::time::timeout(within, self.open.wait_for(|n| *n == 0)).await;
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Accepts rumqttc's connections one after another (it makes one at a time) and dials
/// the broker for each.
async fn accept(
    listener: UnixListener,
    route: Route,
    tls: Option<TlsConnector>,
    count: watch::Sender<usize>,
) {
    loop {
        let local = match listener.accept().await {
            Ok((local, _)) => local,
            Err(e) => {
                tracing::debug!(error = %e, "accepting on the local broker socket failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let address = route.current().clone();
        match tokio::time::timeout(DIAL_TIMEOUT, dial(&address, tls.as_ref())).await {
            Ok(Ok(remote)) => {
                let guard = Open::new(&count);
                tokio::spawn(async move {
                    pump(local, remote).await;
                    drop(guard);
                });
            }
            // Recorded before rumqttc sees the socket close, so its error can name it.
            Ok(Err(e)) => route.record(crate::link::explain_io(&e)),
            Err(_) => route.record("the broker did not answer in time".into()),
        }
    }
}

/// One open connection, counted while it lives (also if its task is aborted).
struct Open(watch::Sender<usize>);

impl Open {
    fn new(count: &watch::Sender<usize>) -> Open {
        count.send_modify(|n| *n += 1);
        Open(count.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A byte stream to the broker: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Opens TCP to `address` and, for `mqtts://`, TLS over it (the broker's certificate
/// checked against the SDK's CA and the host name).
async fn dial(
    address: &BrokerAddress,
    tls: Option<&TlsConnector>,
) -> std::io::Result<Box<dyn Stream>> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let (host, port, secure) = match address {
        BrokerAddress::Tcp { host, port } => (host, *port, false),
        BrokerAddress::Tls { host, port } => (host, *port, true),
        other => return Err(invalid(format!("{other}: not a TCP or TLS address"))),
    };
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    if !secure {
        return Ok(Box::new(tcp));
    }
    let connector = tls.ok_or_else(|| invalid("no TLS settings for an mqtts:// address".into()))?;
    let name = ServerName::try_from(host.clone())
        .map_err(|_| invalid(format!("{host}: not a valid TLS server name")))?;
    Ok(Box::new(connector.connect(name, tcp).await?))
}

/// Copies bytes both ways until one side closes, then closes the other: when rumqttc
/// closes, the broker gets close_notify (TLS) and then FIN; when the broker closes,
/// rumqttc sees its socket close, and the TLS stream is shut down once rumqttc lets go.
async fn pump(local: UnixStream, remote: Box<dyn Stream>) {
    let (local_read, mut local_write) = local.into_split();
    let mut local_read = tokio::io::BufReader::with_capacity(PUMP_BUFFER, local_read);
    let (remote_read, mut remote_write) = tokio::io::split(remote);
    let mut remote_read = tokio::io::BufReader::with_capacity(PUMP_BUFFER, remote_read);
    let up = async {
        let _ = tokio::io::copy_buf(&mut local_read, &mut remote_write).await;
        // close_notify, then TCP FIN (tokio-rustls's shutdown does both).
        let _ = remote_write.shutdown().await;
    };
    let down = async {
        let copied = tokio::io::copy_buf(&mut remote_read, &mut local_write).await;
        let _ = local_write.shutdown().await;
        copied
    };
    tokio::pin!(up, down);
    tokio::select! {
        () = &mut up => {
            // Our side is closed; let the broker close its own (bounded).
            let _ = tokio::time::timeout(LINGER, down).await;
        }
        copied = &mut down => {
            if let Err(e) = copied {
                tracing::debug!(error = %e, "connection to the broker failed");
            }
            // rumqttc sees the socket close and lets go of it; then close_notify.
            let _ = tokio::time::timeout(DIAL_TIMEOUT, up).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_goes_round_its_addresses() {
        let a = BrokerAddress::parse("127.0.0.1:1").unwrap();
        let b = BrokerAddress::parse("mqtts://localhost:2").unwrap();
        let route = Route::new(vec![a.clone(), b.clone()]);
        assert_eq!(route.current(), &a);
        route.advance();
        assert_eq!(route.current(), &b);
        route.advance();
        assert_eq!(route.current(), &a);
        route.record("refused".into());
        assert_eq!(route.take_cause().as_deref(), Some("refused"));
        assert_eq!(route.take_cause(), None);
    }
}
