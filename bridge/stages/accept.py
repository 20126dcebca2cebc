"""Accept: the one ingest stage, used by the HTTP API, ``bridge replay FILE`` and ``bridge.publish``.

validate and map each item -> drop those already seen -> enqueue the rest -> mark them
accepted -> dead-letter the invalid ones. Its steps are plain functions over injected stores,
so the asynchronous HTTP API runs them one by one (in threads, around its group commit) and
the synchronous callers run them all through :func:`accept`.

Order matters for retries: outcomes are marked accepted only once they are enqueued (a request
answered 503 must not make its retry look like a duplicate), and invalid ones are dead-lettered
last (a failure before it is retried whole; the valid ones are then duplicates).

Concurrent requests with the same outcome (a client retrying one that is still in progress):
the dedup lookup *claims* the outcomes it finds free (``claim_outcomes``, atomic in Redis), so
only one request stores and counts each; another that meets the claim holds nothing and looks
again shortly, until the claim is ``ACCEPTED`` (then the outcome is its duplicate) or released
or expired (then it claims it). The HTTP API waits ``CLAIM_WAIT_S`` on its event loop, then
answers 503 (``OutcomesInFlight``); ``bridge replay`` and ``bridge.publish`` wait as long as a
claim can live (``OUTCOME_CLAIM_S``).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, TypedDict

from bridge.config import MerchantsConfig
from bridge.domain.errors import FieldProblem, InvalidOutcome, OutcomesInFlight
from bridge.domain.mapped import Mapped
from bridge.domain.wire import LongNumber, decimal_to_wire, dumps
from bridge.stages.prepare import JSONDecodeProblem, decode_json, prepare
from bridge.stores.keys import CLAIM_PREFIX, OUTCOME_CLAIM_S
from bridge.stores.protocols import DeadLetters, DedupStore, Pending, Reservation
from bridge.stores.records import NewDeadLetter, invalid_outcome_letter


class TaskQueue(Protocol):
    """Sends the task that makes a worker process a stored batch (``workers.queue``)."""

    def send(self, batch_id: str, enqueued_at: float) -> None: ...


class Publisher(Protocol):
    """What accepting needs to enqueue: returns only once Redis holds the texts (and their mapped
    messages, which spare the worker a second validation and mapping)."""

    def publish_texts(self, texts: Sequence[str], mapped: Sequence[Mapped] | None = None) -> int: ...


@dataclass
class Enqueuer:
    """Stores batches of ``batch_size`` outcomes in Redis (``PendingBatches``), then sends a task
    naming each; a worker deletes a batch only once every outcome in it is handed off."""

    pending: Pending
    queue: TaskQueue
    batch_size: int
    stale_s: float
    clock: Callable[[], float] = time.time

    def publish_texts(self, texts: Sequence[str], mapped: Sequence[Mapped] | None = None) -> int:
        """Enqueue raw outcome texts (with their mapped messages, aligned, when known); returns
        the batch count. An error propagates: no exception means every outcome is in Redis."""
        if mapped is not None and len(mapped) != len(texts):
            raise ValueError(f"{len(mapped)} mapped outcomes for {len(texts)} texts")
        batches = 0
        for start in range(0, len(texts), self.batch_size):
            now = self.clock()
            batch_id = uuid.uuid4().hex
            end = start + self.batch_size
            part = None if mapped is None else mapped[start:end]
            self.pending.add(batch_id, list(texts[start:end]), now, now + self.stale_s, part)
            self.queue.send(batch_id, now)
            batches += 1
        return batches


class Answer(TypedDict):
    """What happened to the items, as the HTTP API answers it (the body of its 202 or 422) and
    ``bridge.publish`` returns it: ``errors`` has one entry per invalid item, with its index."""

    accepted: int
    duplicate: int
    invalid: int
    errors: list[dict[str, Any]]


@dataclass
class Checked:
    """Items after validation (:func:`check`) and the dedup lookup (:func:`drop_seen`)."""

    valid: list[tuple[str, Mapped]] = field(default_factory=list)  # (text, its messages and dedup key)
    enqueue: list[tuple[str, Mapped]] = field(default_factory=list)
    duplicate: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)  # per invalid item, with its index
    letters: list[NewDeadLetter] = field(default_factory=list)
    claim: str | None = None  # this call's hold on the outcomes to enqueue (``drop_seen``)

    @property
    def keys(self) -> list[tuple[int, str]]:
        """The dedup keys of the outcomes to enqueue."""
        return [(m.merchant_id, m.outcome_id) for _, m in self.enqueue]

    def answer(self) -> Answer:
        """The counts and per-item errors (once the outcomes to enqueue are enqueued)."""
        return {
            "accepted": len(self.enqueue),
            "duplicate": self.duplicate,
            "invalid": len(self.errors),
            "errors": self.errors,
        }


@dataclass(frozen=True)
class Undecodable:
    """An item whose raw text is not JSON: refused as invalid by :func:`check`."""

    problem: JSONDecodeProblem


def decode_item(raw: str | bytes) -> Any:
    """One raw outcome text decoded, or an :class:`Undecodable` that :func:`check` refuses."""
    try:
        return decode_json(raw)
    except JSONDecodeProblem as exc:
        return Undecodable(exc)


def check(
    items: Sequence[Any],
    merchants: MerchantsConfig,
    now: float,
    *,
    texts: Sequence[str | None] | None = None,
    lines: Sequence[int] | None = None,
) -> Checked:
    """Validate and map every decoded item (an :class:`Undecodable` is invalid).

    ``texts``: the raw text of each item, kept as it came (a file's lines); where none is given
    (None), the item's JSON text, decimals exact. ``lines``: the line of each item, recorded in its dead
    letter."""
    checked = Checked()
    for index, item in enumerate(items):
        try:
            if isinstance(item, Undecodable):
                raise item.problem
            given = None if texts is None else texts[index]
            text = given if given is not None else item_text_checked(item)
            prepared = prepare(item, merchants)
        except (InvalidOutcome, JSONDecodeProblem) as exc:
            given = None if texts is None else texts[index]
            text = given if given is not None else item_text(item)
            details = (
                exc.to_dict()  # the same shape for text that is not JSON (a file's line, a publish)
                if isinstance(exc, InvalidOutcome)
                else {"outcomeId": None, "errors": [{"path": "", "reason": str(exc)}]}
            )
            checked.errors.append({"index": index, **details})
            merchant_id = item.get("merchantId") if isinstance(item, dict) else None
            extra = {} if lines is None else {"line": lines[index]}
            checked.letters.append(
                invalid_outcome_letter(
                    text, exc, now, merchant_id=merchant_id if type(merchant_id) is int else None, **extra
                )
            )
            continue
        checked.valid.append((text, prepared.mapped()))
    return checked


#: How long the HTTP API waits for outcomes another request is storing (storing takes
#: milliseconds) before answering 503 ``OutcomesInFlight``; and how often it looks again.
CLAIM_WAIT_S = 1.0
CLAIM_POLL_S = 0.02


def claim(checked: Checked, dedup: DedupStore) -> int:
    """Claim the valid outcomes not seen yet, all or none (one Redis round trip): when another
    request holds one, this call's new claims are dropped at once (a request never holds some
    while waiting for others, so two never wait on each other) and the count of held ones is
    returned, to try again shortly. 0 once claimed: ``checked.enqueue`` is then set.

    A duplicate is an outcome already processed, already accepted earlier (it is stored and
    will be processed), or repeated within these items."""
    if not checked.valid:
        return 0
    keys = _valid_keys(checked)
    checked.claim = checked.claim or CLAIM_PREFIX + uuid.uuid4().hex
    states = dict(zip(keys, dedup.claim_outcomes(keys, checked.claim), strict=True))
    held = sum(state is Reservation.CLAIMED for state in states.values())
    if held:
        dedup.release_outcome_claims([k for k in keys if states[k] is Reservation.NEW], checked.claim)
        return held
    taken: set[tuple[int, str]] = set()
    for text, mapped in checked.valid:
        key = (mapped.merchant_id, mapped.outcome_id)
        if states[key] is Reservation.NEW and key not in taken:
            taken.add(key)
            checked.enqueue.append((text, mapped))
    checked.duplicate += len(checked.valid) - len(checked.enqueue)
    return 0


def drop_seen(
    checked: Checked,
    dedup: DedupStore,
    *,
    wait_s: float = OUTCOME_CLAIM_S,
    sleep: Callable[[float], object] = time.sleep,
) -> Checked:
    """``claim``, waiting (up to ``wait_s``; by default as long as a left-over claim lives) while
    another request holds some of the outcomes. Raises ``OutcomesInFlight`` if they are still
    held then. For the synchronous callers; the HTTP API waits on its event loop instead."""
    waited = 0.0
    while held := claim(checked, dedup):
        if waited >= wait_s:
            raise OutcomesInFlight(held)
        sleep(CLAIM_POLL_S)
        waited += CLAIM_POLL_S
    return checked


def release(checked: Checked, dedup: DedupStore) -> None:
    """Drop this call's claims (its outcomes were not stored: a retry must find them free)."""
    if checked.claim and checked.valid:
        dedup.release_outcome_claims(_valid_keys(checked), checked.claim)


