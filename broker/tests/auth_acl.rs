//! Authentication (password file) and authorization (ACL) with real clients.

mod common;

use common::*;
use rumqttc::{ConnectReturnCode, QoS, SubscribeReasonCode};
use sealpost_broker::auth::{add_user, HashCost};
use sealpost_broker::config::{AclDefault, KeyTopicReaders};
use std::sync::atomic::Ordering;
use std::time::Duration;

const CHEAP: HashCost = HashCost {
    memory_kib: 64,
    iterations: 1,
};

/// Password users `<name>` with password `<name>-pw`, no anonymous clients, and the
/// ACL `acl` (TOML of an `[acl]` section).
fn with_users(dir: &tempfile::TempDir, users: &[&str], acl: &str) -> sealpost_broker::Config {
    let file = dir.path().join("passwd");
    for user in users {
        add_user(&file, user, &format!("{user}-pw"), CHEAP).unwrap();
    }
    let mut c = tcp_config();
    c.auth.allow_anonymous = false;
    c.auth.password_file = Some(file);
    c.acl = toml::from_str(acl).unwrap();
    c
}

fn secured(dir: &tempfile::TempDir) -> sealpost_broker::Config {
    let c = with_users(
        dir,
        &["alice", "bob"],
        r#"
        default = "deny"
        [[rules]]
        identity = "user:alice"
        publish = ["data/alice/#"]
        subscribe = ["data/#"]
        [[rules]]
        identity = "user:bob"
        publish = ["data/bob/+"]
        subscribe = ["data/bob/#"]
        "#,
    );
    assert_eq!(c.acl.default, AclDefault::Deny);
    c
}

async fn v4_login(
    addr: std::net::SocketAddr,
    id: &str,
    user: Option<(&str, &str)>,
) -> (V4, Result<rumqttc::ConnAck, String>) {
    let mut o = v4_options(id, addr);
    if let Some((u, p)) = user {
        o.set_credentials(u, p);
    }
    let mut c = V4::start(o);
    let r = c.connack().await;
    (c, r)
}

fn refused_code(r: &Result<rumqttc::ConnAck, String>) -> String {
    // rumqttc reports a refused CONNACK as a connection error naming the code.
    match r {
        Ok(a) => format!("{:?}", a.code),
        Err(e) => e.clone(),
    }
}

