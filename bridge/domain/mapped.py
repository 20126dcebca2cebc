"""A valid outcome's dedup key and wire-ready messages, as the accept stage stores them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mapped:
    """What delivery needs of a valid outcome: its dedup key and wire-ready messages
    (messageId, event or type, bytes). The ingest API stores it beside the outcome's text,
    so a worker delivers without validating and mapping the outcome a second time."""

    merchant_id: int
    outcome_id: str
    messages: list[tuple[str, str, bytes]]
