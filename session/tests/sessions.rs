//! The session state machines against each other, with no network: packets a
//! `PublisherSession` returns are fed to `SubscriberSession`s as a broker would deliver
//! them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealpost_certs::{Profile, Validity};
use sealpost_session::{
    FetchFailure, FetchedKey, KeyFetch, MemoryStore, Outgoing, Packet, PublisherOutput,
    PublisherSession, PublisherSessionConfig, QoS, SessionError, StateStore, SubscriberEvent,
    SubscriberOutput, SubscriberSession, SubscriberSessionConfig,
};
use sealpost_testkit::TestPki;

/// The time now, in unix milliseconds (certificates are issued for now).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The shared test CA ([`TestPki`]) with an empty revocation list, and session
/// configurations from it.
struct Pki {
    ca: TestPki,
    crl: String,
}

impl Pki {
    fn new() -> Pki {
        let ca = TestPki::new("session test CA");
        let crl = ca.crl(&[], 1);
        Pki { ca, crl }
    }

    fn publisher(&self, id: &str) -> PublisherSessionConfig {
        let issued = self.ca.publisher(id, &["plant/#"]);
        let mut config = PublisherSessionConfig::new(
            issued.certificate_pem,
            issued.private_key_pem.to_string(),
            self.ca.ca_pem(),
        );
        config.crl_pem = Some(self.crl.clone());
        config
    }

    /// A subscriber's configuration and its certificate (PEM, to grant).
    fn subscriber(&self, id: &str) -> (SubscriberSessionConfig, String) {
        let issued = self.ca.subscriber(id);
        let mut config = SubscriberSessionConfig::new(
            issued.certificate_pem.clone(),
            issued.private_key_pem.to_string(),
            self.ca.ca_pem(),
        );
        config.crl_pem = Some(self.crl.clone());
        (config, issued.certificate_pem)
    }
}

/// A store that can be made to fail, and whose saves the test can read.
#[derive(Clone, Default)]
struct SharedStore {
    inner: Arc<Mutex<(MemoryStore, bool)>>,
}

impl SharedStore {
    fn saved(&self) -> Option<Vec<u8>> {
        self.inner.lock().unwrap().0.saved.clone()
    }
    fn saves(&self) -> usize {
        self.inner.lock().unwrap().0.saves
    }
    fn fail(&self, fail: bool) {
        self.inner.lock().unwrap().1 = fail;
    }
}

impl StateStore for SharedStore {
    fn save(&mut self, state: &[u8]) -> Result<(), String> {
        let mut inner = self.inner.lock().unwrap();
        if inner.1 {
            return Err("disk full".into());
        }
        inner.0.save(state)
    }
}

fn start(config: PublisherSessionConfig, store: &SharedStore) -> PublisherSession {
    let saved = store.saved();
    let (session, output) =
        PublisherSession::new(config, saved.as_deref(), Box::new(store.clone()), now_ms()).unwrap();
    assert!(output.packets.is_empty(), "nothing dropped: {output:?}");
    session
}

fn publish_one(p: &mut PublisherSession, topic: &str, payload: &[u8]) -> (u64, Packet) {
    let burst = p
        .publish(
            &[Outgoing {
                topic,
                payload,
                qos: QoS::AtLeastOnce,
                retain: false,
            }],
            now_ms(),
        )
        .unwrap();
    assert!(burst.output.packets.is_empty(), "no rotation due");
    burst.envelopes.into_iter().next().unwrap().unwrap()
}

/// Delivers `packets` to `s` as a broker would (those on its key topic, and data).
fn deliver(s: &mut SubscriberSession, packets: &[Packet]) -> SubscriberOutput {
    let mine = format!("/{}", s.id());
    let inputs = packets
        .iter()
        .filter(|p| !p.topic.starts_with("sealpost/keys/") || p.topic.ends_with(&mine))
        .map(|p| sealpost_session::Input::Publish {
            topic: p.topic.clone(),
            payload: p.payload.clone(),
        })
        .collect();
    s.process(inputs, now_ms())
}

fn messages(out: &SubscriberOutput) -> Vec<Vec<u8>> {
    out.events
        .iter()
        .filter_map(|e| match e {
            SubscriberEvent::Message(m) => Some(m.payload.clone()),
            _ => None,
        })
        .collect()
}

