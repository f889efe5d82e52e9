//! Every way the opener refuses a message, one test each.

mod fixture;

use coset::cbor::value::Value;
use coset::{CoseSign1, Label, TaggedCborSerializable};
use fixture::*;
use sealpost_certs::{now_unix, parse, RevokedSerial, Validity};
use sealpost_protocol::envelope::{LABEL_CWT_CLAIMS, LABEL_KEY_INDEX, LABEL_SEQ, LABEL_VERSION};
use sealpost_protocol::{
    seal_key_message, seal_key_message_wrapped, ContentKey, KeyLocation, KeyRecipient, Opener,
    Rejected, SealError, Sealer,
};
use time::{Duration, OffsetDateTime};

#[test]
fn round_trip() {
    let mut w = world();
    let env = w.sealer.seal("plant/7/temp", b"21.5C", now_unix()).unwrap();
    let opened = w.opener.open("plant/7/temp", &env).unwrap();
    assert_eq!(opened.payload, b"21.5C");
    assert_eq!(
        (opened.publisher.as_str(), opened.seq, opened.epoch),
        ("plant", 0, 1)
    );
    assert_eq!(opened.topic, "plant/7/temp");
    // The ciphertext does not contain the plaintext.
    assert!(!env.windows(5).any(|w| w == b"21.5C"));
}

#[test]
fn empty_and_large_payloads() {
    let mut w = world();
    for len in [0usize, 1, 65_536] {
        let payload = vec![7u8; len];
        let env = w.sealer.seal("plant/x", &payload, now_unix()).unwrap();
        assert_eq!(w.opener.open("plant/x", &env).unwrap().payload, payload);
    }
}

#[test]
fn malformed_random_and_truncated_input() {
    let mut w = world();
    let env = w.sealer.seal("plant/t", b"hello", now_unix()).unwrap();
    for len in 0..env.len() {
        let r = w.opener.open("plant/t", &env[..len]);
        assert!(matches!(r, Err(Rejected::Malformed(_))), "len {len}: {r:?}");
    }
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for n in 0..200 {
        let bytes: Vec<u8> = (0..n * 3)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(w.opener.open("plant/t", &bytes).is_err());
    }
    // Still opens the genuine one afterwards: nothing was lost.
    assert_eq!(w.opener.open("plant/t", &env).unwrap().payload, b"hello");
}

#[test]
fn oversized_is_refused_before_parsing() {
    let mut w = world();
    let env = w.sealer.seal("plant/t", &[0u8; 2000], now_unix()).unwrap();
    let mut small = Opener::new(verifier(&w.ca))
        .with_identity(w.subscriber.clone())
        .with_max_envelope(1000);
    assert!(matches!(
        small.open("plant/t", &env),
        Err(Rejected::Oversized { limit: 1000, .. })
    ));
    assert!(w.opener.open("plant/t", &env).is_ok());
}

/// Re-encodes an envelope after changing its protected header (the signature no longer
/// matches, but these checks come before signature verification).
fn with_header(env: &[u8], change: impl FnOnce(&mut coset::Header)) -> Vec<u8> {
    let mut sign1 = CoseSign1::from_tagged_slice(env).unwrap();
    change(&mut sign1.protected.header);
    sign1.protected.original_data = None;
    sign1.to_tagged_vec().unwrap()
}

fn set(header: &mut coset::Header, label: i64, value: Value) {
    for (l, v) in header.rest.iter_mut() {
        if *l == Label::Int(label) {
            *v = value;
            return;
        }
    }
    panic!("no label {label}");
}

#[test]
fn unknown_version() {
    let mut w = world();
    for version in [1, 2] {
        w.sealer.set_wire_version(version).unwrap();
        let env = w.sealer.seal("plant/t", b"x", now_unix()).unwrap();
        let v3 = with_header(&env, |h| set(h, LABEL_VERSION, Value::Integer(3.into())));
        assert_eq!(
            w.opener.open("plant/t", &v3),
            Err(Rejected::UnknownVersion(3))
        );
    }
    assert_eq!(
        w.sealer.set_wire_version(3),
        Err(sealpost_protocol::SealError::UnsupportedVersion(3))
    );
}

