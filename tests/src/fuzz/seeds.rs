//! The seed corpus: genuine inputs of each target, made with the same encoders and
//! SDK functions the tests use (rumqttc's MQTT encoders, the sealer, the KDC's API
//! paths). `cargo run -p sealpost-tests --example fuzz_seeds` writes them into
//! `fuzz/corpus/<target>/seed-<name>`.

use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::QoS;
use sealpost_certs::now_unix;
use sealpost_protocol::{KeyLocation, Sealer};

use super::kdc::{placeholders, ADDRESS};
use super::protocol::{Parties, DATA_TOPIC};
use super::GENUINE_ENVELOPES;

fn v4_bytes(packets: &[v4::Packet]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for p in packets {
        p.write(&mut out, usize::MAX).expect("encode MQTT 3.1.1");
    }
    out.to_vec()
}

fn v5_bytes(packets: &[v5::Packet]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for p in packets {
        p.write(&mut out, None).expect("encode MQTT 5");
    }
    out.to_vec()
}

/// An MQTT 3.1.1 CONNECT with a clean session.
pub fn connect_v4(client_id: &str) -> Vec<u8> {
    v4_bytes(&[v4::Packet::Connect(v4::Connect::new(client_id))])
}

/// An MQTT 5 CONNECT with a clean start and the properties a client limits itself with.
pub fn connect_v5(client_id: &str) -> Vec<u8> {
    let properties = v5::ConnectProperties {
        session_expiry_interval: Some(30),
        receive_maximum: Some(10),
        max_packet_size: Some(4096),
        topic_alias_max: Some(4),
        ..v5::ConnectProperties::new()
    };
    let connect = v5::Connect {
        keep_alive: 30,
        client_id: client_id.into(),
        clean_start: true,
        properties: Some(properties),
    };
    v5_bytes(&[v5::Packet::Connect(connect, None, None)])
}

fn v4_publish(topic: &str, qos: QoS, pkid: u16, retain: bool) -> v4::Packet {
    let mut p = v4::Publish::new(topic, qos, &b"payload"[..]);
    p.pkid = pkid;
    p.retain = retain;
    v4::Packet::Publish(p)
}

/// What an MQTT 3.1.1 client sends after CONNECT: subscriptions, every QoS, retained
/// messages, the QoS 2 exchange, acknowledgements, unsubscription, ping, disconnect.
fn v4_session() -> Vec<u8> {
    v4_bytes(&[
        v4::Packet::Subscribe(v4::Subscribe::new_many([
            v4::SubscribeFilter::new("plant/#".into(), QoS::AtLeastOnce),
            v4::SubscribeFilter::new("+/status".into(), QoS::ExactlyOnce),
        ])),
        v4_publish("plant/a", QoS::AtMostOnce, 0, false),
        v4_publish("plant/b", QoS::AtLeastOnce, 1, true),
        v4_publish("plant/c", QoS::ExactlyOnce, 2, false),
        v4::Packet::PubRel(v4::PubRel::new(2)),
        v4::Packet::PubAck(v4::PubAck::new(1)),
        v4::Packet::Unsubscribe(v4::Unsubscribe::new("plant/#")),
        v4::Packet::PingReq,
        v4::Packet::Disconnect,
    ])
}

fn qos5(qos: QoS) -> QoS5 {
    match qos {
        QoS::AtMostOnce => QoS5::AtMostOnce,
        QoS::AtLeastOnce => QoS5::AtLeastOnce,
        QoS::ExactlyOnce => QoS5::ExactlyOnce,
    }
}

fn v5_publish(topic: &str, qos: QoS, pkid: u16, alias: Option<u16>) -> v5::Packet {
    let properties = v5::PublishProperties {
        message_expiry_interval: Some(60),
        topic_alias: alias,
        user_properties: vec![("k".into(), "v".into())],
        content_type: Some("application/cose".into()),
        ..Default::default()
    };
    let mut p = v5::Publish::new(topic, qos5(qos), &b"payload"[..], Some(properties));
    p.pkid = pkid;
    v5::Packet::Publish(p)
}

