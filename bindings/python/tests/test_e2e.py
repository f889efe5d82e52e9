"""End-to-end: Python publishers and subscribers through real brokers (sealpost, Mosquitto),
the scenarios of the Rust SDK's tests/tests/e2e.rs."""

from __future__ import annotations

import asyncio
import time

import pytest

import sealpost
from sealpost import errors

TEXTS = [b"secret reading 41", b"secret reading 42", b"secret reading 43"]


def test_granted_subscribers_read_and_others_read_nothing(clients, pki, raw, broker):
    publisher, alice, bob, eve = (
        pki.publisher("sensor-1"),
        pki.subscriber("alice"),
        pki.subscriber("bob"),
        pki.subscriber("eve"),
    )
    spy = raw("#")
    a, b, e = clients.subscriber(alice), clients.subscriber(bob), clients.subscriber(eve)
    p = clients.publisher(publisher)
    assert p.grant(alice.cert) == "alice"
    assert p.grant(bob.cert_pem) == "bob"
    assert p.granted == ["alice", "bob"]
    for text in TEXTS:
        p.publish("sensors/temp", text)

    for s in (a, b):
        last = -1
        for text in TEXTS:
            m = s.recv(timeout=10)
            assert (m.payload, m.topic, m.publisher) == (text, "sensors/temp", "sensor-1")
            assert m.seq > last, "sequence numbers increase"
            last = m.seq
    # eve never gets a key message: each message is held, then rejected as unopenable.
    for _ in TEXTS:
        r = e.next_rejection(timeout=10)
        assert isinstance(r, (errors.UnknownPublisher, errors.UnknownKey)), r
        assert r.retryable and r.topic == "sensors/temp"
    assert e.delivered == 0
    with pytest.raises(TimeoutError):
        e.recv(timeout=0.5)
    assert a.delivered == 3

    seen = spy.drain()
    assert [t for t, _, _ in seen].count("sensors/temp") == 3
    assert not any(b"secret reading" in payload for _, payload, _ in seen)
    key_messages = [t for t, _, _ in seen if t.startswith("sealpost/keys/")]
    if broker.kind == "sealpost":
        assert key_messages == [], "key messages go to their recipients only"
    else:
        assert len(key_messages) >= 2


def test_revoked_subscriber_reads_nothing_published_afterwards(clients, pki):
    alice, bob = pki.subscriber("alice"), pki.subscriber("bob")
    a, b = clients.subscriber(alice), clients.subscriber(bob)
    p = clients.publisher(pki.publisher("sensor-1"))
    p.grant(alice.cert)
    p.grant(bob.cert)
    p.publish("sensors/temp", b"before")
    assert a.recv(timeout=10).payload == b"before"
    assert b.recv(timeout=10).payload == b"before"
    epoch = p.epoch

    p.revoke("alice")
    assert p.epoch > epoch, "revoking rotates the key"
    assert p.granted == ["bob"]
    p.publish("sensors/temp", b"after revoke")
    m = b.recv(timeout=10)
    assert (m.payload, m.epoch) == (b"after revoke", p.epoch)
    r = a.next_rejection(timeout=10)
    assert isinstance(r, errors.UnknownKey), r
    assert r.epoch == p.epoch
    assert a.delivered == 1
    with pytest.raises(errors.SessionError) as e:
        p.revoke("alice")
    assert e.value.kind == "not_granted"


def test_offline_subscriber_gets_its_key_from_the_retained_key_message(clients, pki):
    carol = pki.subscriber("carol")
    p = clients.publisher(pki.publisher("sensor-1"))
    # Granted and rotated while carol is offline.
    p.grant(carol.cert)
    p.rotate()
    p.publish("sensors/retained", b"retained value", retain=True)
    assert p.flush()

    c = clients.subscriber(carol)
    m = c.recv(timeout=10)
    assert (m.payload, m.epoch) == (b"retained value", p.epoch)
    p.publish("sensors/live", b"live value")
    assert c.recv(timeout=10).payload == b"live value"


