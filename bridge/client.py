"""``bridge.publish``: outcomes into the pipeline from Python; returns once Redis holds them.

Outcomes go through the accept stage (``bridge.stages.accept``), as those of the HTTP API do:
validated and mapped here, invalid ones dead-lettered (reason ``invalid``), ones already seen
skipped, the rest stored in Redis with their mapped messages and a task sent for each batch.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from bridge.config import Settings, load_settings
from bridge.runtime import Runtime, build_runtime
from bridge.stages.accept import Answer, Checked, accept, decode_item, short_ids

if TYPE_CHECKING:
    from bridge.domain.mapped import Mapped


log = logging.getLogger("bridge.publish")


class Publisher:
    """Publishes outcomes with the wiring of ``runtime`` (default: built from ``settings``, or
    from the ``BRIDGE_*`` environment; a bad setting there raises ``ConfigError``)."""

    def __init__(self, settings: Settings | None = None, *, runtime: Runtime | None = None) -> None:
        self.runtime = runtime or build_runtime(settings or load_settings())
        self.settings = self.runtime.settings

    def publish_texts(self, texts: Sequence[str], mapped: Sequence[Mapped] | None = None) -> int:
        """Enqueue raw outcome texts as they are (no validation here: a worker validates those
        without ``mapped``); returns the batch count. Used by replays of dead letters."""
        return self.runtime.enqueuer.publish_texts(texts, mapped)

    def publish_many(self, outcomes: Iterable[dict[str, Any] | str | bytes]) -> Checked:
        """Accept outcomes (dicts, or JSON texts): what was enqueued, duplicate or invalid."""
        items: list[Any] = []
        texts: list[str | None] = []  # None: a dict's text is written by the accept stage
        for outcome in outcomes:
            if isinstance(outcome, str | bytes):
                items.append(decode_item(outcome))
                texts.append(outcome.decode("utf-8", "replace") if isinstance(outcome, bytes) else outcome)
            else:  # an outcome, or anything else the accept stage refuses as the HTTP API does
                items.append(outcome)
                texts.append(None)
        stores = self.runtime.current_stores()
        checked = accept(
            items,
            merchants=stores.merchants,
            dedup=stores.dedup,
            dlq=stores.dlq,
            publish=self.runtime.enqueuer.publish_texts,
            window_s=self.settings.dedup_window_s,
            now=time.time(),
            texts=texts,
        )
        if checked.letters:
            log.warning(
                "publish: %d invalid outcome(s) dead-lettered: %s",
                len(checked.letters),
                short_ids(checked.letters),
            )
        return checked


@functools.cache
def _default_publisher() -> Publisher:
    return Publisher()


def publish(outcome: dict[str, Any]) -> Answer:
    """Durably enqueue one outcome; configured from the ``BRIDGE_*`` environment. Returns what
    the HTTP API answers: accepted, duplicate and invalid counts, and an invalid outcome's
    errors (it is dead-lettered, reason ``invalid``)."""
    return _default_publisher().publish_many([outcome]).answer()


def publish_many(outcomes: Iterable[dict[str, Any]]) -> Answer:
    """Durably enqueue many outcomes (batched into tasks); returns what the HTTP API answers,
    each error with the index of its outcome."""
    return _default_publisher().publish_many(outcomes).answer()
