//! Building key messages for every granted subscriber, in parallel.

use rayon::prelude::*;
use sealpost_protocol::{
    seal_key_message_wrapped, ContentKey, KeyLocation, KeyRecipient, PublisherIdentity, SealError,
    WrappedKey,
};

/// How many recent epochs a key message carries: the current one and the one before, so
/// messages in flight across a rotation still open. Only the newest costs an RSA wrapping
/// at a rotation: the others were wrapped when they were new, and are reused.
pub(crate) const EPOCHS_PER_KEY_MESSAGE: usize = 2;

/// A granted subscriber, ready for wrapping.
pub(crate) struct Grantee {
    pub recipient: KeyRecipient,
    pub granted_epoch: u64,
    /// The wrappings its last key message carried, newest first. Kept in memory only: a
    /// restarted publisher wraps again once (persisting them would add about 256 bytes per
    /// subscriber and epoch to every state write, for a saving of one rekey's work).
    pub wrapped: Vec<WrappedKey>,
}

impl Grantee {
    /// A grantee with nothing wrapped yet.
    pub fn new(recipient: KeyRecipient, granted_epoch: u64) -> Grantee {
        Grantee {
            recipient,
            granted_epoch,
            wrapped: Vec::new(),
        }
    }
}

/// One key message ready to publish.
pub(crate) struct BuiltKeyMessage {
    pub subscriber: String,
    pub topic: String,
    pub bytes: Vec<u8>,
    /// RSA-OAEP wrappings done for it (the others were reused).
    pub wrapped_now: usize,
}

/// Key messages for `grantees`, built in parallel (RSA-OAEP wrapping dominates the cost of
/// a rekey, Ed25519 signing comes next; both spread over rayon's threads, one per core).
/// `keys` is `(epoch, key)` newest last. A grantee gets only epochs at or after the one it
/// was granted at. Each grantee's wrappings are reused where its last key message already
/// had them, and replaced by exactly those of the new message.
pub(crate) fn build_all(
    publisher: &PublisherIdentity,
    prefix: &KeyLocation,
    keys: &[(u64, ContentKey)],
    grantees: Vec<&mut Grantee>,
    issued_at: u64,
) -> Result<Vec<BuiltKeyMessage>, SealError> {
    grantees
        .into_par_iter()
        .map(|g| {
            let topic = prefix
                .key_message_topic(g.recipient.id())
                .ok_or_else(|| SealError::Encoding("key location is not a topic".into()))?;
            // Newest first, as key messages have always listed them.
            let epochs = keys
                .iter()
                .rev()
                .filter(|(epoch, _)| *epoch >= g.granted_epoch)
                .take(EPOCHS_PER_KEY_MESSAGE);
            let mut wrapped_now = 0;
            let mut wrapped = Vec::with_capacity(EPOCHS_PER_KEY_MESSAGE);
            for (epoch, key) in epochs {
                // The key of an epoch never changes, and a wrapping is tied to the
                // certificate it was made for (checked again when sealing), so a kept
                // wrapping of this epoch is as good as a new one.
                match g.wrapped.iter().find(|w| w.epoch() == *epoch) {
                    Some(kept) => wrapped.push(kept.clone()),
                    None => {
                        wrapped.push(g.recipient.wrap(*epoch, key)?);
                        wrapped_now += 1;
                    }
                }
            }
            let refs: Vec<&WrappedKey> = wrapped.iter().collect();
            let bytes =
                seal_key_message_wrapped(publisher, &g.recipient, &refs, &topic, issued_at)?;
            g.wrapped = wrapped;
            Ok(BuiltKeyMessage {
                subscriber: g.recipient.id().to_owned(),
                topic,
                bytes,
                wrapped_now,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealpost_certs::{CertificateAuthority, Profile, Validity};
    use sealpost_protocol::{Opener, SubscriberIdentity};

    fn subscriber(ca: &CertificateAuthority, id: &str) -> SubscriberIdentity {
        let issued = ca
            .issue(
                &Profile::Subscriber { id: id.into() },
                Validity::days_from_now(1),
            )
            .unwrap();
        SubscriberIdentity::from_pem(&issued.certificate_pem, &issued.private_key_pem).unwrap()
    }

    #[test]
    fn rotations_wrap_only_the_new_epoch_and_messages_still_carry_two() {
        let ca = CertificateAuthority::create("test CA", Validity::days_from_now(1)).unwrap();
        let issued = ca
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
        let prefix = KeyLocation::key_topic_for("plant");
        let reader = subscriber(&ca, "reader");
        let mut grantee = Grantee::new(KeyRecipient::new(reader.certificate().clone()).unwrap(), 1);
        let mut keys = vec![(1, ContentKey::generate())];
        let verifier = sealpost_certs::Verifier::new(&ca.certificate_pem()).unwrap();

        let built = build_all(&publisher, &prefix, &keys, vec![&mut grantee], 1).unwrap();
        assert_eq!(built[0].wrapped_now, 1);
        for epoch in 2..=4 {
            keys.push((epoch, ContentKey::generate()));
            let built = build_all(&publisher, &prefix, &keys, vec![&mut grantee], 2).unwrap();
            assert_eq!(built[0].wrapped_now, 1, "epoch {epoch}: only the new key");
            // A reader that saw no earlier message learns both epochs from this one.
            let mut opener = Opener::new(verifier.clone()).with_identity(reader.clone());
            let update = opener
                .accept_key_message(&built[0].topic, &built[0].bytes)
                .unwrap();
            assert_eq!(update.new_epochs, vec![epoch, epoch - 1], "newest first");
        }
        // Built again without a rotation (after a reconnect, say): nothing to wrap.
        let built = build_all(&publisher, &prefix, &keys, vec![&mut grantee], 3).unwrap();
        assert_eq!(built[0].wrapped_now, 0);

        // Re-granted with a new certificate: nothing wrapped for the old one is used.
        let renewed = subscriber(&ca, "reader");
        let mut regranted =
            Grantee::new(KeyRecipient::new(renewed.certificate().clone()).unwrap(), 1);
        let built = build_all(&publisher, &prefix, &keys, vec![&mut regranted], 4).unwrap();
        assert_eq!(built[0].wrapped_now, 2);
        let mut opener = Opener::new(verifier).with_identity(renewed);
        assert_eq!(
            opener
                .accept_key_message(&built[0].topic, &built[0].bytes)
                .unwrap()
                .new_epochs,
            vec![4, 3]
        );
    }
}
