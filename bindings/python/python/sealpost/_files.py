"""State files: atomic, durable replacement, and a lock against a second process.

The session core decides *when* state must be durable (before a sequence number is
used, before a delivered message is handed over); this module makes it so: write a
temporary file beside the target, fsync it, rename it over the target, fsync the
directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

try:  # POSIX; on other systems a second process on the same state is not detected.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

#: A PEM given as its text or bytes, or as the path of a file that holds it.
PemSource = Union[str, bytes, os.PathLike]


def read_pem(source: PemSource) -> str:
    """The PEM text of ``source``: PEM text or bytes as given, else the file it names."""
    if isinstance(source, bytes):
        return source.decode("ascii")
    if isinstance(source, str) and "-----BEGIN" in source:
        return source
    return Path(source).read_text(encoding="ascii")


def read_state(path: Path) -> bytes | None:
    """The saved state, or None if there is none yet."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def write_state(path: Path, data: bytes) -> None:
    """Replaces ``path`` with ``data`` atomically and durably (mode 0600: keys inside)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StateLock:
    """An exclusive advisory lock on ``<state>.lock`` for the life of a client."""

    def __init__(self, state: Path) -> None:
        self._file = open(state.with_name(f"{state.name}.lock"), "a+b")
        if fcntl is not None:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._file.close()
                raise RuntimeError(f"state {state} is in use by another sealpost client") from None

    def release(self) -> None:
        """Releases the lock (closing the file does)."""
        self._file.close()
