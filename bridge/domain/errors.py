"""Errors, grouped by how they are handled (not by where they happen).

- ``InvalidOutcome`` / ``InvalidMessage``: bad input. Never retried; kept in the
  dead-letter store with the reason.
- ``RetryableDelivery``: Segment or the network failed in a way that may pass
  (408, 429, most 5xx, connection errors, timeouts). Parked and retried.
- ``PermanentDelivery``: Segment refused for good (other 4xx, 501, 505).
  Dead-lettered with Segment's answer.
- ``ConfigError``: the configuration is wrong. Raised at start, listing every
  problem at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class BridgeError(Exception):
    """Base class of every error the bridge raises on purpose."""


@dataclass(frozen=True)
class FieldProblem:
    """One bad field: its path in the input (``request.check.totals.subTotal``) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.reason}"


#: An outcomeId longer than this is cut short where an error shows it.
SHOWN_ID_CHARS = 200


class InvalidOutcome(BridgeError):
    """An outcome that cannot be mapped. Names the outcome and every bad field."""

    def __init__(self, outcome_id: str | None, problems: Sequence[FieldProblem]) -> None:
        self.outcome_id = outcome_id
        self.problems = tuple(problems)
        super().__init__(str(self))

    @property
    def shown_id(self) -> str | None:
        """The outcomeId as errors show it: one longer than ``SHOWN_ID_CHARS`` is cut short
        (an error never echoes unbounded input; the full text stays with the dead letter)."""
        if self.outcome_id is None or len(self.outcome_id) <= SHOWN_ID_CHARS:
            return self.outcome_id
        return f"{self.outcome_id[:SHOWN_ID_CHARS]}… ({len(self.outcome_id)} characters)"

    def __str__(self) -> str:
        who = f"outcome {self.shown_id!r}" if self.outcome_id else "outcome (no valid outcomeId)"
        lines = "; ".join(str(p) for p in self.problems)
        return f"invalid {who}: {lines}"

    def to_dict(self) -> dict[str, object]:
        return {
            "outcomeId": self.shown_id,
            "errors": [{"path": p.path, "reason": p.reason} for p in self.problems],
        }


class InvalidMessage(BridgeError):
    """A mapped Segment message that breaks one of Segment's rules (size, ids, event name)."""

    def __init__(self, message_id: str | None, reason: str) -> None:
        self.message_id = message_id
        self.reason = reason
        super().__init__(f"message {message_id!r} breaks Segment's rules: {reason}")


class DeliveryError(BridgeError):
    """Base of delivery failures; carries the HTTP status (None for network errors)."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None) -> None:
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"{reason} (status {status})" if status is not None else reason)


class RetryableDelivery(DeliveryError):
    """Worth trying again later: 408, 429, 5xx except 501/505, connection errors, timeouts."""


class NoAnswer(RetryableDelivery):
    """The host gave no complete answer within the request timeout: a hanging or trickling
    receiver. Its write key is held a while (``sender.NO_ANSWER_HOLD_S``), so that the key's
    other batches do not each wait out the timeout in turn."""


class PermanentDelivery(DeliveryError):
    """Segment refused the batch for good: other 4xx, 501, 505."""


class ConfigError(BridgeError):
    """The configuration is wrong; lists every problem found, not just the first."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


class MalformedDeadLetterId(BridgeError, ValueError):
    """A dead-letter id that is not ``<ms>-<seq>``: refused before anything is taken or dropped."""

    def __init__(self, given: str) -> None:
        super().__init__(f"not a dead-letter id: {given!r} (expected <ms>-<seq>)")


class OutcomesInFlight(BridgeError):
    """Outcomes that another ingest request is storing at this moment (the same outcomeId sent
    twice at once): nothing of this call was taken; retried shortly, they are duplicates (or
    accepted, if the other request failed)."""

    def __init__(self, count: int) -> None:
        self.count = count
        super().__init__(
            f"{count} outcome(s) of this request are being accepted by another request right now; retry shortly"
        )
