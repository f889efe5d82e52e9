"""pytest fixtures: real brokers on ephemeral loopback ports, certificates from the real CA tool.

The binaries (``sealpost-broker``, ``sealpost-certs``, ``sealpost-pub``, ``sealpost-sub``)
are the ones cargo built in this checkout (``cargo build --bins``): ``target/debug``, or
the directory in ``SEALPOST_BIN_DIR``. Mosquitto is Debian's (``/usr/sbin/mosquitto``).
A missing binary fails the test run with the command that builds it: nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PUBLISHER_TOPICS = "sensors/#"


def binary(name: str) -> str:
    """The path of a sealpost binary built by cargo, or fail saying how to build it."""
    dirs = [os.environ.get("SEALPOST_BIN_DIR"), REPO / "target/debug", REPO / "target/release"]
    for d in dirs:
        if d and (Path(d) / name).is_file():
            return str(Path(d) / name)
    pytest.fail(f"{name} not found in {dirs}: run `cargo build --bins` in {REPO}")


def free_port() -> int:
    """A port free on 127.0.0.1 right now (never 1883)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    """Waits until something listens on ``port``; fails if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


@dataclass
class Issued:
    """A certificate the test CA issued: PEM file paths and contents."""

    id: str
    cert: Path
    key: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key.read_bytes()


class Pki:
    """A CA made with ``sealpost-certs`` in a temporary directory."""

    def __init__(self, root: Path, name: str = "test CA") -> None:
        self.root = root
        self.dir = root / "pki"
        root.mkdir(parents=True, exist_ok=True)
        self.run("init", "--name", name)

    def run(self, *args: str) -> str:
        """Runs ``sealpost-certs --dir <pki> ARGS`` and returns its stdout."""
        done = subprocess.run(
            [binary("sealpost-certs"), "--dir", str(self.dir), *args],
            capture_output=True,
            text=True,
            cwd=self.root,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"sealpost-certs {' '.join(args)}: {done.stderr}")
        return done.stdout

    def issued(self, name: str) -> Issued:
        return Issued(name, self.dir / f"{name}.pem", self.dir / f"{name}.key")

    def publisher(self, id: str, topics: str = PUBLISHER_TOPICS) -> Issued:
        self.run("issue", "publisher", "--id", id, "--topics", topics)
        return self.issued(id)

    def subscriber(self, id: str) -> Issued:
        self.run("issue", "subscriber", "--id", id)
        return self.issued(id)

    def server(self) -> Issued:
        self.run("issue", "server", "--dns", "localhost", "127.0.0.1")
        return self.issued("localhost")

    def revoke(self, issued: Issued) -> None:
        self.run("revoke", str(issued.cert))

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def crl(self) -> Path:
        return self.dir / "crl.pem"

    @property
    def ca_pem(self) -> bytes:
        return self.ca.read_bytes()

    @property
    def crl_pem(self) -> bytes:
        return self.crl.read_bytes()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A fresh CA (``sealpost-certs init``) in this test's temporary directory."""
    return Pki(tmp_path)


class Broker:
    """A real broker process on ephemeral loopback ports."""

    kind: str
    host = "127.0.0.1"
    port: int
    process: subprocess.Popen

    def url(self) -> str:
        """The broker address for Publisher/Subscriber and sealpost-pub/sealpost-sub (-L)."""
        return f"mqtt://{self.host}:{self.port}"

    command: list[str]
    log: Path

    def start(self) -> None:
        """Starts the broker process and waits until it listens."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=log)
        wait_for_port(self.port, self.process, self.kind)

    def restart(self) -> None:
        """Stops the broker and starts it again on the same ports: retained messages kept
        in memory (both brokers here) are lost."""
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class SealpostBroker(Broker):
    """``sealpost-broker`` with TCP and TLS listeners. Key topics are writable only by the
    publisher's certificate and readable only by the recipient's, so sealpost clients
    connect over TLS with their certificates; the TCP port serves spies."""

    kind = "sealpost"

    def __init__(self, pki: Pki) -> None:
        server = pki.server()
        self.tcp_port, self.port = free_port(), free_port()
        config = pki.root / "broker.toml"
        config.write_text(
            f"""
