//! The KDC's HTTP handlers (login, key fetch, routing, body limits) behind hyper, fed
//! one connection's bytes without TLS.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use sealpost_protocol::ContentKey;
use sealpost_publisher::kdc::api::LoginResponse;
use sealpost_publisher::kdc::{KdcConfig, PlainKdc};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use super::protocol::Parties;

/// The KDC's public address: its path prefix is part of every endpoint.
pub(super) const ADDRESS: &str = "https://127.0.0.1:8443/kdc";
/// A placeholder, as long as the value it stands for so that lengths in the request
/// (`content-length`) stay right: `@NAME###…@`.
fn placeholder(name: &str, len: usize) -> Vec<u8> {
    let pad = len.saturating_sub(name.len() + 2);
    format!("@{name}{}@", "#".repeat(pad)).into_bytes()
}

/// The placeholders inputs use for a valid access token of `alice` and for her
/// password (each replaced by the real value before the input is sent).
pub(super) fn placeholders() -> (Vec<u8>, Vec<u8>) {
    let h = harness();
    (h.token_placeholder.clone(), h.password_placeholder.clone())
}

/// How long a connection may take to end, in the harness's paused time: beyond the
/// KDC's own limit on a connection's life (60 s).
const END_WITHIN: Duration = Duration::from_secs(120);

struct Harness {
    runtime: Runtime,
    kdc: PlainKdc,
    /// Keeps the reader store.
    _state: TempDir,
    password: String,
    token: String,
    password_placeholder: Vec<u8>,
    token_placeholder: Vec<u8>,
    /// The content keys as the KDC sends them (base64url).
    keys_b64: Vec<String>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // The client never half-closes (the KDC, like hyper by default, drops a
        // connection whose client does, unanswered): the connection ends at the KDC's
        // own timeouts, which paused time (auto-advanced whenever every task waits,
        // and never while argon2 runs on the blocking pool) reaches at once.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("fuzz runtime");
        let parties = Parties::new();
        let state = tempfile::tempdir().expect("state dir");
        let mut config = KdcConfig::new("127.0.0.1:0".parse().expect("address"), "", "");
        config.public_address = Some(ADDRESS.into());
        // The token obtained here must stay valid for the whole run.
        config.token_lifetime = Duration::from_secs(365 * 24 * 3600);
        let keys = vec![(1, ContentKey::generate()), (2, ContentKey::generate())];
        let keys_b64 = keys
            .iter()
            .map(|(_, k)| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.as_bytes()))
            .collect();
        let kdc = PlainKdc::new(&config, &parties.publisher, state.path(), keys).expect("KDC");
        let alice = kdc.add_reader("alice", 1).expect("add alice");
        // bob was granted at epoch 2: fetching epoch 1 is refused.
        kdc.add_reader("bob", 2).expect("add bob");
        let token = runtime.block_on(login(&kdc, &alice.password));
        Harness {
            runtime,
            kdc,
            _state: state,
            password_placeholder: placeholder("PASSWORD", alice.password.len()),
            token_placeholder: placeholder("TOKEN", token.len()),
            password: alice.password,
            token,
            keys_b64,
        }
    })
}

/// Logs `alice` in through the handlers, as a client would.
async fn login(kdc: &PlainKdc, password: &str) -> String {
    let body = format!(r#"{{"reader":"alice","password":"{password}"}}"#);
    let request = format!(
        "POST /kdc/login HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(kdc, request.as_bytes(), peer(0)).await;
    let text = String::from_utf8_lossy(&answer);
    let json = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .expect("an HTTP answer");
    let response: LoginResponse = serde_json::from_str(json).expect("a login response");
    response.access_token
}

/// Sends `request` on one connection and returns everything the KDC answered before it
/// closed the connection.
async fn exchange(kdc: &PlainKdc, request: &[u8], peer: SocketAddr) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(16 * 1024);
    let client_side = async move {
        // The KDC may close before reading everything: the answer is still read.
        let _ = client.write_all(request).await;
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        answer
    };
    let both = async { tokio::join!(client_side, kdc.serve(server, peer)).0 };
    tokio::time::timeout(END_WITHIN, both)
        .await
        .expect("the KDC ends every connection")
}

/// Clients come from a few addresses in turn, so that the per-address login limit is
/// exercised without refusing every login of a long run.
fn peer(n: u32) -> SocketAddr {
    SocketAddr::from(([10, 0, (n >> 8) as u8 & 0x3, n as u8], 40000))
}

fn replace(input: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut rest = input;
    while !rest.is_empty() {
        if rest.starts_with(from) {
            out.extend_from_slice(to);
            rest = &rest[from.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Serves one connection whose client sends `data` (with the [`placeholders`] replaced
/// by alice's valid token and password, so that inputs reach the handlers behind
/// authentication). Checks that the connection ends, that no content key is
/// sent unless the input used the token, and that no password or earlier token is
/// ever sent back.
pub fn kdc_http(data: &[u8]) {
    static NEXT_PEER: AtomicU32 = AtomicU32::new(1);
    let h = harness();
    let request = replace(data, &h.token_placeholder, h.token.as_bytes());
    let request = replace(&request, &h.password_placeholder, h.password.as_bytes());
    let peer = peer(NEXT_PEER.fetch_add(1, Ordering::Relaxed));
    let answer = h.runtime.block_on(exchange(&h.kdc, &request, peer));
    if !contains(data, &h.token_placeholder) {
        for key in &h.keys_b64 {
            assert!(
                !contains(&answer, key.as_bytes()),
                "a content key was sent without a valid token"
            );
        }
    }
    assert!(
        !contains(&answer, h.password.as_bytes()),
        "a password was sent back"
    );
    assert!(
        !contains(&answer, h.token.as_bytes()),
        "an existing token was sent back"
    );
}
