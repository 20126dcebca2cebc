"""The task queue the ingest side sends to: a Celery app built from the caller's ``Settings``.

``bridge.runtime`` builds it (the one place outside ``workers/`` that reaches in here), so the
HTTP API, ``bridge.publish`` and the CLI send tasks without importing Celery themselves."""

from __future__ import annotations

from bridge.config import Settings
from workers.celery_app import PROCESS_TASK, make_app

#: How ``send_task`` retries while the broker connection is being (re)established.
SEND_RETRY_POLICY = {"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2}


class CeleryQueue:
    """Sends ``bridge.process_outcomes`` tasks naming stored batches (``bridge.stages.accept.TaskQueue``)."""

    def __init__(self, settings: Settings) -> None:
        self.app = make_app(settings)

    def send(self, batch_id: str, enqueued_at: float) -> None:
        self.app.send_task(
            PROCESS_TASK,
            args=[batch_id],
            kwargs={"enqueued_at": enqueued_at},
            retry=True,
            retry_policy=SEND_RETRY_POLICY,
        )
