"""Spreading the ingest's clients over ``bridge serve``'s processes: connections are recycled.

``bridge serve`` runs one process per core on one listening socket, and a keep-alive
connection stays with the process that accepted it. A client that opens a few connections at
once (a platform's connection pool, the benchmark's four) often has all of them accepted by
the same process (asyncio accepts every pending connection in one go), which then does all
the validation and mapping on one core while the others idle: measured, half the ingest rate
on 2 cores. So a connection that has been open ``RECYCLE_AFTER_S`` and carried
``RECYCLE_OUTCOMES`` outcomes gets ``Connection: close`` on its next answer; the client
opens a new one, which a less busy process tends to accept (a busy one is slower to get to
``accept``). At full load that is one new connection a second per client connection (each
costs the server a few milliseconds of CPU); a quiet connection is never recycled for its age
alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

#: A connection is recycled once it has been open this long (seconds)...
RECYCLE_AFTER_S: Final = 1.0
#: ...and has carried this many outcomes since it was opened.
RECYCLE_OUTCOMES: Final = 500
#: Connections tracked at most (beyond, the one quiet the longest is forgotten: connections that
#: close on their own are never told).
MAX_TRACKED: Final = 4096


class ConnectionRecycler:
    """Counts, per connection (its client's address and port), when it was first seen and the
    outcomes it carried. One per process; used from its event loop only (no locks)."""

    def __init__(
        self,
        recycle_outcomes: int = RECYCLE_OUTCOMES,
        recycle_after_s: float = RECYCLE_AFTER_S,
        max_tracked: int = MAX_TRACKED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.recycle_outcomes = recycle_outcomes
        self.recycle_after_s = recycle_after_s
        self.max_tracked = max_tracked
        self.clock = clock
        self._seen: dict[tuple[str, int], tuple[float, int]] = {}

    def should_close(self, client: tuple[str, int] | None, outcomes: int) -> bool:
        """Add ``outcomes`` to the connection of ``client``; whether its answer should close it.
        A client without an address of its own is never asked to: a Unix socket, or a port of 0,
        which is what uvicorn's proxy headers leave (the address a proxy forwarded for, shared
        by all of its connections)."""
        if client is None or not client[1]:
            return False
        now = self.clock()
        since, carried = self._seen.pop(client, (now, 0))
        carried += outcomes
        if carried >= self.recycle_outcomes and now - since >= self.recycle_after_s:
            return True
        if len(self._seen) >= self.max_tracked:  # forget the connection quiet the longest
            del self._seen[next(iter(self._seen))]
        self._seen[client] = (since, carried)
        return False
