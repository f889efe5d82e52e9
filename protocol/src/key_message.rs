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
//!                 COSE_recipient = [ protected { 1: alg, -65541: epoch },
//!                                    unprotected {} or { -4: ek },
//!                                    wrapped content key ]
//!                 alg -41 (RSAES-OAEP w/ SHA-256): RSA-OAEP(content key), no ek
//!                 alg -65601 (HPKE X25519/HKDF-SHA256/AES-256-GCM, Key Encryption):
//!                   ek = HPKE enc, ciphertext = HPKE ct (see the `wrap` module)
//!   external_aad = the key-message topic
//! ```
//!
//! One key message per subscriber, retained on its own topic, keeps what each subscriber
//! downloads O(1) however many subscribers a publisher grants.

use coset::cbor::value::Value;
use coset::iana;
use coset::{AsCborValue, CoseRecipient, CoseSign1Builder, HeaderBuilder};
use ed25519_dalek::Signer;
use sealpost_certs::{CertificateInfo, Role};

use crate::envelope::{
    encode_err, find_uint, KIND_KEYS, LABEL_EPOCH, LABEL_KIND, LABEL_VERSION, LABEL_X5CHAIN,
    VERSION,
};
use crate::wrap::{algorithm_of, Wrapping, WrappingKey, COSE_HEADER_EK};
use crate::{ContentKey, PublisherIdentity, Rejected, SealError, WrapAlgorithm};

/// Most key entries a key message may carry; bounds the unwrapping work per message.
pub const MAX_KEY_ENTRIES: usize = 16;

/// A granted subscriber, ready to receive wrapped keys (its public key parsed once).
#[derive(Debug, Clone)]
pub struct KeyRecipient {
    certificate: CertificateInfo,
    public_key: WrappingKey,
}

impl KeyRecipient {
    /// Prepares a subscriber certificate for key wrapping: RSA-OAEP for an RSA key, HPKE
    /// for an X25519 key. The caller should have verified it against the CA (the publisher
    /// SDK does).
    pub fn new(certificate: CertificateInfo) -> Result<KeyRecipient, SealError> {
        certificate.require_role(Role::Subscriber)?;
        let public_key = WrappingKey::from_certificate(&certificate)?;
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

    /// How content keys are wrapped for this subscriber (by its certificate's key type).
    pub fn algorithm(&self) -> WrapAlgorithm {
        self.public_key.algorithm()
    }
}

/// One content key wrapped for one subscriber: the `COSE_recipient` entry of a key
/// message, the public-key operation (RSA-OAEP or HPKE) already done.
///
/// A wrapping of (subscriber, epoch) stays valid as long as that epoch's key and the
/// subscriber's certificate do, so a publisher keeps it and puts the same entry in every
/// later key message that still carries that epoch: a rotation then costs one wrapping per
/// subscriber (the new epoch), not one per epoch carried. Re-sending the same ciphertext
/// reveals nothing new: it is the same key under the same public key.
#[derive(Clone)]
pub struct WrappedKey {
    /// SHA-256 of the certificate it was wrapped for: a wrapping is never put in another
    /// subscriber's key message, nor in one for a renewed certificate of the same id.
    recipient_fingerprint: [u8; 32],
    wrapping: Wrapping,
}

impl WrappedKey {
    /// The epoch of the wrapped key.
    pub fn epoch(&self) -> u64 {
        self.wrapping.epoch
    }

    /// The algorithm it was wrapped with.
    pub fn algorithm(&self) -> WrapAlgorithm {
        self.wrapping.algorithm
    }

    /// SHA-256 of the certificate of the subscriber it was wrapped for.
    pub fn recipient_fingerprint(&self) -> &[u8; 32] {
        &self.recipient_fingerprint
    }

    pub(crate) fn wrapping(&self) -> &Wrapping {
        &self.wrapping
    }
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKey")
            .field("epoch", &self.wrapping.epoch)
            .field("algorithm", &self.wrapping.algorithm)
            .finish_non_exhaustive()
    }
}

impl KeyRecipient {
    /// Wraps the content key of `epoch` for this subscriber (randomised; RSA-OAEP-SHA256 or
    /// HPKE by [`KeyRecipient::algorithm`]): the expensive part of a key message, kept
    /// apart so it can be done once per (subscriber, epoch) and reused with
    /// [`seal_key_message_wrapped`].
    pub fn wrap(&self, epoch: u64, key: &ContentKey) -> Result<WrappedKey, SealError> {
        let wrapping = self
            .public_key
            .wrap(epoch, key)
            .map_err(|detail| SealError::Wrap {
                subscriber: self.id().to_owned(),
                detail,
            })?;
        Ok(WrappedKey {
            recipient_fingerprint: self.certificate.fingerprint,
            wrapping,
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
        entries.push(recipient_entry(&wrapped.wrapping));
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

/// The `COSE_recipient` of one wrapping: the protected header bytes exactly as wrapped
/// (HPKE binds them), `ek` in the unprotected header when the algorithm has one.
fn recipient_entry(wrapping: &Wrapping) -> Value {
    let unprotected = match &wrapping.ek {
        Some(ek) => vec![(
            Value::Integer(COSE_HEADER_EK.into()),
            Value::Bytes(ek.clone()),
        )],
        None => Vec::new(),
    };
    Value::Array(vec![
        Value::Bytes(wrapping.protected.clone()),
        Value::Map(unprotected),
        Value::Bytes(wrapping.ciphertext.clone()),
    ])
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
    pub entries: Vec<Wrapping>,
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
        let algorithm = recipient
            .protected
            .header
            .alg
            .as_ref()
            .and_then(algorithm_of)
            .ok_or(Rejected::UnsupportedAlgorithm)?;
        let epoch = find_uint(&recipient.protected.header, LABEL_EPOCH).ok_or(bad("epoch"))?;
        // The unprotected header is `{}` or `{-4: ek}`, nothing else (read from the CBOR
        // itself: coset sorts well-known labels such as kid out of `rest`).
        let unprotected = match raw {
            Value::Array(parts) => parts.get(1),
            _ => None,
        };
        let ek = match unprotected {
            Some(Value::Map(m)) => match m.as_slice() {
                [] => None,
                [(Value::Integer(label), Value::Bytes(ek))]
                    if i64::try_from(*label) == Ok(COSE_HEADER_EK) =>
                {
                    Some(ek.clone())
                }
                _ => return Err(bad("COSE_recipient unprotected header")),
            },
            _ => return Err(bad("COSE_recipient unprotected header")),
        };
        if !recipient.recipients.is_empty() {
            return Err(bad("nested COSE_recipient"));
        }
        entries.push(Wrapping {
            algorithm,
            epoch,
            protected: recipient.protected.original_data.unwrap_or_default(),
            ek,
            ciphertext: recipient.ciphertext.ok_or(bad("wrapped key"))?,
        });
    }
    Ok(KeyMessageBody {
        publisher: publisher.clone(),
        recipient_fingerprint: fp.as_slice().try_into().map_err(|_| bad("fingerprint"))?,
        issued_at: u64::try_from(*issued_at).map_err(|_| bad("issued_at"))?,
        entries,
    })
}
