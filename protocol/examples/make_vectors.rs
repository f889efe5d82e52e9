//! Prints a fresh set of test vectors in the format of `docs/PROTOCOL.md`.
//!
//! `cargo run -p sealpost-protocol --example make_vectors`
//!
//! Keys are random each run; the envelope is deterministic given them (Ed25519 signatures
//! are deterministic and the nonce is salt || seq), which is what the vector test checks.
//!
//! `cargo run -p sealpost-protocol --example make_vectors -- --burst docs/PROTOCOL.md`
//! prints only the version 2 (burst) vectors, made with the keys of the existing block,
//! so they can be added without changing the version 1 ones.
//!
//! `cargo run -p sealpost-protocol --example make_vectors -- --hpke docs/PROTOCOL.md`
//! prints only the HPKE key-message vectors (an X25519 subscriber), made with the publisher
//! key, content key and epoch of the existing block. The X25519 subscriber certificate is
//! issued by a CA made for the purpose: the vector CA's private key was not kept, and a
//! subscriber never verifies its own certificate.

use coset::TaggedCborSerializable;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use sealpost_certs::{pemfile, CertificateAuthority, Profile, SubscriberKey, Validity};
use sealpost_protocol::{
    merkle, seal_key_message, ContentKey, KeyLocation, KeyRecipient, PublisherIdentity, Sealer,
    SubscriberIdentity,
};
use sha2::Digest;
use time::macros::datetime;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, doc] = args.as_slice() {
        let doc = std::fs::read_to_string(doc).expect("read the protocol document");
        match flag.as_str() {
            "--burst" => burst_vectors(&doc),
            "--hpke" => hpke_vectors(&doc),
            _ => panic!("usage: make_vectors [--burst|--hpke docs/PROTOCOL.md]"),
        }
        return;
    }
    let validity = Validity {
        not_before: datetime!(2026-01-01 00:00 UTC),
        not_after: datetime!(2126-01-01 00:00 UTC),
    };
    let ca = CertificateAuthority::create("sealpost test-vector CA", validity).unwrap();
    let publisher_issued = ca
        .issue(
            &Profile::Publisher {
                id: "vector-pub".into(),
                topics: vec!["plant/+/temp".into()],
            },
            validity,
        )
        .unwrap();
    let subscriber_issued = ca
        .issue(
            &Profile::Subscriber {
                id: "vector-sub".into(),
            },
            validity,
        )
        .unwrap();
    let publisher = PublisherIdentity::from_pem(
        &publisher_issued.certificate_pem,
        &publisher_issued.private_key_pem,
    )
    .unwrap();
    let subscriber = SubscriberIdentity::from_pem(
        &subscriber_issued.certificate_pem,
        &subscriber_issued.private_key_pem,
    )
    .unwrap();
    let content_key = ContentKey::from_bytes([0x42; 32]);
    let (epoch, seq, salt) = (7u64, 1000u64, [0xA1, 0xB2, 0xC3, 0xD4]);
    let topic = "plant/7/temp";
    let plaintext = b"21.5 C";
    let published_at = 1_780_000_000i64;
    let mut sealer = Sealer::new(
        publisher.clone(),
        KeyLocation::key_topic_for("vector-pub"),
        epoch,
        &content_key,
        seq,
    );
    sealer.reserve(1);
    sealer.set_nonce_salt_for_test_vectors(salt);
    let envelope = sealer.seal(topic, plaintext, published_at).unwrap();
    let key_topic = "sealpost/keys/vector-pub/vector-sub";
    let recipient = KeyRecipient::new(subscriber.certificate().clone()).unwrap();
    let key_message = seal_key_message(
        &publisher,
        &recipient,
        &[(epoch, &content_key)],
        key_topic,
        published_at as u64,
    )
    .unwrap();

    let der = |pem: &str| hex::encode(pemfile::decode(pem, pemfile::CERTIFICATE).unwrap());
    let pub_key =
        ed25519_dalek::SigningKey::from_pkcs8_pem(&publisher_issued.private_key_pem).unwrap();
    let sub_key = <rsa::RsaPrivateKey as rsa::pkcs8::DecodePrivateKey>::from_pkcs8_pem(
        &subscriber_issued.private_key_pem,
    )
    .unwrap();
    println!("ca_certificate = {}", der(&ca.certificate_pem()));
    println!(
        "publisher_certificate = {}",
        der(&publisher_issued.certificate_pem)
    );
    println!(
        "publisher_private_key_pkcs8 = {}",
        hex::encode(pub_key.to_pkcs8_der().unwrap().as_bytes())
    );
    println!(
        "subscriber_certificate = {}",
        der(&subscriber_issued.certificate_pem)
    );
    println!(
        "subscriber_private_key_pkcs8 = {}",
        hex::encode(sub_key.to_pkcs8_der().unwrap().as_bytes())
    );
    println!("content_key = {}", hex::encode(content_key.as_bytes()));
    println!("epoch = {epoch}");
    println!("seq = {seq}");
    println!("nonce_salt = {}", hex::encode(salt));
    println!("published_at = {published_at}");
    println!("topic = {topic}");
    println!("plaintext = {}", hex::encode(plaintext));
    println!("envelope = {}", hex::encode(&envelope));
    println!("key_message_topic = {key_topic}");
    println!("key_message = {}", hex::encode(&key_message));
}