#[tokio::test]
async fn v311_logins_get_the_right_connack_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, addr) = start(secured(&dir)).await;
    let (_ok, r) = v4_login(addr, "a1", Some(("alice", "alice-pw"))).await;
    assert_eq!(r.unwrap().code, ConnectReturnCode::Success);
    let (_c, r) = v4_login(addr, "a2", Some(("alice", "wrong"))).await;
    assert!(refused_code(&r).contains("BadUserNamePassword"), "{r:?}");
    let (_c, r) = v4_login(addr, "a3", Some(("mallory", "x"))).await;
    assert!(refused_code(&r).contains("BadUserNamePassword"), "{r:?}");
    let (_c, r) = v4_login(addr, "a4", None).await;
    assert!(refused_code(&r).contains("NotAuthorized"), "{r:?}");
    // Raw check of the exact bytes for a missing login: CONNACK return code 5.
    let (reply, closed) = raw_exchange(addr, &connect_packet(4, "raw-anon")).await;
    assert_eq!(reply, vec![0x20, 0x02, 0x00, 0x05]);
    assert!(closed);
    assert!(broker.metrics().auth_failures.load(Ordering::Relaxed) >= 4);
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_logins_get_reason_codes() {
    use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode as Rc, Packet};
    use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
    let dir = tempfile::tempdir().unwrap();
    let (broker, addr) = start(secured(&dir)).await;
    for (user, pass, expected) in [
        ("alice", "alice-pw", Some(Rc::Success)),
        ("alice", "nope", Some(Rc::BadUserNamePassword)),
    ] {
        let mut o = MqttOptions::new(format!("v5-{pass}"), "127.0.0.1", addr.port());
        o.set_credentials(user, pass);
        let (_c, mut el) = AsyncClient::new(o, 10);
        let got = tokio::time::timeout(WAIT, async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => return Some(a.code),
                    Ok(_) => continue,
                    Err(ConnectionError::ConnectionRefused(code)) => return Some(code),
                    Err(_) => return None,
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(got, expected);
    }
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn acl_drops_denied_publishes_and_refuses_denied_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, addr) = start(secured(&dir)).await;
    let (mut alice, r) = v4_login(addr, "alice-1", Some(("alice", "alice-pw"))).await;
    r.unwrap();
    let (mut bob, r) = v4_login(addr, "bob-1", Some(("bob", "bob-pw"))).await;
    r.unwrap();
    assert_eq!(
        alice.subscribe("data/#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    // Bob may not subscribe outside data/bob/#; a denied filter gets 0x80.
    assert_eq!(
        bob.subscribe("data/#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Failure]
    );
    assert_eq!(
        bob.subscribe("data/bob/#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    // Bob publishes: one denied (QoS 1, still acknowledged in 3.1.1), one allowed.
    bob.client
        .publish("data/alice/x", QoS::AtLeastOnce, false, b"forged".to_vec())
        .await
        .unwrap();
    bob.client
        .publish("data/bob/x", QoS::AtLeastOnce, false, b"real".to_vec())
        .await
        .unwrap();
    let p = alice.publish_msg().await.unwrap();
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("data/bob/x", &b"real"[..])
    );
    // Denied QoS 2 completes its flow in 3.1.1 without delivery.
    bob.client
        .publish("data/alice/y", QoS::ExactlyOnce, false, b"forged2".to_vec())
        .await
        .unwrap();
    bob.client
        .publish("data/bob/y", QoS::ExactlyOnce, false, b"real2".to_vec())
        .await
        .unwrap();
    let p = alice.publish_msg().await.unwrap();
    assert_eq!(&p.payload[..], b"real2");
    assert!(alice
        .maybe_publish(Duration::from_millis(300))
        .await
        .is_none());
    assert!(broker.metrics().denied_publish.load(Ordering::Relaxed) >= 2);
    assert!(broker.metrics().denied_subscribe.load(Ordering::Relaxed) >= 1);
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_denied_publish_gets_not_authorized_reason_codes() {
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PubRecReason};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let dir = tempfile::tempdir().unwrap();
    let (broker, addr) = start(secured(&dir)).await;
    let mut o = MqttOptions::new("bob-v5", "127.0.0.1", addr.port());
    o.set_credentials("bob", "bob-pw");
    let (c, mut el) = AsyncClient::new(o, 10);
    c.publish("data/alice/x", Q5::AtLeastOnce, false, b"no".to_vec())
        .await
        .unwrap();
    c.publish("data/alice/y", Q5::ExactlyOnce, false, b"no".to_vec())
        .await
        .unwrap();
    let (ack, rec) = tokio::time::timeout(WAIT, async {
        let (mut ack, mut rec) = (None, None);
        while ack.is_none() || rec.is_none() {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(a))) => ack = Some(a.reason),
                Ok(Event::Incoming(Packet::PubRec(r))) => rec = Some(r.reason),
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
        (ack.unwrap(), rec.unwrap())
    })
    .await
    .unwrap();
    assert_eq!(ack, PubAckReason::NotAuthorized);
    assert_eq!(rec, PubRecReason::NotAuthorized);
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_will_on_a_denied_topic_is_refused_at_connect() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, addr) = start(secured(&dir)).await;
    let mut o = v4_options("bob-will", addr);
    o.set_credentials("bob", "bob-pw");
    o.set_last_will(rumqttc::LastWill::new(
        "data/alice/will",
        "x",
        QoS::AtMostOnce,
        false,
    ));
    let mut c = V4::start(o);
    let r = c.connack().await;
    assert!(refused_code(&r).contains("NotAuthorized"), "{r:?}");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn key_message_topics_are_not_writable_by_password_users() {
    let mut c = tcp_config();
    c.acl.default = AclDefault::Allow;
    // This test is about writing: the spy may read key topics, so that a forged key
    // message would reach it.
    c.acl.key_topic_readers = KeyTopicReaders::Rules;
    let (broker, addr) = start(c).await;
    let mut spy = V4::connect("spy", addr).await;
    spy.subscribe("sealpost/keys/#", QoS::AtMostOnce).await;
    let p = V4::connect("not-p1", addr).await;
    p.client
        .publish(
            "sealpost/keys/p1/epoch/1",
            QoS::AtLeastOnce,
            true,
            b"fake key".to_vec(),
        )
        .await
        .unwrap();
    assert!(spy
        .maybe_publish(Duration::from_millis(500))
        .await
        .is_none());
    broker.shutdown(WAIT).await;
}

#[test]
fn passwd_subcommand_stores_only_a_hash() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sealpost-broker"))
        .args(["passwd", file.to_str().unwrap(), "carol"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"carol-secret\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("carol:$argon2id$"));
    assert!(!text.contains("carol-secret"));
}

#[tokio::test]
async fn v5_denied_subscription_gets_not_authorized_and_shared_subscriptions_are_checked() {
    use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode as R};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let dir = tempfile::tempdir().unwrap();
    let (broker, addr) = start(secured(&dir)).await;
    let mut o = MqttOptions::new("bob-v5-sub", "127.0.0.1", addr.port());
    o.set_credentials("bob", "bob-pw");
    let (c, mut el) = AsyncClient::new(o, 10);
    let mut codes = Vec::new();
    for filter in [
        "data/#",
        "$share/g/data/#",
        "$share/g/data/bob/+",
        "data/bob/x",
    ] {
        c.subscribe(filter, Q5::AtLeastOnce).await.unwrap();
        let code = tokio::time::timeout(WAIT, async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(s))) => return s.return_codes[0],
                    Ok(_) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        })
        .await
        .unwrap();
        codes.push(code);
    }
    assert_eq!(
        codes,
        vec![
            R::NotAuthorized,
            R::NotAuthorized,
            R::Success(Q5::AtLeastOnce),
            R::Success(Q5::AtLeastOnce)
        ]
    );
    broker.shutdown(WAIT).await;
}