def _valid_keys(checked: Checked) -> list[tuple[int, str]]:
    """The dedup keys of the valid outcomes, each once, in order."""
    return list(dict.fromkeys((m.merchant_id, m.outcome_id) for _, m in checked.valid))


#: Stores texts with their mapped messages and sends their tasks (``Enqueuer.publish_texts``).
PublishTexts = Callable[[Sequence[str], Sequence[Mapped]], object]


def enqueue(checked: Checked, publish: PublishTexts) -> None:
    """Store the outcomes to enqueue, with their mapped messages; raises if Redis or the broker fails."""
    if checked.enqueue:
        publish([text for text, _ in checked.enqueue], [m for _, m in checked.enqueue])


def mark_accepted(checked: Checked, dedup: DedupStore, window_s: float) -> None:
    """Remember the enqueued outcomes, so a repeat within ``window_s`` is a duplicate."""
    if checked.enqueue:
        dedup.mark_outcomes_accepted(checked.keys, window_s, checked.claim)


def dead_letter(checked: Checked, dlq: DeadLetters) -> None:
    """Keep every invalid item, with its errors, as a dead letter (reason ``invalid``)."""
    if checked.letters:
        dlq.add_many(checked.letters)


def accept(
    items: Sequence[Any],
    *,
    merchants: MerchantsConfig,
    dedup: DedupStore,
    dlq: DeadLetters,
    publish: PublishTexts,
    window_s: float,
    now: float,
    texts: Sequence[str | None] | None = None,
    lines: Sequence[int] | None = None,
) -> Checked:
    """The whole stage for a synchronous caller; returns what happened to each item."""
    checked = drop_seen(check(items, merchants, now, texts=texts, lines=lines), dedup)
    try:
        enqueue(checked, publish)
    except BaseException:
        _release_quietly(checked, dedup)
        raise
    mark_accepted(checked, dedup, window_s)
    dead_letter(checked, dlq)
    return checked