fn rejections(out: &SubscriberOutput) -> Vec<&'static str> {
    out.events
        .iter()
        .filter_map(|e| match e {
            SubscriberEvent::Rejected { reason, .. } => Some(reason.kind()),
            _ => None,
        })
        .collect()
}

#[test]
fn granted_reads_others_do_not_and_revoked_reads_nothing_new() {
    let pki = Pki::new();
    let store = SharedStore::default();
    let mut p = start(pki.publisher("plant"), &store);
    assert!(store.saves() >= 1, "a fresh state is saved before use");
    let (alice_config, alice_pem) = pki.subscriber("alice");
    let (bob_config, bob_pem) = pki.subscriber("bob");
    let (eve_config, _) = pki.subscriber("eve");
    let mut alice = SubscriberSession::new(alice_config, None).unwrap();
    let mut bob = SubscriberSession::new(bob_config, None).unwrap();
    let mut eve = SubscriberSession::new(eve_config, None).unwrap();
    assert_eq!(alice.subscriptions(), ["sealpost/keys/+/alice"]);

    let (granted, id) = p.grant_pem(&alice_pem, now_ms()).unwrap();
    assert_eq!(id, "alice");
    let (granted_bob, _) = p.grant_pem(&bob_pem, now_ms()).unwrap();
    // A fresh key that sealed nothing: granting does not rotate.
    assert_eq!(p.epoch(), 1);
    assert_eq!(granted.packets.len(), 1);
    let key_message = &granted.packets[0];
    assert_eq!(key_message.topic, "sealpost/keys/plant/alice");
    assert!(key_message.retain && key_message.qos == QoS::AtLeastOnce);

    let (seq, envelope) = publish_one(&mut p, "plant/line1", b"hello");
    let mut all = granted.packets.clone();
    all.extend(granted_bob.packets.clone());
    all.push(envelope.clone());
    let out = deliver(&mut alice, &all);
    assert_eq!(messages(&out), [b"hello".to_vec()]);
    assert_eq!(out.key_messages, 1);
    assert!(
        out.persist.is_some(),
        "replay window to persist before delivery"
    );
    assert_eq!(messages(&deliver(&mut bob, &all)), [b"hello".to_vec()]);
    // Eve, never granted, gets no key message (nor, with it, the publisher's
    // certificate): the envelope waits, then is rejected.
    let out = deliver(&mut eve, &all);
    assert!(messages(&out).is_empty());
    assert_eq!(out.held, 1);
    let expired = eve.tick(now_ms() + 11_000);
    assert_eq!(rejections(&expired), ["unknown_publisher"]);
    assert_eq!(expired.held, 0);

    // The same envelope again is a replay.
    assert_eq!(rejections(&deliver(&mut alice, &[envelope])), ["replayed"]);

    // Revoking bob clears his key message and rotates; alice gets the new key, bob not.
    let revoked = p.revoke("bob", now_ms()).unwrap();
    assert_eq!(p.epoch(), 2);
    assert!(revoked.keys_changed);
    assert_eq!(revoked.removed, ["bob"]);
    assert_eq!(revoked.packets[0].topic, "sealpost/keys/plant/bob");
    assert!(revoked.packets[0].payload.is_empty() && revoked.packets[0].retain);
    assert_eq!(revoked.rekey.unwrap().key_messages, 1);
    let (seq2, envelope) = publish_one(&mut p, "plant/line1", b"after");
    assert!(seq2 > seq);
    let mut all = revoked.packets.clone();
    all.push(envelope);
    assert_eq!(messages(&deliver(&mut alice, &all)), [b"after".to_vec()]);
    let out = deliver(&mut bob, &all);
    assert!(messages(&out).is_empty());
    assert_eq!(rejections(&bob.tick(now_ms() + 11_000)), ["unknown_key"]);
    assert!(matches!(
        p.revoke("bob", now_ms()),
        Err(SessionError::NotGranted(id)) if id == "bob"
    ));
}

