"""Broker addresses (``mqtt://`` and ``mqtts://``) and the default TLS context.

As with the sealpost CLIs, ``mqtts://`` trusts the sealpost CA for the broker's
certificate and presents the client's own sealpost certificate, which is what lets the
sealpost broker authorise key topics (a publisher writes its own, a subscriber reads its
own). Certificate checks are never switched off here: pass an ``ssl.SSLContext`` of your
own for anything else.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from urllib.parse import urlsplit

DEFAULT_URL = "mqtt://127.0.0.1:1883"


def parse_url(url: str) -> tuple[str, int, bool]:
    """``(host, port, tls)`` of an ``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"broker URL {url!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    tls = parts.scheme == "mqtts"
    return parts.hostname, parts.port or (8883 if tls else 1883), tls


def client_context(ca_pem: str, certificate_pem: str, key_pem: str) -> ssl.SSLContext:
    """A TLS client context that trusts ``ca_pem`` and presents the given certificate."""
    context = ssl.create_default_context(cadata=ca_pem)
    # The ssl module loads a certificate chain from files only: a private directory that
    # exists while it reads them.
    with tempfile.TemporaryDirectory(prefix="sealpost-tls-") as tmp:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for path, text in ((cert, certificate_pem), (key, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(text)
        context.load_cert_chain(cert, key)
    return context
