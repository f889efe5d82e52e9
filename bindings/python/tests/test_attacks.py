"""Attacks through a real broker: every one rejected with its typed exception, nothing
delivered (as tests/tests/e2e.rs, attacks_are_rejected_with_typed_errors_and_never_delivered)."""

from __future__ import annotations

import os
import time

import sealpost
from conftest import Pki
from sealpost import errors


def test_attacks_are_rejected_with_typed_errors_and_never_delivered(clients, pki, raw):
    alice = pki.subscriber("alice")
    spy = raw("sensors/#")
    attacker = raw()
    a = clients.subscriber(alice, topics="sensors/a")
    p = clients.publisher(pki.publisher("sensor-1"))
    p.grant(alice.cert)
    p.publish("sensors/a", b"genuine")
    assert a.recv(timeout=10).payload == b"genuine"
    captured = spy.next_on("sensors/a")
    # Envelopes alice has not seen (she does not subscribe to sensors/hidden).
    p.publish("sensors/hidden", b"x" * 1000)
    fresh = spy.next_on("sensors/hidden")
    p.publish("sensors/private", b"for another topic")
    other_topic = spy.next_on("sensors/private")

    def expect(kind: type[errors.Rejected]) -> errors.Rejected:
        r = a.next_rejection(timeout=10)
        assert type(r) is kind, r
        assert r.topic == "sensors/a" and r.kind == kind.kind
        return r

    # Replayed: the same bytes again, later.
    attacker.publish("sensors/a", captured)
    assert expect(errors.Replayed).seq > 0

    # Tampered: one ciphertext byte flipped.
    tampered = bytearray(fresh)
    tampered[len(tampered) // 2] ^= 0x01
    attacker.publish("sensors/a", bytes(tampered))
    expect(errors.BadSignature)

    # Re-published on another topic: signed for sensors/private, sent on sensors/a.
    attacker.publish("sensors/a", other_topic)
    expect(errors.BadSignature)

    # Forged: same publisher name and topics, certificate from another CA.
    evil = Pki(pki.root / "evil", "evil CA").publisher("sensor-1")
    forger = sealpost.Sealer(
        evil.cert_pem, evil.key_pem, 1, os.urandom(32), 2**62, embed_certificate=True
    )
    forger.reserve(10)
    attacker.publish("sensors/a", forger.seal("sensors/a", b"forged", int(time.time())))
    expect(errors.UntrustedPublisher)

    # A genuine publisher of this CA, but not permitted to publish on sensors/#.
    meter = pki.publisher("meter-1", "meters/#")
    sealer = sealpost.Sealer(
        meter.cert_pem, meter.key_pem, 1, os.urandom(32), embed_certificate=True
    )
    sealer.reserve(10)
    attacker.publish("sensors/a", sealer.seal("meters/x", b"not yours", int(time.time())))
    expect(errors.TopicNotPermitted)

    # Garbage.
    attacker.publish("sensors/a", b"\xa1\x01\x02 not an envelope")
    expect(errors.Malformed)

    assert a.delivered == 1
    assert a.rejected == {
        "replayed": 1,
        "bad_signature": 2,
        "untrusted_publisher": 1,
        "topic_not_permitted": 1,
        "malformed": 1,
    }
