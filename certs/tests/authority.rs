//! The security center as a library: issuing, verifying and every rejection path.

use sealpost_certs::{
    now_unix, parse, pemfile, CertError, CertificateAuthority, Profile, RevokedSerial, Role,
    SubjectKey, SubscriberKey, Validity, Verifier,
};
use time::{Duration, OffsetDateTime};

fn ca() -> CertificateAuthority {
    CertificateAuthority::create("test CA", Validity::days_from_now(30)).unwrap()
}

fn der(pem: &str) -> Vec<u8> {
    pemfile::decode(pem, pemfile::CERTIFICATE).unwrap()
}

fn publisher(id: &str, topics: &[&str]) -> Profile {
    Profile::Publisher {
        id: id.into(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
    }
}

#[test]
fn publisher_certificate_carries_id_role_and_topics() {
    let ca = ca();
    let verifier = Verifier::new(&ca.certificate_pem()).unwrap();
    let issued = ca
        .issue(
            &publisher("plant-7", &["plant/7/+/temp", "alerts/#"]),
            Validity::days_from_now(1),
        )
        .unwrap();
    let info = verifier
        .verify(&der(&issued.certificate_pem), now_unix())
        .unwrap();
    assert_eq!(info.id, "plant-7");
    assert_eq!(info.role, Role::Publisher);
    assert_eq!(info.topics, vec!["plant/7/+/temp", "alerts/#"]);
    assert!(matches!(info.public_key, SubjectKey::Ed25519(_)));
    assert!(info.may_publish("plant/7/boiler/temp"));
    assert!(info.may_publish("alerts/fire/hall"));
    assert!(!info.may_publish("plant/8/boiler/temp"));
    assert!(!info.may_publish("plant/7/boiler/pressure"));
    assert!(info.ed25519_public_key().is_ok());
    assert!(info.rsa_public_key().is_err());
    // The private key loads with the crypto crate the protocol uses.
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&issued.private_key_pem).unwrap();
    assert_eq!(key.verifying_key(), info.ed25519_public_key().unwrap());
    // PKCS#8 v1, the seed alone (RFC 8410 §7): OpenSSL 3.0 (mosquitto_pub, C clients)
    // cannot read the v2 form. SEQUENCE, INTEGER 0, then the algorithm.
    let pkcs8 = pemfile::decode(&issued.private_key_pem, pemfile::PRIVATE_KEY).unwrap();
    assert_eq!((pkcs8.len(), &pkcs8[2..5]), (48, &[0x02, 0x01, 0x00][..]));
    assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
}

#[test]
fn subscriber_server_and_client_certificates() {
    let ca = ca();
    let verifier = Verifier::new(&ca.certificate_pem()).unwrap();
    let sub = ca
        .issue(
            &Profile::Subscriber {
                id: "reader-1".into(),
            },
            Validity::days_from_now(1),
        )
        .unwrap();
    let info = verifier
        .verify(&der(&sub.certificate_pem), now_unix())
        .unwrap();
    assert_eq!(
        (info.id.as_str(), info.role),
        ("reader-1", Role::Subscriber)
    );
    assert!(!info.may_publish("anything"));
    let public = info.rsa_public_key().unwrap();
    use rsa::pkcs8::DecodePrivateKey;
    let private = rsa::RsaPrivateKey::from_pkcs8_pem(&sub.private_key_pem).unwrap();
    assert_eq!(private.to_public_key(), public);

    let server = ca
        .issue(
            &Profile::Server {
                names: vec!["localhost".into(), "127.0.0.1".into()],
            },
            Validity::days_from_now(1),
        )
        .unwrap();
    let info = verifier
        .verify(&der(&server.certificate_pem), now_unix())
        .unwrap();
    assert_eq!(info.role, Role::Server);
    assert_eq!(info.names, vec!["localhost", "127.0.0.1"]);

    let client = ca
        .issue(
            &Profile::Client {
                id: "gateway".into(),
            },
            Validity::days_from_now(1),
        )
        .unwrap();
    let info = verifier
        .verify(&der(&client.certificate_pem), now_unix())
        .unwrap();
    assert_eq!((info.id.as_str(), info.role), ("gateway", Role::Client));
    assert!(info.require_role(Role::Publisher).is_err());
}

