//! Property tests: sealing round-trips, and any single-byte change is rejected.

mod fixture;

use fixture::*;
use proptest::prelude::*;
use sealpost_certs::{now_unix, Validity};
use sealpost_protocol::{ContentKey, Opener, PublisherIdentity, Sealer};
use std::sync::OnceLock;

struct Shared {
    ca: sealpost_certs::CertificateAuthority,
    publisher: PublisherIdentity,
    key: ContentKey,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let ca = ca();
        let publisher = publisher_in(&ca, "prop", &["prop/#"], Validity::days_from_now(1));
        Shared {
            ca,
            publisher,
            key: ContentKey::generate(),
        }
    })
}

fn fresh_opener(s: &Shared) -> Opener {
    let mut opener = Opener::new(verifier(&s.ca));
    opener.add_key("prop", 1, s.key.clone());
    opener
        .add_publisher_certificate(&s.publisher.certificate().der, now_unix())
        .unwrap();
    opener
}

fn sealer_for(s: &Shared, embed: bool) -> Sealer {
    let mut sealer = sealer(s.publisher.clone(), &s.key);
    sealer.set_embed_certificate(embed);
    sealer
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn seal_then_open_round_trips(
        suffix in "[a-z0-9]{1,12}(/[a-z0-9]{1,8}){0,3}",
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
        embed in any::<bool>(),
    ) {
        let s = shared();
        let topic = format!("prop/{suffix}");
        let env = sealer_for(s, embed).seal(&topic, &payload, now_unix()).unwrap();
        let opened = fresh_opener(s).open(&topic, &env).unwrap();
        prop_assert_eq!(opened.payload, payload);
        prop_assert_eq!(opened.topic, topic);
    }

    #[test]
    fn any_single_byte_change_is_rejected(
        payload in proptest::collection::vec(any::<u8>(), 0..256),
        position in any::<proptest::sample::Index>(),
        flip in 1u8..=255,
        embed in any::<bool>(),
    ) {
        let s = shared();
        let env = sealer_for(s, embed).seal("prop/x", &payload, now_unix()).unwrap();
        let mut changed = env.clone();
        let i = position.index(env.len());
        changed[i] ^= flip;
        prop_assert!(fresh_opener(s).open("prop/x", &changed).is_err(), "byte {} accepted", i);
    }
}