#[test]
fn grant_after_sealing_rotates_and_renewal_does_not() {
    let pki = Pki::new();
    let store = SharedStore::default();
    let mut p = start(pki.publisher("plant"), &store);
    let (_, alice_pem) = pki.subscriber("alice");
    let (_, bob_pem) = pki.subscriber("bob");
    p.grant_pem(&alice_pem, now_ms()).unwrap();
    publish_one(&mut p, "plant/a", b"x");
    let (out, _) = p.grant_pem(&bob_pem, now_ms()).unwrap();
    assert_eq!(
        p.epoch(),
        2,
        "bob must not read what was sealed before his grant"
    );
    assert_eq!(out.packets.len(), 2, "everyone gets the new key");
    publish_one(&mut p, "plant/a", b"y");
    let (out, _) = p.grant_pem(&bob_pem, now_ms()).unwrap();
    assert_eq!(p.epoch(), 2, "a renewal does not rotate");
    assert_eq!(out.packets.len(), 1);
    // Nothing wrapped before is reused for a renewal (it may bring a new key pair); it
    // keeps reading from the epoch it was granted at, so one wrapping.
    assert_eq!(out.rekey.unwrap().wrapped, 1);
}

#[test]
fn sequence_numbers_are_durable_before_use_and_survive_a_restart() {
    let pki = Pki::new();
    let store = SharedStore::default();
    let mut config = pki.publisher("plant");
    config.reserve_block = 10;
    let mut p = start(config.clone(), &store);
    let saves = store.saves();
    let (first, _) = publish_one(&mut p, "plant/a", b"1");
    assert_eq!(store.saves(), saves + 1, "a block reserved");
    for _ in 0..9 {
        publish_one(&mut p, "plant/a", b"n");
    }
    assert_eq!(store.saves(), saves + 1, "one save per block");
    // The next block cannot be saved: nothing is sealed, and nothing changes.
    store.fail(true);
    let next = p.next_seq();
    let failed = p.publish(
        &[Outgoing {
            topic: "plant/a",
            payload: b"lost",
            qos: QoS::AtLeastOnce,
            retain: false,
        }],
        now_ms(),
    );
    assert!(matches!(failed, Err(SessionError::Persist(m)) if m == "disk full"));
    assert_eq!(p.next_seq(), next);
    store.fail(false);
    let (seq, _) = publish_one(&mut p, "plant/a", b"again");
    assert_eq!(seq, next);
    let high_water = sealpost_session::state::PublisherState::from_bytes(&store.saved().unwrap())
        .unwrap()
        .seq_high_water;
    assert!(
        seq < high_water,
        "used numbers are below the persisted mark"
    );
    drop(p);

    // Restarted from the saved bytes: it starts at the mark, never below.
    let mut p = start(config, &store);
    let (after, _) = publish_one(&mut p, "plant/a", b"restarted");
    assert!(after >= high_water && after > first);
}

#[test]
fn failed_save_leaves_grants_and_epoch_unchanged() {
    let pki = Pki::new();
    let store = SharedStore::default();
    let mut p = start(pki.publisher("plant"), &store);
    let (_, alice_pem) = pki.subscriber("alice");
    p.grant_pem(&alice_pem, now_ms()).unwrap();
    store.fail(true);
    assert!(matches!(p.rotate(now_ms()), Err(SessionError::Persist(_))));
    assert!(matches!(
        p.revoke("alice", now_ms()),
        Err(SessionError::Persist(_))
    ));
    assert_eq!(p.epoch(), 1);
    assert_eq!(p.granted(), ["alice"]);
    assert_eq!(p.connected().len(), 1, "alice's key message still current");
}

#[test]
fn a_restart_restores_grants_and_their_key_messages() {
    let pki = Pki::new();
    let store = SharedStore::default();
    let config = pki.publisher("plant");
    let mut p = start(config.clone(), &store);
    let (alice_config, alice_pem) = pki.subscriber("alice");
    p.grant_pem(&alice_pem, now_ms()).unwrap();
    drop(p);
    let mut p = start(config, &store);
    assert_eq!(p.granted(), ["alice"]);
    let mut packets = p.connected();
    assert_eq!(packets.len(), 1);
    packets.push(publish_one(&mut p, "plant/x", b"after restart").1);
    let mut alice = SubscriberSession::new(alice_config, None).unwrap();
    assert_eq!(
        messages(&deliver(&mut alice, &packets)),
        [b"after restart".to_vec()]
    );
}

