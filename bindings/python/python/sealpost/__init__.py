"""sealpost: MQTT messages that only the subscribers the publisher grants can read.

Publishers seal every payload (AES-256-GCM, Ed25519 signatures, sequence numbers, COSE
encoding) and hand the content key only to the subscribers they grant, in retained key
messages; the broker (any MQTT broker) forwards envelopes it cannot read, forge or replay.
The protocol and session logic is the Rust core of the sealpost SDKs; paho-mqtt is the
transport.

- :class:`Publisher`, :class:`Subscriber`: connected clients (sync API with a background
  network thread; ``async for`` over a subscriber's messages).
- :class:`Sealer`, :class:`Opener`: the protocol core without a transport, for
  applications that move envelopes themselves.
- :mod:`sealpost.errors`: typed exceptions, one per rejection reason.
"""

from . import errors
from ._native import Message, Opener, Sealer
from .client import Publisher, Subscriber
from .errors import ConnectFailed, Rejected, SealError, SealpostError

__all__ = [
    "ConnectFailed",
    "Message",
    "Opener",
    "Publisher",
    "Rejected",
    "SealError",
    "Sealer",
    "SealpostError",
    "Subscriber",
    "errors",
]
