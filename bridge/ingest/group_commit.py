"""Group commit: many concurrent requests' outcomes enqueued by one ``publish`` call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

#: How long the first outcome of a group waits for company (seconds)...
GROUP_COMMIT_WAIT_S = 0.002
#: ...and how many outcomes make a group full (it is sent at once).
GROUP_COMMIT_MAX_OUTCOMES = 500


class GroupCommit:
    """Many concurrent requests' outcomes, one ``publish`` call (run in a thread).

    A request joins (``member()``) once authenticated, and submits its items (the API's are
    (text, mapped) pairs; the committer only counts them) when validated;
    ``submit`` returns once the call carrying them returned (raises what it raised). The
    flusher sends a group as soon as every member has submitted (no wait at all for a lone
    request), ``max_outcomes`` are pending, or ``max_wait_s`` has passed since the group's
    first submit, whichever comes first; then it resolves every waiter, or fails them all
    with the publisher's exception. While one call runs, the next group gathers. A request
    is never split across calls (one larger than ``max_outcomes`` goes alone).

    Bound to the event loop it first runs in; used from a new loop (tests), it starts over."""

    def __init__(
        self,
        publish: Callable[[list[Any]], object],
        *,
        max_wait_s: float = GROUP_COMMIT_WAIT_S,
        max_outcomes: int = GROUP_COMMIT_MAX_OUTCOMES,
        on_flush: Callable[[int], None] | None = None,
    ) -> None:
        self._publish = publish
        self.max_wait_s = max_wait_s
        self.max_outcomes = max_outcomes
        self._on_flush = on_flush
        self._pending: list[tuple[list[Any], asyncio.Future[None]]] = []
        self._pending_count = 0
        self._joining = 0  # members that have not submitted yet
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._settled: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def member(self) -> Iterator[Member]:
        """A request that will submit soon: a group waits for it (up to ``max_wait_s``)."""
        member = Member(self)
        try:
            yield member
        finally:
            member.leave()

    async def submit(self, texts: Sequence[Any]) -> None:
        """Publish ``texts`` with the next group (without having joined)."""
        with self.member() as member:
            await member.submit(texts)

    # -- internals (one event loop thread: no locks) ---------------------------------------

    def _join(self) -> None:
        self._ensure_flusher(asyncio.get_running_loop())
        self._joining += 1

    def _left(self) -> None:
        self._joining -= 1
        if self._joining <= 0 and self._settled is not None:
            self._settled.set()

    async def _submit_member(self, member: Member, texts: list[Any]) -> None:
        if not texts:
            member.leave()
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((texts, future))
        self._pending_count += len(texts)
        member.leave()
        assert self._wake is not None and self._settled is not None
        self._wake.set()
        if self._pending_count >= self.max_outcomes:
            self._settled.set()
        # shield: a cancelled request must not cancel the future the flusher resolves
        await asyncio.shield(future)

    def _ensure_flusher(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop and self._task is not None and not self._task.done():
            return
        if self._loop is not loop:  # anything pending belonged to a loop that is gone
            self._pending, self._pending_count, self._joining = [], 0, 0
        self._loop = loop
        self._wake, self._settled = asyncio.Event(), asyncio.Event()
        self._task = loop.create_task(self._run(), name="bridge-group-commit")

    async def _run(self) -> None:
        assert self._wake is not None and self._settled is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            deadline = loop.time() + self.max_wait_s
            while self._joining > 0 and self._pending_count < self.max_outcomes:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._settled.clear()
                try:
                    await asyncio.wait_for(self._settled.wait(), remaining)
                except TimeoutError:
                    break
            while self._pending:
                await self._flush(self._take())

    def _take(self) -> list[tuple[list[Any], asyncio.Future[None]]]:
        group: list[tuple[list[Any], asyncio.Future[None]]] = []
        count = 0
        while self._pending and (not group or count + len(self._pending[0][0]) <= self.max_outcomes):
            texts, future = self._pending.pop(0)
            group.append((texts, future))
            count += len(texts)
        self._pending_count -= count
        return group

    async def _flush(self, group: list[tuple[list[Any], asyncio.Future[None]]]) -> None:
        texts = [text for request_texts, _ in group for text in request_texts]
        try:
            await asyncio.to_thread(self._publish, texts)
        except Exception as exc:
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            if self._on_flush is not None:
                self._on_flush(len(texts))
        for _, future in group:
            if not future.done():
                future.set_result(None)

    async def close(self) -> None:
        """Send what is pending, then stop the flusher."""
        task, self._task = self._task, None
        if task is None:
            return
        while self._pending:
            await self._flush(self._take())
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Member:
    """One request's place in a ``GroupCommit``: joined on creation, left on submit or exit."""

    def __init__(self, group: GroupCommit) -> None:
        self._group = group
        self._joined = True
        group._join()

    def leave(self) -> None:
        if self._joined:
            self._joined = False
            self._group._left()

    async def submit(self, texts: Sequence[Any]) -> None:
        """Return once ``texts`` were published; raise what the publisher raised."""
        await self._group._submit_member(self, list(texts))


class DirectCommit(GroupCommit):
    """No grouping: each request makes its own ``publish`` call (for comparison and debugging)."""

    async def _submit_member(self, member: Member, texts: list[Any]) -> None:
        member.leave()
        if texts:
            await asyncio.to_thread(self._publish, texts)
            if self._on_flush is not None:
                self._on_flush(len(texts))
