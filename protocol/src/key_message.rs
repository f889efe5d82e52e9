//! Key messages: a publisher hands the content keys of recent epochs to one subscriber.
//!
//! ```text
//! COSE_Sign1 (tag 18)                       signed by the publisher (EdDSA)
//!   protected   { 1: -8, 4: kid = SHA-256(publisher certificate),
//!                 -65537: version, -65538: kind = 2 (keys) }
//!   unprotected { 33: x5chain (publisher certificate DER) }
//!   payload     [ publisher id, subscriber id, SHA-256(subscriber certificate),
//!                 issued_at (unix seconds),
//!                 [ COSE_recipient, ... ] ]
//!                 COSE_recipient = [ protected { 1: -41 (RSAES-OAEP w/ SHA-256),
//!                                                -65541: epoch },
//!                                    {}, RSA-OAEP(content key) ]
//!   external_aad = the key-message topic
//! ```
//!
//! One key message per subscriber, retained on its own topic, keeps what each subscriber
//! downloads O(1) however many subscribers a publisher grants.

use coset::cbor::value::Value;
use coset::iana;
use coset::{AsCborValue, CoseRecipient, CoseRecipientBuilder, CoseSign1Builder, HeaderBuilder};
use ed25519_dalek::Signer;
use rand::rngs::OsRng;
use rsa::{Oaep, RsaPublicKey};
use sealpost_certs::{CertificateInfo, Role};
use sha2::Sha256;

use crate::envelope::{
    encode_err, find_uint, KIND_KEYS, LABEL_EPOCH, LABEL_KIND, LABEL_VERSION, LABEL_X5CHAIN,
    VERSION,
};
use crate::{ContentKey, PublisherIdentity, Rejected, SealError};

/// Most key entries a key message may carry; bounds the unwrapping work per message.
pub const MAX_KEY_ENTRIES: usize = 16;

/// A granted subscriber, ready to receive wrapped keys (its RSA key parsed once).
#[derive(Debug, Clone)]
pub struct KeyRecipient {
    certificate: CertificateInfo,
    public_key: RsaPublicKey,
}

impl KeyRecipient {
    /// Prepares a subscriber certificate for key wrapping. The caller should have verified
    /// it against the CA (the publisher SDK does).
    pub fn new(certificate: CertificateInfo) -> Result<KeyRecipient, SealError> {
        certificate.require_role(Role::Subscriber)?;
        let public_key = certificate.rsa_public_key()?;
        Ok(KeyRecipient {
            certificate,
            public_key,
        })
    }

    /// The subscriber's identity.
    pub fn id(&self) -> &str {
        &self.certificate.id
    }

    /// The subscriber's certificate.
    pub fn certificate(&self) -> &CertificateInfo {
        &self.certificate
    }
}

/// One content key wrapped for one subscriber: the `COSE_recipient` entry of a key
/// message, RSA-OAEP already done.
///
/// A wrapping of (subscriber, epoch) stays valid as long as that epoch's key and the
/// subscriber's certificate do, so a publisher keeps it and puts the same entry in every
/// later key message that still carries that epoch: a rotation then costs one RSA-OAEP
/// encryption per subscriber (the new epoch), not one per epoch carried. Re-sending the
/// same ciphertext reveals nothing new: it is the same key under the same public key.
#[derive(Clone)]
pub struct WrappedKey {
    epoch: u64,
    /// SHA-256 of the certificate it was wrapped for: a wrapping is never put in another
    /// subscriber's key message, nor in one for a renewed certificate of the same id.
    recipient_fingerprint: [u8; 32],
    ciphertext: Vec<u8>,
}

impl WrappedKey {
    /// The epoch of the wrapped key.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// SHA-256 of the certificate of the subscriber it was wrapped for.
    pub fn recipient_fingerprint(&self) -> &[u8; 32] {
        &self.recipient_fingerprint
    }
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKey")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl KeyRecipient {
    /// Wraps the content key of `epoch` for this subscriber (RSA-OAEP-SHA256, randomised):
    /// the expensive part of a key message, kept apart so it can be done once per
    /// (subscriber, epoch) and reused with [`seal_key_message_wrapped`].
    pub fn wrap(&self, epoch: u64, key: &ContentKey) -> Result<WrappedKey, SealError> {
        let ciphertext = self
            .public_key
            .encrypt(&mut OsRng, Oaep::new::<Sha256>(), key.as_bytes())
            .map_err(|e| SealError::Wrap {
                subscriber: self.id().to_owned(),
                detail: e.to_string(),
            })?;
        Ok(WrappedKey {
            epoch,
            recipient_fingerprint: self.certificate.fingerprint,
            ciphertext,
        })
    }
}

/// Builds the signed key message for `recipient` carrying `keys` (epoch, key), to be
/// published (retained) on `topic`. Wraps every key afresh; a publisher that rekeys often
/// should keep the [`KeyRecipient::wrap`] results and use [`seal_key_message_wrapped`].
pub fn seal_key_message(
    publisher: &PublisherIdentity,
    recipient: &KeyRecipient,
    keys: &[(u64, &ContentKey)],
    topic: &str,
    issued_at: u64,
) -> Result<Vec<u8>, SealError> {
    check_entry_count(recipient, keys.len())?;
    let wrapped = keys
        .iter()
        .map(|(epoch, key)| recipient.wrap(*epoch, key))
        .collect::<Result<Vec<_>, _>>()?;
    let wrapped: Vec<&WrappedKey> = wrapped.iter().collect();
    seal_key_message_wrapped(publisher, recipient, &wrapped, topic, issued_at)
}