/// alice and eve, each with a password; alice may use `secret/#`, eve only `eve/#`.
fn two_users(
    dir: &tempfile::TempDir,
    new_session_for_other_identity: bool,
) -> sealpost_broker::Config {
    let mut c = with_users(
        dir,
        &["alice", "eve"],
        r#"
        default = "deny"
        [[rules]]
        identity = "user:alice"
        publish = ["secret/#"]
        subscribe = ["secret/#"]
        [[rules]]
        identity = "user:eve"
        publish = ["eve/#"]
        subscribe = ["eve/#"]
        "#,
    );
    c.session.new_session_for_other_identity = new_session_for_other_identity;
    c
}

/// Options for `user` with client id `id` and the given clean session flag.
fn as_user(addr: std::net::SocketAddr, id: &str, user: &str, clean: bool) -> rumqttc::MqttOptions {
    let mut o = v4_options(id, addr);
    o.set_credentials(user, format!("{user}-pw"));
    o.set_clean_session(clean);
    o
}

/// Publishes at QoS 1 and waits for the broker's PUBACK (the message is routed).
async fn publish_acked(c: &mut V4, topic: &str, payload: &[u8]) {
    c.client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
        .await
        .unwrap();
    loop {
        match c.next().await.expect("PUBACK") {
            rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => return,
            _ => continue,
        }
    }
}

