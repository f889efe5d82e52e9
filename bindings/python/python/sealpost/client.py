"""``Publisher`` and ``Subscriber``: the sans-IO session core over paho-mqtt.

The Rust core (``sealpost._native``) decides everything (sealing, sequence reservation,
key messages on grant/revoke/rotation, verification, the replay window, holding messages
that wait for their key); these classes only move its packets to and from the broker,
write its state to disk when it says so, and hand messages to the application.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Callable, TypeVar

from . import _native
from ._files import PemSource, StateLock, read_pem, read_state, write_state
from ._inbox import Closed, Inbox
from ._mqtt import Connection
from ._tls import DEFAULT_URL
from .errors import Rejected

Message = _native.Message


def _now_ms() -> int:
    return int(time.time() * 1000)


# Every call into a session holds the client's lock: the session releases the GIL while
# it works (signing, key wrapping), and the lock keeps the network thread and the
# application's threads from entering it at once.


_C = TypeVar("_C", bound="_Client")


class _Client:
    """What Publisher and Subscriber share: a session, a connection, a lock for both."""

    _session: _native.PublisherSession | _native.SubscriberSession
    _conn: Connection
    _lock: threading.Lock | threading.RLock

    @property
    def id(self) -> str:
        """The client's identity (its certificate's id)."""
        with self._lock:
            return self._session.id

    @property
    def connected(self) -> bool:
        """Whether the client is connected to the broker now (it reconnects by itself)."""
        return self._conn.is_connected

    def close(self) -> None:
        """Disconnects."""
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Publisher(_Client):
    """Seals and publishes messages that only the subscribers it grants can read.

    Connects on construction and keeps the connection (reconnecting in the background);
    after every (re)connect it publishes its key messages again (retained, QoS 1), so a
    broker that lost them, and offline subscribers, still get their keys; 1 s after a
    reconnect, its last 512 QoS 1 messages too (subscribers drop duplicates).

    Args:
        certificate: the publisher certificate (PEM text, bytes, or a file path).
        key: its Ed25519 private key (PEM text, bytes, or a file path).
        ca: the CA certificate; granted subscriber certificates must chain to it.
        crl: the CA's revocation list (required unless ``insecure_no_crl``).
        state_file: where the publisher keeps its state (sequence high-water mark, recent
            content keys, grants), written atomically before it takes effect and locked
            while the publisher runs: sequence numbers are never reused after a restart.
        url: the broker, ``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]`` (TLS: the broker's
            certificate must chain to ``ca``, and the publisher presents its own, which is
            how the sealpost broker lets it write its key topics).
        tls: an ``ssl.SSLContext`` to use instead of that default for ``mqtts://``.
        client_id: the MQTT client id (default: random).
        rotate_on_grant: a new reader gets a new key, so it cannot open what was sealed
            before its grant (default True).
        insecure_no_crl: run without a revocation list (revoked readers keep getting keys).
        connect_timeout: seconds to wait for the broker's CONNACK.

    Raises:
        sealpost.errors.ConnectFailed: the broker is unreachable or refused the login.
        ValueError: an identity, CA or revocation list that does not parse.
        sealpost.errors.SealpostError: saved state that cannot be read back.
    """

    def __init__(
        self,
        *,
        certificate: PemSource,
        key: PemSource,
        ca: PemSource,
        crl: PemSource | None = None,
        state_file: str | Path,
        url: str = DEFAULT_URL,
        tls: ssl.SSLContext | None = None,
        client_id: str | None = None,
        keepalive: int = 30,
        rotate_on_grant: bool = True,
        insecure_no_crl: bool = False,
        connect_timeout: float = 10.0,
    ) -> None:
        self._state_path = Path(state_file)
        self._state_lock = StateLock(self._state_path)
        self._lock = threading.RLock()
        self._connects = 0
        try:
            ca_pem, certificate_pem, key_pem = read_pem(ca), read_pem(certificate), read_pem(key)
            self._session = _native.PublisherSession(
                certificate_pem,
                key_pem,
                ca_pem,
                None if crl is None else read_pem(crl),
                read_state(self._state_path),
                lambda state: write_state(self._state_path, state),
                _now_ms(),
                rotate_on_grant=rotate_on_grant,
                insecure_no_crl=insecure_no_crl,
            )
            startup = self._session.take_packets()
            self._conn = Connection(
                url=url,
                tls=tls,
                identity=(ca_pem, certificate_pem, key_pem),
                client_id=client_id,
                prefix="sealpost-pub",
                keepalive=keepalive,
                on_connect=self._on_connect,
            )
            self._conn.start((), connect_timeout)
            # Clearing the retained key messages of grantees dropped since the last run.
            self._conn.send(startup)
        except BaseException:
            self._state_lock.release()
            raise

    def _on_connect(self) -> None:
        with self._lock:
            self._conn.send(self._session.connected())
            self._connects += 1
            if self._connects > 1:
                # After a reconnect (a failover, a broker restart), the recent envelopes
                # again, a little later: what the lost connection took with it still
                # arrives, and subscribers drop what they already have (replay window).
                timer = threading.Timer(_native.RESEND_DELAY_MS / 1000, self._resend)
                timer.daemon = True
                timer.start()

    def _resend(self) -> None:
        with self._lock:
            self._conn.send(self._session.resend())

    @property
    def connections(self) -> int:
        """How many times the publisher has connected (reconnects included)."""
        with self._lock:
            return self._connects

    @property
    def epoch(self) -> int:
        """The current key epoch."""
        with self._lock:
            return self._session.epoch

    @property
    def granted(self) -> list[str]:
        """The ids of the granted subscribers, sorted."""
        with self._lock:
            return self._session.granted

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Seals ``payload`` for ``topic`` and publishes it; returns its sequence number.

        Raises:
            sealpost.errors.SealError: the certificate does not permit ``topic``, or the
                state could not be saved (then nothing was sealed).
        """
        return self.publish_many([(topic, payload)], qos, retain)[0]

    def publish_many(
        self, messages: Iterable[tuple[str, bytes]], qos: int = 1, retain: bool = False
    ) -> list[int]:
        """Seals several messages as one burst (one signature) and publishes them in order;
        returns their sequence numbers. All are sealed or none (SealError)."""
        with self._lock:
            seqs, packets = self._session.publish(list(messages), qos, retain, _now_ms())
            self._conn.send(packets)
        return seqs

    def grant(self, certificate: PemSource) -> str:
        """Grants the subscriber certificate (verified against the CA and revocation list):
        publishes its key message (retained), rotating the key first if it is a new reader
        and anything was sealed under the current key. Returns the subscriber's id."""
        with self._lock:
            subscriber, packets = self._session.grant(read_pem(certificate), _now_ms())
            self._conn.send(packets)
        return subscriber

    def revoke(self, subscriber: str) -> None:
        """Revokes a granted subscriber: clears its retained key message and rotates the key,
        so it cannot open anything published afterwards."""
        with self._lock:
            self._conn.send(self._session.revoke(subscriber, _now_ms()))

    def rotate(self) -> None:
        """Starts a new key epoch and publishes its key messages to every grantee."""
        with self._lock:
            self._conn.send(self._session.rotate(_now_ms()))

    def set_revocation_list(self, crl: PemSource) -> None:
        """Installs a newer revocation list of the CA and drops (and rotates away from) the
        readers it revokes."""
        with self._lock:
            self._session.set_revocation_list(read_pem(crl))
            self._conn.send(self._session.check_readers(_now_ms()))

    def flush(self, timeout: float = 10.0) -> bool:
        """Waits until the broker acknowledged every QoS 1/2 packet; False on timeout."""
        return self._conn.flush(timeout)

    def close(self) -> None:
        """Waits (up to 5 s) for unacknowledged packets, disconnects, releases the state."""
        self._conn.stop()
        self._state_lock.release()