def _release_quietly(checked: Checked, dedup: DedupStore) -> None:
    """``release``, when enqueueing failed: if Redis fails here too, the claims expire on their own
    (``OUTCOME_CLAIM_S``) and a retry meets them until then (``OutcomesInFlight``), never a duplicate."""
    with contextlib.suppress(Exception):
        release(checked, dedup)


def short_ids(letters: Sequence[NewDeadLetter], limit: int = 20) -> str:
    """The outcome ids of dead letters, for a log line (ids only: never payloads)."""
    shown = [repr((letter.outcome_id or "?")[:100]) for letter in letters[:limit]]
    return ", ".join(shown) + (f" and {len(letters) - limit} more" if len(letters) > limit else "")


# --------------------------------------------------------------------------- item texts


def item_text(item: Any) -> str:
    """The JSON text of one decoded item, decimals exact (``bridge.domain.wire``).

    Falls back to the standard library for what orjson refuses (integers beyond 64 bits,
    lone surrogates in strings), so any decoded item has a text."""
    try:
        return dumps(item).decode("utf-8")
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(item, default=_json_default, separators=(",", ":"))


def item_text_checked(item: Any) -> str:
    """``item_text``, raising ``InvalidOutcome`` for a lone surrogate. orjson refuses those, so
    the walk that finds the field runs only for the rare item orjson cannot encode."""
    try:
        return dumps(item).decode("utf-8")
    except TypeError:
        _refuse_surrogates(item)
        return item_text(item)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return decimal_to_wire(obj)
    if isinstance(obj, LongNumber):
        return obj.text
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surrogate_path(item: Any) -> str | None:
    """The path of the first string (key or value) holding a lone UTF-16 surrogate, if any."""
    stack: list[tuple[Any, str]] = [(item, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str) and not _encodable(node):
            return path
        if isinstance(node, dict):
            for key, value in node.items():
                child = f"{path}.{_printable(key)}" if path else _printable(key)
                if not _encodable(key):
                    return child
                stack.append((value, child))
        elif isinstance(node, list):
            stack.extend((value, f"{path}.{i}" if path else str(i)) for i, value in enumerate(node))
    return None


def _refuse_surrogates(item: Any) -> None:
    """``InvalidOutcome`` when a string (key or value) holds a lone UTF-16 surrogate.

    JSON's ``\\ud800`` escapes decode to strings that are not Unicode: Redis, orjson and
    Segment all refuse them, so such an item is invalid here, with the path to the field."""
    problem = _surrogate_path(item)
    if problem is not None:
        outcome_id = item.get("outcomeId") if isinstance(item, dict) else None
        safe_id = outcome_id if isinstance(outcome_id, str) and _encodable(outcome_id) else None
        raise InvalidOutcome(
            safe_id, [FieldProblem(problem, "contains a lone UTF-16 surrogate: not valid Unicode")]
        )