[[listener]]
kind = "tcp"
bind = "127.0.0.1:{self.tcp_port}"
[[listener]]
kind = "tls"
bind = "127.0.0.1:{self.port}"
[listener.tls]
cert = "{server.cert}"
key = "{server.key}"
client_ca = "{pki.ca}"
[limits]
max_packet_size = 2000000
max_queued_messages = 100000
"""
        )
        self.command = [binary("sealpost-broker"), "--config", str(config)]
        self.log = pki.root / "broker.log"
        self.start()

    def url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"


class MosquittoBroker(Broker):
    """Debian's Mosquitto, anonymous, plain TCP, no persistence."""

    kind = "mosquitto"

    def __init__(self, pki: Pki) -> None:
        self.port = free_port()
        self.tcp_port = self.port
        config = pki.root / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.command = [mosquitto, "-c", str(config)]
        self.log = pki.root / "mosquitto.log"
        self.start()


@pytest.fixture(params=["sealpost", "mosquitto"])
def broker(request: pytest.FixtureRequest, pki: Pki) -> Iterator[Broker]:
    """Each test runs against the sealpost broker and against Mosquitto."""
    b = SealpostBroker(pki) if request.param == "sealpost" else MosquittoBroker(pki)
    yield b
    b.stop()


class Clients:
    """Builds sealpost Publishers and Subscribers for one test's broker and CA, and closes
    them at the end of the test."""

    def __init__(self, broker: Broker, pki: Pki) -> None:
        self.broker, self.pki = broker, pki
        self.open: list = []

    def publisher(self, issued: Issued, state: str = "pub", **options):
        import sealpost

        p = sealpost.Publisher(
            certificate=issued.cert,
            key=issued.key,
            ca=self.pki.ca,
            crl=self.pki.crl,
            state_file=self.pki.root / f"{state}.state",
            url=self.broker.url(),
            **options,
        )
        self.open.append(p)
        return p

    def subscriber(self, issued: Issued, topics: str = "sensors/#", **options):
        import sealpost

        options.setdefault("replay_in_memory", "state_file" not in options)
        options.setdefault("hold_time", 1.0)
        s = sealpost.Subscriber(
            certificate=issued.cert,
            key=issued.key,
            ca=self.pki.ca,
            crl=self.pki.crl,
            topics=topics,
            url=self.broker.url(),
            **options,
        )
        self.open.append(s)
        return s

    def close(self, client) -> None:
        client.close()
        self.open.remove(client)


@pytest.fixture
def clients(broker: Broker, pki: Pki) -> Iterator[Clients]:
    """Publisher and Subscriber factories for ``broker`` and ``pki``."""
    c = Clients(broker, pki)
    yield c
    for client in reversed(c.open):
        client.close()


class RawClient:
    """A plain paho-mqtt client on the broker's TCP port: a spy, or an attacker that
    publishes what it likes (anonymous on both brokers)."""

    def __init__(self, broker: Broker, subscribe: str | None = None) -> None:
        import queue

        import paho.mqtt.client as mqtt

        self.received: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        subscribed = threading.Event()
        self.client.on_message = lambda c, u, m: self.received.put((m.topic, m.payload, m.retain))
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", broker.tcp_port)
        self.client.loop_start()
        if subscribe is not None:
            self.client.subscribe(subscribe, qos=1)
            assert subscribed.wait(10), "spy subscribed"
        else:
            subscribed.set()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def next_on(self, topic: str, timeout: float = 10) -> bytes:
        """The payload of the next message on ``topic`` (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            t, payload, _ = self.received.get(timeout=max(0.01, deadline - time.monotonic()))
            if t == topic:
                return payload

    def drain(self, wait: float = 0.5) -> list[tuple[str, bytes, bool]]:
        """Everything received so far, after ``wait`` seconds of quiet."""
        import queue

        seen = []
        while True:
            try:
                seen.append(self.received.get(timeout=wait))
            except queue.Empty:
                return seen

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def raw(broker: Broker) -> Iterator[Callable[..., RawClient]]:
    """Factory of :class:`RawClient`s, disconnected at the end of the test."""
    made: list[RawClient] = []

    def make(subscribe: str | None = None) -> RawClient:
        c = RawClient(broker, subscribe)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
