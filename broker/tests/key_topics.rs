//! Who reads key-message topics (`acl.key_topic_readers`): by default only a key
//! message's recipients, whatever a client subscribed to; live and retained alike.

mod common;

use common::pki::*;
use common::*;
use rumqttc::{Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use sealpost_broker::auth::{add_user, HashCost};
use sealpost_broker::config::{KeyTopicReaders, ListenerKind};
use sealpost_broker::Config;
use sealpost_certs::Profile;
use std::net::SocketAddr;
use std::time::Duration;

const CHEAP: HashCost = HashCost {
    memory_kib: 64,
    iterations: 1,
};

/// The end of each exchange: published by p1 after its key messages.
const MARKER: &str = "plant/1/power";

/// A client subscribed to `#`, and every PUBLISH it received, in order.
struct Reader {
    name: &'static str,
    client: V4,
    seen: Vec<String>,
}

impl Reader {
    /// Connects and subscribes to `#`, which must be granted: a wide subscription is
    /// not refused, it just carries no key messages that are not the client's.
    async fn start(name: &'static str, options: MqttOptions) -> Reader {
        let mut client = V4::start(options);
        client.connack().await.expect(name);
        let mut r = Reader {
            name,
            client,
            seen: Vec::new(),
        };
        r.client
            .client
            .subscribe("#", QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            match r.client.next().await.expect("SUBACK") {
                Event::Incoming(Packet::SubAck(s)) => {
                    assert_eq!(
                        s.return_codes,
                        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)],
                        "{name}"
                    );
                    return r;
                }
                // A retained message may come before the SUBACK.
                Event::Incoming(Packet::Publish(p)) => r.record(&p),
                _ => {}
            }
        }
    }

    fn record(&mut self, p: &rumqttc::Publish) {
        self.seen.push(format!(
            "{} {}",
            p.topic,
            String::from_utf8_lossy(&p.payload)
        ));
    }

    /// Everything up to the marker, and whatever comes shortly after it.
    async fn key_messages(mut self) -> Vec<String> {
        loop {
            let p = self.client.publish_msg().await.expect(self.name);
            self.record(&p);
            if p.topic == MARKER {
                break;
            }
        }
        while let Some(p) = self.client.maybe_publish(Duration::from_millis(300)).await {
            self.record(&p);
        }
        self.seen
            .into_iter()
            .filter(|s| s.starts_with("sealpost/keys/"))
            .collect()
    }
}