#[test]
fn a_grant_the_ca_revoked_is_dropped_on_check_and_at_restart() {
    let pki = Pki::new();
    let store = SharedStore::default();
    let config = pki.publisher("plant");
    let mut p = start(config.clone(), &store);
    let issued = pki.ca.issue(Profile::Subscriber {
        id: "mallory".into(),
    });
    p.grant_pem(&issued.certificate_pem, now_ms()).unwrap();
    let info = sealpost_certs::Verifier::new(&pki.ca.certificate_pem())
        .unwrap()
        .verify_pem(&issued.certificate_pem, now_ms() as i64 / 1000)
        .unwrap();
    let crl = pki
        .ca
        .revocation_list(
            &[sealpost_certs::RevokedSerial {
                serial: info.serial.clone(),
                revoked_at: time::OffsetDateTime::now_utc(),
            }],
            2,
            Validity::days_from_now(1),
        )
        .unwrap();
    // At restart, with the new list: dropped, its key message cleared, the key rotated.
    let mut restarted = config.clone();
    restarted.crl_pem = Some(crl.clone());
    let (p2, out): (PublisherSession, PublisherOutput) = PublisherSession::new(
        restarted,
        store.saved().as_deref(),
        Box::new(MemoryStore::default()),
        now_ms(),
    )
    .unwrap();
    assert_eq!(out.removed, ["mallory"]);
    assert_eq!(out.dropped.len(), 1);
    assert!(out.packets[0].payload.is_empty());
    assert!(p2.granted().is_empty());
    assert_eq!(p2.epoch(), 2);
    // While running: the list installed, the check drops it.
    p.set_revocation_list(&crl).unwrap();
    let out = p.check_readers(now_ms()).unwrap();
    assert_eq!(out.removed, ["mallory"]);
    assert!(p.granted().is_empty());
    // A revoked certificate cannot be granted again.
    assert!(matches!(
        p.grant_pem(&issued.certificate_pem, now_ms()),
        Err(SessionError::Certificate(_))
    ));
}

#[test]
fn configuration_fails_closed() {
    let pki = Pki::new();
    let mut config = pki.publisher("plant");
    config.crl_pem = None;
    assert!(matches!(
        PublisherSession::new(
            config.clone(),
            None,
            Box::new(MemoryStore::default()),
            now_ms()
        ),
        Err(SessionError::RevocationListRequired)
    ));
    config.insecure_no_crl = true;
    PublisherSession::new(
        config.clone(),
        None,
        Box::new(MemoryStore::default()),
        now_ms(),
    )
    .expect("explicitly without a list");
    assert!(matches!(
        PublisherSession::new(
            config.clone(),
            Some(b"junk"),
            Box::new(MemoryStore::default()),
            now_ms()
        ),
        Err(SessionError::CorruptState(_))
    ));
    config.key_messages = false;
    let (mut p, _) =
        PublisherSession::new(config, None, Box::new(MemoryStore::default()), now_ms()).unwrap();
    let (_, pem) = pki.subscriber("alice");
    assert!(matches!(
        p.grant_pem(&pem, now_ms()),
        Err(SessionError::KeyMessagesDisabled)
    ));

    let (mut sub, _) = pki.subscriber("alice");
    sub.crl_pem = None;
    assert!(matches!(
        SubscriberSession::new(sub.clone(), None),
        Err(SessionError::RevocationListRequired)
    ));
    sub.crl_pem = Some("not a list".into());
    assert!(matches!(
        SubscriberSession::new(sub.clone(), None),
        Err(SessionError::RevocationList(_))
    ));
    sub.crl_pem = Some(pki.crl.clone());
    assert!(matches!(
        SubscriberSession::new(sub, Some(b"junk")),
        Err(SessionError::CorruptState(_))
    ));
}

