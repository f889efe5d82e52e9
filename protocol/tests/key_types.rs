//! Key wrapping per subscriber key type: RSA-OAEP and HPKE recipients of one publisher, and
//! every rejection of a key-message entry, with entries edited and re-signed by the real
//! publisher key (so the signature check passes and the wrapping checks are what refuse).

mod fixture;

use coset::cbor::value::Value;
use coset::{CoseSign1, CoseSign1Builder, TaggedCborSerializable};
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::Signer;
use fixture::*;
use sealpost_certs::{now_unix, Profile, Validity};
use sealpost_protocol::{
    seal_key_message, ContentKey, KeyRecipient, Opener, PublisherIdentity, Rejected,
    SubscriberIdentity, WrapAlgorithm, COSE_ALG_HPKE_X25519_SHA256_A256GCM_KE,
    COSE_ALG_HPKE_XWING_SHA256_A256GCM_KE,
};

const TOPIC: &str = "sealpost/keys/plant/reader";

struct Parties {
    ca: TestPki,
    publisher: PublisherIdentity,
    signing_key: ed25519_dalek::SigningKey,
    hpke: SubscriberIdentity,
    xwing: SubscriberIdentity,
    rsa: SubscriberIdentity,
}

fn parties() -> Parties {
    let ca = ca();
    let issued = ca
        .ca
        .issue(
            &Profile::Publisher {
                id: "plant".into(),
                topics: vec!["plant/#".into()],
            },
            Validity::days_from_now(1),
        )
        .unwrap();
    let publisher =
        PublisherIdentity::from_pem(&issued.certificate_pem, &issued.private_key_pem).unwrap();
    let signing_key = ed25519_dalek::SigningKey::from_pkcs8_pem(&issued.private_key_pem).unwrap();
    Parties {
        hpke: x25519_subscriber_in(&ca, "reader"),
        xwing: kem_subscriber_in(&ca, "reader", sealpost_certs::SubscriberKey::XWing),
        rsa: subscriber_in(&ca, "reader"),
        ca,
        publisher,
        signing_key,
    }
}

fn key_message(p: &Parties, to: &SubscriberIdentity, epoch: u64, key: &ContentKey) -> Vec<u8> {
    let recipient = KeyRecipient::new(to.certificate().clone()).unwrap();
    seal_key_message(&p.publisher, &recipient, &[(epoch, key)], TOPIC, 1).unwrap()
}

/// Edits the first `COSE_recipient` of a key message (`[protected, unprotected,
/// ciphertext]`) and signs the result again with the publisher's key.
fn edit_entry(p: &Parties, message: &[u8], edit: impl FnOnce(&mut Vec<Value>)) -> Vec<u8> {
    let sign1 = CoseSign1::from_tagged_slice(message).unwrap();
    let mut body: Value = ciborium::from_reader(sign1.payload.as_deref().unwrap()).unwrap();
    let Value::Array(fields) = &mut body else {
        panic!("body")
    };
    let Value::Array(entries) = &mut fields[4] else {
        panic!("entries")
    };
    let Value::Array(entry) = &mut entries[0] else {
        panic!("entry")
    };
    edit(entry);
    let mut payload = Vec::new();
    ciborium::into_writer(&body, &mut payload).unwrap();
    CoseSign1Builder::new()
        .protected(sign1.protected.header)
        .unprotected(sign1.unprotected)
        .payload(payload)
        .create_signature(TOPIC.as_bytes(), |tbs| {
            p.signing_key.sign(tbs).to_bytes().to_vec()
        })
        .build()
        .to_tagged_vec()
        .unwrap()
}

/// Re-encodes a protected header `{1: alg, -65541: epoch}`.
fn protected(alg: i64, epoch: u64) -> Value {
    let map = Value::Map(vec![
        (Value::Integer(1.into()), Value::Integer(alg.into())),
        (
            Value::Integer((-65541).into()),
            Value::Integer(epoch.into()),
        ),
    ]);
    let mut bytes = Vec::new();
    ciborium::into_writer(&map, &mut bytes).unwrap();
    Value::Bytes(bytes)
}

fn bytes_mut(v: &mut Value) -> &mut Vec<u8> {
    match v {
        Value::Bytes(b) => b,
        _ => panic!("not a byte string"),
    }
}

fn ek_mut(entry: &mut [Value]) -> &mut Vec<u8> {
    match &mut entry[1] {
        Value::Map(m) => bytes_mut(&mut m[0].1),
        _ => panic!("unprotected"),
    }
}

fn opener(p: &Parties, who: &SubscriberIdentity) -> Opener {
    Opener::new(verifier(&p.ca)).with_identity(who.clone())
}

