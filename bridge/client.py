"""Publishing outcomes into the pipeline: ``publish`` returns once Redis holds them.

Each batch is stored in Redis first (``bridge.stores.pending``), then a Celery task naming it is
sent; a worker deletes the batch only once every outcome in it is handed off.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from bridge.config import Settings
from bridge.domain.wire import dumps

if TYPE_CHECKING:
    from bridge.stages.prepare import Mapped

#: The Celery task that processes a stored batch of raw outcome texts (see workers.tasks).
PROCESS_TASK = "bridge.process_outcomes"


class Publisher:
    """Sends batches of raw outcomes; ``settings`` default to the ``BRIDGE_*`` environment."""

    def __init__(self, settings: Settings | None = None) -> None:
        from bridge.runtime import redis_client
        from bridge.stores.pending import PendingBatches
        from workers.celery_app import make_app

        self.settings = settings or Settings()
        self.app = make_app(self.settings)
        self.pending = PendingBatches(redis_client(self.settings))

    def publish_texts(self, texts: Sequence[str], mapped: Sequence[Mapped] | None = None) -> int:
        """Enqueue raw outcome JSON texts in batches of ``task_batch_size``; returns the batch count.

        ``mapped`` (aligned with ``texts``, from ``pipeline.prepare``) is stored beside them, so
        the worker delivers without mapping again. An error propagates, so a caller that gets
        no exception knows every outcome is in Redis."""
        if mapped is not None and len(mapped) != len(texts):
            raise ValueError(f"{len(mapped)} mapped outcomes for {len(texts)} texts")
        size = self.settings.task_batch_size
        batches = 0
        for start in range(0, len(texts), size):
            now = time.time()
            batch_id = uuid.uuid4().hex
            self.pending.add(
                batch_id,
                list(texts[start : start + size]),
                now,
                now + self.settings.pending_stale_s,
                None if mapped is None else mapped[start : start + size],
            )
            self.send(batch_id, now)
            batches += 1
        return batches

    def send(self, batch_id: str, enqueued_at: float) -> None:
        """The Celery task that makes a worker process a stored batch."""
        self.app.send_task(
            PROCESS_TASK,
            args=[batch_id],
            kwargs={"enqueued_at": enqueued_at},
            retry=True,
            retry_policy={"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2},
        )

    def publish_many(self, outcomes: Iterable[dict[str, Any] | str | bytes]) -> int:
        texts = [
            o.decode("utf-8") if isinstance(o, bytes) else o if isinstance(o, str) else dumps(o).decode()
            for o in outcomes
        ]
        return self.publish_texts(texts)


@functools.cache
def _default_publisher() -> Publisher:
    return Publisher()


def publish(outcome: dict[str, Any]) -> None:
    """Durably enqueue one outcome; configured from the ``BRIDGE_*`` environment."""
    _default_publisher().publish_many([outcome])


def publish_many(outcomes: Iterable[dict[str, Any]]) -> None:
    """Durably enqueue many outcomes (batched into tasks)."""
    _default_publisher().publish_many(outcomes)