/// Builds the signed key message for `recipient` from keys already wrapped for it (by
/// [`KeyRecipient::wrap`]), in the order given, to be published (retained) on `topic`.
/// The bytes are those [`seal_key_message`] makes with the same wrappings: the wire format
/// does not depend on when the wrapping was done. Refuses wrappings made for another
/// certificate.
pub fn seal_key_message_wrapped(
    publisher: &PublisherIdentity,
    recipient: &KeyRecipient,
    keys: &[&WrappedKey],
    topic: &str,
    issued_at: u64,
) -> Result<Vec<u8>, SealError> {
    check_entry_count(recipient, keys.len())?;
    let mut entries = Vec::with_capacity(keys.len());
    for wrapped in keys {
        if wrapped.recipient_fingerprint != recipient.certificate.fingerprint {
            return Err(SealError::Wrap {
                subscriber: recipient.id().to_owned(),
                detail: "key wrapped for another certificate".into(),
            });
        }
        let entry = CoseRecipientBuilder::new()
            .protected(
                HeaderBuilder::new()
                    .algorithm(iana::Algorithm::RSAES_OAEP_SHA_256)
                    .value(LABEL_EPOCH, Value::Integer(wrapped.epoch.into()))
                    .build(),
            )
            .ciphertext(wrapped.ciphertext.clone())
            .build();
        entries.push(entry.to_cbor_value().map_err(encode_err)?);
    }
    let body = Value::Array(vec![
        Value::Text(publisher.id().to_owned()),
        Value::Text(recipient.id().to_owned()),
        Value::Bytes(recipient.certificate.fingerprint.to_vec()),
        Value::Integer(issued_at.into()),
        Value::Array(entries),
    ]);
    let mut payload = Vec::new();
    ciborium::into_writer(&body, &mut payload).map_err(|e| SealError::Encoding(e.to_string()))?;
    let sign1 = CoseSign1Builder::new()
        .protected(
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::EdDSA)
                .key_id(publisher.certificate.fingerprint.to_vec())
                .value(LABEL_VERSION, Value::Integer(VERSION.into()))
                .value(LABEL_KIND, Value::Integer(KIND_KEYS.into()))
                .build(),
        )
        .unprotected(
            HeaderBuilder::new()
                .value(
                    LABEL_X5CHAIN,
                    Value::Bytes(publisher.certificate.der.clone()),
                )
                .build(),
        )
        .payload(payload)
        .create_signature(topic.as_bytes(), |tbs| {
            publisher.key.sign(tbs).to_bytes().to_vec()
        })
        .build();
    coset::TaggedCborSerializable::to_tagged_vec(sign1).map_err(encode_err)
}

fn check_entry_count(recipient: &KeyRecipient, n: usize) -> Result<(), SealError> {
    if n == 0 || n > MAX_KEY_ENTRIES {
        return Err(SealError::Wrap {
            subscriber: recipient.id().to_owned(),
            detail: format!("a key message carries 1 to {MAX_KEY_ENTRIES} keys"),
        });
    }
    Ok(())
}

/// The body of a key message, parsed but with keys still wrapped.
pub(crate) struct KeyMessageBody {
    pub publisher: String,
    pub recipient_fingerprint: [u8; 32],
    pub issued_at: u64,
    pub entries: Vec<(u64, Vec<u8>)>,
}

pub(crate) fn parse_body(payload: &[u8]) -> Result<KeyMessageBody, Rejected> {
    let bad = Rejected::Malformed;
    let value: Value = ciborium::from_reader(payload).map_err(|_| bad("key message body"))?;
    let Value::Array(fields) = value else {
        return Err(bad("key message body"));
    };
    let [Value::Text(publisher), Value::Text(_recipient), Value::Bytes(fp), Value::Integer(issued_at), Value::Array(raw_entries)] =
        fields.as_slice()
    else {
        return Err(bad("key message fields"));
    };
    if raw_entries.is_empty() || raw_entries.len() > MAX_KEY_ENTRIES {
        return Err(bad("key message entry count"));
    }
    let mut entries = Vec::with_capacity(raw_entries.len());
    for raw in raw_entries {
        let recipient =
            CoseRecipient::from_cbor_value(raw.clone()).map_err(|_| bad("COSE_recipient"))?;
        if recipient.protected.header.alg
            != Some(coset::Algorithm::Assigned(
                iana::Algorithm::RSAES_OAEP_SHA_256,
            ))
        {
            return Err(Rejected::UnsupportedAlgorithm);
        }
        let epoch = find_uint(&recipient.protected.header, LABEL_EPOCH).ok_or(bad("epoch"))?;
        let wrapped = recipient.ciphertext.ok_or(bad("wrapped key"))?;
        entries.push((epoch, wrapped));
    }
    Ok(KeyMessageBody {
        publisher: publisher.clone(),
        recipient_fingerprint: fp.as_slice().try_into().map_err(|_| bad("fingerprint"))?,
        issued_at: u64::try_from(*issued_at).map_err(|_| bad("issued_at"))?,
        entries,
    })
}
