//! The test vectors of docs/PROTOCOL.md, checked against this implementation.

use std::collections::HashMap;

use coset::cbor::value::Value;
use coset::{CoseSign1, HeaderBuilder, TaggedCborSerializable};
use ed25519_dalek::pkcs8::DecodePrivateKey;
use sealpost_certs::{parse, Verifier};
use sealpost_protocol::envelope::{
    KIND_BURST_ROOT, LABEL_KIND, LABEL_TREE_SIZE, LABEL_VDP, LABEL_VDS, LABEL_VERSION,
    VDP_INCLUSION, VDS_RFC9162_SHA256, VERSION_BURST,
};
use sealpost_protocol::{
    merkle, ContentKey, KeyLocation, Opener, PublisherIdentity, Sealer, SubscriberIdentity,
};
use sha2::{Digest, Sha256};

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

fn publisher(v: &HashMap<String, String>) -> PublisherIdentity {
    let certificate = parse(&hex(v, "publisher_certificate")).unwrap();
    let key =
        ed25519_dalek::SigningKey::from_pkcs8_der(&hex(v, "publisher_private_key_pkcs8")).unwrap();
    PublisherIdentity::new(certificate, key).unwrap()
}

/// The burst vectors, as `(topic, plaintext, envelope)`.
fn burst(v: &HashMap<String, String>) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let size: usize = v["burst_size"].parse().unwrap();
    (0..size)
        .map(|i| {
            (
                v[&format!("burst_topic_{i}")].clone(),
                hex(v, &format!("burst_plaintext_{i}")),
                hex(v, &format!("burst_envelope_{i}")),
            )
        })
        .collect()
}

#[test]
fn sealing_reproduces_the_burst_and_every_message_opens_alone() {
    let v = vectors();
    let content_key = ContentKey::from_slice(&hex(&v, "content_key")).unwrap();
    let epoch: u64 = v["epoch"].parse().unwrap();
    let published_at: i64 = v["published_at"].parse().unwrap();
    let burst = burst(&v);
    let mut sealer = Sealer::new(
        publisher(&v),
        KeyLocation::key_topic_for("vector-pub"),
        epoch,
        &content_key,
        v["burst_seq"].parse().unwrap(),
    );
    sealer.reserve(burst.len() as u64);
    sealer.set_nonce_salt_for_test_vectors(hex(&v, "nonce_salt").try_into().unwrap());
    let messages: Vec<(&str, &[u8])> = burst
        .iter()
        .map(|(t, p, _)| (t.as_str(), p.as_slice()))
        .collect();
    let sealed = sealer.seal_many(&messages, published_at).unwrap();
    for (i, ((_, _, expected), got)) in burst.iter().zip(&sealed).enumerate() {
        assert_eq!(
            hex::encode(got),
            hex::encode(expected),
            "burst envelope {i} is not byte-identical"
        );
    }
    // Each opens on its own, in reverse order, with only the CA trusted (the publisher
    // certificate learned from the version 1 vector's key message is not needed: it is
    // added directly here).
    let verifier = Verifier::from_ca_der(&hex(&v, "ca_certificate")).unwrap();
    let now = published_at + 60;
    for (topic, plaintext, envelope) in burst.iter().rev() {
        let mut opener = Opener::new(verifier.clone());
        opener.add_key("vector-pub", epoch, content_key.clone());
        opener
            .add_publisher_certificate(&hex(&v, "publisher_certificate"), now)
            .unwrap();
        let opened = opener.open_at(topic, envelope, now).unwrap();
        assert_eq!(&opened.payload, plaintext);
    }
}

/// Recomputes the burst's tree and root signature as PROTOCOL.md describes them, with
/// coset's Sig_structure and a hand-built root header, not with the implementation's
/// encoder.
#[test]
fn the_burst_root_and_its_signature_are_as_documented() {
    let v = vectors();
    let burst = burst(&v);
    let publisher = publisher(&v);
    let mut leaves = Vec::new();
    let mut proofs = Vec::new();
    let mut signatures = Vec::new();
    for (topic, _, envelope) in &burst {
        let sign1 = CoseSign1::from_tagged_slice(envelope).unwrap();
        assert_eq!(
            find(&sign1.protected.header.rest, LABEL_VERSION),
            Some(&Value::Integer(VERSION_BURST.into()))
        );
        leaves.push(merkle::leaf_hash(
            &Sha256::digest(sign1.tbs_data(topic.as_bytes())).into(),
        ));
        let Some(Value::Map(vdp)) = find(&sign1.unprotected.rest, LABEL_VDP) else {
            panic!("no verifiable data proofs");
        };
        let [(Value::Integer(key), Value::Array(inclusion))] = vdp.as_slice() else {
            panic!("not one inclusion proof entry");
        };
        assert_eq!(i128::from(*key), i128::from(VDP_INCLUSION));
        let [Value::Bytes(proof)] = inclusion.as_slice() else {
            panic!("not one inclusion proof");
        };
        proofs.push(ciborium::from_reader::<Value, _>(proof.as_slice()).unwrap());
        signatures.push(sign1.signature.clone());
    }
    let (root, paths) = merkle::root_and_paths(&leaves);
    assert_eq!(hex::encode(root), v["burst_root"]);
    let size = burst.len() as u64;
    for (i, (proof, path)) in proofs.iter().zip(&paths).enumerate() {
        let expected = Value::Array(vec![
            Value::Integer(size.into()),
            Value::Integer((i as u64).into()),
            Value::Array(path.iter().map(|h| Value::Bytes(h.to_vec())).collect()),
        ]);
        assert_eq!(proof, &expected, "inclusion proof {i}");
    }
    assert!(
        signatures.iter().all(|s| *s == signatures[0]),
        "one signature"
    );
    let root_header = HeaderBuilder::new()
        .algorithm(coset::iana::Algorithm::EdDSA)
        .key_id(publisher.certificate().fingerprint.to_vec())
        .value(LABEL_VDS, Value::Integer(VDS_RFC9162_SHA256.into()))
        .value(LABEL_VERSION, Value::Integer(VERSION_BURST.into()))
        .value(LABEL_KIND, Value::Integer(KIND_BURST_ROOT.into()))
        .value(LABEL_TREE_SIZE, Value::Integer(size.into()))
        .build();
    let root_sign1 = coset::CoseSign1Builder::new()
        .protected(root_header)
        .payload(root.to_vec())
        .build();
    let signature = ed25519_dalek::Signature::from_slice(&signatures[0]).unwrap();
    publisher
        .certificate()
        .ed25519_public_key()
        .unwrap()
        .verify_strict(&root_sign1.tbs_data(b""), &signature)
        .expect("the root signature covers the documented Sig_structure");
}

