//! Typed outcomes of every failed operation.

/// Why the [`Opener`](crate::Opener) refused a data envelope or key message.
///
/// Every variant is a reason the application can observe and count; nothing is ever
/// delivered without passing all checks. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// Not a well-formed sealpost COSE structure (truncated, wrong types, missing headers).
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    /// Larger than the opener's configured limit.
    #[error("envelope of {size} bytes exceeds the limit of {limit}")]
    Oversized {
        /// Size received.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// A sealpost protocol version this implementation does not speak.
    #[error("unknown envelope version {0}")]
    UnknownVersion(u64),
    /// A COSE algorithm other than the ones sealpost uses.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// This publisher's sequence number was already accepted, or is older than the window.
    #[error("replayed message: publisher {publisher:?} sequence {seq}")]
    Replayed {
        /// Publisher named in the envelope.
        publisher: String,
        /// Sequence number in the envelope.
        seq: u64,
    },
    /// No certificate is known for this publisher yet (it arrives with key messages, or
    /// embedded in the envelope). Retryable: the message may be held until it arrives.
    #[error("no certificate known for publisher {publisher:?}")]
    UnknownPublisher {
        /// Publisher named in the envelope.
        publisher: String,
    },
    /// The signed publication time is older than the opener's maximum age, or further in
    /// the future than its allowance for clock skew: a stale (possibly replayed) message.
    #[error("stale message: publisher {publisher:?} published at {published_at} (unix seconds), outside the accepted age")]
    Stale {
        /// Publisher named in the envelope.
        publisher: String,
        /// Publication time in the envelope, unix seconds.
        published_at: u64,
    },
    /// The publisher certificate does not chain to the trusted CA, has the wrong role, or
    /// does not belong to the publisher named in the envelope.
    #[error("untrusted publisher: {0}")]
    UntrustedPublisher(String),
    /// The publisher certificate has expired (or is not valid yet).
    #[error("publisher certificate of {0:?} is outside its validity period")]
    Expired(String),
    /// The publisher certificate is revoked, or the revocation list is stale.
    #[error("publisher certificate revoked or revocation status unknown: {0}")]
    Revoked(String),
    /// The publisher's certificate does not permit publishing to this topic.
    #[error("publisher {publisher:?} may not publish to {topic:?}")]
    TopicNotPermitted {
        /// Publisher.
        publisher: String,
        /// Topic the message arrived on.
        topic: String,
    },
    /// The signature does not verify (tampered bytes, wrong topic, forged publisher). In
    /// version 2: the message's inclusion proof leads to a root whose signature does not
    /// verify (tampered message, topic, path, leaf index, tree size or root signature, or a
    /// path taken from another burst or publisher).
    #[error("bad signature")]
    BadSignature,
    /// The content key of this epoch has not arrived. Retryable: the message may be held
    /// until the key message (or KDC response) arrives.
    #[error("no content key for publisher {publisher:?} epoch {epoch}")]
    UnknownKey {
        /// Publisher.
        publisher: String,
        /// Key epoch named in the key index.
        epoch: u64,
        /// Where the key is delivered, from the key index.
        location: crate::KeyLocation,
    },
    /// Authenticated decryption failed.
    #[error("decryption failed")]
    DecryptFailed,
    /// A version 2 envelope whose inclusion proof cannot be evaluated: its leaf index is
    /// not inside its tree, or its path is not as long as index and tree size require.
    #[error("bad inclusion proof: {0}")]
    BadInclusionProof(&'static str),
    /// A key message entry wrapped with an algorithm other than the one of this
    /// subscriber's key (an HPKE entry for an RSA key or the reverse): never handed to the
    /// private key.
    #[error("key wrapped with {entry} for a {key} key")]
    WrongKeyType {
        /// The algorithm of the subscriber's key.
        key: crate::WrapAlgorithm,
        /// The algorithm the entry names.
        entry: crate::WrapAlgorithm,
    },
    /// A key message that is not addressed to this subscriber.
    #[error("key message addressed to another subscriber")]
    NotForUs,
}

impl Rejected {
    /// Could this message open later, once a missing certificate or key arrives?
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Rejected::UnknownKey { .. } | Rejected::UnknownPublisher { .. }
        )
    }

    /// A short stable name for metrics and logs, e.g. `"bad_signature"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejected::Malformed(_) => "malformed",
            Rejected::Oversized { .. } => "oversized",
            Rejected::UnknownVersion(_) => "unknown_version",
            Rejected::UnsupportedAlgorithm => "unsupported_algorithm",
            Rejected::Replayed { .. } => "replayed",
            Rejected::Stale { .. } => "stale",
            Rejected::UnknownPublisher { .. } => "unknown_publisher",
            Rejected::UntrustedPublisher(_) => "untrusted_publisher",
            Rejected::Expired(_) => "expired",
            Rejected::Revoked(_) => "revoked",
            Rejected::TopicNotPermitted { .. } => "topic_not_permitted",
            Rejected::BadSignature => "bad_signature",
            Rejected::UnknownKey { .. } => "unknown_key",
            Rejected::DecryptFailed => "decrypt_failed",
            Rejected::BadInclusionProof(_) => "bad_inclusion_proof",
            Rejected::WrongKeyType { .. } => "wrong_key_type",
            Rejected::NotForUs => "not_for_us",
        }
    }
}

/// Why the [`Sealer`](crate::Sealer) or key-message builder refused to produce a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The publisher's own certificate does not permit this topic.
    #[error("this publisher's certificate does not permit topic {0:?}")]
    TopicNotPermitted(String),
    /// Not a valid MQTT topic name.
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    /// All reserved sequence numbers are used: reserve more (and persist the new
    /// high-water mark) before sealing again.
    #[error("no reserved sequence numbers left; call reserve() and persist the result")]
    SequenceExhausted,
    /// The publication time is not a unix time the envelope can carry (negative).
    #[error("invalid publication time {0}")]
    InvalidTime(i64),
    /// An envelope version this sealer cannot write.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u64),
    /// The identity's key or certificate is unusable.
    #[error("identity: {0}")]
    Identity(String),
    /// Wrapping a content key for a subscriber failed.
    #[error("key wrapping for {subscriber:?} failed: {detail}")]
    Wrap {
        /// Subscriber.
        subscriber: String,
        /// Why.
        detail: String,
    },
    /// COSE encoding failed.
    #[error("encoding failed: {0}")]
    Encoding(String),
}

impl From<sealpost_certs::CertError> for SealError {
    fn from(e: sealpost_certs::CertError) -> Self {
        SealError::Identity(e.to_string())
    }
}