/// What an MQTT 5 client sends after CONNECT, with properties and topic aliases.
fn v5_session() -> Vec<u8> {
    let shared = v5::Filter::new("$share/workers/plant/#", QoS5::AtLeastOnce);
    let mut own = v5::Filter::new("plant/+", QoS5::ExactlyOnce);
    own.nolocal = true;
    own.preserve_retain = true;
    v5_bytes(&[
        v5::Packet::Subscribe(v5::Subscribe::new_many([shared, own], None)),
        v5_publish("plant/a", QoS::AtLeastOnce, 1, Some(1)),
        v5_publish("", QoS::AtMostOnce, 0, Some(1)),
        v5_publish("plant/c", QoS::ExactlyOnce, 2, None),
        v5::Packet::PubRel(v5::PubRel::new(2, None)),
        v5::Packet::PubAck(v5::PubAck::new(1, None)),
        v5::Packet::Unsubscribe(v5::Unsubscribe::new("plant/+", None)),
        v5::Packet::PingReq(v5::PingReq),
        v5::Packet::Disconnect(v5::Disconnect::new(
            v5::DisconnectReasonCode::NormalDisconnection,
        )),
    ])
}

/// An MQTT 3.1.1 CONNECT that resumes a persistent session, with a will and a login.
fn connect_v4_with_will() -> Vec<u8> {
    let mut connect = v4::Connect::new("fuzz-will");
    connect.clean_session = false;
    connect.last_will = Some(v4::LastWill::new(
        "plant/will",
        "gone",
        QoS::AtLeastOnce,
        true,
    ));
    connect.set_login("user", "password");
    v4_bytes(&[v4::Packet::Connect(connect)])
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Seeds of the broker targets: whole client streams (`broker_codec`, and
/// `broker_connection` after the mode byte 0), and packet sequences after the
/// harness's own CONNECT (mode bytes 1 and 2).
fn broker() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let stream_v4 = concat(&[&connect_v4("seed-4"), &v4_session()]);
    let stream_v4_will = concat(&[&connect_v4_with_will(), &v4_session()]);
    let stream_v5 = concat(&[&connect_v5("seed-5"), &v5_session()]);
    let mut seeds = Vec::new();
    for (name, stream) in [
        ("v4", &stream_v4),
        ("v4-will", &stream_v4_will),
        ("v5", &stream_v5),
    ] {
        seeds.push(("broker_codec", name, stream.clone()));
        seeds.push(("broker_connection", name, concat(&[&[0], stream])));
    }
    seeds.push((
        "broker_connection",
        "after-connect-v4",
        concat(&[&[1], &v4_session()]),
    ));
    seeds.push((
        "broker_connection",
        "after-connect-v5",
        concat(&[&[2], &v5_session()]),
    ));
    seeds
}

/// Seeds of `protocol_open`: genuine envelopes (certificate embedded or not, empty and
/// longer payloads) and key messages (RSA-OAEP and HPKE), each after its selector byte. They are signed
/// by a CA of their own, as any input of this target must be.
fn protocol() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let parties = Parties::new();
    let mut sealer = Sealer::new(
        parties.publisher.clone(),
        KeyLocation::key_topic_for("plant"),
        1,
        &parties.key,
        0,
    );
    sealer.reserve(100);
    // Version 1 seeds as committed before version 2 existed, then version 2 ones.
    sealer.set_wire_version(1).expect("version 1");
    let plain = sealer.seal(DATA_TOPIC, b"", now_unix()).expect("seal");
    sealer.set_embed_certificate(true);
    let embedded = sealer
        .seal(DATA_TOPIC, &[7; 300], now_unix())
        .expect("seal");
    let mut kdc = Sealer::new(
        parties.publisher.clone(),
        KeyLocation::Kdc(ADDRESS.into()),
        1,
        &parties.key,
        1000,
    );
    kdc.reserve(10);
    kdc.set_wire_version(1).expect("version 1");
    let kdc = kdc.seal(DATA_TOPIC, b"kdc", now_unix()).expect("seal");
    sealer.set_wire_version(2).expect("version 2");
    let burst = sealer
        .seal_many(
            &[
                (DATA_TOPIC, &b"one"[..]),
                (DATA_TOPIC, b"two"),
                (DATA_TOPIC, b"six"),
            ],
            now_unix(),
        )
        .expect("seal burst");
    let key_message = parties.key_message();
    let hpke_key_message = parties.hpke_key_message();
    vec![
        ("protocol_open", "envelope", concat(&[&[0], &plain])),
        (
            "protocol_open",
            "envelope-certificate",
            concat(&[&[0], &embedded]),
        ),
        ("protocol_open", "envelope-kdc", concat(&[&[0], &kdc])),
        (
            "protocol_open",
            "key-message",
            concat(&[&[1], &key_message]),
        ),
        ("protocol_open", "peek", concat(&[&[2], &embedded])),
        (
            "protocol_open",
            "key-message-hpke",
            concat(&[&[3], &hpke_key_message]),
        ),
        ("protocol_open", "burst", concat(&[&[0], &burst[2]])),
    ]
}