#[test]
fn topics_not_permitted_fail_alone_and_resend_keeps_qos1_only() {
    let pki = Pki::new();
    let store = SharedStore::default();
    let mut p = start(pki.publisher("plant"), &store);
    let burst = p
        .publish(
            &[
                Outgoing {
                    topic: "plant/a",
                    payload: b"1",
                    qos: QoS::AtLeastOnce,
                    retain: false,
                },
                Outgoing {
                    topic: "elsewhere/b",
                    payload: b"2",
                    qos: QoS::AtLeastOnce,
                    retain: false,
                },
                Outgoing {
                    topic: "plant/c",
                    payload: b"3",
                    qos: QoS::AtMostOnce,
                    retain: true,
                },
            ],
            now_ms(),
        )
        .unwrap();
    let [a, b, c] = &burst.envelopes[..] else {
        panic!("three results")
    };
    let (seq_a, _) = a.as_ref().unwrap();
    assert!(matches!(b, Err(SessionError::Seal(_))));
    let (seq_c, packet_c) = c.as_ref().unwrap();
    assert_eq!(*seq_c, seq_a + 1, "consecutive numbers for what was sealed");
    assert!(packet_c.retain && packet_c.qos == QoS::AtMostOnce);
    let resend = p.resend();
    assert_eq!(resend.len(), 1);
    assert_eq!(resend[0].topic, "plant/a");
}

#[test]
fn key_lifetime_rotates_on_tick_and_on_publish() {
    let pki = Pki::new();
    let store = SharedStore::default();
    let mut config = pki.publisher("plant");
    config.key_lifetime = Some(Duration::from_secs(60));
    let mut p = start(config, &store);
    let (_, alice_pem) = pki.subscriber("alice");
    p.grant_pem(&alice_pem, now_ms()).unwrap();
    assert!(p.tick(now_ms()).unwrap().packets.is_empty());
    let later = now_ms() + 61_000;
    let out = p.tick(later).unwrap();
    assert_eq!(p.epoch(), 2);
    assert_eq!(out.packets.len(), 1, "alice's new key message");
    let item = [Outgoing {
        topic: "plant/a",
        payload: b"x",
        qos: QoS::AtLeastOnce,
        retain: false,
    }];
    // A burst that cannot reserve its numbers fails before the due rotation, so no key
    // message is built that the shell would never get to send.
    store.fail(true);
    assert!(matches!(
        p.publish(&item, later + 61_000),
        Err(SessionError::Persist(_))
    ));
    assert_eq!(p.epoch(), 2);
    store.fail(false);
    let burst = p.publish(&item, later + 61_000).unwrap();
    assert_eq!(p.epoch(), 3);
    assert_eq!(burst.output.packets.len(), 1, "key message before the data");
}

#[test]
fn replay_window_survives_a_restart_and_data_waits_for_its_key() {
    let pki = Pki::new();
    let store = SharedStore::default();
    let mut p = start(pki.publisher("plant"), &store);
    let (alice_config, alice_pem) = pki.subscriber("alice");
    let (granted, _) = p.grant_pem(&alice_pem, now_ms()).unwrap();
    let (_, envelope) = publish_one(&mut p, "plant/a", b"early");
    let mut alice = SubscriberSession::new(alice_config.clone(), None).unwrap();
    // Data first: held, not rejected; the key message releases it.
    let out = deliver(&mut alice, std::slice::from_ref(&envelope));
    assert!(out.events.is_empty());
    assert_eq!(out.held, 1);
    let out = deliver(&mut alice, &granted.packets);
    assert_eq!(messages(&out), [b"early".to_vec()]);
    let saved = out.persist.expect("persist before delivery");
    // Restarted with the persisted window: the same envelope is a replay.
    let mut alice = SubscriberSession::new(alice_config, Some(&saved)).unwrap();
    let mut again = granted.packets.clone();
    again.push(envelope.clone());
    assert_eq!(rejections(&deliver(&mut alice, &again)), ["replayed"]);
    // A tampered envelope is rejected, never held.
    let mut bytes = envelope.payload.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let out = alice.incoming("plant/a", &bytes, now_ms());
    assert_eq!(out.held, 0);
    assert_eq!(rejections(&out).len(), 1);
    // On another topic than it was signed for: rejected.
    let (_, moved) = publish_one(&mut p, "plant/a", b"moved");
    let out = alice.incoming("plant/b", &moved.payload, now_ms());
    assert_eq!(rejections(&out).len(), 1);
    assert!(messages(&out).is_empty());
}