fn find(rest: &[(coset::Label, Value)], label: i64) -> Option<&Value> {
    rest.iter()
        .find(|(l, _)| *l == coset::Label::Int(label))
        .map(|(_, v)| v)
}

/// The HPKE vectors: an X25519 subscriber's key message from the vector publisher. The
/// opener takes the content key from it and then opens `envelope`; independently of the
/// implementation, the entry's parts are the documented ones and a bare RFC 9180 open
/// (the `hpke` crate) with `hpke_info` as `info` and an empty `aad` yields the content key.
#[test]
fn the_hpke_key_message_opens_with_the_documented_construction() {
    use hpke::{aead::AesGcm256, kdf::HkdfSha256, kem::X25519HkdfSha256, Deserializable, Kem};
    let v = vectors();
    let content_key = ContentKey::from_slice(&hex(&v, "content_key")).unwrap();
    let epoch: u64 = v["epoch"].parse().unwrap();
    let published_at: i64 = v["published_at"].parse().unwrap();
    let pem = |k: &str, label: &str| sealpost_certs::pemfile::encode(&hex(&v, k), label);
    let key_pem = pem("hpke_subscriber_private_key_pkcs8", "PRIVATE KEY");
    let subscriber =
        SubscriberIdentity::from_pem(&pem("hpke_subscriber_certificate", "CERTIFICATE"), &key_pem)
            .unwrap();
    assert_eq!(
        subscriber.algorithm(),
        sealpost_protocol::WrapAlgorithm::HpkeX25519Aes256Gcm
    );
    let verifier = Verifier::from_ca_der(&hex(&v, "ca_certificate")).unwrap();
    let mut opener = Opener::new(verifier).with_identity(subscriber);
    let now = published_at + 60;
    let update = opener
        .accept_key_message_at(
            &v["hpke_key_message_topic"],
            &hex(&v, "hpke_key_message"),
            now,
        )
        .unwrap();
    assert_eq!(update.new_epochs, vec![epoch]);
    assert_eq!(
        opener.keyring().get("vector-pub", epoch),
        Some(&content_key)
    );
    let opened = opener
        .open_at(&v["topic"], &hex(&v, "envelope"), now)
        .unwrap();
    assert_eq!(opened.payload, hex(&v, "plaintext"));

    // The entry, taken apart by hand.
    let sign1 = CoseSign1::from_tagged_slice(&hex(&v, "hpke_key_message")).unwrap();
    let body: Value = ciborium::from_reader(sign1.payload.as_deref().unwrap()).unwrap();
    let entry = body.as_array().unwrap()[4].as_array().unwrap()[0]
        .as_array()
        .unwrap()
        .clone();
    let protected = hex(&v, "hpke_recipient_protected");
    assert_eq!(entry[0].as_bytes().unwrap(), &protected);
    let header: Value = ciborium::from_reader(protected.as_slice()).unwrap();
    assert_eq!(
        header,
        Value::Map(vec![
            (Value::Integer(1.into()), Value::Integer((-65601).into())),
            (
                Value::Integer((-65541).into()),
                Value::Integer(epoch.into())
            ),
        ])
    );
    assert_eq!(
        entry[1],
        Value::Map(vec![(
            Value::Integer((-4).into()),
            Value::Bytes(hex(&v, "hpke_ek"))
        )])
    );
    assert_eq!(entry[2].as_bytes().unwrap(), &hex(&v, "hpke_ciphertext"));
    // info = the Recipient_structure, deterministic CBOR.
    let mut info = Vec::new();
    ciborium::into_writer(
        &Value::Array(vec![
            Value::Text("HPKE Recipient".into()),
            Value::Integer(3.into()),
            Value::Bytes(protected),
            Value::Bytes(vec![]),
        ]),
        &mut info,
    )
    .unwrap();
    assert_eq!(info, hex(&v, "hpke_info"));
    // RFC 8410 PKCS#8: the private key is the last 32 bytes (inner OCTET STRING).
    let pkcs8 = hex(&v, "hpke_subscriber_private_key_pkcs8");
    let secret = &pkcs8[pkcs8.len() - 32..];
    let private = <X25519HkdfSha256 as Kem>::PrivateKey::from_bytes(secret).unwrap();
    let encapped = <X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(&hex(&v, "hpke_ek")).unwrap();
    let opened = hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
        &hpke::OpModeR::Base,
        &private,
        &encapped,
        &info,
        &hex(&v, "hpke_ciphertext"),
        &[],
    )
    .unwrap();
    assert_eq!(opened, content_key.as_bytes());
}