/// A version 1 envelope relabelled as version 2 has no inclusion proof, and its signature
/// is over itself, not a burst root: refused, whichever way it is read.
#[test]
fn a_version_1_envelope_relabelled_as_version_2_is_refused() {
    let mut w = world();
    w.sealer.set_wire_version(1).unwrap();
    let env = w.sealer.seal("plant/t", b"x", now_unix()).unwrap();
    let relabelled = with_header(&env, |h| set(h, LABEL_VERSION, Value::Integer(2.into())));
    assert!(matches!(
        w.opener.open("plant/t", &relabelled),
        Err(Rejected::Malformed(_))
    ));
}

#[test]
fn unsupported_algorithm() {
    let mut w = world();
    let env = w.sealer.seal("plant/t", b"x", now_unix()).unwrap();
    let es256 = with_header(&env, |h| {
        h.alg = Some(coset::Algorithm::Assigned(coset::iana::Algorithm::ES256))
    });
    assert_eq!(
        w.opener.open("plant/t", &es256),
        Err(Rejected::UnsupportedAlgorithm)
    );
}

#[test]
fn missing_headers_are_malformed() {
    let mut w = world();
    let env = w.sealer.seal("plant/t", b"x", now_unix()).unwrap();
    for label in [LABEL_SEQ, LABEL_KEY_INDEX] {
        let stripped = with_header(&env, |h| h.rest.retain(|(l, _)| *l != Label::Int(label)));
        assert!(matches!(
            w.opener.open("plant/t", &stripped),
            Err(Rejected::Malformed(_))
        ));
    }
}

#[test]
fn replayed_and_too_old() {
    let mut w = world();
    let first = w.sealer.seal("plant/t", b"1", now_unix()).unwrap();
    let second = w.sealer.seal("plant/t", b"2", now_unix()).unwrap();
    // Out of order is fine, once.
    assert!(w.opener.open("plant/t", &second).is_ok());
    assert!(w.opener.open("plant/t", &first).is_ok());
    assert_eq!(
        w.opener.open("plant/t", &first),
        Err(Rejected::Replayed {
            publisher: "plant".into(),
            seq: 0
        })
    );
    assert!(matches!(
        w.opener.open("plant/t", &second),
        Err(Rejected::Replayed { seq: 1, .. })
    ));
    // Seen, then far older than the window: refused.
    let old = w.sealer.seal("plant/t", b"old", now_unix()).unwrap();
    assert!(w.opener.open("plant/t", &old).is_ok());
    let skipped: Vec<_> = (0..sealpost_protocol::replay::WINDOW + 5)
        .map(|_| w.sealer.seal("plant/t", b"", now_unix()).unwrap())
        .collect();
    let newest = w.sealer.seal("plant/t", b"new", now_unix()).unwrap();
    assert!(w.opener.open("plant/t", &newest).is_ok());
    assert!(matches!(
        w.opener.open("plant/t", &old),
        Err(Rejected::Replayed { .. })
    ));
    // Never seen, and out of the window by now (a broker that delivers it again long
    // after a lost first delivery): accepted once.
    assert!(w.opener.open("plant/t", &skipped[0]).is_ok());
    assert!(matches!(
        w.opener.open("plant/t", &skipped[0]),
        Err(Rejected::Replayed { .. })
    ));
}

#[test]
fn replay_state_survives_a_restart() {
    let mut w = world();
    let env = w.sealer.seal("plant/t", b"once", now_unix()).unwrap();
    w.opener.open("plant/t", &env).unwrap();
    let saved = w.opener.replay_state().to_bytes();
    let mut restarted = Opener::new(verifier(&w.ca)).with_identity(w.subscriber.clone());
    restarted.add_key("plant", 1, w.key.clone());
    restarted
        .add_publisher_certificate(&w.sealer.identity().certificate().der, now_unix())
        .unwrap();
    restarted.set_replay_state(sealpost_protocol::ReplayState::from_bytes(&saved).unwrap());
    assert!(matches!(
        restarted.open("plant/t", &env),
        Err(Rejected::Replayed { .. })
    ));
}

