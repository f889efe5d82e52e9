//! The broker's side: MQTT framing and decoding (`broker_codec`), and whole client
//! connections fed through a real broker without a socket (`broker_connection`).

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use sealpost_broker::codec::{self, kind, Version};
use sealpost_broker::{Broker, Config, ListenerKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use super::seeds;

/// The largest packet the fuzzed broker accepts: small, so that fuzz inputs (a few KiB)
/// reach the limit too.
const MAX_PACKET: usize = 2048;

/// How long a connection may take to end once its client has stopped sending. Far
/// above what any input needs; exceeding it means the connection hangs.
const END_WITHIN: Duration = Duration::from_secs(20);

/// Panics inside rumqttd's packet decoders are caught by the edge (`codec::decode`
/// decodes under `catch_unwind`, a documented second line of defence) and end only the
/// connection. libFuzzer's panic hook would abort on them all the same, so the broker
/// targets install this hook: silent for panics raised in rumqttd's `protocol` module,
/// the default behaviour for every other panic. A decoder panic that is not caught
/// still unwinds out of the target and is reported as a crash.
pub fn tolerate_caught_decoder_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !in_rumqttd_decoder(info.location()) {
            previous(info);
        }
    }));
}

/// Whether a panic was raised in rumqttd's packet decoders (see
/// [`tolerate_caught_decoder_panics`]).
pub(super) fn in_rumqttd_decoder(location: Option<&std::panic::Location<'_>>) -> bool {
    location.is_some_and(|l| {
        let file = l.file().replace('\\', "/");
        file.contains("/rumqttd-") && file.contains("/src/protocol/")
    })
}

/// Splits, checks and decodes frames as a connection does, and checks the helpers the
/// edge applies to encoded PUBLISH frames.
pub fn broker_codec(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut version: Option<Version> = None;
    loop {
        if version.is_some() && codec::take_success_ack(&mut buf).is_some() {
            continue;
        }
        let frame = match codec::next_frame(&mut buf, MAX_PACKET, version) {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => return,
        };
        assert!(
            frame.bytes.len() <= MAX_PACKET,
            "a frame of {} bytes passed a {MAX_PACKET}-byte limit",
            frame.bytes.len()
        );
        let v = match version {
            Some(v) => v,
            None => match codec::connect_version(&frame) {
                Ok(v) => v,
                Err(_) => return,
            },
        };
        if frame.kind == kind::PUBLISH {
            check_publish_rewrites(&frame.bytes, v);
        }
        let decoded = codec::decode(frame, v, MAX_PACKET);
        if version.is_none() {
            if decoded.is_err() {
                return;
            }
            version = Some(v);
        }
    }
}

/// The edge rewrites the QoS of PUBLISH frames (down for subscribers, up from 0 for the
/// messages it sends itself): whatever it rewrites must still be one well-formed frame
/// of the same version, carrying the QoS asked for.
fn check_publish_rewrites(frame: &[u8], version: Version) {
    let Some(header) = codec::publish_header(frame) else {
        return;
    };
    for qos in (0..=2).filter(|&q| q != header.qos) {
        let Some(other) = codec::set_publish_qos(frame, qos) else {
            continue;
        };
        let mut buf = BytesMut::from(&other[..]);
        let rewritten = codec::next_frame(&mut buf, usize::MAX, Some(version));
        let Ok(Some(rewritten)) = rewritten else {
            panic!("rewriting to QoS {qos} broke the frame: {rewritten:?}");
        };
        assert!(buf.is_empty(), "rewrite left {} extra bytes", buf.len());
        let again = codec::publish_header(&rewritten.bytes).expect("a readable PUBLISH");
        assert_eq!((again.qos, again.retain), (qos, header.retain));
    }
}

/// Sent after every input: the broker's PINGRESP tells that it has processed what came
/// before.
const PINGREQ: [u8; 2] = [0xc0, 0x00];
/// Longest wait for the PINGRESP.
const PING_WAIT: Duration = Duration::from_millis(200);
/// Time left to the router's answers after the PINGRESP.
const GRACE: Duration = Duration::from_millis(2);

/// Reads the broker's answers until they end with a PINGRESP, or the broker closes.
async fn read_until_pong(client: &mut tokio::io::DuplexStream) {
    let mut answers = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => answers.extend_from_slice(&chunk[..n]),
        }
        if answers.ends_with(&[0xd0, 0x00]) {
            return;
        }
    }
}

/// A broker with the default configuration (anonymous clients, default ACL) but a small
/// packet limit and short sessions, running on its own runtime for the whole process.
struct Harness {
    runtime: Runtime,
    broker: Broker,
    connect_v4: Vec<u8>,
    connect_v5: Vec<u8>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("fuzz runtime");
        let mut config = Config::default();
        // A listener is required; it binds an ephemeral loopback port and is never used.
        config.listeners[0].kind = ListenerKind::Tcp;
        config.listeners[0].bind = "127.0.0.1:0".parse().expect("loopback address");
        config.limits.max_packet_size = MAX_PACKET;
        // Sessions that inputs leave behind end soon, so memory stays bounded.
        config.limits.max_session_expiry = Some(1);
        let broker = runtime
            .block_on(Broker::start(config))
            .expect("fuzz broker starts");
        Harness {
            runtime,
            broker,
            connect_v4: seeds::connect_v4("fuzz-4"),
            connect_v5: seeds::connect_v5("fuzz-5"),
        }
    })
}

/// Feeds one client's byte stream (and a PINGREQ) to a connection of a real broker,
/// reads what the broker answers, closes the client's sending side, and checks that the
/// connection ends and releases what it held.
///
/// The first byte chooses what comes before the rest of the input: nothing (the input
/// must bring its own CONNECT), or an accepted MQTT 3.1.1 or 5 CONNECT, so that most
/// inputs exercise the packet loop after CONNECT.
pub fn broker_connection(data: &[u8]) {
    // Set up first, so that an empty input prepares the target (see `fuzz_targets/`).
    let h = harness();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let preamble: &[u8] = match mode % 3 {
        1 => &h.connect_v4,
        2 => &h.connect_v5,
        _ => &[],
    };
    let metrics = h.broker.metrics();
    h.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(16 * 1024);
        let client_side = async move {
            // The broker may close early (that is the point of most inputs): write
            // errors just end the client's sending.
            let sent = client.write_all(preamble).await.is_ok()
                && client.write_all(rest).await.is_ok()
                && client.write_all(&PINGREQ).await.is_ok();
            if sent {
                // Let the broker answer what it read (the router answers some packets
                // after the PINGRESP, hence the grace) before the client hangs up;
                // an input that ends inside a packet gets no PINGRESP.
                let _ = tokio::time::timeout(PING_WAIT, read_until_pong(&mut client)).await;
                tokio::time::sleep(GRACE).await;
                let _ = client.shutdown().await;
            }
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        };
        let both = async { tokio::join!(client_side, h.broker.serve_stream(server)) };
        tokio::time::timeout(END_WITHIN, both)
            .await
            .expect("the connection ends once its client has stopped sending");
    });
    assert_eq!(
        metrics.connections_open.load(Ordering::Relaxed),
        0,
        "an ended connection is still counted open"
    );
}