/// Starts a broker with `config` (from `pki`, so with a TLS listener); publisher p1
/// leaves a retained key message for alice; then the readers `readers` gives (from the
/// TCP and TLS addresses) subscribe to `#`, and p1 publishes a live key message for
/// alice, one for bob, and the marker. Returns the key messages each reader received.
async fn key_messages_seen(
    pki: &Pki,
    mut config: Config,
    readers: impl FnOnce(SocketAddr, SocketAddr) -> Vec<(&'static str, MqttOptions)>,
) -> Vec<Vec<String>> {
    config.limits.handshake_timeout_ms = 5_000;
    let (broker, addr) = start(config).await;
    let tls_addr = broker.addr(ListenerKind::Tls).unwrap();
    let p1 = pki.issue(Profile::Publisher {
        id: "p1".into(),
        topics: vec!["plant/#".into()],
    });
    let mut publisher = V4::start(tls_options("p1", tls_addr, pki.client_tls(Some(&p1))));
    publisher.connack().await.expect("publisher connects");
    // The publisher reads its own key topics: once its retained key message comes back,
    // the router has stored it.
    publisher
        .subscribe("sealpost/keys/p1/#", QoS::AtLeastOnce)
        .await;
    let client = publisher.client.clone();
    let send = |topic: &'static str, retain: bool, payload: &'static str| {
        let c = client.clone();
        async move {
            c.publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
                .await
                .unwrap()
        }
    };
    send("sealpost/keys/p1/alice", true, "retained key").await;
    let own = publisher.publish_msg().await.expect("own key message");
    assert_eq!(own.topic, "sealpost/keys/p1/alice");
    let mut started = Vec::new();
    for (name, options) in readers(addr, tls_addr) {
        started.push(Reader::start(name, options).await);
    }
    send("sealpost/keys/p1/alice", false, "live key").await;
    send("sealpost/keys/p1/bob", false, "bob's key").await;
    send(MARKER, false, "marker").await;
    let mut seen = Vec::new();
    for r in started {
        seen.push(r.key_messages().await);
    }
    broker.shutdown(WAIT).await;
    seen
}

fn alices() -> Vec<String> {
    vec![
        "sealpost/keys/p1/alice retained key".to_owned(),
        "sealpost/keys/p1/alice live key".to_owned(),
    ]
}

#[tokio::test]
async fn by_default_key_messages_reach_only_the_named_subscriber_certificate() {
    let pki = Pki::new();
    let alice = pki.issue(Profile::Subscriber { id: "alice".into() });
    let eve = pki.issue(Profile::Subscriber { id: "eve".into() });
    // Same id, another role: not the subscriber.
    let alice_client = pki.issue(Profile::Client { id: "alice".into() });
    let config = pki.config(false);
    assert_eq!(config.acl.key_topic_readers, KeyTopicReaders::Recipients);
    let seen = key_messages_seen(&pki, config, |addr, tls| {
        vec![
            ("anonymous", v4_options("spy", addr)),
            (
                "anonymous over TLS",
                tls_options("tls-spy", tls, pki.client_tls(None)),
            ),
            ("eve", tls_options("eve", tls, pki.client_tls(Some(&eve)))),
            (
                "client:alice",
                tls_options("alice-client", tls, pki.client_tls(Some(&alice_client))),
            ),
            (
                "alice",
                tls_options("alice", tls, pki.client_tls(Some(&alice))),
            ),
        ]
    })
    .await;
    let none: Vec<String> = Vec::new();
    assert_eq!(
        seen,
        vec![none.clone(), none.clone(), none.clone(), none, alices()]
    );
}

#[tokio::test]
async fn an_explicit_rule_opens_key_topics_to_a_user_but_a_star_rule_does_not() {
    let pki = Pki::new();
    let mut config = pki.config(false);
    let file = pki.dir().join("passwd");
    for user in ["alice-web", "eve-web"] {
        add_user(&file, user, &format!("{user}-pw"), CHEAP).unwrap();
    }
    config.auth.password_file = Some(file);
    config.acl = toml::from_str(
        r##"
        [[rules]]
        identity = "*"
        publish = ["#"]
        subscribe = ["#"]
        [[rules]]
        identity = "user:alice-web"
        subscribe = ["sealpost/keys/+/alice"]
        "##,
    )
    .unwrap();
    let login = |addr, user: &str| {
        let mut o = v4_options(user, addr);
        o.set_credentials(user, format!("{user}-pw"));
        o
    };
    let seen = key_messages_seen(&pki, config, |addr, _| {
        vec![
            ("anonymous", v4_options("spy", addr)),
            ("eve-web", login(addr, "eve-web")),
            ("alice-web", login(addr, "alice-web")),
        ]
    })
    .await;
    assert_eq!(seen, vec![vec![], vec![], alices()]);
}

#[tokio::test]
async fn key_topic_readers_rules_lets_the_ordinary_rules_decide() {
    let pki = Pki::new();
    let mut config = pki.config(false);
    config.acl = toml::from_str("key_topic_readers = \"rules\"").unwrap();
    let seen = key_messages_seen(&pki, config, |addr, _| {
        vec![("anonymous", v4_options("spy", addr))]
    })
    .await;
    let mut all = alices();
    all.push("sealpost/keys/p1/bob bob's key".to_owned());
    assert_eq!(seen, vec![all]);
}