#[test]
fn unknown_publisher_is_retryable_until_its_certificate_arrives() {
    let w = world();
    let ca = w.ca;
    let other = publisher_in(&ca, "boiler", &["boiler/#"], Validity::days_from_now(1));
    let mut sealer = sealer(other.clone(), &w.key);
    let env = sealer.seal("boiler/t", b"x", now_unix()).unwrap();
    let mut opener = Opener::new(verifier(&ca));
    let err = opener.open("boiler/t", &env).unwrap_err();
    assert_eq!(
        err,
        Rejected::UnknownPublisher {
            publisher: "boiler".into()
        }
    );
    assert!(err.is_retryable());
    opener
        .add_publisher_certificate(&other.certificate().der, now_unix())
        .unwrap();
    let err = opener.open("boiler/t", &env).unwrap_err();
    assert!(matches!(err, Rejected::UnknownKey { epoch: 1, .. }) && err.is_retryable());
    opener.add_key("boiler", 1, w.key.clone());
    assert_eq!(opener.open("boiler/t", &env).unwrap().payload, b"x");
}

#[test]
fn forged_publisher_from_another_ca_is_untrusted() {
    let mut w = world();
    let rogue_ca = ca();
    // Same id and topics as the real publisher, certificate from another CA.
    let forger = publisher_in(&rogue_ca, "plant", &["plant/#"], Validity::days_from_now(1));
    let mut sealer = sealer(forger, &w.key);
    sealer.set_embed_certificate(true);
    let env = sealer.seal("plant/t", b"forged", now_unix()).unwrap();
    assert!(matches!(
        w.opener.open("plant/t", &env),
        Err(Rejected::UntrustedPublisher(_))
    ));
}

#[test]
fn envelope_claiming_another_publisher_is_untrusted() {
    let mut w = world();
    let env = w.sealer.seal("plant/t", b"x", now_unix()).unwrap();
    let lying = with_header(&env, |h| {
        let index = Value::Array(vec![
            Value::Text("someone-else".into()),
            Value::Integer(1.into()),
            Value::Text(KeyLocation::key_topic_for("plant").to_wire()),
        ]);
        set(h, LABEL_KEY_INDEX, index)
    });
    assert!(matches!(
        w.opener.open("plant/t", &lying),
        Err(Rejected::UntrustedPublisher(_))
    ));
}

#[test]
fn expired_and_not_yet_valid_publisher_certificates() {
    let w = world();
    let now = OffsetDateTime::now_utc();
    let past = Validity {
        not_before: now - Duration::days(5),
        not_after: now - Duration::days(1),
    };
    let expired = publisher_in(&w.ca, "old", &["old/#"], past);
    let mut s = sealer(expired, &w.key);
    s.set_embed_certificate(true);
    let env = s.seal("old/t", b"x", now_unix()).unwrap();
    let mut opener = Opener::new(verifier(&w.ca));
    opener.add_key("old", 1, w.key.clone());
    assert_eq!(
        opener.open("old/t", &env),
        Err(Rejected::Expired("old".into()))
    );

    // A certificate that was valid when learned is re-checked at every message (each
    // sealed at the time it is opened, so that only the certificate is out of date).
    let mut w = world();
    let far_future = now_unix() + 400 * 86_400;
    let env = w.sealer.seal("plant/t", b"x", far_future).unwrap();
    assert_eq!(
        w.opener.open_at("plant/t", &env, far_future),
        Err(Rejected::Expired("plant".into()))
    );
    let before = now_unix() - 86_400;
    let env = w.sealer.seal("plant/t", b"x", before).unwrap();
    assert_eq!(
        w.opener.open_at("plant/t", &env, before),
        Err(Rejected::Expired("plant".into()))
    );
    let env = w.sealer.seal("plant/t", b"x", now_unix()).unwrap();
    assert!(w.opener.open("plant/t", &env).is_ok());
}

