"""Python and Rust SDKs read each other: a Python publisher to the Rust subscriber
(``sealpost-sub``), and the Rust publisher (``sealpost-pub``) to a Python subscriber."""

from __future__ import annotations

import subprocess

from conftest import binary


def run_cli(pki, tool: str, args: list[str], identity) -> subprocess.CompletedProcess[str]:
    """Runs sealpost-pub or sealpost-sub with ``identity``'s certificate and the test CA."""
    return subprocess.run(
        [
            binary(tool),
            *args,
            *("--cert", str(identity.cert), "--key", str(identity.key)),
            *("--cafile", str(pki.ca), "--crl", str(pki.crl)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=pki.root,
    )


def test_python_publisher_to_rust_subscriber(clients, pki, broker):
    alice = pki.subscriber("alice")
    p = clients.publisher(pki.publisher("sensor-1"))
    p.grant(alice.cert)
    # Retained: whenever sealpost-sub has subscribed, it gets the message.
    p.publish("sensors/temp", b"21.5 C from Python", retain=True)
    assert p.flush()
    args = f"-L {broker.url()} -t sensors/# -v -C 1 -W 30 --replay-in-memory".split()
    done = run_cli(pki, "sealpost-sub", args, alice)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "sensors/temp [sensor-1] 21.5 C from Python\n"


def test_rust_publisher_to_python_subscriber(clients, pki, broker):
    alice, publisher = pki.subscriber("alice"), pki.publisher("sensor-1")
    readers = pki.root / "readers"
    readers.mkdir()
    (readers / "alice.pem").write_bytes(alice.cert_pem)
    a = clients.subscriber(alice)
    args = f"-L {broker.url()} -t sensors/temp -d --grant-dir {readers}".split()
    args += ["-m", "22.0 C from Rust", "--state-dir", str(pki.root / "rust-pub")]
    done = run_cli(pki, "sealpost-pub", args, publisher)
    assert done.returncode == 0, done.stderr
    assert "granted alice" in done.stderr
    m = a.recv(timeout=10)
    assert (m.topic, m.publisher, m.payload) == ("sensors/temp", "sensor-1", b"22.0 C from Rust")