/// Connects an MQTT 5 client as `user` with client id `id` (clean start 0, session kept
/// for an hour) and returns the CONNACK's reason code.
async fn v5_connect_code(
    addr: std::net::SocketAddr,
    id: &str,
    user: &str,
) -> rumqttc::v5::mqttbytes::v5::ConnectReturnCode {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, ConnectionError, Event};
    let mut o = common::v5::options(id, addr);
    o.set_credentials(user, format!("{user}-pw"));
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(3600));
    let (_c, mut el) = AsyncClient::new(o, 10);
    tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => return a.code,
                Ok(_) => continue,
                Err(ConnectionError::ConnectionRefused(code)) => return code,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn another_identity_can_neither_resume_nor_take_over_a_session() {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as Rc;
    let dir = tempfile::tempdir().unwrap();
    let (broker, addr) = start(two_users(&dir, false)).await;
    // alice's persistent session, subscribed to secret/#, then she goes away.
    let mut alice = V4::start(as_user(addr, "alice-dev", "alice", false));
    alice.connack().await.unwrap();
    alice.subscribe("secret/#", QoS::AtLeastOnce).await;
    drop(alice);
    let mut feed = V4::start(as_user(addr, "alice-feed", "alice", true));
    feed.connack().await.unwrap();
    publish_acked(&mut feed, "secret/1", b"queued").await;

    // eve, with her own password, uses alice's client id: refused (3.1.1: 0x05; 5: 0x87),
    // whether she asks to resume the session or to start a new one.
    for clean in [false, true] {
        let mut eve = V4::start(as_user(addr, "alice-dev", "eve", clean));
        let r = eve.connack().await;
        assert!(refused_code(&r).contains("NotAuthorized"), "{r:?}");
        assert!(eve
            .maybe_publish(Duration::from_millis(200))
            .await
            .is_none());
    }
    assert_eq!(
        v5_connect_code(addr, "alice-dev", "eve").await,
        Rc::NotAuthorized
    );

    // alice comes back to her session and its queued message.
    let mut alice = V4::start(as_user(addr, "alice-dev", "alice", false));
    assert!(alice.connack().await.unwrap().session_present);
    assert_eq!(&alice.publish_msg().await.unwrap().payload[..], b"queued");

    // While she is connected eve cannot close her connection either.
    for clean in [false, true] {
        let mut eve = V4::start(as_user(addr, "alice-dev", "eve", clean));
        let r = eve.connack().await;
        assert!(refused_code(&r).contains("NotAuthorized"), "{r:?}");
        assert!(eve
            .maybe_publish(Duration::from_millis(200))
            .await
            .is_none());
    }
    assert_eq!(
        v5_connect_code(addr, "alice-dev", "eve").await,
        Rc::NotAuthorized
    );
    publish_acked(&mut feed, "secret/2", b"live").await;
    assert_eq!(&alice.publish_msg().await.unwrap().payload[..], b"live");
    assert_eq!(
        broker
            .metrics()
            .session_owner_refused
            .load(Ordering::Relaxed),
        6
    );
    // The owner herself may still take over her session from another connection.
    let mut again = V4::start(as_user(addr, "alice-dev", "alice", false));
    assert!(again.connack().await.unwrap().session_present);
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn with_new_session_for_other_identity_another_identity_gets_a_clean_session() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, addr) = start(two_users(&dir, true)).await;
    let mut alice = V4::start(as_user(addr, "shared-dev", "alice", false));
    alice.connack().await.unwrap();
    alice.subscribe("secret/#", QoS::AtLeastOnce).await;
    // While alice is connected eve is still refused.
    let mut eve = V4::start(as_user(addr, "shared-dev", "eve", false));
    let r = eve.connack().await;
    assert!(refused_code(&r).contains("NotAuthorized"), "{r:?}");
    drop(alice);
    let mut feed = V4::start(as_user(addr, "alice-feed", "alice", true));
    feed.connack().await.unwrap();
    publish_acked(&mut feed, "secret/1", b"queued").await;

    // Once she is away, eve gets a new session: not alice's, not her subscriptions,
    // not her queued messages, not her live ones.
    let mut eve = V4::start(as_user(addr, "shared-dev", "eve", false));
    assert!(!eve.connack().await.unwrap().session_present);
    publish_acked(&mut feed, "secret/2", b"live").await;
    assert!(eve
        .maybe_publish(Duration::from_millis(500))
        .await
        .is_none());
    drop(eve);
    // And the session is now eve's: alice, in turn, gets a new one.
    let mut alice = V4::start(as_user(addr, "shared-dev", "alice", false));
    assert!(!alice.connack().await.unwrap().session_present);
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_shared_group_name_used_with_another_filter_takes_nothing_from_its_members() {
    use common::v5::{filter, options, V5};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let (broker, addr) = start(tcp_config()).await;
    let mut alice = V5::start(options("sh-alice", addr)).await;
    alice
        .subscribe(filter("$share/workers/jobs/#", Q5::AtLeastOnce))
        .await;
    let mut eve = V5::start(options("sh-eve", addr)).await;
    eve.subscribe(filter("$share/workers/eve-own/#", Q5::AtLeastOnce))
        .await;
    let p = V5::start(options("sh-publisher", addr)).await;
    const N: usize = 20;
    for i in 0..N {
        p.publish("jobs/x", Q5::AtLeastOnce, false, format!("{i}").as_bytes())
            .await;
    }
    for i in 0..N {
        assert_eq!(alice.publish_msg().await.payload, format!("{i}").as_bytes());
    }
    // eve's group shares the name only: it gets its own topics, and alice none of them.
    p.publish("eve-own/1", Q5::AtLeastOnce, false, b"eve's")
        .await;
    assert_eq!(&eve.publish_msg().await.payload[..], b"eve's");
    p.publish("jobs/sentinel", Q5::AtLeastOnce, false, b"sentinel")
        .await;
    assert_eq!(&alice.publish_msg().await.payload[..], b"sentinel");
    // After eve unsubscribes and subscribes again, alice still gets everything.
    eve.client
        .unsubscribe("$share/workers/eve-own/#")
        .await
        .unwrap();
    eve.wait(|x| matches!(x, rumqttc::v5::mqttbytes::v5::Packet::UnsubAck(..)))
        .await;
    eve.subscribe(filter("$share/workers/eve-own/#", Q5::AtLeastOnce))
        .await;
    for i in 0..N {
        p.publish("jobs/y", Q5::AtLeastOnce, false, format!("{i}").as_bytes())
            .await;
    }
    for i in 0..N {
        assert_eq!(alice.publish_msg().await.payload, format!("{i}").as_bytes());
    }
    broker.shutdown(WAIT).await;
}