#[test]
fn revoked_publisher_is_refused() {
    let mut w = world();
    let env = w.sealer.seal("plant/t", b"x", now_unix()).unwrap();
    let serial = parse(&w.sealer.identity().certificate().der)
        .unwrap()
        .serial;
    let crl =
        w.ca.revocation_list(
            &[RevokedSerial {
                serial,
                revoked_at: OffsetDateTime::now_utc(),
            }],
            2,
            Validity::days_from_now(1),
        )
        .unwrap();
    w.opener.verifier_mut().set_revocation_list(&crl).unwrap();
    assert_eq!(
        w.opener.open("plant/t", &env),
        Err(Rejected::Revoked("plant".into()))
    );
}

#[test]
fn topic_not_permitted_by_the_publisher_certificate() {
    let mut w = world();
    // The sealer refuses to seal outside its certificate.
    assert_eq!(
        w.sealer.seal("boiler/t", b"x", now_unix()),
        Err(SealError::TopicNotPermitted("boiler/t".into()))
    );
    // A message moved by someone to a topic outside the certificate.
    let env = w.sealer.seal("plant/t", b"x", now_unix()).unwrap();
    assert_eq!(
        w.opener.open("boiler/t", &env),
        Err(Rejected::TopicNotPermitted {
            publisher: "plant".into(),
            topic: "boiler/t".into()
        })
    );
}

#[test]
fn republished_on_another_permitted_topic_fails_the_signature() {
    let mut w = world();
    let env = w.sealer.seal("plant/7/temp", b"x", now_unix()).unwrap();
    assert_eq!(
        w.opener.open("plant/8/temp", &env),
        Err(Rejected::BadSignature)
    );
    // Nothing was recorded: it still opens on its own topic.
    assert!(w.opener.open("plant/7/temp", &env).is_ok());
}

#[test]
fn tampered_signature_and_ciphertext() {
    let mut w = world();
    let env = w.sealer.seal("plant/t", b"payload!", now_unix()).unwrap();
    let mut sig = env.clone();
    let last = sig.len() - 1;
    sig[last] ^= 1;
    assert_eq!(w.opener.open("plant/t", &sig), Err(Rejected::BadSignature));
    // The ciphertext sits inside the signed payload.
    let sign1 = CoseSign1::from_tagged_slice(&env).unwrap();
    let inner = sign1.payload.unwrap();
    let pos = env
        .windows(inner.len())
        .position(|w| w == inner.as_slice())
        .unwrap();
    let mut ct = env.clone();
    ct[pos + inner.len() - 3] ^= 0x40;
    assert_eq!(w.opener.open("plant/t", &ct), Err(Rejected::BadSignature));
    assert!(w.opener.open("plant/t", &env).is_ok());
}

#[test]
fn unknown_key_epoch() {
    let mut w = world();
    w.sealer.set_key(2, &ContentKey::generate());
    let env = w.sealer.seal("plant/t", b"x", now_unix()).unwrap();
    let err = w.opener.open("plant/t", &env).unwrap_err();
    assert_eq!(
        err,
        Rejected::UnknownKey {
            publisher: "plant".into(),
            epoch: 2,
            location: KeyLocation::key_topic_for("plant")
        }
    );
}

#[test]
fn wrong_key_fails_decryption() {
    let mut w = world();
    // A correctly signed envelope that claims epoch 1 but was encrypted under another key.
    w.sealer.set_key(1, &ContentKey::generate());
    let env = w.sealer.seal("plant/t", b"x", now_unix()).unwrap();
    assert_eq!(w.opener.open("plant/t", &env), Err(Rejected::DecryptFailed));
}