def test_restarted_publisher_keeps_sequence_numbers_increasing(clients, pki):
    issued, alice = pki.publisher("sensor-1"), pki.subscriber("alice")
    a = clients.subscriber(alice)
    p = clients.publisher(issued)
    p.grant(alice.cert)
    epoch = p.epoch
    first = p.publish("sensors/a", b"first life")
    m1 = a.recv(timeout=10)
    assert m1.seq == first
    clients.close(p)

    p = clients.publisher(issued)
    assert p.granted == ["alice"], "grants persisted"
    assert p.epoch == epoch, "key persisted"
    second = p.publish("sensors/a", b"second life")
    m2 = a.recv(timeout=10)
    assert m2.payload == b"second life"
    assert m2.seq == second > m1.seq


def test_a_second_publisher_on_the_same_state_is_refused(clients, pki):
    issued = pki.publisher("sensor-1")
    clients.publisher(issued)
    with pytest.raises(RuntimeError, match="in use"):
        clients.publisher(issued)


def test_restarted_subscriber_does_not_deliver_again(clients, pki):
    alice = pki.subscriber("alice")
    state = pki.root / "alice.replay"
    p = clients.publisher(pki.publisher("sensor-1"))
    p.grant(alice.cert)
    p.publish("sensors/r", b"retained once", retain=True)
    a = clients.subscriber(alice, state_file=state)
    assert a.recv(timeout=10).payload == b"retained once"
    clients.close(a)

    # Restart: the broker hands over the retained message again; it was delivered.
    a = clients.subscriber(alice, state_file=state)
    r = a.next_rejection(timeout=10)
    assert isinstance(r, errors.Replayed), r
    p.publish("sensors/r", b"new value", retain=True)
    assert a.recv(timeout=10).payload == b"new value"
    assert a.delivered == 1


def test_async_iteration(clients, pki):
    alice = pki.subscriber("alice")
    a = clients.subscriber(alice)
    p = clients.publisher(pki.publisher("sensor-1"))
    p.grant(alice.cert)

    async def read_three() -> list[bytes]:
        got = []
        async for m in a:
            got.append(m.payload)
            if len(got) == 3:
                return got
        return got

    async def main() -> list[bytes]:
        reader = asyncio.ensure_future(read_three())
        # The event loop stays free while the reader waits.
        await asyncio.sleep(0.1)
        assert not reader.done()
        p.publish_many([("sensors/temp", t) for t in TEXTS])
        return await asyncio.wait_for(reader, 10)

    assert asyncio.run(main()) == TEXTS


def test_the_revocation_list_is_required(pki, broker):
    issued = pki.publisher("sensor-1")
    with pytest.raises(errors.SessionError) as e:
        sealpost.Publisher(
            certificate=issued.cert,
            key=issued.key,
            ca=pki.ca,
            state_file=pki.root / "p.state",
            url=broker.url(),
        )
    assert e.value.kind == "revocation_list_required"
    alice = pki.subscriber("alice")
    with pytest.raises(errors.SessionError) as e:
        sealpost.Subscriber(
            certificate=alice.cert,
            key=alice.key,
            ca=pki.ca,
            topics="#",
            replay_in_memory=True,
            url=broker.url(),
        )
    assert e.value.kind == "revocation_list_required"


def test_publishing_outside_the_certificate_is_refused(clients, pki):
    p = clients.publisher(pki.publisher("sensor-1"))
    with pytest.raises(sealpost.SealError) as e:
        p.publish("actuators/valve", b"open")
    assert e.value.kind == "topic_not_permitted"


def test_a_revoked_certificate_cannot_be_granted(clients, pki):
    mallory = pki.subscriber("mallory")
    pki.revoke(mallory)
    p = clients.publisher(pki.publisher("sensor-1"))
    with pytest.raises(errors.SessionError) as e:
        p.grant(mallory.cert)
    assert e.value.kind == "certificate"
    assert p.granted == []


def test_key_messages_are_published_again_after_the_broker_lost_them(clients, pki, broker):
    alice = pki.subscriber("alice")
    p = clients.publisher(pki.publisher("sensor-1"))
    p.grant(alice.cert)
    assert p.flush()
    # The broker restarts and loses its retained messages (the key messages among them);
    # the publisher reconnects by itself and publishes its key messages again.
    broker.restart()
    deadline = time.monotonic() + 30
    while p.connections < 2 or not p.connected:
        assert time.monotonic() < deadline, "publisher reconnected"
        time.sleep(0.1)
    assert p.flush()
    a = clients.subscriber(alice)
    p.publish("sensors/temp", b"after the restart")
    assert a.recv(timeout=10).payload == b"after the restart"
