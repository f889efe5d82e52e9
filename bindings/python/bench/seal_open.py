"""Seal and open throughput at 256 B from Python against the Rust core, in the same run.

    python bench/seal_open.py [--count N] [--size BYTES]

Needs the package installed (``pip install ./bindings/python``) and ``sealpost-certs``
built (``cargo build --release -p sealpost-certs``; ``SEALPOST_BIN_DIR`` or the
checkout's target/release or target/debug). Every row seals or opens the same kind of
envelopes (protocol version 2, one message per burst unless the row says otherwise) with
the same keys; "Rust" is the same compiled core driven by a loop in Rust
(``sealpost._native.rust_seal_open``), "Python" is one Python call per message, or per
batch where named. Prints msg/s and the ratio to the Rust row above it (per message, or
bursts of 256 sealed with ``seal_many`` and opened with ``open_batch``).
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

    def rate(run) -> float:
        """msg/s of the best of 3 runs of ``run`` (each of ``n`` messages)."""
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        return n / best

    def rust(burst: int) -> dict[str, float]:
        runs = [
            _native.rust_seal_open(sealer(), opener(), TOPIC, opts.size, n, burst, now)
            for _ in range(3)
        ]
        return {"seal": n / min(r[0] for r in runs), "open": n / min(r[1] for r in runs)}

    one, batched = rust(0), rust(256)

    s = sealer()
    envelopes = [s.seal(TOPIC, payload, now) for _ in range(n)]
    bursts = [
        e for i in range(0, n, 256) for e in s.seal_many([(TOPIC, payload)] * min(256, n - i), now)
    ]

    def seal_each() -> None:
        s = sealer()
        for _ in range(n):
            s.seal(TOPIC, payload, now)

    def seal_bursts() -> None:
        s = sealer()
        for i in range(0, n, 256):
            s.seal_many([(TOPIC, payload)] * min(256, n - i), now)

    def open_each() -> None:
        o = opener()
        for e in envelopes:
            o.open(TOPIC, e, now)

    def open_batches(sealed: list[bytes]):
        def run() -> None:
            o = opener()
            for i in range(0, n, 256):
                o.open_batch([(TOPIC, e) for e in sealed[i : i + 256]], now)

        return run

    py_seal, py_seal_many = rate(seal_each), rate(seal_bursts)
    py_open, py_open_batch = rate(open_each), rate(open_batches(envelopes))
    py_open_bursts = rate(open_batches(bursts))

    print(f"{n} messages of {opts.size} B, best of 3; msg/s (ratio to the Rust loop)")
    for name, rate, base in (
        ("Rust seal, one call per message", one["seal"], one["seal"]),
        ("Python seal, one call per message", py_seal, one["seal"]),
        ("Rust seal_many, bursts of 256", batched["seal"], batched["seal"]),
        ("Python seal_many, bursts of 256", py_seal_many, batched["seal"]),
        ("Rust open, one call per message", one["open"], one["open"]),
        ("Python open, one call per message", py_open, one["open"]),
        ("Python open_batch of 256", py_open_batch, one["open"]),
        ("Rust open_batch of 256, sealed as bursts", batched["open"], batched["open"]),
        ("Python open_batch of 256, sealed as bursts", py_open_bursts, batched["open"]),
    ):
        print(f"{name:44} {rate:10.0f} ({rate / base:.2f}x)")


if __name__ == "__main__":
    main()