/// The `key = value` lines of the document's vector block.
fn vector_block(doc: &str) -> std::collections::HashMap<&str, &str> {
    let block = doc
        .split("```vectors\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```vectors block");
    block
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

/// The vector publisher and content key.
fn vector_publisher(v: &std::collections::HashMap<&str, &str>) -> (PublisherIdentity, ContentKey) {
    let hex = |k: &str| hex::decode(v[k]).expect("hex");
    let certificate = sealpost_certs::parse(&hex("publisher_certificate")).unwrap();
    let key =
        ed25519_dalek::SigningKey::from_pkcs8_der(&hex("publisher_private_key_pkcs8")).unwrap();
    (
        PublisherIdentity::new(certificate, key).unwrap(),
        ContentKey::from_slice(&hex("content_key")).unwrap(),
    )
}

/// An X25519 subscriber and its key message from the vector publisher, with the HPKE
/// parts of its one entry.
fn hpke_vectors(doc: &str) {
    let v = vector_block(doc);
    let (publisher, content_key) = vector_publisher(&v);
    let epoch: u64 = v["epoch"].parse().unwrap();
    let published_at: u64 = v["published_at"].parse().unwrap();
    let validity = Validity {
        not_before: datetime!(2026-01-01 00:00 UTC),
        not_after: datetime!(2126-01-01 00:00 UTC),
    };
    let ca = CertificateAuthority::create("sealpost test-vector subscriber CA", validity).unwrap();
    let issued = ca
        .issue_subscriber("vector-sub-x", SubscriberKey::X25519, validity)
        .unwrap();
    let subscriber =
        SubscriberIdentity::from_pem(&issued.certificate_pem, &issued.private_key_pem).unwrap();
    let topic = "sealpost/keys/vector-pub/vector-sub-x";
    let recipient = KeyRecipient::new(subscriber.certificate().clone()).unwrap();
    let message = seal_key_message(
        &publisher,
        &recipient,
        &[(epoch, &content_key)],
        topic,
        published_at,
    )
    .unwrap();
    // The one COSE_recipient, taken apart as a receiver would.
    let sign1 = coset::CoseSign1::from_tagged_slice(&message).unwrap();
    let body: coset::cbor::value::Value =
        ciborium::from_reader(sign1.payload.as_deref().unwrap()).unwrap();
    let entry = body.as_array().unwrap()[4].as_array().unwrap()[0]
        .as_array()
        .unwrap()
        .clone();
    let protected = entry[0].as_bytes().unwrap().clone();
    let ek = entry[1].as_map().unwrap()[0].1.as_bytes().unwrap().clone();
    let ciphertext = entry[2].as_bytes().unwrap().clone();
    let info = coset::cbor::value::Value::Array(vec![
        coset::cbor::value::Value::Text("HPKE Recipient".into()),
        coset::cbor::value::Value::Integer(3.into()),
        coset::cbor::value::Value::Bytes(protected.clone()),
        coset::cbor::value::Value::Bytes(Vec::new()),
    ]);
    let mut info_bytes = Vec::new();
    ciborium::into_writer(&info, &mut info_bytes).unwrap();
    let der = |pem: &str, label: &'static str| hex::encode(pemfile::decode(pem, label).unwrap());
    println!(
        "hpke_subscriber_certificate = {}",
        der(&issued.certificate_pem, pemfile::CERTIFICATE)
    );
    println!(
        "hpke_subscriber_private_key_pkcs8 = {}",
        der(&issued.private_key_pem, pemfile::PRIVATE_KEY)
    );
    println!("hpke_key_message_topic = {topic}");
    println!("hpke_key_message = {}", hex::encode(&message));
    println!("hpke_recipient_protected = {}", hex::encode(&protected));
    println!("hpke_info = {}", hex::encode(&info_bytes));
    println!("hpke_ek = {}", hex::encode(&ek));
    println!("hpke_ciphertext = {}", hex::encode(&ciphertext));
}

/// The inputs and outputs of the version 2 vectors, from the existing vector keys.
fn burst_vectors(doc: &str) {
    let v = vector_block(doc);
    let hex = |k: &str| hex::decode(v[k]).expect("hex");
    let (publisher, content_key) = vector_publisher(&v);
    let epoch: u64 = v["epoch"].parse().unwrap();
    let published_at: i64 = v["published_at"].parse().unwrap();
    let seq = 2000u64;
    let mut sealer = Sealer::new(
        publisher,
        KeyLocation::key_topic_for("vector-pub"),
        epoch,
        &content_key,
        seq,
    );
    sealer.reserve(3);
    sealer.set_nonce_salt_for_test_vectors(hex("nonce_salt").try_into().unwrap());
    let messages: [(&str, &[u8]); 3] = [
        ("plant/1/temp", b"20.0 C"),
        ("plant/2/temp", b"20.5 C"),
        ("plant/3/temp", b"21.0 C"),
    ];
    let envelopes = sealer.seal_many(&messages, published_at).unwrap();
    // The root, from each envelope's Sig_structure as coset builds it.
    let leaves: Vec<[u8; 32]> = messages
        .iter()
        .zip(&envelopes)
        .map(|((topic, _), envelope)| {
            let sign1 = coset::CoseSign1::from_tagged_slice(envelope).unwrap();
            let tbs = sign1.tbs_data(topic.as_bytes());
            merkle::leaf_hash(&sha2::Sha256::digest(tbs).into())
        })
        .collect();
    let (root, _) = merkle::root_and_paths(&leaves);
    println!("burst_seq = {seq}");
    println!("burst_size = {}", messages.len());
    for (i, ((topic, plaintext), envelope)) in messages.iter().zip(&envelopes).enumerate() {
        println!("burst_topic_{i} = {topic}");
        println!("burst_plaintext_{i} = {}", hex::encode(plaintext));
        println!("burst_envelope_{i} = {}", hex::encode(envelope));
    }
    println!("burst_root = {}", hex::encode(root));
}
