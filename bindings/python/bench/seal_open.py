"""Seal and open throughput at 256 B from Python against the Rust core, in the same run.

    python bench/seal_open.py [--count N] [--size BYTES]

Needs the package installed (``pip install ./bindings/python``) and ``sealpost-certs``
built (``cargo build --release -p sealpost-certs``; ``SEALPOST_BIN_DIR`` or the
checkout's target/release or target/debug). Every row seals or opens the same kind of
envelopes (protocol version 2, one message per burst unless the row says otherwise) with
the same keys; "Rust" is the same compiled core driven by a loop in Rust
(``sealpost._native.rust_seal_open``), "Python" is one Python call per message, or per
batch where named. Prints msg/s and the ratio to Rust.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import sealpost
from sealpost import _native

REPO = Path(__file__).resolve().parents[3]
TOPIC = "sensors/bench"


def certs_binary() -> str:
    for d in (os.environ.get("SEALPOST_BIN_DIR"), REPO / "target/release", REPO / "target/debug"):
        if d and (Path(d) / "sealpost-certs").is_file():
            return str(Path(d) / "sealpost-certs")
    raise SystemExit("sealpost-certs not found: cargo build --release -p sealpost-certs")


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--count", type=int, default=20_000)
    args.add_argument("--size", type=int, default=256)
    opts = args.parse_args()
    n, payload = opts.count, b"\x5a" * opts.size

    with tempfile.TemporaryDirectory() as tmp:
        certs = [certs_binary(), "--dir", f"{tmp}/pki"]
        subprocess.run([*certs, "init"], check=True, capture_output=True)
        subprocess.run(
            [*certs, "issue", "publisher", "--id", "bench", "--topics", "sensors/#"],
            check=True,
            capture_output=True,
        )
        pem = {name: Path(f"{tmp}/pki/{name}").read_text() for name in
               ("bench.pem", "bench.key", "ca.pem", "crl.pem")}  # fmt: skip
    key = os.urandom(32)
    now = int(time.time())

    def sealer() -> sealpost.Sealer:
        s = sealpost.Sealer(pem["bench.pem"], pem["bench.key"], 1, key, embed_certificate=True)
        s.reserve(4 * n)
        return s

    def opener() -> sealpost.Opener:
        o = sealpost.Opener(pem["ca.pem"], pem["crl.pem"])
        o.add_key("bench", 1, key)
        return o

    rust_seal, rust_open = _native.rust_seal_open(sealer(), opener(), TOPIC, opts.size, n, now)
    rust = {"seal": n / rust_seal, "open": n / rust_open}

    s = sealer()
    start = time.perf_counter()
    envelopes = [s.seal(TOPIC, payload, now) for _ in range(n)]
    py_seal = n / (time.perf_counter() - start)

    start = time.perf_counter()
    bursts = []
    for i in range(0, n, 256):
        bursts += s.seal_many([(TOPIC, payload)] * min(256, n - i), now)
    py_seal_many = n / (time.perf_counter() - start)

    o = opener()
    start = time.perf_counter()
    for e in envelopes:
        o.open(TOPIC, e, now)
    py_open = n / (time.perf_counter() - start)

    o = opener()
    start = time.perf_counter()
    for i in range(0, n, 256):
        o.open_batch([(TOPIC, e) for e in envelopes[i : i + 256]], now)
    py_open_batch = n / (time.perf_counter() - start)

    o = opener()
    start = time.perf_counter()
    for i in range(0, n, 256):
        o.open_batch([(TOPIC, e) for e in bursts[i : i + 256]], now)
    py_open_bursts = n / (time.perf_counter() - start)

    print(f"{n} messages of {opts.size} B; msg/s (ratio to the Rust loop)")
    print(f"Rust core   seal {rust['seal']:10.0f}            open {rust['open']:10.0f}")
    for name, rate, base in (
        ("Python seal, one call per message", py_seal, "seal"),
        ("Python seal_many, bursts of 256", py_seal_many, "seal"),
        ("Python open, one call per message", py_open, "open"),
        ("Python open_batch of 256", py_open_batch, "open"),
        ("Python open_batch of 256, sealed as bursts", py_open_bursts, "open"),
    ):
        print(f"{name:44} {rate:10.0f} ({rate / rust[base]:.2f}x)")


if __name__ == "__main__":
    main()
