"""A thread-safe inbox that both threads and asyncio tasks can wait on.

paho-mqtt delivers on its network thread; applications read from their own threads
(``recv``) or from an asyncio event loop (``async for``). Items are handed to exactly one
reader, in order; an asyncio reader that is cancelled takes nothing.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class Closed(Exception):
    """The inbox was closed and is empty."""


class Inbox(Generic[T]):
    """FIFO of items from one producer thread to readers on threads or event loops."""

    def __init__(self) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        # Event loops with a reader waiting: woken (thread-safely) on every put.
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def put(self, item: T) -> None:
        """Appends an item and wakes a waiting reader."""
        with self._cond:
            self._items.append(item)
            self._cond.notify()
            self._wake()

    def close(self) -> None:
        """No more items will come: readers get :class:`Closed` once it is empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._wake()

    def _wake(self) -> None:
        for loop, future in self._waiters:
            loop.call_soon_threadsafe(_resolve, future)
        self._waiters.clear()

    def get(self, timeout: float | None = None) -> T:
        """The next item; raises TimeoutError after ``timeout`` seconds, Closed if closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    raise Closed
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("nothing arrived in time")
                self._cond.wait(remaining)
            return self._items.popleft()

    async def aget(self) -> T:
        """The next item, waiting without blocking the event loop."""
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                if self._items:
                    return self._items.popleft()
                if self._closed:
                    raise Closed
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, future))
            await future

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