#[test]
fn hpke_and_rsa_subscribers_of_one_publisher_both_read() {
    let p = parties();
    assert_eq!(p.hpke.algorithm(), WrapAlgorithm::HpkeX25519Aes256Gcm);
    assert_eq!(p.xwing.algorithm(), WrapAlgorithm::HpkeXWingAes256Gcm);
    assert_eq!(p.rsa.algorithm(), WrapAlgorithm::RsaOaep256);
    let key = ContentKey::generate();
    let mut sealer = sealer(p.publisher.clone(), &key);
    let envelope = sealer.seal("plant/t", b"both", now_unix()).unwrap();
    let mut sizes = Vec::new();
    for who in [&p.hpke, &p.rsa, &p.xwing] {
        let recipient = KeyRecipient::new(who.certificate().clone()).unwrap();
        assert_eq!(recipient.algorithm(), who.algorithm());
        let message = key_message(&p, who, 1, &key);
        sizes.push(message.len());
        let mut opener = opener(&p, who);
        assert_eq!(
            opener
                .accept_key_message(TOPIC, &message)
                .unwrap()
                .new_epochs,
            vec![1]
        );
        assert_eq!(opener.open("plant/t", &envelope).unwrap().payload, b"both");
    }
    // A wrapping opens only for the certificate it was made for, whatever the key type.
    let for_hpke = KeyRecipient::new(p.hpke.certificate().clone())
        .unwrap()
        .wrap(1, &key)
        .unwrap();
    assert_eq!(p.hpke.unwrap(&for_hpke), Ok(key.clone()));
    assert_eq!(p.rsa.unwrap(&for_hpke), Err(Rejected::NotForUs));
    assert_eq!(p.xwing.unwrap(&for_hpke), Err(Rejected::NotForUs));
    // One HPKE entry (32-byte ek + 48-byte ciphertext) against one 256-byte RSA ciphertext,
    // and an X-Wing entry whose ek alone is 1,120 bytes (its certificate is larger too).
    assert!(sizes[0] + 150 < sizes[1], "key message sizes {sizes:?}");
    assert!(sizes[1] + 800 < sizes[2], "key message sizes {sizes:?}");
}

#[test]
fn a_private_key_that_does_not_match_the_certificate_is_refused() {
    let p = parties();
    // An X25519 key that is not the certificate's.
    let cert = p.hpke.certificate().clone();
    let wrong = [7u8; 32];
    assert!(SubscriberIdentity::new_x25519(cert, &wrong).is_err());
    // A key file of one type given with a certificate of another, every pair; and an
    // X-Wing seed that is not the certificate's.
    let issued: Vec<_> = [
        sealpost_certs::SubscriberKey::Rsa,
        sealpost_certs::SubscriberKey::X25519,
        sealpost_certs::SubscriberKey::XWing,
    ]
    .into_iter()
    .map(|key| {
        p.ca.issue_subscriber("r", key, Validity::days_from_now(1))
            .unwrap()
    })
    .collect();
    for (i, cert) in issued.iter().enumerate() {
        for (j, key) in issued.iter().enumerate() {
            assert_eq!(
                SubscriberIdentity::from_pem(&cert.certificate_pem, &key.private_key_pem).is_ok(),
                i == j,
                "certificate {i}, key file {j}"
            );
        }
    }
    let other_seed = sealpost_certs::xwing::private_key_pem(&[9u8; 32]).unwrap();
    assert!(SubscriberIdentity::from_pem(&issued[2].certificate_pem, &other_seed).is_err());
}

#[test]
fn a_key_message_wrapped_for_another_x25519_key_does_not_open() {
    let p = parties();
    let other = x25519_subscriber_in(&p.ca, "other");
    let key = ContentKey::generate();
    let mine = key_message(&p, &p.hpke, 1, &key);
    let theirs = key_message(&p, &other, 1, &key);
    // Their entry, in a message addressed to me (and signed by the publisher).
    let sign1 = CoseSign1::from_tagged_slice(&theirs).unwrap();
    let body: Value = ciborium::from_reader(sign1.payload.as_deref().unwrap()).unwrap();
    let Value::Array(fields) = body else { panic!() };
    let Value::Array(their_entries) = &fields[4] else {
        panic!()
    };
    let their_entry = their_entries[0].clone();
    let forged = edit_entry(&p, &mine, |entry| {
        let Value::Array(e) = their_entry else {
            panic!()
        };
        *entry = e;
    });
    let mut opener = opener(&p, &p.hpke);
    assert_eq!(
        opener.accept_key_message(TOPIC, &forged),
        Err(Rejected::DecryptFailed)
    );
    assert!(!opener.keyring().contains("plant", 1));
}

