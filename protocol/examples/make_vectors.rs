//! Prints a fresh set of test vectors in the format of `docs/PROTOCOL.md`.
//!
//! `cargo run -p sealpost-protocol --example make_vectors`
//!
//! Keys are random each run; the envelope is deterministic given them (Ed25519 signatures
//! are deterministic and the nonce is salt || seq), which is what the vector test checks.

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use sealpost_certs::{pemfile, CertificateAuthority, Profile, Validity};
use sealpost_protocol::{
    seal_key_message, ContentKey, KeyLocation, KeyRecipient, PublisherIdentity, Sealer,
    SubscriberIdentity,
};
use time::macros::datetime;

fn main() {
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
