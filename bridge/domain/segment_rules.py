"""Segment's rules, checked by the bridge before anything is sent.

Segment answers ``200`` and then silently drops a message with neither ``userId``
nor ``anonymousId``, a ``track`` without an event name, or a batch over 2,500
messages; it answers ``400`` to a message over 32 KB or a batch over 500 KB. The
bridge therefore checks every message itself and dead-letters a bad one with its
reason instead of losing it.

A message's size is measured as segment-analytics-python's request layer would send it,
re-encoded with ``json.dumps`` defaults: ``", "`` and ``": "`` separators and every
non-ASCII character escaped (``é`` is 2 bytes in UTF-8 and 6 as ``\\u00e9``; an
emoji 4 bytes and 12 as a surrogate pair). The bridge sends its own compact orjson
bytes (``bridge.delivery.sender.post_batch``), which are never larger, so the rule
holds whatever Segment counts. :func:`wire_size_bound` gives a cheap upper bound of
that size from the orjson bytes; :func:`wire_size` the exact size, computed only
when the bound comes near a limit. Batches are packed by the bytes actually sent
(``bridge.delivery.sender.batch_bounds``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import orjson

#: Segment's limit for one message (``400`` above it).
MAX_MESSAGE_BYTES: Final = 32 * 1024
#: Segment's limit for one ``/v1/batch`` request body (``400`` above it).
MAX_BATCH_BYTES: Final = 500 * 1024
#: Segment silently drops a batch with more messages than this.
MAX_BATCH_MESSAGES: Final = 2500
#: Segment's limit for ``messageId`` (characters).
MAX_MESSAGE_ID_CHARS: Final = 100
#: The message types Segment's tracking API accepts.
MESSAGE_TYPES: Final = frozenset({"track", "identify", "page", "screen", "group", "alias"})

# Below ``limit - _EXACT_SLACK`` the cheap bound decides; above it the exact size
# is computed. The slack is a belt-and-braces margin for an encoding difference
# the bound might not know about.
_EXACT_SLACK: Final = 64


def wire_size_bound(encoded: bytes) -> int:
    """An upper bound of the size ``json.dumps`` gives the message ``encoded`` (orjson bytes).

    Every ``,`` and ``:`` may gain a space; a non-ASCII UTF-8 byte becomes at most
    3 bytes (2-byte sequence -> 6, 3-byte -> 6, 4-byte -> 12); DEL (0x7f), raw in
    orjson, becomes ``\\u007f``; a float with a one-digit negative exponent gains a
    zero (orjson ``1e-7``, json.dumps ``1e-07``: every ``e-`` is counted).
    """
    size = len(encoded) + encoded.count(b",") + encoded.count(b":") + encoded.count(b"e-")
    if not encoded.isascii():
        size += 2 * (len(encoded) - len(encoded.decode("ascii", "ignore")))
    if b"\x7f" in encoded:
        size += 5 * encoded.count(b"\x7f")
    return size


def wire_size(encoded: bytes) -> int:
    """The exact size of the message as segment-analytics-python sends it (json.dumps defaults)."""
    return len(json.dumps(orjson.loads(encoded)))


#: No byte of orjson's output grows by more than this factor in ``json.dumps`` (DEL, 1 -> 6).
_MAX_GROWTH: Final = 6


def _over(encoded: bytes, limit: int) -> int | None:
    """The wire size when it exceeds ``limit``, else None (exact only near the limit)."""
    if len(encoded) * _MAX_GROWTH <= limit - _EXACT_SLACK:
        return None  # surely under, without counting bytes (most messages: under ~5.4 KB)
    if wire_size_bound(encoded) <= limit - _EXACT_SLACK:
        return None
    size = wire_size(encoded)
    return size if size > limit else None


def _has_id(value: object) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    # Segment coerces numeric ids to strings; a bool is a mapping bug, not an id.
    return isinstance(value, int) and not isinstance(value, bool)


def check_message(msg: Mapping[str, Any], encoded: bytes) -> str | None:
    """The reason ``msg`` (encoded as ``encoded``) breaks Segment's rules, or None if it is fine.

    Checked: ``type`` is a Segment type; ``messageId`` is a non-empty string of at
    most 100 characters; a non-empty ``userId`` or ``anonymousId``; a ``track``
    has a non-empty string ``event``; a ``group`` a ``groupId``; an ``alias`` a
    ``previousId``; the message is at most 32 KB on the wire.
    """
    if not isinstance(msg, Mapping):
        return f"message is a JSON {type(msg).__name__}, not an object"
    mtype = msg.get("type")
    if not isinstance(mtype, str) or mtype not in MESSAGE_TYPES:
        return f"type {mtype!r} is not one of {', '.join(sorted(MESSAGE_TYPES))}"
    message_id = msg.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        return "messageId is missing (Segment deduplicates on it)"
    if len(message_id) > MAX_MESSAGE_ID_CHARS:
        return f"messageId has {len(message_id)} characters, over Segment's {MAX_MESSAGE_ID_CHARS}"
    if not _has_id(msg.get("userId")) and not _has_id(msg.get("anonymousId")):
        return "neither userId nor anonymousId is set (Segment would drop it silently)"
    if mtype == "track":
        event = msg.get("event")
        if not isinstance(event, str) or not event.strip():
            return "track without an event name (Segment would drop it silently)"
    elif mtype == "group" and not _has_id(msg.get("groupId")):
        return "group without a groupId"
    elif mtype == "alias" and not _has_id(msg.get("previousId")):
        return "alias without a previousId"
    size = _over(encoded, MAX_MESSAGE_BYTES)
    if size is not None:
        return f"message is {size} bytes on the wire, over Segment's {MAX_MESSAGE_BYTES}"
    return None
