//! The test vectors of docs/PROTOCOL.md, checked against this implementation.

use std::collections::HashMap;

use ed25519_dalek::pkcs8::DecodePrivateKey;
use sealpost_certs::{parse, Verifier};
use sealpost_protocol::{
    ContentKey, KeyLocation, Opener, PublisherIdentity, Sealer, SubscriberIdentity,
};

fn vectors() -> HashMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let block = doc
        .split("```vectors\n")
        .nth(1)
        .expect("a ```vectors block")
        .split("```")
        .next()
        .unwrap();
    block
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn hex(v: &HashMap<String, String>, k: &str) -> Vec<u8> {
    hex::decode(&v[k]).unwrap_or_else(|_| panic!("{k} is not hex"))
}

#[test]
fn sealing_reproduces_the_envelope_and_it_opens() {
    let v = vectors();
    let publisher_cert = parse(&hex(&v, "publisher_certificate")).unwrap();
    let key =
        ed25519_dalek::SigningKey::from_pkcs8_der(&hex(&v, "publisher_private_key_pkcs8")).unwrap();
    let publisher = PublisherIdentity::new(publisher_cert, key).unwrap();
    let content_key = ContentKey::from_slice(&hex(&v, "content_key")).unwrap();
    let epoch: u64 = v["epoch"].parse().unwrap();
    let seq: u64 = v["seq"].parse().unwrap();
    let published_at: i64 = v["published_at"].parse().unwrap();
    let mut sealer = Sealer::new(
        publisher,
        KeyLocation::key_topic_for("vector-pub"),
        epoch,
        &content_key,
        seq,
    );
    // These vectors are version 1 (one signature per message): still written on request
    // and still read.
    sealer.set_wire_version(1).unwrap();
    sealer.reserve(1);
    sealer.set_nonce_salt_for_test_vectors(hex(&v, "nonce_salt").try_into().unwrap());
    let envelope = sealer
        .seal(&v["topic"], &hex(&v, "plaintext"), published_at)
        .unwrap();
    assert_eq!(
        hex::encode(&envelope),
        v["envelope"],
        "sealing is not byte-identical"
    );

    let verifier = Verifier::from_ca_der(&hex(&v, "ca_certificate")).unwrap();
    let subscriber_cert = parse(&hex(&v, "subscriber_certificate")).unwrap();
    let rsa_key = <rsa::RsaPrivateKey as rsa::pkcs8::DecodePrivateKey>::from_pkcs8_der(&hex(
        &v,
        "subscriber_private_key_pkcs8",
    ))
    .unwrap();
    let subscriber = SubscriberIdentity::new(subscriber_cert, rsa_key).unwrap();
    let mut opener = Opener::new(verifier).with_identity(subscriber);
    // Opened a minute after publication: within every maximum age.
    let now = published_at + 60;
    let update = opener
        .accept_key_message_at(&v["key_message_topic"], &hex(&v, "key_message"), now)
        .unwrap();
    assert_eq!(update.publisher, "vector-pub");
    assert_eq!(update.new_epochs, vec![epoch]);
    assert_eq!(
        opener.keyring().get("vector-pub", epoch),
        Some(&content_key)
    );
    let opened = opener
        .open_at(&v["topic"], &hex(&v, "envelope"), now)
        .unwrap();
    assert_eq!(opened.payload, hex(&v, "plaintext"));
    assert_eq!(
        (opened.seq, opened.epoch, opened.published_at),
        (seq, epoch, published_at as u64)
    );
}
