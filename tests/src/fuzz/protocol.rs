//! Envelope and key-message parsing: `Opener::open_at`, `Opener::accept_key_message`
//! and `peek`, on a subscriber that trusts a CA created in this process.

use std::sync::{Mutex, OnceLock};

use sealpost_certs::{now_unix, CertificateAuthority, Profile, Validity, Verifier};
use sealpost_protocol::{
    peek, seal_key_message, ContentKey, KeyRecipient, Opener, PublisherIdentity, SubscriberIdentity,
};

/// The data topic every fuzzed envelope arrives on.
pub(super) const DATA_TOPIC: &str = "plant/line-1";
/// The key-message topic of the subscriber, for the publisher `plant`.
pub(super) const KEY_TOPIC: &str = "sealpost/keys/plant/reader";

/// A publisher (`plant`, may publish `plant/#`) and a granted subscriber (`reader`) of
/// a fresh CA.
pub(super) struct Parties {
    pub ca: CertificateAuthority,
    pub publisher: PublisherIdentity,
    pub subscriber: SubscriberIdentity,
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
        Parties {
            ca,
            publisher,
            subscriber,
            key: ContentKey::generate(),
        }
    }

    /// A genuine key message giving the subscriber epoch 1.
    pub(super) fn key_message(&self) -> Vec<u8> {
        let recipient =
            KeyRecipient::new(self.subscriber.certificate().clone()).expect("key recipient");
        seal_key_message(&self.publisher, &recipient, &[(1, &self.key)], KEY_TOPIC, 1)
            .expect("seal key message")
    }
}

/// A subscriber's opener that holds epoch 1 of `plant`. Its CA exists only in this
/// process, so no fuzz input can carry a valid signature: every input must be refused.
fn opener() -> &'static Mutex<Opener> {
    static OPENER: OnceLock<Mutex<Opener>> = OnceLock::new();
    OPENER.get_or_init(|| {
        let parties = Parties::new();
        let verifier = Verifier::new(&parties.ca.certificate_pem()).expect("verifier");
        let mut opener = Opener::new(verifier).with_identity(parties.subscriber.clone());
        opener
            .accept_key_message(KEY_TOPIC, &parties.key_message())
            .expect("genuine key message accepted");
        Mutex::new(opener)
    })
}

/// The first byte chooses the parser: an envelope (`open_at`), a key message
/// (`accept_key_message`) or the header peek; the rest is its input. Each must refuse
/// the input with a typed error, never panic and never accept it.
pub fn protocol_open(data: &[u8]) {
    // Set up first, so that an empty input prepares the target (see `fuzz_targets/`).
    let mut opener = opener().lock().unwrap_or_else(|p| p.into_inner());
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 3 {
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
        1 => match opener.accept_key_message(KEY_TOPIC, bytes) {
            Ok(update) => {
                panic!("a key message no trusted publisher signed was accepted: {update:?}")
            }
            Err(e) => {
                let _ = (e.kind(), e.to_string());
            }
        },
        _ => {
            if let Ok(header) = peek(bytes) {
                let _ = format!("{header:?}");
            }
        }
    }
}