#[test]
fn kdc_fetches_are_asked_once_and_their_keys_open_the_held_messages() {
    let pki = Pki::new();
    let store = SharedStore::default();
    let mut p = start(pki.publisher("plant"), &store);
    p.set_kdc_address("https://kdc.example:8443");
    let (mut config, _) = pki.subscriber("reader");
    config.certificate_pem.clear();
    config.key_pem.clear();
    config.kdcs = vec![sealpost_session::KdcAccess {
        address: "https://kdc.example:8443".into(),
        reader: "reader".into(),
    }];
    let mut s = SubscriberSession::new(config, None).unwrap();
    assert_eq!(s.id(), "reader");
    assert!(
        s.subscriptions().is_empty(),
        "KDC-only: no key messages to follow"
    );
    let (_, first) = publish_one(&mut p, "plant/a", b"one");
    let (_, second) = publish_one(&mut p, "plant/a", b"two");
    let out = s.incoming("plant/a", &first.payload, now_ms());
    let fetch = KeyFetch {
        kdc: "https://kdc.example:8443".into(),
        publisher: "plant".into(),
        epoch: 1,
    };
    assert_eq!(out.fetches, std::slice::from_ref(&fetch));
    let out = s.incoming("plant/a", &second.payload, now_ms());
    assert!(out.fetches.is_empty(), "one fetch per epoch");
    assert_eq!(out.held, 2);

    // A failure is reported; the messages stay held.
    let failure = FetchFailure {
        transient: true,
        reason: "connection refused".into(),
    };
    let out = s.key_fetched(fetch.clone(), Err(failure.clone()), now_ms());
    assert_eq!(
        out.events,
        [SubscriberEvent::KeyFetchFailed {
            fetch: fetch.clone(),
            failure
        }]
    );
    assert_eq!(out.held, 2);
    // An answer for another publisher is refused.
    let (key_epoch, key) = p.recent_keys().pop().unwrap();
    assert_eq!(key_epoch, 1);
    let der = p.identity().certificate().der.clone();
    let wrong = FetchedKey {
        publisher: "other".into(),
        key: key.clone(),
        certificate_der: der.clone(),
    };
    let out = s.key_fetched(fetch.clone(), Ok(wrong), now_ms());
    assert!(
        matches!(&out.events[..], [SubscriberEvent::KeyFetchFailed { failure, .. }] if !failure.transient)
    );
    // The right key opens both, in order.
    let right = FetchedKey {
        publisher: "plant".into(),
        key,
        certificate_der: der,
    };
    let out = s.key_fetched(fetch, Ok(right), now_ms());
    assert_eq!(messages(&out), [b"one".to_vec(), b"two".to_vec()]);
    assert!(out.persist.is_some());
    assert_eq!(out.held, 0);
}

// The next epoch prepared ahead of time (issue 16: revoke off the wrapping's critical
// path). See session/src/prepared.rs and docs/SECURITY.md, "Prepared epochs".

/// Granted readers, each with its subscriber session, and a publisher that has sealed
/// something under the current key.
fn readers(
    pki: &Pki,
    p: &mut PublisherSession,
    ids: &[&str],
) -> (Vec<SubscriberSession>, Vec<Packet>) {
    let mut sessions = Vec::new();
    let mut packets = Vec::new();
    for id in ids {
        let (config, pem) = pki.subscriber(id);
        sessions.push(SubscriberSession::new(config, None).unwrap());
        packets.extend(p.grant_pem(&pem, now_ms()).unwrap().0.packets);
    }
    packets.push(publish_one(p, "plant/a", b"before").1);
    (sessions, packets)
}

/// The payloads `packets` publish on `subscriber`'s key topic.
fn key_messages_for<'a>(packets: &'a [Packet], subscriber: &str) -> Vec<&'a [u8]> {
    let topic = format!("sealpost/keys/plant/{subscriber}");
    packets
        .iter()
        .filter(|p| p.topic == topic)
        .map(|p| p.payload.as_ref())
        .collect()
}

