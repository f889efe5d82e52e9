//! Accept loops. The accept loop only accepts: the connection limit is checked here,
//! but TLS and WebSocket handshakes run in the connection's own task under a timeout,
//! so a silent or slow client can never stall other clients.

use crate::config::ListenerKind;
use crate::connection::{self, PeerInfo};
use crate::metrics::inc;
use crate::shared::Shared;
use crate::tls::ServerTls;
use futures_util::FutureExt;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, warn};

/// Runs one listener until shutdown.
pub(crate) async fn run(
    socket: TcpListener,
    kind: ListenerKind,
    tls: Option<ServerTls>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let (stream, addr) = tokio::select! {
            r = socket.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            inc(&shared.metrics.connections_rejected);
            debug!(peer = %addr, "connection limit reached");
            drop(stream);
            continue;
        };
        inc(&shared.metrics.connections_total);
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        if kind == ListenerKind::Tcp {
            // Plain TCP, most connections: the task holds the connection's future and
            // its permit, nothing else. (A future made inside the task would keep its
            // arguments beside it for as long as the connection lasts, and one awaited
            // inside an `async` block is held there twice.)
            let peer = PeerInfo {
                addr: Some(addr),
                certificate: None,
                certificate_watch: None,
            };
            let connection = connection::serve_tcp(stream, shared, peer);
            tokio::spawn(connection.map(move |()| drop(permit)));
            continue;
        }
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            handle(stream, addr, kind, tls, shared).await;
        });
    }
}

async fn handle(
    stream: TcpStream,
    addr: SocketAddr,
    kind: ListenerKind,
    tls: Option<ServerTls>,
    shared: Arc<Shared>,
) {
    // One deadline for the whole handshake: TLS and WebSocket together for `wss`.
    let deadline = Instant::now() + shared.config.limits.handshake_timeout();
    let mut peer = PeerInfo {
        addr: Some(addr),
        certificate: None,
        certificate_watch: None,
    };
    match (kind, tls) {
        // TLS and WebSocket boxed: their state is large, and inline it would take room
        // in the task of every connection, plain TCP included, for as long as it lasts.
        (ListenerKind::Tls | ListenerKind::Wss, Some(tls)) => {
            Box::pin(async move {
                match tokio::time::timeout_at(deadline, tls.acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        let certificate =
                            crate::tls::certificate(tls_stream.get_ref().1.peer_certificates());
                        if let Some(info) = certificate {
                            peer.certificate = Some(crate::tls::certificate_identity(&info));
                            // The connection ends if a later revocation list revokes it.
                            peer.certificate_watch = tls.revocation.as_ref().map(|r| r.watch(info));
                        }
                        if kind == ListenerKind::Wss {
                            serve_websocket(tls_stream, deadline, shared, peer).await;
                        } else {
                            connection::serve(tls_stream, shared, peer).await;
                        }
                    }
                    Ok(Err(e)) => debug!(peer = %addr, error = %e, "TLS handshake failed"),
                    Err(_) => {
                        inc(&shared.metrics.timeouts);
                        debug!(peer = %addr, "TLS handshake timed out");
                    }
                }
            })
            .await
        }
        // Never served in the clear (`Config::validate` refuses such a listener).
        (ListenerKind::Tls | ListenerKind::Wss, None) => {
            warn!(peer = %addr, "TLS listener without TLS configuration: connection closed");
        }
        (ListenerKind::Ws, _) => Box::pin(serve_websocket(stream, deadline, shared, peer)).await,
        // (`run` serves plain TCP itself, in a smaller task.)
        (ListenerKind::Tcp, _) => connection::serve_tcp(stream, shared, peer).await,
    }
}

/// Completes the WebSocket handshake on `stream` (TCP, or TLS for `wss`) by `deadline`,
/// then serves MQTT over its binary frames.
async fn serve_websocket<S>(stream: S, deadline: Instant, shared: Arc<Shared>, peer: PeerInfo)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // tungstenite would buffer messages of up to 64 MiB; MQTT packets are bounded by
    // max_packet_size, so WebSocket messages are too.
    let limit = shared.config.limits.max_packet_size.saturating_add(16);
    let ws_config = WebSocketConfig {
        max_message_size: Some(limit),
        max_frame_size: Some(limit),
        ..Default::default()
    };
    let accept = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        select_mqtt_subprotocol,
        Some(ws_config),
    );
    let addr = peer.addr;
    match tokio::time::timeout_at(deadline, accept).await {
        Ok(Ok(ws)) => {
            let max = shared.config.limits.max_packet_size;
            let (edge, pump_side) = tokio::io::duplex(64 * 1024);
            let pump = tokio::spawn(pump(ws, pump_side, max));
            connection::serve(edge, shared, peer).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
        }
        Ok(Err(e)) => debug!(peer = ?addr, error = %e, "WebSocket handshake failed"),
        Err(_) => {
            inc(&shared.metrics.timeouts);
            debug!(peer = ?addr, "WebSocket handshake timed out");
        }
    }
}

/// MQTT over WebSocket must agree on the `mqtt` subprotocol when the client offers it.
#[allow(clippy::result_large_err)]
fn select_mqtt_subprotocol(
    req: &Request,
    mut resp: Response,
) -> Result<Response, tokio_tungstenite::tungstenite::handshake::server::ErrorResponse> {
    let offered = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "mqtt");
    if offered {
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    }
    Ok(resp)
}

/// Moves bytes between WebSocket binary frames and the connection's byte stream, so the
/// MQTT code is the same for every transport.
async fn pump<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    mut edge: tokio::io::DuplexStream,
    max_packet: usize,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    if data.len() > max_packet.saturating_add(8) || edge.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // Text frames are not MQTT; close frames and errors end the connection.
                _ => break,
            },
            n = edge.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::Binary(buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    let _ = sink.close().await;
}