#[test]
fn key_message_for_someone_else_or_tampered_or_forged() {
    let w = world();
    let publisher = w.sealer.identity().clone();
    let other = subscriber_in(&w.ca, "other");
    let topic = "sealpost/keys/plant/other";
    let key = ContentKey::generate();
    let for_other = seal_key_message(
        &publisher,
        &KeyRecipient::new(other.certificate().clone()).unwrap(),
        &[(2, &key)],
        topic,
        5,
    )
    .unwrap();
    let mut opener = Opener::new(verifier(&w.ca)).with_identity(w.subscriber.clone());
    assert_eq!(
        opener.accept_key_message(topic, &for_other),
        Err(Rejected::NotForUs)
    );

    let mine = KeyRecipient::new(w.subscriber.certificate().clone()).unwrap();
    let good = seal_key_message(
        &publisher,
        &mine,
        &[(2, &key)],
        "sealpost/keys/plant/reader",
        5,
    )
    .unwrap();
    // Moved to another topic: the signature covers the topic.
    assert_eq!(
        opener.accept_key_message("sealpost/keys/plant/x", &good),
        Err(Rejected::BadSignature)
    );
    let mut tampered = good.clone();
    let n = tampered.len();
    tampered[n - 10] ^= 1;
    assert_eq!(
        opener.accept_key_message("sealpost/keys/plant/reader", &tampered),
        Err(Rejected::BadSignature)
    );
    for len in [0, 1, good.len() / 2, good.len() - 1] {
        assert!(opener
            .accept_key_message("sealpost/keys/plant/reader", &good[..len])
            .is_err());
    }
    // From another CA.
    let rogue = publisher_in(&ca(), "plant", &["plant/#"], Validity::days_from_now(1));
    let forged =
        seal_key_message(&rogue, &mine, &[(2, &key)], "sealpost/keys/plant/reader", 5).unwrap();
    assert!(matches!(
        opener.accept_key_message("sealpost/keys/plant/reader", &forged),
        Err(Rejected::UntrustedPublisher(_))
    ));
    assert!(!opener.keyring().contains("plant", 2));
    let update = opener
        .accept_key_message("sealpost/keys/plant/reader", &good)
        .unwrap();
    assert_eq!(update.new_epochs, vec![2]);
    assert_eq!(update.issued_at, 5);
    // An opener without an RSA identity cannot take key messages.
    let mut kdc_only = Opener::new(verifier(&w.ca));
    assert_eq!(
        kdc_only.accept_key_message("sealpost/keys/plant/reader", &good),
        Err(Rejected::NotForUs)
    );
}

#[test]
fn recent_epochs_are_kept_across_a_rotation() {
    let mut w = world();
    let in_flight = w.sealer.seal("plant/t", b"epoch 1", now_unix()).unwrap();
    let key2 = ContentKey::generate();
    w.sealer.set_key(2, &key2);
    let recipient = KeyRecipient::new(w.subscriber.certificate().clone()).unwrap();
    let topic = "sealpost/keys/plant/reader";
    let msg = seal_key_message(
        w.sealer.identity(),
        &recipient,
        &[(1, &w.key), (2, &key2)],
        topic,
        9,
    )
    .unwrap();
    assert_eq!(
        w.opener.accept_key_message(topic, &msg).unwrap().new_epochs,
        vec![2]
    );
    let after = w.sealer.seal("plant/t", b"epoch 2", now_unix()).unwrap();
    assert_eq!(
        w.opener.open("plant/t", &after).unwrap().payload,
        b"epoch 2"
    );
    assert_eq!(
        w.opener.open("plant/t", &in_flight).unwrap().payload,
        b"epoch 1"
    );
}