#[test]
fn a_revoke_publishes_the_prepared_epoch_minus_the_revoked_reader() {
    let pki = Pki::new();
    let store = SharedStore::default();
    let mut p = start(pki.publisher("plant"), &store);
    let (mut subs, before) = readers(&pki, &mut p, &["alice", "bob", "carol"]);
    assert_eq!(p.prepare(now_ms()).unwrap(), 3);
    assert_eq!(p.prepared_readers(), 3);
    assert_eq!(p.prepare(now_ms()).unwrap(), 0, "nothing left to prepare");

    let revoked = p.revoke("bob", now_ms()).unwrap();
    assert_eq!(p.epoch(), 2);
    let rekey = revoked.rekey.unwrap();
    assert_eq!(rekey.key_messages, 2);
    assert_eq!(rekey.prepared, 2, "both remaining messages were ready");
    assert_eq!(rekey.wrapped, 0, "nothing wrapped on the revoke's path");
    // Bob's only packet is the empty retained message that deletes his old key message:
    // the message prepared for him is not published.
    let bobs = key_messages_for(&revoked.packets, "bob");
    assert_eq!(bobs.len(), 1);
    assert!(bobs[0].is_empty());
    assert_eq!(p.prepared_readers(), 0, "the prepared epoch is used up");

    let mut after = revoked.packets.clone();
    after.push(publish_one(&mut p, "plant/a", b"after").1);
    let (alice, rest) = subs.split_first_mut().unwrap();
    let (bob, carol) = rest.split_first_mut().unwrap();
    assert_eq!(messages(&deliver(alice, &before)), [b"before".to_vec()]);
    assert_eq!(messages(&deliver(alice, &after)), [b"after".to_vec()]);
    assert_eq!(
        messages(&deliver(&mut carol[0], &before)),
        [b"before".to_vec()]
    );
    assert_eq!(
        messages(&deliver(&mut carol[0], &after)),
        [b"after".to_vec()]
    );
    assert_eq!(messages(&deliver(bob, &before)), [b"before".to_vec()]);
    assert!(messages(&deliver(bob, &after)).is_empty());
    assert_eq!(rejections(&bob.tick(now_ms() + 11_000)), ["unknown_key"]);
}

#[test]
fn the_prepared_key_is_neither_used_nor_stored_before_the_rotation() {
    let pki = Pki::new();
    let store = SharedStore::default();
    let mut p = start(pki.publisher("plant"), &store);
    let (mut subs, before) = readers(&pki, &mut p, &["alice"]);
    let current = p.connected();
    assert_eq!(p.prepare(now_ms()).unwrap(), 1);
    // Preparing changes nothing that is sent or stored: the same key messages, the
    // same epoch, no second key in the state.
    assert_eq!(p.epoch(), 1);
    assert_eq!(p.connected(), current);
    let state =
        sealpost_session::state::PublisherState::from_bytes(&store.saved().unwrap()).unwrap();
    assert_eq!(state.epoch, 1);
    assert_eq!(state.keys.len(), 1, "the prepared key is not in the state");
    // Sealing goes on under the current key: alice, who holds only epoch 1 (she was
    // given no message of the prepared epoch), opens what is sealed after preparing.
    let (_, sealed) = publish_one(&mut p, "plant/a", b"still epoch 1");
    let alice = &mut subs[0];
    assert_eq!(messages(&deliver(alice, &before)), [b"before".to_vec()]);
    assert_eq!(
        messages(&deliver(alice, &[sealed])),
        [b"still epoch 1".to_vec()]
    );

    // A rotation starts it: stored first, then used.
    let rotated = p.rotate(now_ms()).unwrap();
    assert_eq!(rotated.rekey.unwrap().prepared, 1);
    let state =
        sealpost_session::state::PublisherState::from_bytes(&store.saved().unwrap()).unwrap();
    assert_eq!((state.epoch, state.keys.len()), (2, 2));
    let mut after = rotated.packets.clone();
    after.push(publish_one(&mut p, "plant/a", b"epoch 2").1);
    assert_eq!(messages(&deliver(alice, &after)), [b"epoch 2".to_vec()]);
}