/// Seeds of `protocol_burst`: every genuine envelope unedited (accepted), and edits of
/// the inclusion proof, the root signature and the message (refused).
fn burst() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    const NAMES: [&str; GENUINE_ENVELOPES] = [
        "genuine-0",
        "genuine-1",
        "genuine-2",
        "genuine-3",
        "genuine-4",
        "genuine-5",
        "genuine-6",
        "genuine-7",
    ];
    let mut seeds: Vec<_> = NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| ("protocol_burst", *name, vec![i as u8]))
        .collect();
    // Offsets counted from the start: the protected header, then the unprotected one
    // with the proof, then the payload; 0x3fff wraps to the last bytes (the signature).
    seeds.push((
        "protocol_burst",
        "flip-protected",
        vec![3, 0x00, 0x40, 0x01],
    ));
    seeds.push(("protocol_burst", "flip-proof", vec![3, 0x00, 0x80, 0x80]));
    seeds.push((
        "protocol_burst",
        "flip-signature",
        vec![6, 0x3f, 0xff, 0x01],
    ));
    seeds.push((
        "protocol_burst",
        "insert-remove",
        vec![1, 0x80, 0x90, 0x00, 0xc0, 0x90, 0x00],
    ));
    seeds
}

fn http(method: &str, path: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Seeds of `kdc_http`: logins (right, wrong, malformed, too long), key fetches with
/// and without the token, wrong methods and paths, a chunked body, and two requests
/// on one connection.
fn kdc() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let (token, password) = placeholders();
    let token = String::from_utf8(token).expect("ASCII");
    let password = String::from_utf8(password).expect("ASCII");
    let password = password.as_str();
    let login = |reader: &str, password: &str| {
        http(
            "POST",
            "/kdc/login",
            "content-type: application/json\r\n",
            &format!(r#"{{"reader":"{reader}","password":"{password}"}}"#),
        )
    };
    let bearer = format!("authorization: Bearer {token}\r\n");
    let fetch = |epoch: &str| http("GET", &format!("/kdc/epochs/{epoch}"), &bearer, "");
    let body = format!(r#"{{"reader":"alice","password":"{password}"}}"#);
    let chunked = format!(
        "POST /kdc/login HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n\
         {:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    )
    .into_bytes();
    vec![
        ("kdc_http", "login", login("alice", password)),
        ("kdc_http", "login-wrong", login("alice", "wrong")),
        ("kdc_http", "login-unknown", login("mallory", password)),
        (
            "kdc_http",
            "login-malformed",
            http("POST", "/kdc/login", "", "{\"reader\":"),
        ),
        ("kdc_http", "login-get", http("GET", "/kdc/login", "", "")),
        ("kdc_http", "login-chunked", chunked),
        ("kdc_http", "fetch", fetch("1")),
        ("kdc_http", "fetch-not-granted", fetch("0")),
        ("kdc_http", "fetch-unknown-epoch", fetch("9")),
        ("kdc_http", "fetch-bad-epoch", fetch("-1")),
        (
            "kdc_http",
            "fetch-no-token",
            http("GET", "/kdc/epochs/1", "", ""),
        ),
        (
            "kdc_http",
            "fetch-post",
            http("POST", "/kdc/epochs/1", &bearer, "{}"),
        ),
        ("kdc_http", "not-found", http("GET", "/other", "", "")),
        (
            "kdc_http",
            "pipelined",
            concat(&[&login("alice", password), &fetch("2")]),
        ),
    ]
}

/// Every seed: `(target, name, bytes)`.
pub fn all() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut seeds = broker();
    seeds.extend(protocol());
    seeds.extend(burst());
    seeds.extend(kdc());
    seeds
}
