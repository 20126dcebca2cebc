"""Loyalty -> Segment event-source bridge."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.domain.errors import OutcomesInFlight
from bridge.domain.version import __version__

__all__ = ["OutcomesInFlight", "__version__", "publish", "publish_many"]

if TYPE_CHECKING:
    from collections.abc import Iterable

    from bridge.stages.accept import Answer


def publish(outcome: dict[str, Any]) -> Answer:  # pragma: no cover - thin alias, see bridge.client
    """Durably enqueue one outcome (returns once Redis has it). Configured from ``BRIDGE_*``.
    Returns what the HTTP API answers: ``accepted``, ``duplicate``, ``invalid`` and ``errors``."""
    from bridge.client import publish as _publish

    return _publish(outcome)


def publish_many(outcomes: Iterable[dict[str, Any]]) -> Answer:  # pragma: no cover - thin alias
    """Durably enqueue many outcomes in one go; returns what the HTTP API answers."""
    from bridge.client import publish_many as _publish_many

    return _publish_many(outcomes)
