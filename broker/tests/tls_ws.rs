//! TLS (rustls, ring) with certificates from the security center, client-certificate
//! identities, and MQTT over WebSocket.

mod common;

use common::pki::*;
use common::*;
use rumqttc::{QoS, TlsConfiguration, Transport};
use sealpost_broker::config::{KeyTopicReaders, ListenerKind};
use sealpost_certs::{Profile, Validity};
use std::net::SocketAddr;
use std::time::Duration;

#[tokio::test]
async fn tls_clients_work_while_a_silent_tls_client_is_connected() {
    let pki = Pki::new();
    let (broker, addr) = start(pki.config(false)).await;
    let tls_addr = broker.addr(ListenerKind::Tls).unwrap();
    // A client that opens TCP and never starts the handshake.
    let mut silent = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    let mut sub = V4::start(tls_options("tls-sub", tls_addr, pki.client_tls(None)));
    sub.connack()
        .await
        .expect("TLS client connects despite the silent one");
    sub.subscribe("tls/t", QoS::AtLeastOnce).await;
    let publ = V4::connect("plain-pub", addr).await;
    publ.client
        .publish("tls/t", QoS::AtLeastOnce, false, b"over tls".to_vec())
        .await
        .unwrap();
    assert_eq!(&sub.publish_msg().await.unwrap().payload[..], b"over tls");
    // The silent client is dropped by the handshake timeout.
    let (_, closed) = read_until_closed(&mut silent).await;
    assert!(closed);
    assert!(
        broker
            .metrics()
            .timeouts
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn publisher_certificate_may_publish_only_its_topics_and_its_key_topics() {
    let pki = Pki::new();
    let mut config = pki.config(false);
    // This test is about writing: the anonymous spy may read key topics, so that it
    // sees which key messages were accepted.
    config.acl.key_topic_readers = KeyTopicReaders::Rules;
    let (broker, addr) = start(config).await;
    let tls_addr = broker.addr(ListenerKind::Tls).unwrap();
    let p1 = pki.issue(Profile::Publisher {
        id: "p1".into(),
        topics: vec!["plant/+/power".into()],
    });
    let mut spy = V4::connect("spy", addr).await;
    spy.subscribe("#", QoS::AtLeastOnce).await;
    let mut publisher = V4::start(tls_options(
        "p1-device",
        tls_addr,
        pki.client_tls(Some(&p1)),
    ));
    publisher
        .connack()
        .await
        .expect("publisher certificate accepted");
    for topic in [
        "plant/1/valve",          // not in the certificate
        "sealpost/keys/p2/epoch", // another publisher's key topic
        "plant/1/power",          // allowed
        "sealpost/keys/p1/epoch", // its own key topic
    ] {
        publisher
            .client
            .publish(topic, QoS::AtLeastOnce, false, topic.as_bytes().to_vec())
            .await
            .unwrap();
    }
    let a = spy.publish_msg().await.unwrap();
    let b = spy.publish_msg().await.unwrap();
    assert_eq!(a.topic, "plant/1/power");
    assert_eq!(b.topic, "sealpost/keys/p1/epoch");
    assert!(spy
        .maybe_publish(Duration::from_millis(300))
        .await
        .is_none());
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn certificates_from_another_ca_are_refused_and_required_certs_enforced() {
    let pki = Pki::new();
    let (broker, _) = start(pki.config(true)).await;
    let tls_addr = broker.addr(ListenerKind::Tls).unwrap();
    // No certificate while one is required.
    let mut c = V4::start(tls_options("no-cert", tls_addr, pki.client_tls(None)));
    assert!(c.connack().await.is_err());
    // A certificate issued by a foreign CA.
    let other = Pki::new();
    let foreign = other.issue(Profile::Client {
        id: "intruder".into(),
    });
    let mut c = V4::start(tls_options(
        "foreign",
        tls_addr,
        pki.client_tls(Some(&foreign)),
    ));
    assert!(c.connack().await.is_err());
    // A certificate of our CA is accepted.
    let good = pki.issue(Profile::Client {
        id: "device-7".into(),
    });
    let mut c = V4::start(tls_options("good", tls_addr, pki.client_tls(Some(&good))));
    c.connack()
        .await
        .expect("valid client certificate accepted");
    broker.shutdown(WAIT).await;
}

/// MQTT 3.1.1 and 5 clients on a WebSocket listener, `ws://` or `wss://` (`scheme`),
/// exchange messages with each other and with a TCP client on `addr`.
async fn websocket_v4_and_v5_interoperate_with_tcp(
    scheme: &str,
    ws: SocketAddr,
    transport: impl Fn() -> Transport,
    addr: SocketAddr,
) {
    let url = format!("{scheme}://{ws}/mqtt");
    let mut o = rumqttc::MqttOptions::new(format!("{scheme}-v4"), &url, ws.port());
    o.set_transport(transport());
    o.set_keep_alive(Duration::from_secs(5));
    let mut sub = V4::start(o);
    sub.connack().await.expect("WebSocket v4 connects");
    sub.subscribe("ws/#", QoS::AtLeastOnce).await;

    use rumqttc::v5::mqttbytes::QoS as Q5;
    let mut o5 = rumqttc::v5::MqttOptions::new(format!("{scheme}-v5"), &url, ws.port());
    o5.set_transport(transport());
    let (c5, mut el5) = rumqttc::v5::AsyncClient::new(o5, 10);
    c5.publish("ws/from-v5", Q5::AtLeastOnce, false, b"v5 over ws".to_vec())
        .await
        .unwrap();
    let poller = tokio::spawn(async move { while el5.poll().await.is_ok() {} });
    assert_eq!(&sub.publish_msg().await.unwrap().payload[..], b"v5 over ws");
    let tcp = V4::connect(&format!("tcp-to-{scheme}"), addr).await;
    tcp.client
        .publish("ws/from-tcp", QoS::AtMostOnce, false, b"tcp".to_vec())
        .await
        .unwrap();
    assert_eq!(&sub.publish_msg().await.unwrap().payload[..], b"tcp");
    poller.abort();
}

#[tokio::test]
async fn websocket_clients_v4_and_v5_interoperate_with_tcp_clients() {
    let pki = Pki::new();
    let (broker, addr) = start(pki.config(false)).await;
    let ws = broker.addr(ListenerKind::Ws).unwrap();
    websocket_v4_and_v5_interoperate_with_tcp("ws", ws, || Transport::Ws, addr).await;
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn websocket_over_tls_carries_v4_and_v5_while_a_silent_client_is_connected() {
    let pki = Pki::new();
    let (broker, addr) = start(pki.config(false)).await;
    let wss = broker.addr(ListenerKind::Wss).unwrap();
    // A client that opens TCP and never starts the TLS handshake.
    let mut silent = tokio::net::TcpStream::connect(wss).await.unwrap();
    let tls = || Transport::wss_with_config(pki.client_tls(None));
    websocket_v4_and_v5_interoperate_with_tcp("wss", wss, tls, addr).await;
    // The silent client is dropped at the handshake deadline.
    let (_, closed) = read_until_closed(&mut silent).await;
    assert!(closed);
    // The port speaks TLS only: a plain WebSocket handshake gets nowhere.
    let plain = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{wss}/mqtt")),
    )
    .await
    .expect("a plain WebSocket client is closed, not left waiting");
    assert!(plain.is_err(), "plain WebSocket accepted on the wss port");
    broker.shutdown(WAIT).await;
}

fn wss_options(id: &str, addr: SocketAddr, tls: TlsConfiguration) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, format!("wss://{addr}/mqtt"), addr.port());
    o.set_transport(Transport::wss_with_config(tls));
    o.set_keep_alive(Duration::from_secs(5));
    o
}

#[tokio::test]
async fn websocket_over_tls_takes_client_certificates_and_their_topic_rights() {
    let pki = Pki::new();
    let (broker, addr) = start(pki.config(true)).await;
    let wss = broker.addr(ListenerKind::Wss).unwrap();
    // No certificate while one is required.
    let mut c = V4::start(wss_options("no-cert", wss, pki.client_tls(None)));
    assert!(c.connack().await.is_err(), "wss client without certificate");
    // A publisher certificate: its topics only.
    let p1 = pki.issue(Profile::Publisher {
        id: "p1".into(),
        topics: vec!["plant/+/power".into()],
    });
    let mut spy = V4::connect("spy", addr).await;
    spy.subscribe("#", QoS::AtLeastOnce).await;
    let mut publisher = V4::start(wss_options("p1-wss", wss, pki.client_tls(Some(&p1))));
    publisher
        .connack()
        .await
        .expect("publisher certificate accepted over wss");
    for topic in ["plant/1/valve", "plant/1/power"] {
        publisher
            .client
            .publish(topic, QoS::AtLeastOnce, false, topic.as_bytes().to_vec())
            .await
            .unwrap();
    }
    assert_eq!(spy.publish_msg().await.unwrap().topic, "plant/1/power");
    assert!(spy
        .maybe_publish(Duration::from_millis(300))
        .await
        .is_none());
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_revoked_client_certificate_is_refused() {
    let pki = Pki::new();
    let revoked = pki.issue(Profile::Client {
        id: "stolen".into(),
    });
    let kept = pki.issue(Profile::Client { id: "kept".into() });
    let der = rustls_pemfile::certs(&mut revoked.certificate_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let serial = sealpost_certs::parse(der.as_ref()).unwrap().serial;
    let crl = pki
        .ca
        .revocation_list(
            &[sealpost_certs::RevokedSerial {
                serial,
                revoked_at: time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
            }],
            1,
            Validity::days_from_now(1),
        )
        .unwrap();
    let (broker, _) = start(pki.config_with_crl(true, Some(&crl))).await;
    let tls_addr = broker.addr(ListenerKind::Tls).unwrap();
    let mut c = V4::start(tls_options(
        "stolen",
        tls_addr,
        pki.client_tls(Some(&revoked)),
    ));
    assert!(c.connack().await.is_err(), "revoked certificate accepted");
    let mut c = V4::start(tls_options("kept", tls_addr, pki.client_tls(Some(&kept))));
    c.connack().await.expect("unrevoked certificate accepted");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn an_oversized_websocket_message_closes_only_that_connection() {
    use futures_util::{SinkExt, StreamExt};
    let pki = Pki::new();
    let mut config = pki.config(false);
    config.limits.max_packet_size = 4096;
    config.router.max_segment_size = 64 * 1024;
    let (broker, addr) = start(config).await;
    let ws = broker.addr(ListenerKind::Ws).unwrap();
    let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{ws}/mqtt"))
        .await
        .unwrap();
    let _ = client
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            vec![0x30; 64 * 1024],
        ))
        .await;
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match client.next().await {
                None
                | Some(Err(_))
                | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(
        closed,
        "oversized WebSocket message did not close the connection"
    );
    assert_serving(addr).await;
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_certificate_with_a_publishers_id_but_another_role_gets_neither_its_rules_nor_its_session(
) {
    let pki = Pki::new();
    let mut config = pki.config(false);
    config.acl = toml::from_str(
        r##"
        default = "deny"
        [[rules]]
        identity = "publisher:p1"
        publish = ["plant/#"]
        subscribe = ["plant/#"]
        [[rules]]
        identity = "anonymous"
        subscribe = ["#"]
        "##,
    )
    .unwrap();
    let (broker, addr) = start(config).await;
    let tls_addr = broker.addr(ListenerKind::Tls).unwrap();
    let p1 = pki.issue(Profile::Publisher {
        id: "p1".into(),
        topics: vec!["plant/#".into()],
    });
    let mut spy = V4::connect("spy", addr).await;
    spy.subscribe("#", QoS::AtLeastOnce).await;
    // The publisher: its rules, and a persistent session.
    let mut o = tls_options("p1-device", tls_addr, pki.client_tls(Some(&p1)));
    o.set_clean_session(false);
    let mut publisher = V4::start(o);
    publisher.connack().await.expect("publisher connects");
    assert_eq!(
        publisher.subscribe("plant/#", QoS::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    drop(publisher);
    // Certificates of the other roles, issued with the id "p1" (as a device's CSR could
    // ask): not the publisher.
    for (n, profile) in [
        Profile::Subscriber { id: "p1".into() },
        Profile::Client { id: "p1".into() },
    ]
    .into_iter()
    .enumerate()
    {
        let not_p1 = pki.issue(profile);
        // Its client id is not free to take.
        let mut o = tls_options("p1-device", tls_addr, pki.client_tls(Some(&not_p1)));
        o.set_clean_session(false);
        let mut c = V4::start(o);
        let r = c.connack().await;
        assert!(matches!(&r, Err(e) if e.contains("NotAuthorized")), "{r:?}");
        // Nor are the publisher's rules its rules.
        let id = format!("not-p1-{n}");
        let mut c = V4::start(tls_options(&id, tls_addr, pki.client_tls(Some(&not_p1))));
        c.connack().await.expect("certificate accepted");
        assert_eq!(
            c.subscribe("plant/#", QoS::AtLeastOnce).await,
            vec![rumqttc::SubscribeReasonCode::Failure]
        );
        for topic in ["plant/1/power", "sealpost/keys/p1/alice"] {
            c.client
                .publish(topic, QoS::AtLeastOnce, false, b"forged".to_vec())
                .await
                .unwrap();
        }
    }
    assert!(spy
        .maybe_publish(Duration::from_millis(500))
        .await
        .is_none());
    broker.shutdown(WAIT).await;
}
