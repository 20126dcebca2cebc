"""The request body: read within its size limit, decoded, and split into outcome items.

Every refusal is an :class:`ApiError` (the status, a code and a message the API answers with)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import ClientDisconnect, Request

from bridge.domain.models import json_type_name
from bridge.domain.wire import LongNumber

#: The ingest endpoint.
INGEST_PATH = "/v1/outcomes"
#: Bodies nested deeper than this are refused (400) before anything recurses into them.
MAX_JSON_DEPTH = 64
#: After refusing a body as too large, read on (discarding) up to this many bytes, so the
#: client, still sending, gets the 413 instead of a connection reset.
DRAIN_BYTES = 8 * 1024 * 1024
#: A body not received whole within this many seconds is refused (408): a client trickling
#: bytes would hold its connection, and its file descriptor, for as long as it liked...
BODY_TIMEOUT_S = 30.0
#: ...or within the time the byte limit takes at this rate, if longer (a raised
#: ``BRIDGE_MAX_REQUEST_BYTES`` gets the time to arrive; the default 5 MB: 52 s).
BODY_MIN_BYTES_PER_S = 100_000


def body_timeout_s(limit: int) -> float:
    """How long a body of at most ``limit`` bytes may take to arrive."""
    return max(BODY_TIMEOUT_S, limit / BODY_MIN_BYTES_PER_S)


#: ``Retry-After`` (seconds) when Redis or the broker does not answer.
RETRY_AFTER_UNAVAILABLE_S = 5


class ApiError(Exception):
    """An error answer: ``{"error": code, "message": message}`` with ``status`` and headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        super().__init__(message)


def unavailable(message: str, retry_after: int = RETRY_AFTER_UNAVAILABLE_S) -> ApiError:
    """503 with ``Retry-After``: Redis, the broker or the configuration is not there."""
    return ApiError(503, "unavailable", message, {"Retry-After": str(retry_after)})


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body (kept on the request: authentication reads it too), at most ``limit`` bytes."""
    cached: bytes | None = getattr(request.state, "raw_body", None)
    if cached is not None:
        return cached
    too_large = ApiError(413, "too_large", f"request body over {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit + DRAIN_BYTES:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(body_timeout_s(limit)):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit + DRAIN_BYTES:
                    break
                if size <= limit:
                    chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "bad_request", "client disconnected while sending the body") from None
    except TimeoutError:
        raise ApiError(
            408,
            "request_timeout",
            f"the body did not arrive within {body_timeout_s(limit):.0f} s",
            {"Connection": "close"},
        ) from None
    if size > limit:
        raise too_large
    body = b"".join(chunks)
    request.state.raw_body = body
    return body


#: ``bytes.translate`` tables: every bracket as a parenthesis, quotes kept, all else deleted.
_AS_PARENS = bytes.maketrans(b"[{]}", b"(())")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')


def depth_ok(body: bytes, decoded: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a body that decoded as JSON (``decoded``) nests at most ``limit`` containers deep.

    Read off the text at C speed when no string holds a bracket (escapes dropped, then all but
    brackets and quotes, then every bracket-free string ``""``; one level of innermost ``()``
    pairs goes per round); a string holding one always leaves a quote behind, and then the
    decoded value is walked instead."""
    if b"\\" in body:  # escapes are rare: the two passes are skipped without one
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = body.translate(_AS_PARENS, _NOT_STRUCTURE)
    # every string bracket-free ("" in the skeleton) when the quotes pair up left to right, as
    # replace(b'""', b"") would find them, counted without building the copy
    if skeleton.count(b'""') * 2 != skeleton.count(b'"'):
        return _tree_depth_ok(decoded, limit)
    parens = skeleton.translate(None, b'"')
    for _ in range(limit):
        if not parens:
            return True
        parens = parens.replace(b"()", b"")
    return not parens


def _tree_depth_ok(value: Any, limit: int) -> bool:
    """``depth_ok`` on the decoded value, level by level (no recursion)."""
    level = [value] if type(value) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return False
        below = []
        for node in level:
            for child in node.values() if type(node) is dict else node:
                if type(child) in (dict, list):
                    below.append(child)
        level = below
    return True


def split_items(value: Any) -> list[Any]:
    """The outcomes of a decoded body: ``{"outcomes": [...]}``, a bare array, or one object."""
    if isinstance(value, dict) and "outcomes" in value:
        others = sorted(k for k in value if k != "outcomes")
        if others:
            raise ApiError(
                400, "bad_request", f"unexpected field(s) beside 'outcomes': {', '.join(others)[:200]}"
            )
        outcomes = value["outcomes"]
        if not isinstance(outcomes, list):
            raise ApiError(400, "bad_request", "'outcomes' must be an array of outcome objects")
        return _no_long_numbers(outcomes)
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return _no_long_numbers(value)
    raise ApiError(
        400,
        "bad_request",
        f'expected an outcome object or {{"outcomes": [...]}}, got {json_type_name(value)}',
    )


def _no_long_numbers(items: list[Any]) -> list[Any]:
    """An item that is itself a number too long to read is not JSON we accept (400, as for a
    body that is such a number); one inside an outcome is that outcome's error, naming the field."""
    for index, item in enumerate(items):
        if isinstance(item, LongNumber):
            raise ApiError(
                400,
                "invalid_json",
                f"invalid JSON body: item {index} is a number too long ({item.digits} digits)",
            )
    return items
