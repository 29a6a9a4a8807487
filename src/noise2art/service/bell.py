"""Wakes the server's event streams as soon as any thread stores an event.

Events are rows (`Store.add_event`), written by the worker thread and by request threads.
Without a bell, every open stream would query the store on a timer, which delays each
event by up to one period and costs a query per stream per period. With it, a stream
waits on the bell and queries only when something was stored (plus a slow fallback
timer, so a missed wake-up costs at most one period).
"""

from __future__ import annotations

import asyncio


class EventBell:
    """One `asyncio.Event` per ring, replaced each time it fires, on the server's loop.

    Use from a stream: `mark = bell.mark()`, then read the store, then
    `await bell.wait(mark, timeout)`. Anything committed after `mark` rings that very
    event, so a write between the read and the wait is never missed.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._event = asyncio.Event()
        self._pending = False

    def ring(self) -> None:
        """Any thread: something was stored. Rings coalesce until the loop runs them."""
        if self._pending:
            return
        self._pending = True
        try:
            self._loop.call_soon_threadsafe(self._fire)
        except RuntimeError:  # the loop has closed: the server is stopping, nobody listens
            self._pending = False

    def _fire(self) -> None:
        self._pending = False
        event, self._event = self._event, asyncio.Event()
        event.set()

    def mark(self) -> asyncio.Event:
        """The event the next ring sets (call on the loop, before reading the store)."""
        return self._event

    @staticmethod
    async def wait(mark: asyncio.Event, timeout: float) -> bool:
        """Wait for a ring after `mark`, at most `timeout` seconds; True when it rang."""
        try:
            await asyncio.wait_for(mark.wait(), timeout)
            return True
        except TimeoutError:
            return False
