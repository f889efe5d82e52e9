"""The protocol core from Python without a broker: Sealer, Opener, typed rejections."""

from __future__ import annotations

import os
import time

import pytest

import sealpost
from sealpost import errors


def pair(pki):
    issued = pki.publisher("sensor-1")
    key = os.urandom(32)
    sealer = sealpost.Sealer(issued.cert_pem, issued.key_pem, 1, key, embed_certificate=True)
    sealer.reserve(100)
    opener = sealpost.Opener(pki.ca_pem, pki.crl_pem)
    opener.add_key("sensor-1", 1, key)
    return sealer, opener


def test_seal_then_open(pki):
    sealer, opener = pair(pki)
    now = int(time.time())
    envelope = sealer.seal("sensors/t", b"hello", now)
    assert b"hello" not in envelope
    m = opener.open("sensors/t", envelope, now)
    assert (m.topic, m.publisher, m.seq, m.epoch, m.payload) == (
        "sensors/t", "sensor-1", 0, 1, b"hello"
    )  # fmt: skip
    assert m.published_at == now
    with pytest.raises(errors.Replayed) as e:
        opener.open("sensors/t", envelope, now)
    assert (e.value.publisher, e.value.seq) == ("sensor-1", 0)


def test_open_batch_returns_messages_and_rejections_in_order(pki):
    sealer, opener = pair(pki)
    now = int(time.time())
    good = sealer.seal_many([("sensors/a", b"1"), ("sensors/b", b"2")], now)
    # Large enough that the middle byte is ciphertext (not the embedded certificate).
    tampered = bytearray(sealer.seal("sensors/c", b"3" * 4000, now))
    tampered[len(tampered) // 2] ^= 1
    results = opener.open_batch(
        [("sensors/a", good[0]), ("sensors/c", bytes(tampered)), ("sensors/x", good[1])], now
    )
    assert isinstance(results[0], sealpost.Message) and results[0].payload == b"1"
    assert isinstance(results[1], errors.BadSignature) and results[1].topic == "sensors/c"
    assert isinstance(results[2], errors.BadSignature), "signed for sensors/b"


def test_unknown_key_and_stale_are_typed(pki):
    sealer, _ = pair(pki)
    now = int(time.time())
    opener = sealpost.Opener(pki.ca_pem, pki.crl_pem)
    with pytest.raises(errors.UnknownKey) as e:
        opener.open("sensors/t", sealer.seal("sensors/t", b"x", now), now)
    assert e.value.retryable and e.value.epoch == 1
    with pytest.raises(errors.Stale):
        opener.open("sensors/t", sealer.seal("sensors/t", b"x", now - 2 * 86400), now)


def test_sealing_errors_are_typed(pki):
    sealer, _ = pair(pki)
    with pytest.raises(sealpost.SealError) as e:
        sealer.seal("actuators/x", b"x", int(time.time()))
    assert e.value.kind == "topic_not_permitted"
    issued = pki.publisher("p2")
    unreserved = sealpost.Sealer(issued.cert_pem, issued.key_pem, 1, os.urandom(32))
    with pytest.raises(sealpost.SealError) as e:
        unreserved.seal("sensors/x", b"x", int(time.time()))
    assert e.value.kind == "sequence_exhausted"


def test_bad_input_is_a_clear_error(pki):
    with pytest.raises(ValueError, match="CA certificate"):
        sealpost.Opener("not a pem", pki.crl_pem)
    issued = pki.publisher("p3")
    with pytest.raises(ValueError, match="32 bytes"):
        sealpost.Sealer(issued.cert_pem, issued.key_pem, 1, b"short")


def test_replay_state_survives_a_restart(pki):
    sealer, opener = pair(pki)
    now = int(time.time())
    envelope = sealer.seal("sensors/t", b"once", now)
    opener.open("sensors/t", envelope, now)
    restarted = sealpost.Opener(pki.ca_pem, pki.crl_pem)
    restarted.set_replay_state(opener.replay_state())
    with pytest.raises(errors.Replayed):
        restarted.open("sensors/t", envelope, now)
    with pytest.raises(ValueError, match="replay state"):
        restarted.set_replay_state(b"garbage")


def test_every_rejection_kind_has_a_class():
    kinds = set(errors.REJECTIONS)
    assert len(kinds) == 17
    for kind, cls in errors.REJECTIONS.items():
        assert issubclass(cls, errors.Rejected) and cls.kind == kind
