//! Envelope and key-message parsing: `Opener::open_at`, `Opener::accept_key_message`
//! and `peek`, on subscribers (one with an RSA key, one with an X25519 key) that trust a
//! CA created in this process.

use std::sync::{Mutex, OnceLock};

use sealpost_certs::{now_unix, CertificateAuthority, Profile, SubscriberKey, Validity, Verifier};
use sealpost_protocol::{
    peek, seal_key_message, ContentKey, KeyRecipient, Opener, PublisherIdentity, SubscriberIdentity,
};

/// The data topic every fuzzed envelope arrives on.
pub(super) const DATA_TOPIC: &str = "plant/line-1";
/// The key-message topic of the subscriber, for the publisher `plant`.
pub(super) const KEY_TOPIC: &str = "sealpost/keys/plant/reader";
/// The key-message topic of the X25519 subscriber.
pub(super) const HPKE_KEY_TOPIC: &str = "sealpost/keys/plant/reader-x";

/// A publisher (`plant`, may publish `plant/#`) and two granted subscribers (`reader`
/// with an RSA key, `reader-x` with an X25519 key) of a fresh CA.
pub(super) struct Parties {
    pub ca: CertificateAuthority,
    pub publisher: PublisherIdentity,
    pub subscriber: SubscriberIdentity,
    pub hpke_subscriber: SubscriberIdentity,
    pub key: ContentKey,
}

impl Parties {
    pub(super) fn new() -> Parties {
        let ca = CertificateAuthority::create("fuzz CA", Validity::days_from_now(3650))
            .expect("create CA");
        let issued = ca
            .issue(
                &Profile::Publisher {
                    id: "plant".into(),
                    topics: vec!["plant/#".into()],
                },
                Validity::days_from_now(3650),
            )
            .expect("issue publisher");
        let publisher =
            PublisherIdentity::from_pem(&issued.certificate_pem, &issued.private_key_pem)
                .expect("publisher identity");
        let issued = ca
            .issue(
                &Profile::Subscriber {
                    id: "reader".into(),
                },
                Validity::days_from_now(3650),
            )
            .expect("issue subscriber");
        let subscriber =
            SubscriberIdentity::from_pem(&issued.certificate_pem, &issued.private_key_pem)
                .expect("subscriber identity");
        let issued = ca
            .issue_subscriber(
                "reader-x",
                SubscriberKey::X25519,
                Validity::days_from_now(3650),
            )
            .expect("issue X25519 subscriber");
        let hpke_subscriber =
            SubscriberIdentity::from_pem(&issued.certificate_pem, &issued.private_key_pem)
                .expect("X25519 subscriber identity");
        Parties {
            ca,
            publisher,
            subscriber,
            hpke_subscriber,
            key: ContentKey::generate(),
        }
    }

    /// A genuine key message giving the RSA subscriber epoch 1.
    pub(super) fn key_message(&self) -> Vec<u8> {
        self.key_message_for(&self.subscriber, KEY_TOPIC)
    }

    /// A genuine key message giving the X25519 subscriber epoch 1 (HPKE).
    pub(super) fn hpke_key_message(&self) -> Vec<u8> {
        self.key_message_for(&self.hpke_subscriber, HPKE_KEY_TOPIC)
    }

    fn key_message_for(&self, subscriber: &SubscriberIdentity, topic: &str) -> Vec<u8> {
        let recipient = KeyRecipient::new(subscriber.certificate().clone()).expect("recipient");
        seal_key_message(&self.publisher, &recipient, &[(1, &self.key)], topic, 1)
            .expect("seal key message")
    }
}

/// The subscribers' openers (RSA, then X25519), each holding epoch 1 of `plant`. Their
/// CA exists only in this process, so no fuzz input can carry a valid signature: every
/// input must be refused.
fn openers() -> &'static Mutex<[Opener; 2]> {
    static OPENERS: OnceLock<Mutex<[Opener; 2]>> = OnceLock::new();
    OPENERS.get_or_init(|| {
        let parties = Parties::new();
        let verifier = Verifier::new(&parties.ca.certificate_pem()).expect("verifier");
        let mut rsa = Opener::new(verifier.clone()).with_identity(parties.subscriber.clone());
        rsa.accept_key_message(KEY_TOPIC, &parties.key_message())
            .expect("genuine key message accepted");
        let mut hpke = Opener::new(verifier).with_identity(parties.hpke_subscriber.clone());
        hpke.accept_key_message(HPKE_KEY_TOPIC, &parties.hpke_key_message())
            .expect("genuine HPKE key message accepted");
        Mutex::new([rsa, hpke])
    })
}

/// The first byte chooses the parser: an envelope (`open_at`), a key message
/// (`accept_key_message`) to the RSA subscriber, the header peek, or a key message to the
/// X25519 (HPKE) subscriber; the rest is its input. Each must refuse the input with a
/// typed error, never panic and never accept it.
pub fn protocol_open(data: &[u8]) {
    // Set up first, so that an empty input prepares the target (see `fuzz_targets/`).
    let mut openers = openers().lock().unwrap_or_else(|p| p.into_inner());
    let [opener, hpke_opener] = &mut *openers;
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            // A fresh window, so that no input is refused merely as a replay.
            opener.set_replay_state(Default::default());
            match opener.open_at(DATA_TOPIC, bytes, now_unix()) {
                Ok(opened) => {
                    panic!("an envelope no trusted publisher signed was opened: {opened:?}")
                }
                Err(e) => {
                    let _ = (e.kind(), e.is_retryable(), e.to_string());
                }
            }
        }
        1 => refuse_key_message(opener, KEY_TOPIC, bytes),
        3 => refuse_key_message(hpke_opener, HPKE_KEY_TOPIC, bytes),
        _ => {
            if let Ok(header) = peek(bytes) {
                let _ = format!("{header:?}");
            }
        }
    }
}

fn refuse_key_message(opener: &mut Opener, topic: &str, bytes: &[u8]) {
    match opener.accept_key_message(topic, bytes) {
        Ok(update) => panic!("a key message no trusted publisher signed was accepted: {update:?}"),
        Err(e) => {
            let _ = (e.kind(), e.to_string());
        }
    }
}