#[test]
fn readers_granted_or_renewed_after_preparing_are_included() {
    let pki = Pki::new();
    let store = SharedStore::default();
    let mut config = pki.publisher("plant");
    // Grants do not rotate here, so the prepared epoch outlives them.
    config.rotate_on_grant = false;
    let mut p = start(config, &store);
    let (mut subs, mut seen) = readers(&pki, &mut p, &["alice", "bob"]);
    assert_eq!(p.prepare(now_ms()).unwrap(), 2);

    // Carol is granted after the preparation: not prepared for yet, added by the next.
    let (carol_config, carol_pem) = pki.subscriber("carol");
    let mut carol = SubscriberSession::new(carol_config, None).unwrap();
    seen.extend(p.grant_pem(&carol_pem, now_ms()).unwrap().0.packets);
    assert_eq!(p.prepared_readers(), 2);
    assert_eq!(p.prepare(now_ms()).unwrap(), 1, "only carol's is built");
    assert_eq!(p.prepared_readers(), 3);
    // Dave is granted and not prepared for before the revoke: his message is built then.
    let (dave_config, dave_pem) = pki.subscriber("dave");
    let mut dave = SubscriberSession::new(dave_config, None).unwrap();
    seen.extend(p.grant_pem(&dave_pem, now_ms()).unwrap().0.packets);
    // Alice renews her certificate (a new key pair): what was prepared for the old one
    // is not used.
    let (alice_renewed, alice_pem) = pki.subscriber("alice");
    subs[0] = SubscriberSession::new(alice_renewed, None).unwrap();
    seen.extend(p.grant_pem(&alice_pem, now_ms()).unwrap().0.packets);
    assert_eq!(p.prepared_readers(), 2, "bob and carol");

    let revoked = p.revoke("bob", now_ms()).unwrap();
    let rekey = revoked.rekey.unwrap();
    assert_eq!(rekey.key_messages, 3);
    assert_eq!(rekey.prepared, 1, "carol's");
    assert_eq!(
        rekey.wrapped, 2,
        "the new epoch for alice's new key and for dave"
    );
    seen.extend(revoked.packets);
    seen.push(publish_one(&mut p, "plant/a", b"after").1);
    for reader in [&mut subs[0], &mut carol, &mut dave] {
        let read = messages(&deliver(reader, &seen));
        assert_eq!(read.last().unwrap(), b"after", "{}", reader.id());
    }
    assert!(!messages(&deliver(&mut subs[1], &seen)).contains(&b"after".to_vec()));
}

#[test]
fn preparations_overtaken_by_revokes_are_refused() {
    let pki = Pki::new();
    let store = SharedStore::default();
    let mut p = start(pki.publisher("plant"), &store);
    let (mut subs, mut seen) = readers(&pki, &mut p, &["alice", "bob", "carol", "dave"]);

    // A preparation runs on another thread while bob is revoked: it was made for a
    // reader set that included bob, so its result is refused, not installed.
    let work = p.preparation(now_ms()).unwrap();
    assert_eq!(work.readers(), 4);
    let worker = std::thread::spawn(move || work.run());
    let revoked = p.revoke("bob", now_ms()).unwrap();
    assert_eq!(revoked.rekey.unwrap().prepared, 0);
    seen.extend(revoked.packets);
    // The next epoch's preparation has started meanwhile: the late result (made for
    // the epoch the revoke started, bob among its readers) must not land in it.
    let next = p.preparation(now_ms()).unwrap();
    let late = worker.join().unwrap();
    assert_eq!(p.install_prepared(late).unwrap(), 0);
    assert_eq!(p.prepared_readers(), 0);
    assert_eq!(p.install_prepared(next.run()).unwrap(), 3);

    // Two revokes back to back: the first takes the prepared epoch, the second (nothing
    // prepared for its epoch) builds its own.
    assert_eq!(p.prepared_readers(), 3);
    assert!(p.preparation(now_ms()).is_none(), "everything prepared");
    let first = p.revoke("carol", now_ms()).unwrap();
    let again = p.revoke("dave", now_ms()).unwrap();
    assert_eq!((p.epoch(), first.rekey.unwrap().prepared), (4, 2));
    assert_eq!(again.rekey.unwrap().prepared, 0);
    assert_eq!(again.rekey.unwrap().wrapped, 1, "alice's");
    seen.extend(first.packets);
    seen.extend(again.packets);
    seen.push(publish_one(&mut p, "plant/a", b"after").1);
    // No revoked reader was ever sent a key message of an epoch after its revocation:
    // each got exactly one packet since, the empty one deleting its key message.
    for id in ["bob", "carol", "dave"] {
        let published = key_messages_for(&seen, id);
        assert!(published.last().unwrap().is_empty(), "{id}");
    }
    let read: Vec<Vec<Vec<u8>>> = subs
        .iter_mut()
        .map(|s| messages(&deliver(s, &seen)))
        .collect();
    assert_eq!(read[0], [b"before".to_vec(), b"after".to_vec()]);
    for other in &read[1..] {
        assert_eq!(other, &[b"before".to_vec()]);
    }
}