#[test]
fn certificate_from_another_ca_is_untrusted() {
    let (ours, theirs) = (ca(), ca());
    let verifier = Verifier::new(&ours.certificate_pem()).unwrap();
    let forged = theirs
        .issue(&publisher("plant-7", &["#"]), Validity::days_from_now(1))
        .unwrap();
    assert!(matches!(
        verifier.verify(&der(&forged.certificate_pem), now_unix()),
        Err(CertError::UntrustedIssuer { .. })
    ));
}

#[test]
fn tampered_certificate_is_rejected() {
    let ca = ca();
    let verifier = Verifier::new(&ca.certificate_pem()).unwrap();
    let issued = ca
        .issue(&publisher("p", &["a/#"]), Validity::days_from_now(1))
        .unwrap();
    let good = der(&issued.certificate_pem);
    // Flip one byte inside the topic permission URI: the CA signature no longer matches.
    let pos = good.windows(3).position(|w| w == b"a/%").unwrap();
    let mut bad = good.clone();
    bad[pos] = b'b';
    assert!(matches!(
        verifier.verify(&bad, now_unix()),
        Err(CertError::UntrustedIssuer { .. })
    ));
    // Truncations are malformed, never a panic.
    for len in [0, 1, 10, good.len() / 2, good.len() - 1] {
        assert!(
            verifier.verify(&good[..len], now_unix()).is_err(),
            "len {len}"
        );
    }
}

#[test]
fn expired_and_not_yet_valid() {
    let ca = ca();
    let verifier = Verifier::new(&ca.certificate_pem()).unwrap();
    let now = OffsetDateTime::now_utc();
    let past = Validity {
        not_before: now - Duration::days(10),
        not_after: now - Duration::days(1),
    };
    let future = Validity {
        not_before: now + Duration::days(1),
        not_after: now + Duration::days(10),
    };
    let expired = ca.issue(&publisher("p", &["#"]), past).unwrap();
    let early = ca.issue(&publisher("p", &["#"]), future).unwrap();
    assert!(matches!(
        verifier.verify(&der(&expired.certificate_pem), now_unix()),
        Err(CertError::Expired { .. })
    ));
    assert!(matches!(
        verifier.verify(&der(&early.certificate_pem), now_unix()),
        Err(CertError::NotYetValid { .. })
    ));
}

#[test]
fn revocation_list_revokes_and_cannot_be_rolled_back_or_forged() {
    let ca = ca();
    let issued = ca
        .issue(&publisher("p", &["#"]), Validity::days_from_now(1))
        .unwrap();
    let other = ca
        .issue(&publisher("q", &["#"]), Validity::days_from_now(1))
        .unwrap();
    let info = parse(&der(&issued.certificate_pem)).unwrap();
    let crl1 = ca
        .revocation_list(&[], 1, Validity::days_from_now(1))
        .unwrap();
    let crl2 = ca
        .revocation_list(
            &[RevokedSerial {
                serial: info.serial.clone(),
                revoked_at: OffsetDateTime::now_utc(),
            }],
            2,
            Validity::days_from_now(1),
        )
        .unwrap();
    let mut verifier = Verifier::new(&ca.certificate_pem())
        .unwrap()
        .with_revocation_list(&crl1)
        .unwrap();
    assert!(verifier
        .verify(&der(&issued.certificate_pem), now_unix())
        .is_ok());
    verifier.set_revocation_list(&crl2).unwrap();
    assert!(matches!(
        verifier.verify(&der(&issued.certificate_pem), now_unix()),
        Err(CertError::Revoked { .. })
    ));
    assert!(verifier
        .verify(&der(&other.certificate_pem), now_unix())
        .is_ok());
    // Rolling back to the older list is refused.
    assert!(matches!(
        verifier.set_revocation_list(&crl1),
        Err(CertError::BadRevocationList(_))
    ));
    // A list signed by another CA is refused.
    let foreign = self::ca()
        .revocation_list(&[], 9, Validity::days_from_now(1))
        .unwrap();
    assert!(matches!(
        verifier.set_revocation_list(&foreign),
        Err(CertError::BadRevocationList(_))
    ));
    // A stale list fails closed.
    let now = OffsetDateTime::now_utc();
    let stale = ca
        .revocation_list(
            &[],
            3,
            Validity {
                not_before: now - Duration::days(3),
                not_after: now - Duration::days(1),
            },
        )
        .unwrap();
    verifier.set_revocation_list(&stale).unwrap();
    assert!(matches!(
        verifier.verify(&der(&other.certificate_pem), now_unix()),
        Err(CertError::BadRevocationList(_))
    ));
}