#[test]
fn reused_wrappings_open_across_rotations_and_stay_with_their_certificate() {
    let mut w = world();
    let publisher = w.sealer.identity().clone();
    let recipient = KeyRecipient::new(w.subscriber.certificate().clone()).unwrap();
    let topic = "sealpost/keys/plant/reader";
    // Epoch 2 wrapped once, as a publisher does at one rotation...
    let key2 = ContentKey::generate();
    let wrapped2 = recipient.wrap(2, &key2).unwrap();
    assert_eq!(wrapped2.epoch(), 2);
    assert!(!format!("{wrapped2:?}").contains("ciphertext"));
    let first = seal_key_message_wrapped(&publisher, &recipient, &[&wrapped2], topic, 7).unwrap();
    assert_eq!(
        w.opener
            .accept_key_message(topic, &first)
            .unwrap()
            .new_epochs,
        vec![2]
    );
    // ...and reused at the next one, beside the only new wrapping (epoch 3).
    let key3 = ContentKey::generate();
    let wrapped3 = recipient.wrap(3, &key3).unwrap();
    let second =
        seal_key_message_wrapped(&publisher, &recipient, &[&wrapped2, &wrapped3], topic, 8)
            .unwrap();
    // A subscriber that missed the first message gets both epochs from the second.
    let mut late = Opener::new(verifier(&w.ca)).with_identity(w.subscriber.clone());
    assert_eq!(
        late.accept_key_message(topic, &second).unwrap().new_epochs,
        vec![2, 3]
    );
    w.sealer.set_key(3, &key3);
    let env = w.sealer.seal("plant/t", b"epoch 3", now_unix()).unwrap();
    assert_eq!(late.open("plant/t", &env).unwrap().payload, b"epoch 3");

    // A wrapping belongs to the certificate it was made for: not another subscriber's,
    // nor a renewed certificate of the same subscriber.
    let other = KeyRecipient::new(subscriber_in(&w.ca, "other").certificate().clone()).unwrap();
    let renewed = KeyRecipient::new(subscriber_in(&w.ca, "reader").certificate().clone()).unwrap();
    for wrong in [&other, &renewed] {
        assert!(matches!(
            seal_key_message_wrapped(&publisher, wrong, &[&wrapped3], topic, 8),
            Err(SealError::Wrap { .. })
        ));
    }
    assert!(matches!(
        seal_key_message_wrapped(&publisher, &recipient, &[], topic, 8),
        Err(SealError::Wrap { .. })
    ));
}

#[test]
fn sequence_numbers_come_only_from_reservations() {
    let w = world();
    let mut s = Sealer::new(
        w.sealer.identity().clone(),
        KeyLocation::key_topic_for("plant"),
        1,
        &w.key,
        500,
    );
    assert_eq!(
        s.seal("plant/t", b"x", now_unix()),
        Err(SealError::SequenceExhausted)
    );
    assert_eq!(s.reserve(2), 502);
    s.seal("plant/t", b"x", now_unix()).unwrap();
    s.seal("plant/t", b"x", now_unix()).unwrap();
    assert_eq!(
        s.seal("plant/t", b"x", now_unix()),
        Err(SealError::SequenceExhausted)
    );
    assert_eq!(s.next_seq(), 502);
}

#[test]
fn batch_matches_single_path() {
    let mut w = world();
    let mut items = Vec::new();
    for i in 0..20u8 {
        items.push(w.sealer.seal("plant/b", &[i], now_unix()).unwrap());
    }
    let mut bad = items[5].clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let mut inputs: Vec<(&str, &[u8])> = items.iter().map(|e| ("plant/b", e.as_slice())).collect();
    inputs[5] = ("plant/b", &bad);
    inputs.push(("plant/b", &items[3])); // duplicate inside the batch
    inputs.push(("other/b", &items[4])); // wrong topic
    let results = w.opener.open_batch(&inputs, now_unix());
    assert_eq!(results.len(), 22);
    for (i, r) in results.iter().enumerate().take(20) {
        if i == 5 {
            assert_eq!(r, &Err(Rejected::BadSignature));
        } else {
            assert_eq!(r.as_ref().unwrap().payload, vec![i as u8]);
        }
    }
    assert!(matches!(
        results[20],
        Err(Rejected::Replayed { seq: 3, .. })
    ));
    assert!(matches!(
        results[21],
        Err(Rejected::TopicNotPermitted { .. })
    ));
    // The genuine 5th still opens afterwards.
    assert_eq!(
        w.opener.open("plant/b", &items[5]).unwrap().payload,
        vec![5]
    );
}

