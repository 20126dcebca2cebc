"""Recover: one sweep of what dead workers and lost task messages left behind.

Run every ``sweep_interval_s`` by each worker's main process (``workers.tasks``): the batches
held by workers whose heartbeat is gone go back to the queue (their kombu ``unacked`` entries
moved back, or a new task sent), the parked batches they had claimed are due again at once,
a resume is asked for whenever parked batches are due, and a stored batch with no task in
the queue or in a live worker gets its task again. Plain functions over the stores and the
task queue given to it; Celery only sends what it asks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bridge.config import Settings
from bridge.stages.accept import TaskQueue
from bridge.stores.protocols import StoreSet

log = logging.getLogger("bridge.worker")

#: A batch touched this recently is not taken for lost by the scan after a death.
SETTLED_S = 2.0


@dataclass
class Sweeper:
    """The sweeps of one worker. ``look_in_queue``: a worker was found dead, so the batches it
    may have popped without kombu recording them are looked for, until a sweep gets that far."""

    stores: StoreSet
    queue: TaskQueue
    settings: Settings
    resume: Callable[[], None]
    worker_id: str = ""
    look_in_queue: bool = False

    def sweep(self, now: float) -> None:
        """One sweep at ``now`` (unix seconds). Raises what the stores raise (Redis away)."""
        dead = self.stores.liveness.found_dead()
        if dead:
            log.info("worker process(es) %s stopped beating", ", ".join(dead))
            self.look_in_queue = True
        self._take_over_batches(now)
        claims = self.stores.parking.take_over_dead(now)
        if claims:
            log.warning("%d parked batch(es) claimed by dead worker(s) are due again", claims)
        # one resume queued at a time: each claims up to 50 due batches when it starts
        if self.stores.parking.count_due(now) > 0 and self.stores.parking.ask_resume(now):
            self.resume()
        for batch_id in self._lost(now):
            log.warning("batch %s had no task in the queue or in a worker; sending it again", batch_id)
            self.queue.send(batch_id, now)

    def _take_over_batches(self, now: float) -> None:
        """The batches of dead workers: back at the head of the queue, or a new task each."""
        settings, pending = self.settings, self.stores.pending
        taken = pending.take_over_dead(now + settings.pending_stale_s, now - settings.heartbeat_ttl_s)
        for batch_id, message in taken:
            if not pending.requeue(message):
                self.queue.send(batch_id, now)
        if taken:
            log.warning(
                "took over %d batch(es) of dead worker(s) (no heartbeat for %.0fs); queued again",
                len(taken),
                settings.heartbeat_ttl_s,
                extra={"batches": len(taken), "by": self.worker_id},
            )

    def _lost(self, now: float) -> list[str]:
        """Stored batches whose task is neither queued nor held by a live worker."""
        settings, pending = self.settings, self.stores.pending
        next_due = now + settings.pending_stale_s
        lost = pending.claim_lost(now, next_due, settings.heartbeat_ttl_s)
        if self.look_in_queue:  # a dead worker may have popped tasks kombu never recorded
            # Batches untouched (published, started, claimed) for a moment: not one between
            # its store and its send, or one just popped by a live worker.
            settled = next_due - SETTLED_S
            lost += pending.claim_missing(now, next_due, settings.heartbeat_ttl_s, settled=settled)
            self.look_in_queue = False
        return lost
