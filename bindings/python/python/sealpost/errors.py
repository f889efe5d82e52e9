"""Typed exceptions of sealpost.

Every reason a subscriber refuses a message is its own subclass of :class:`Rejected`,
named after the Rust core's ``Rejected::kind()`` (``"bad_signature"`` is
:class:`BadSignature`, and so on), so applications can catch, count or log them by type
or by :attr:`Rejected.kind`. Messages never contain key material.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SealpostError(Exception):
    """Base class of every sealpost exception."""


class Rejected(SealpostError):
    """A message (data envelope or key message) that failed a check and was not delivered.

    Attributes:
        kind: the stable short name, e.g. ``"bad_signature"`` (as in the Rust and
            JavaScript SDKs and the CLIs' output).
        topic: the topic the message arrived on, when known.
        publisher: the publisher named in the message, when known.
        seq: the sequence number (``Replayed``), else None.
        epoch: the key epoch (``UnknownKey``), else None.
        published_at: the signed publication time (``Stale``), else None.
    """

    kind: ClassVar[str] = "rejected"
    #: Could the message open later, once a missing key or certificate arrives?
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.topic: str | None = fields.get("topic")
        self.publisher: str | None = fields.get("publisher")
        self.seq: int | None = fields.get("seq")
        self.epoch: int | None = fields.get("epoch")
        self.published_at: int | None = fields.get("published_at")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class Malformed(Rejected):
    """Not a well-formed sealpost COSE structure."""

    kind = "malformed"


class Oversized(Rejected):
    """Larger than the subscriber's size limit."""

    kind = "oversized"


class UnknownVersion(Rejected):
    """A protocol version this implementation does not speak."""

    kind = "unknown_version"


class UnsupportedAlgorithm(Rejected):
    """A COSE algorithm other than the ones sealpost uses."""

    kind = "unsupported_algorithm"


class Replayed(Rejected):
    """This publisher's sequence number was already accepted, or is older than the window."""

    kind = "replayed"


class Stale(Rejected):
    """The signed publication time is older than the maximum age (or too far ahead)."""

    kind = "stale"


class UnknownPublisher(Rejected):
    """No certificate is known for this publisher yet (it comes with its key messages)."""

    kind = "unknown_publisher"
    retryable = True


class UntrustedPublisher(Rejected):
    """The publisher certificate does not chain to the trusted CA, or has the wrong role."""

    kind = "untrusted_publisher"


class Expired(Rejected):
    """The publisher certificate is outside its validity period."""

    kind = "expired"


class Revoked(Rejected):
    """The publisher certificate is revoked, or the revocation list is stale."""

    kind = "revoked"


class TopicNotPermitted(Rejected):
    """The publisher's certificate does not permit the topic the message arrived on."""

    kind = "topic_not_permitted"


class BadSignature(Rejected):
    """The signature does not verify: tampered bytes, another topic, or a forgery."""

    kind = "bad_signature"


class UnknownKey(Rejected):
    """The content key of this epoch has not arrived (or this reader was not granted it)."""

    kind = "unknown_key"
    retryable = True


class DecryptFailed(Rejected):
    """Authenticated decryption failed."""

    kind = "decrypt_failed"


class BadInclusionProof(Rejected):
    """A version 2 envelope whose Merkle inclusion proof cannot be evaluated."""

    kind = "bad_inclusion_proof"


class WrongKeyType(Rejected):
    """A key message entry wrapped for another kind of subscriber key (RSA vs X25519)."""

    kind = "wrong_key_type"


class NotForUs(Rejected):
    """A key message addressed to another subscriber."""

    kind = "not_for_us"


#: Every rejection class by its kind.
REJECTIONS: dict[str, type[Rejected]] = {
    cls.kind: cls
    for cls in (
        Malformed,
        Oversized,
        UnknownVersion,
        UnsupportedAlgorithm,
        Replayed,
        Stale,
        UnknownPublisher,
        UntrustedPublisher,
        Expired,
        Revoked,
        TopicNotPermitted,
        BadSignature,
        UnknownKey,
        DecryptFailed,
        BadInclusionProof,
        WrongKeyType,
        NotForUs,
    )
}


class SealError(SealpostError):
    """The publisher refused to seal: ``kind`` says why (``"topic_not_permitted"``,
    ``"invalid_topic"``, ``"sequence_exhausted"``, ``"invalid_time"``, ``"identity"``,
    ``"wrap"``, ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ConnectFailed(SealpostError):
    """The broker could not be reached, or refused the connection or a subscription."""


def _rejection(kind: str, message: str, fields: dict[str, Any]) -> Rejected:
    """Builds the exception for a rejection kind (called by the native module)."""
    cls = REJECTIONS.get(kind, Rejected)
    return cls(message, **fields)


class SessionError(SealpostError):
    """A publisher or subscriber operation failed; ``kind`` says why: ``"certificate"`` (an
    identity, CA or granted certificate that is unusable, revoked or expired),
    ``"not_granted"``, ``"corrupt_state"``, ``"persist"`` (the state could not be saved:
    nothing changed), ``"revocation_list"``, ``"revocation_list_required"``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