#[test]
fn every_rejection_of_an_hpke_entry() {
    let p = parties();
    let key = ContentKey::generate();
    let good = key_message(&p, &p.hpke, 1, &key);
    let hpke = COSE_ALG_HPKE_X25519_SHA256_A256GCM_KE;
    type Edit = Box<dyn FnOnce(&mut Vec<Value>)>;
    let cases: Vec<(&str, Edit, Rejected)> = vec![
        (
            "ek bit flipped",
            Box::new(|e| ek_mut(e)[3] ^= 1),
            Rejected::DecryptFailed,
        ),
        (
            "ciphertext bit flipped",
            Box::new(|e| bytes_mut(&mut e[2])[0] ^= 1),
            Rejected::DecryptFailed,
        ),
        (
            "tag bit flipped",
            Box::new(|e| *bytes_mut(&mut e[2]).last_mut().unwrap() ^= 1),
            Rejected::DecryptFailed,
        ),
        (
            "ciphertext truncated",
            Box::new(|e| bytes_mut(&mut e[2]).truncate(40)),
            Rejected::DecryptFailed,
        ),
        (
            "epoch changed (bound by the Recipient_structure)",
            Box::new(move |e| e[0] = protected(hpke, 2)),
            Rejected::DecryptFailed,
        ),
        (
            "ek truncated",
            Box::new(|e| {
                ek_mut(e).pop();
            }),
            Rejected::Malformed("HPKE ek of the wrong length"),
        ),
        (
            "ek removed",
            Box::new(|e| e[1] = Value::Map(vec![])),
            Rejected::Malformed("HPKE recipient without ek"),
        ),
        (
            "another unprotected header",
            Box::new(|e| {
                if let Value::Map(m) = &mut e[1] {
                    m.push((Value::Integer(4.into()), Value::Bytes(b"kid".to_vec())));
                }
            }),
            Rejected::Malformed("COSE_recipient unprotected header"),
        ),
        (
            "algorithm id of RSA-OAEP",
            Box::new(|e| e[0] = protected(-41, 1)),
            Rejected::WrongKeyType {
                key: WrapAlgorithm::HpkeX25519Aes256Gcm,
                entry: WrapAlgorithm::RsaOaep256,
            },
        ),
        (
            "algorithm id of A256GCM",
            Box::new(|e| e[0] = protected(3, 1)),
            Rejected::UnsupportedAlgorithm,
        ),
        (
            "neighbouring private-use algorithm id",
            Box::new(move |e| e[0] = protected(hpke + 1, 1)),
            Rejected::UnsupportedAlgorithm,
        ),
        (
            "the X-Wing algorithm id on an X25519 entry",
            Box::new(move |e| e[0] = protected(COSE_ALG_HPKE_XWING_SHA256_A256GCM_KE, 1)),
            Rejected::WrongKeyType {
                key: WrapAlgorithm::HpkeX25519Aes256Gcm,
                entry: WrapAlgorithm::HpkeXWingAes256Gcm,
            },
        ),
    ];
    for (what, edit, expected) in cases {
        let forged = edit_entry(&p, &good, edit);
        let mut opener = opener(&p, &p.hpke);
        assert_eq!(
            opener.accept_key_message(TOPIC, &forged),
            Err(expected),
            "{what}"
        );
        assert!(!opener.keyring().contains("plant", 1), "{what}");
    }
    // Unedited (but re-signed) it opens: the edits, not the re-signing, were refused.
    let resigned = edit_entry(&p, &good, |_| {});
    let mut opener = opener(&p, &p.hpke);
    assert!(opener.accept_key_message(TOPIC, &resigned).is_ok());
    assert_eq!(opener.keyring().get("plant", 1), Some(&key));
}

#[test]
fn an_rsa_key_is_never_handed_an_hpke_entry() {
    let p = parties();
    let key = ContentKey::generate();
    let good = key_message(&p, &p.rsa, 1, &key);
    let hpke = COSE_ALG_HPKE_X25519_SHA256_A256GCM_KE;
    let forged = edit_entry(&p, &good, move |e| e[0] = protected(hpke, 1));
    let mut opener = opener(&p, &p.rsa);
    assert_eq!(
        opener.accept_key_message(TOPIC, &forged),
        Err(Rejected::WrongKeyType {
            key: WrapAlgorithm::RsaOaep256,
            entry: WrapAlgorithm::HpkeX25519Aes256Gcm,
        })
    );
    // An ek beside an RSA-OAEP ciphertext is malformed.
    let forged = edit_entry(&p, &good, |e| {
        e[1] = Value::Map(vec![(
            Value::Integer((-4).into()),
            Value::Bytes(vec![0; 32]),
        )])
    });
    assert_eq!(
        opener.accept_key_message(TOPIC, &forged),
        Err(Rejected::Malformed("ek in an RSA-OAEP recipient"))
    );
    assert!(!opener.keyring().contains("plant", 1));
    assert_eq!(
        Rejected::WrongKeyType {
            key: WrapAlgorithm::RsaOaep256,
            entry: WrapAlgorithm::HpkeX25519Aes256Gcm,
        }
        .kind(),
        "wrong_key_type"
    );
}
