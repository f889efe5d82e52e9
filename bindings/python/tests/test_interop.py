"""Python and Rust SDKs read each other: a Python publisher to the Rust subscriber
(``sealpost-sub``), and the Rust publisher (``sealpost-pub``) to a Python subscriber."""

from __future__ import annotations

import subprocess

from conftest import binary


def identity_args(pki, issued) -> list[str]:
    return [
        *("--cert", str(issued.cert), "--key", str(issued.key)),
        *("--cafile", str(pki.ca), "--crl", str(pki.crl)),
    ]


def test_python_publisher_to_rust_subscriber(clients, pki, broker):
    alice = pki.subscriber("alice")
    p = clients.publisher(pki.publisher("sensor-1"))
    p.grant(alice.cert)
    # Retained: whenever sealpost-sub has subscribed, it gets the message.
    p.publish("sensors/temp", b"21.5 C from Python", retain=True)
    assert p.flush()
    done = subprocess.run(
        [
            binary("sealpost-sub"),
            *f"-L {broker.url()} -t sensors/# -v -C 1 -W 30 --replay-in-memory".split(),
            *identity_args(pki, alice),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=pki.root,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "sensors/temp [sensor-1] 21.5 C from Python\n"


def test_rust_publisher_to_python_subscriber(clients, pki, broker):
    alice, publisher = pki.subscriber("alice"), pki.publisher("sensor-1")
    readers = pki.root / "readers"
    readers.mkdir()
    (readers / "alice.pem").write_bytes(alice.cert_pem)
    a = clients.subscriber(alice)
    done = subprocess.run(
        [
            binary("sealpost-pub"),
            *f"-L {broker.url()} -t sensors/temp -d --grant-dir {readers}".split(),
            *["-m", "22.0 C from Rust", "--state-dir", str(pki.root / "rust-pub")],
            *identity_args(pki, publisher),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=pki.root,
    )
    assert done.returncode == 0, done.stderr
    assert "granted alice" in done.stderr
    m = a.recv(timeout=10)
    assert (m.topic, m.publisher, m.payload) == ("sensors/temp", "sensor-1", b"22.0 C from Rust")
