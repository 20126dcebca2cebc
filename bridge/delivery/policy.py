"""Delivery policy: what Segment's answer means and when to try again.

Pure functions and tables, no I/O: :func:`classify` (status or exception -> ``ok``, ``retry``
or ``permanent``), :func:`compute_backoff` and :func:`retry_delay` (exponential backoff with
jitter, at least what ``Retry-After`` asks), :func:`parse_retry_after` (delay-seconds or
HTTP-date). The sending itself is :mod:`bridge.delivery.sender`.
"""

from __future__ import annotations

import http.client
import math
import random
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final, Literal

import requests
import urllib3.exceptions

Outcome = Literal["ok", "retry", "permanent"]

#: Upper bound on how long a ``Retry-After`` can park a batch (a guard against an
#: absurd header; Segment's own are seconds to minutes).
MAX_RETRY_AFTER_S: Final = 3600.0
#: Statuses whose ``Retry-After`` header is read.
RETRY_AFTER_STATUSES: Final = frozenset({429, 503})


# --------------------------------------------------------------------------- outcomes

#: Statuses whose outcome differs from their range's.
STATUS_OUTCOMES: Final[Mapping[int, Outcome]] = {
    408: "retry",  # request timeout
    429: "retry",  # rate limited; honour Retry-After
    501: "permanent",  # not implemented
    505: "permanent",  # HTTP version not supported
}
#: Outcome by status range.
STATUS_RANGE_OUTCOMES: Final[tuple[tuple[range, Outcome], ...]] = (
    (range(200, 300), "ok"),
    # Redirects are not followed (delivery.sender.post_batch): one is a misconfigured host.
    (range(300, 400), "permanent"),
    (range(400, 500), "permanent"),
    (range(500, 600), "retry"),
)
#: A status outside every range (1xx, >= 600): some proxy's oddity; retried, nothing lost.
UNKNOWN_STATUS_OUTCOME: Final[Outcome] = "retry"
#: Outcome by exception, first match wins (order matters: requests' exceptions are OSErrors).
EXCEPTION_OUTCOMES: Final[tuple[tuple[type[BaseException], Outcome], ...]] = (
    (requests.exceptions.ConnectionError, "retry"),  # refused, reset, DNS, proxy, TLS, connect timeout
    (requests.exceptions.Timeout, "retry"),  # read timeout
    (requests.exceptions.ChunkedEncodingError, "retry"),  # connection dropped mid-answer
    (requests.exceptions.ContentDecodingError, "retry"),
    # Invalid or missing URL scheme, too many redirects...: a misconfigured host.
    (requests.exceptions.RequestException, "permanent"),
    (urllib3.exceptions.HTTPError, "retry"),  # should be wrapped by requests; in case not
    (http.client.HTTPException, "retry"),  # RemoteDisconnected, IncompleteRead
    (OSError, "retry"),  # ConnectionError, TimeoutError, too many open files...
)
#: Any other exception is a bug or bad data: retrying would not help.
UNKNOWN_EXCEPTION_OUTCOME: Final[Outcome] = "permanent"


def classify(status: int | None, exc: BaseException | None = None) -> Outcome:
    """What an answer means: ``ok``, ``retry`` (may pass) or ``permanent`` (dead-letter).

    ``status`` wins when given; else a ``status`` carried by ``exc`` (segment's
    ``APIError``, a ``DeliveryError``); else the exception's type decides.
    """
    if status is None and exc is not None:
        carried = getattr(exc, "status", None)
        if isinstance(carried, int) and not isinstance(carried, bool):
            status = carried
    if status is not None:
        if status in STATUS_OUTCOMES:
            return STATUS_OUTCOMES[status]
        for codes, outcome in STATUS_RANGE_OUTCOMES:
            if status in codes:
                return outcome
        return UNKNOWN_STATUS_OUTCOME
    if exc is None:
        raise ValueError("classify needs a status or an exception")
    for exc_type, outcome in EXCEPTION_OUTCOMES:
        if isinstance(exc, exc_type):
            return outcome
    return UNKNOWN_EXCEPTION_OUTCOME


# --------------------------------------------------------------------------- backoff


def compute_backoff(
    attempt: int,
    *,
    base: float = 1.0,
    factor: float = 2.0,
    cap: float = 600.0,
    jitter: float | None = None,
    mode: Literal["equal", "full"] = "equal",
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry).

    The ceiling is ``min(cap, base * factor ** attempt)``. ``jitter`` in [0, 1]
    (random when None) picks the delay: ``"equal"`` jitter gives
    ``ceiling * (1 + jitter) / 2`` (never less than half the ceiling), ``"full"``
    gives ``ceiling * jitter``.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if jitter is None:
        jitter = random.random()
    elif not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be in [0, 1], got {jitter}")
    try:
        ceiling = min(cap, base * factor**attempt)
    except OverflowError:
        ceiling = cap
    if mode == "full":
        return ceiling * jitter
    return ceiling / 2 + ceiling / 2 * jitter


def retry_delay(
    attempt: int,
    retry_after: float | None = None,
    *,
    base: float = 1.0,
    factor: float = 2.0,
    cap: float = 600.0,
    jitter: float | None = None,
    mode: Literal["equal", "full"] = "equal",
    max_retry_after: float = MAX_RETRY_AFTER_S,
) -> float:
    """The backoff of ``attempt``, but at least ``retry_after`` (capped at ``max_retry_after``)."""
    delay = compute_backoff(attempt, base=base, factor=factor, cap=cap, jitter=jitter, mode=mode)
    if retry_after is not None and math.isfinite(retry_after):
        delay = max(delay, min(max(retry_after, 0.0), max_retry_after))
    return delay


def parse_retry_after(
    value: str | None, *, now: float | None = None, max_seconds: float = MAX_RETRY_AFTER_S
) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delay-seconds or HTTP-date), capped; None if absent/bad.

    ``now`` (epoch seconds, default the current time) is used for HTTP-dates; a
    date in the past gives 0.
    """
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000" parses naive; it means UTC
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), max_seconds)