#[test]
fn ca_round_trips_through_pem_and_rejects_a_foreign_key() {
    let ca = ca();
    let reloaded =
        CertificateAuthority::from_pem(&ca.certificate_pem(), &ca.private_key_pem()).unwrap();
    let verifier = Verifier::new(&ca.certificate_pem()).unwrap();
    let issued = reloaded
        .issue(&publisher("p", &["#"]), Validity::days_from_now(1))
        .unwrap();
    assert!(verifier
        .verify(&der(&issued.certificate_pem), now_unix())
        .is_ok());
    let other = self::ca();
    assert!(matches!(
        CertificateAuthority::from_pem(&ca.certificate_pem(), &other.private_key_pem()),
        Err(CertError::UnsupportedKey(_))
    ));
    assert!(matches!(
        CertificateAuthority::from_pem(&ca.private_key_pem(), &ca.private_key_pem()),
        Err(CertError::WrongPemType { .. })
    ));
    // A leaf certificate is not a trust anchor.
    assert!(Verifier::new(&issued.certificate_pem).is_err());
}

#[test]
fn invalid_ids_and_filters_are_refused() {
    let ca = ca();
    for bad in ["a/b", "", "x+y"] {
        assert!(matches!(
            ca.issue(
                &Profile::Subscriber { id: bad.into() },
                Validity::days_from_now(1)
            ),
            Err(CertError::InvalidId(_))
        ));
    }
    for bad in [&[][..], &["a/#/b"][..], &["x+"][..]] {
        assert!(matches!(
            ca.issue(&publisher("p", bad), Validity::days_from_now(1)),
            Err(CertError::InvalidTopicFilter(_))
        ));
    }
}

fn csr(key: &rcgen::KeyPair, cn: &str) -> String {
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.serialize_request(key).unwrap().pem().unwrap()
}

#[test]
fn csr_is_signed_with_the_operator_profile_and_the_device_key() {
    let ca = ca();
    let verifier = Verifier::new(&ca.certificate_pem()).unwrap();
    let device_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let cert = ca
        .sign_csr(
            &csr(&device_key, "admin"),
            &publisher("meter-3", &["meters/3/#"]),
            Validity::days_from_now(1),
        )
        .unwrap();
    let info = verifier.verify(&der(&cert), now_unix()).unwrap();
    // The operator's profile wins over whatever the request asked for.
    assert_eq!(info.id, "meter-3");
    assert_eq!(info.topics, vec!["meters/3/#"]);
    assert!(info.names.is_empty());
    assert_eq!(
        info.ed25519_public_key().unwrap().as_bytes().as_slice(),
        device_key.public_key_raw()
    );
    // An Ed25519 key cannot become a subscriber (it cannot receive wrapped keys).
    assert!(matches!(
        ca.sign_csr(
            &csr(&device_key, "x"),
            &Profile::Subscriber { id: "s".into() },
            Validity::days_from_now(1)
        ),
        Err(CertError::UnsupportedKey(_))
    ));
    // A tampered request fails its own signature check.
    let good = pemfile::decode(&csr(&device_key, "admin"), pemfile::CSR).unwrap();
    let mut bad = good.clone();
    let pos = bad.windows(5).position(|w| w == b"admin").unwrap();
    bad[pos] = b'b';
    let bad_pem = pemfile::encode(&bad, pemfile::CSR);
    assert!(ca
        .sign_csr(
            &bad_pem,
            &publisher("m", &["#"]),
            Validity::days_from_now(1)
        )
        .is_err());
    assert!(matches!(
        ca.sign_csr(
            &ca.certificate_pem(),
            &publisher("m", &["#"]),
            Validity::days_from_now(1)
        ),
        Err(CertError::WrongPemType { .. })
    ));
}

