"""The transport: one paho-mqtt client with its background network thread.

Shared by :class:`~sealpost.Publisher` and :class:`~sealpost.Subscriber`: connects
(TLS through an ``ssl.SSLContext``), reports a refused connection or subscription as
:class:`~sealpost.errors.ConnectFailed`, calls back on every (re)connect so the session
can publish its key messages and subscribe again, and publishes the session's packets
in order.
"""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Callable

import paho.mqtt.client as mqtt

from ._tls import client_context, parse_url
from .errors import ConnectFailed

#: ``(topic, payload, qos, retain)``: one PUBLISH the session asks for.
Packet = tuple[str, bytes, int, bool]


class Connection:
    """A paho-mqtt client, connected (and reconnecting) in the background."""

    def __init__(
        self,
        *,
        url: str,
        tls: ssl.SSLContext | None,
        identity: tuple[str, str, str],
        client_id: str | None,
        prefix: str,
        keepalive: int,
        on_connect: Callable[[], None],
        on_message: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self._host, self._port, use_tls = parse_url(url)
        self._keepalive = keepalive
        self._on_connect_cb = on_connect
        self._on_message_cb = on_message
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._failure: str | None = None
        self._filters: list[tuple[str, int]] = []
        self._in_flight: list[mqtt.MQTTMessageInfo] = []
        # Packets sent while disconnected, for the next connect.
        self._held: list[Packet] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"{prefix}-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv311,
        )
        if use_tls:
            self.client.tls_set_context(tls or client_context(*identity))
        # Key messages and bursts: no cap on queued messages, a generous in-flight window.
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        #: Whether the client is connected now (paho reconnects by itself).
        self.is_connected = False
        self.client.on_subscribe = self._on_subscribe
        if on_message is not None:
            self.client.on_message = self._on_message

    def start(self, filters: Iterable[tuple[str, int]], timeout: float) -> None:
        """Connects, subscribes to ``filters`` (if any) and waits for both to be granted."""
        self._filters = list(filters)
        try:
            self.client.connect(self._host, self._port, keepalive=self._keepalive)
        except (OSError, ssl.SSLError) as e:
            raise ConnectFailed(f"cannot connect to {self._host}:{self._port}: {e}") from e
        self.client.loop_start()
        wanted = self._subscribed if self._filters else self._connected
        if not wanted.wait(timeout) or self._failure is not None:
            reason = self._failure or f"no answer from {self._host}:{self._port} in {timeout} s"
            self.stop(flush=0)
            raise ConnectFailed(reason)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._failure = f"connection refused: {reason_code}"
            self._connected.set()
            self._subscribed.set()
            client.disconnect()
            return
        if self._filters:
            client.subscribe(self._filters)
        with self._lock:
            self.is_connected = True
            # What was sent while disconnected goes after what the session publishes on
            # every connect (its key messages), so those come first.
            held, self._held = self._held, []
        self._on_connect_cb()
        self.send(held)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            self.is_connected = False

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        refused = [
            f"{flt} ({rc})" for (flt, _), rc in zip(self._filters, reason_codes) if rc.is_failure
        ]
        if refused and not self._subscribed.is_set():
            self._failure = "subscription refused: " + ", ".join(refused)
        self._subscribed.set()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        assert self._on_message_cb is not None
        self._on_message_cb(message.topic, message.payload)

    def send(self, packets: Iterable[Packet]) -> None:
        """Publishes packets in order; while disconnected they are held and sent after the
        next connect."""
        with self._lock:
            if not self.is_connected:
                self._held.extend(packets)
                return
            for topic, payload, qos, retain in packets:
                info = self.client.publish(topic, payload, qos=qos, retain=retain)
                if qos > 0:
                    self._in_flight.append(info)
            self._in_flight = [i for i in self._in_flight if _outcome(i) is not True]

    def flush(self, timeout: float) -> bool:
        """Waits until every QoS 1/2 packet sent so far is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                held = bool(self._held)
                outcomes = [_outcome(i) for i in self._in_flight]
            if not held and all(o is True for o in outcomes):
                return True
            if False in outcomes:
                # Reported once: the next flush waits for what was sent since.
                with self._lock:
                    self._in_flight = [i for i in self._in_flight if _outcome(i) is None]
                return False
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def stop(self, flush: float = 5.0) -> None:
        """Waits up to ``flush`` seconds for unacknowledged packets, then disconnects."""
        if flush > 0 and self._connected.is_set() and self._failure is None:
            self.flush(flush)
        self.client.disconnect()
        self.client.loop_stop()


def _outcome(info: mqtt.MQTTMessageInfo) -> bool | None:
    """True once acknowledged, None while waiting, False if paho reports it failed (it
    was handed over as the connection dropped: paho may still deliver it after a
    reconnect, but can no longer tell)."""
    try:
        return True if info.is_published() else None
    except (RuntimeError, ValueError):
        return False
