"""Backpressure: the Celery queue's length, read at most twice a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: How long one reading of the queue length is reused (seconds).
BACKLOG_CACHE_S = 0.5


class Backlog:
    """The Celery queue's length, read at most once per ``max_age_s`` (concurrent callers share a read)."""

    def __init__(
        self,
        read: Callable[[], int],
        *,
        max_age_s: float = BACKLOG_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        self._read = read
        self.max_age_s = max_age_s
        self._clock = clock
        self._on_read = on_read
        self._value: int | None = None
        self._at = 0.0
        self._task: asyncio.Future[int] | None = None

    async def depth(self) -> int:
        """Raises what the read raised (Redis down) when there is no fresh reading."""
        if self._value is not None and self._clock() - self._at < self.max_age_s:
            return self._value
        loop = asyncio.get_running_loop()
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:
            task = self._task = asyncio.ensure_future(asyncio.to_thread(self._refresh))
        return await asyncio.shield(task)

    def _refresh(self) -> int:
        value = int(self._read())
        self._value, self._at = value, self._clock()
        if self._on_read is not None:
            self._on_read(value)
        return value