class Subscriber(_Client):
    """Receives, verifies and opens sealed messages; delivers each one exactly once.

    Subscribes to ``topics`` and to its own key messages (``sealpost/keys/+/<id>``).
    Messages arrive on paho's network thread and wait in an inbox: read them with
    :meth:`recv`, ``for message in subscriber``, or ``async for message in subscriber``.
    Refused messages (typed :class:`~sealpost.errors.Rejected` exceptions, never raised
    at you) go to :meth:`next_rejection` and the ``on_rejected`` callback, and are
    counted in :attr:`rejected`. A message whose key has not arrived is held (up to
    ``hold_time`` seconds), then rejected with the reason it could not open.

    Args:
        certificate, key: the subscriber certificate and private key (RSA or X25519).
        ca: the CA certificate; publisher certificates must chain to it.
        crl: the CA's revocation list (required unless ``insecure_no_crl``).
        topics: the filters to subscribe (QoS 1).
        url, tls: the broker, as for :class:`Publisher` (over ``mqtts://`` the subscriber
            presents its certificate: the sealpost broker gives it its key messages).
        state_file: where the replay window is kept (written atomically before messages
            are handed over, locked while running), so a restarted subscriber refuses
            what it already delivered. Required unless ``replay_in_memory``.
        replay_in_memory: keep the replay window in memory only: after a restart,
            captured envelopes younger than ``max_age`` are accepted again.
        max_age: refuse envelopes signed longer ago than this many seconds (``Stale``).
        hold_time: seconds a message waits for its key or publisher certificate.
        on_rejected: called (on the network thread) with each rejection.
    """

    def __init__(
        self,
        *,
        certificate: PemSource,
        key: PemSource,
        ca: PemSource,
        crl: PemSource | None = None,
        topics: str | Iterable[str],
        state_file: str | Path | None = None,
        replay_in_memory: bool = False,
        url: str = DEFAULT_URL,
        tls: ssl.SSLContext | None = None,
        client_id: str | None = None,
        keepalive: int = 30,
        max_age: float = 86400,
        hold_time: float = 10.0,
        insecure_no_crl: bool = False,
        on_rejected: Callable[[Rejected], None] | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if state_file is None and not replay_in_memory:
            raise ValueError(
                "give state_file (where the replay window is kept), or replay_in_memory=True"
            )
        self._state_path = None if state_file is None else Path(state_file)
        self._state_lock = None if self._state_path is None else StateLock(self._state_path)
        self._lock = threading.Lock()
        self._messages: Inbox[Message] = Inbox()
        self._rejections: Inbox[Rejected] = Inbox()
        self._on_rejected = on_rejected
        #: Messages delivered so far.
        self.delivered = 0
        #: Rejections so far, by kind (``"bad_signature"``: 2, ...).
        self.rejected: dict[str, int] = {}
        self._stop = threading.Event()
        try:
            saved = None if self._state_path is None else read_state(self._state_path)
            ca_pem, certificate_pem, key_pem = read_pem(ca), read_pem(certificate), read_pem(key)
            self._session = _native.SubscriberSession(
                certificate_pem,
                key_pem,
                ca_pem,
                None if crl is None else read_pem(crl),
                saved,
                insecure_no_crl=insecure_no_crl,
                max_age_secs=int(max_age),
                hold_time_ms=int(hold_time * 1000),
            )
            filters = [topics] if isinstance(topics, str) else list(topics)
            filters += self._session.subscriptions()
            self._conn = Connection(
                url=url,
                tls=tls,
                identity=(ca_pem, certificate_pem, key_pem),
                client_id=client_id,
                prefix="sealpost-sub",
                keepalive=keepalive,
                on_connect=lambda: None,
                on_message=self._on_message,
            )
            self._conn.start([(f, 1) for f in filters], connect_timeout)
        except BaseException:
            if self._state_lock is not None:
                self._state_lock.release()
            raise
        # Held messages expire even when nothing arrives.
        self._ticker = threading.Thread(
            target=self._tick, args=(min(1.0, hold_time / 4),), daemon=True
        )
        self._ticker.start()

    def _on_message(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self._handle(self._session.incoming(topic, payload, _now_ms()))

    def _tick(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with self._lock:
                self._handle(self._session.tick(_now_ms()))

    def _handle(self, output: tuple[bytes | None, list[Message | Rejected]]) -> None:
        persist, events = output
        if persist is not None and self._state_path is not None:
            # Durable before anything is handed over: a restart never delivers it again.
            write_state(self._state_path, persist)
        for event in events:
            if isinstance(event, Rejected):
                self.rejected[event.kind] = self.rejected.get(event.kind, 0) + 1
                self._rejections.put(event)
                if self._on_rejected is not None:
                    self._on_rejected(event)
            else:
                self.delivered += 1
                self._messages.put(event)

    def recv(self, timeout: float | None = None) -> Message:
        """The next message; raises TimeoutError after ``timeout`` seconds (None: wait)."""
        try:
            return self._messages.get(timeout)
        except Closed:
            raise RuntimeError("subscriber closed") from None

    def next_rejection(self, timeout: float | None = None) -> Rejected:
        """The next rejection (returned, not raised); TimeoutError after ``timeout``."""
        try:
            return self._rejections.get(timeout)
        except Closed:
            raise RuntimeError("subscriber closed") from None

    def __iter__(self) -> Iterator[Message]:
        """Messages as they arrive, until :meth:`close`."""
        while True:
            try:
                yield self._messages.get()
            except Closed:
                return

    async def __aiter__(self) -> AsyncIterator[Message]:
        """Messages as they arrive, without blocking the event loop, until :meth:`close`."""
        while True:
            try:
                yield await self._messages.aget()
            except Closed:
                return

    def set_revocation_list(self, crl: PemSource) -> None:
        """Installs a newer revocation list of the CA (publishers it revokes are refused)."""
        with self._lock:
            self._session.set_revocation_list(read_pem(crl))

    def close(self) -> None:
        """Disconnects and ends iteration (messages already received can still be read)."""
        self._stop.set()
        self._conn.stop(flush=0)
        self._ticker.join()
        self._messages.close()
        self._rejections.close()
        if self._state_lock is not None:
            self._state_lock.release()