/// What every KEM (X25519, X-Wing) subscriber certificate must pass: the CA's verifier
/// accepts it as subscriber `id`, another CA's does not, a flipped bit breaks it, its
/// key stays out of `Debug`, and a revocation list naming its serial revokes it.
fn check_kem_certificate(
    ca: &CertificateAuthority,
    issued: &sealpost_certs::Issued,
    id: &str,
) -> sealpost_certs::CertificateInfo {
    let verifier = Verifier::new(&ca.certificate_pem()).unwrap();
    let info = verifier
        .verify(&der(&issued.certificate_pem), now_unix())
        .unwrap();
    assert_eq!((info.id.as_str(), info.role), (id, Role::Subscriber));
    assert!(info.rsa_public_key().is_err() && info.ed25519_public_key().is_err());
    assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
    let foreign = Verifier::new(&self::ca().certificate_pem()).unwrap();
    assert!(foreign
        .verify(&der(&issued.certificate_pem), now_unix())
        .is_err());
    let mut tampered = der(&issued.certificate_pem);
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    assert!(verifier.verify(&tampered, now_unix()).is_err());
    let crl = ca
        .revocation_list(
            &[RevokedSerial {
                serial: info.serial.clone(),
                revoked_at: OffsetDateTime::now_utc(),
            }],
            2,
            Validity::days_from_now(1),
        )
        .unwrap();
    let revoking = verifier.with_revocation_list(&crl).unwrap();
    assert!(matches!(
        revoking.verify(&der(&issued.certificate_pem), now_unix()),
        Err(CertError::Revoked { .. })
    ));
    info
}

#[test]
fn x25519_subscriber_certificate_is_signed_by_the_ca_and_revocable() {
    let ca = ca();
    let issued = ca
        .issue_subscriber(
            "reader-x",
            SubscriberKey::X25519,
            Validity::days_from_now(1),
        )
        .unwrap();
    let info = check_kem_certificate(&ca, &issued, "reader-x");
    assert!(matches!(info.public_key, SubjectKey::X25519(_)));
    assert!(info.to_string().contains("key:         X25519"));
    // The key file holds the private half of the certificate's key, and nothing else fits.
    let secret = sealpost_certs::x25519::private_key_from_pem(&issued.private_key_pem).unwrap();
    assert_eq!(
        sealpost_certs::x25519::public_key_of(&secret),
        info.x25519_public_key().unwrap()
    );
    // An RSA certificate has no X25519 key; the default subscriber key is RSA.
    let rsa = ca
        .issue_subscriber(
            "reader-r",
            SubscriberKey::default(),
            Validity::days_from_now(1),
        )
        .unwrap();
    let rsa_info = parse(&der(&rsa.certificate_pem)).unwrap();
    assert!(rsa_info.rsa_public_key().is_ok());
    assert!(matches!(
        rsa_info.x25519_public_key(),
        Err(CertError::UnsupportedKey(_))
    ));
    // A CA reloaded from its files issues X25519 certificates its verifier accepts.
    let reloaded = CertificateAuthority::from_pem(&ca.certificate_pem(), &ca.private_key_pem())
        .unwrap()
        .issue_subscriber(
            "reader-y",
            SubscriberKey::X25519,
            Validity::days_from_now(1),
        )
        .unwrap();
    assert!(Verifier::new(&ca.certificate_pem())
        .unwrap()
        .verify(&der(&reloaded.certificate_pem), now_unix())
        .is_ok());
    // Ids are validated as for every other certificate.
    assert!(ca
        .issue_subscriber("bad id", SubscriberKey::X25519, Validity::days_from_now(1))
        .is_err());
}

#[test]
fn xwing_subscriber_certificate_is_signed_by_the_ca_and_revocable() {
    let ca = ca();
    let issued = ca
        .issue_subscriber("reader-w", SubscriberKey::XWing, Validity::days_from_now(1))
        .unwrap();
    let info = check_kem_certificate(&ca, &issued, "reader-w");
    let SubjectKey::XWing(public) = &info.public_key else {
        panic!("{:?}", info.public_key)
    };
    assert!(info.to_string().contains("key:         X-Wing"));
    assert!(info.x25519_public_key().is_err());
    // The key file holds the seed of the certificate's key.
    let seed = sealpost_certs::xwing::private_key_from_pem(&issued.private_key_pem).unwrap();
    assert_eq!(&sealpost_certs::xwing::public_key_of(&seed), public);
    // A certificate whose X-Wing key is cut short is malformed, not a panic.
    let mut short = der(&issued.certificate_pem);
    let key_at = short
        .windows(32)
        .position(|w| w == &public[..32])
        .expect("the key in the DER");
    short.drain(key_at..key_at + 1);
    assert!(parse(&short).is_err());
}