#[test]
fn envelopes_older_than_the_maximum_age_are_stale() {
    let mut w = world();
    let now = now_unix();
    let day = 86_400;
    let old = w.sealer.seal("plant/t", b"old", now - day - 1).unwrap();
    assert_eq!(
        w.opener.open_at("plant/t", &old, now),
        Err(Rejected::Stale {
            publisher: "plant".into(),
            published_at: (now - day - 1) as u64,
        })
    );
    assert_eq!(
        w.opener.open_at("plant/t", &old, now).unwrap_err().kind(),
        "stale"
    );
    // Just within the default 24 hours.
    let recent = w.sealer.seal("plant/t", b"recent", now - day + 60).unwrap();
    assert_eq!(
        w.opener
            .open_at("plant/t", &recent, now)
            .unwrap()
            .published_at,
        (now - day + 60) as u64
    );
    // A shorter limit, configured.
    let mut strict = Opener::new(verifier(&w.ca))
        .with_identity(w.subscriber.clone())
        .with_max_age(60);
    strict.add_key("plant", 1, w.key.clone());
    let minutes_ago = w.sealer.seal("plant/t", b"x", now - 120).unwrap();
    assert!(matches!(
        strict.open_at("plant/t", &minutes_ago, now),
        Err(Rejected::Stale { .. })
    ));
}

#[test]
fn envelopes_from_beyond_the_clock_skew_are_stale() {
    let mut w = world();
    let now = now_unix();
    let ahead = w.sealer.seal("plant/t", b"ahead", now + 240).unwrap();
    assert!(w.opener.open_at("plant/t", &ahead, now).is_ok());
    let future = w.sealer.seal("plant/t", b"future", now + 3600).unwrap();
    assert!(matches!(
        w.opener.open_at("plant/t", &future, now),
        Err(Rejected::Stale { .. })
    ));
    // Opened an hour later, it is fine.
    assert!(w.opener.open_at("plant/t", &future, now + 3600).is_ok());
}

#[test]
fn envelopes_without_a_valid_publication_time_are_malformed() {
    let mut w = world();
    let env = w.sealer.seal("plant/t", b"x", now_unix()).unwrap();
    let claims = Label::Int(LABEL_CWT_CLAIMS);
    let variants: Vec<Vec<u8>> = vec![
        // No time at all: a version-1 envelope as sealed before the time existed.
        with_header(&env, |h| h.rest.retain(|(l, _)| *l != claims)),
        // Not a map of claims.
        with_header(&env, |h| set(h, LABEL_CWT_CLAIMS, Value::Integer(5.into()))),
        // A claims map without iat.
        with_header(&env, |h| {
            set(
                h,
                LABEL_CWT_CLAIMS,
                Value::Map(vec![(Value::Integer(4.into()), Value::Integer(5.into()))]),
            )
        }),
        // iat plus another claim.
        with_header(&env, |h| {
            set(
                h,
                LABEL_CWT_CLAIMS,
                Value::Map(vec![
                    (Value::Integer(6.into()), Value::Integer(5.into())),
                    (Value::Integer(4.into()), Value::Integer(5.into())),
                ]),
            )
        }),
        // A negative or non-integer time.
        with_header(&env, |h| {
            set(
                h,
                LABEL_CWT_CLAIMS,
                Value::Map(vec![(
                    Value::Integer(6.into()),
                    Value::Integer((-5).into()),
                )]),
            )
        }),
        with_header(&env, |h| {
            set(
                h,
                LABEL_CWT_CLAIMS,
                Value::Map(vec![(Value::Integer(6.into()), Value::Float(1.5))]),
            )
        }),
    ];
    for (i, variant) in variants.iter().enumerate() {
        assert!(
            matches!(
                w.opener.open("plant/t", variant),
                Err(Rejected::Malformed(_))
            ),
            "variant {i}"
        );
    }
    assert!(w.opener.open("plant/t", &env).is_ok());
}

#[test]
fn the_publication_time_is_signed() {
    let mut w = world();
    let now = now_unix();
    let env = w.sealer.seal("plant/t", b"x", now - 2 * 86_400).unwrap();
    // Making an old envelope look fresh breaks the signature.
    let refreshed = with_header(&env, |h| {
        set(
            h,
            LABEL_CWT_CLAIMS,
            Value::Map(vec![(Value::Integer(6.into()), Value::Integer(now.into()))]),
        )
    });
    assert_eq!(
        w.opener.open_at("plant/t", &refreshed, now),
        Err(Rejected::BadSignature)
    );
}
