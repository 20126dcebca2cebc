"""The ingest's OpenAPI document, published as the ingest enforces it.

FastAPI documents what its routes declare; ``POST /v1/outcomes`` reads its raw body itself
(to sign and size it), so its request body, security and edges are written here: the
outcome schema generated from the models that validate (``bridge.domain.json_schema``), an
example of each kind (``bridge/examples/outcomes.jsonl``), the two security schemes of
``bridge.ingest.auth``, and the request limits of the settings. ``install`` puts it in place of
``app.openapi`` (served at ``/openapi.json`` and ``/docs``), built once, on first request.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from fastapi import FastAPI

from bridge.config import Settings
from bridge.domain.json_schema import outcome_schemas
from bridge.domain.models import KINDS
from bridge.ingest.auth import SIGNATURE_HEADER, TOLERANCE_S, WWW_AUTHENTICATE
from bridge.ingest.body import BODY_MIN_BYTES_PER_S, BODY_TIMEOUT_S, INGEST_PATH

#: The security schemes' names in ``components.securitySchemes``.
SIGNATURE_SCHEME, BEARER_SCHEME = "bridgeSignature", "bearerToken"

_REF = "#/components/schemas/{model}"


def example_outcomes() -> dict[str, dict[str, Any]]:
    """The first example of each kind in ``bridge/examples/outcomes.jsonl`` (built from the seed
    documents), in the order of ``KINDS``."""
    text = resources.files("bridge").joinpath("examples", "outcomes.jsonl").read_text("utf-8")
    first: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        if line.strip():
            outcome = json.loads(line)
            first.setdefault(outcome["kind"], outcome)
    return {kind: first[kind] for kind in KINDS if kind in first}


def security_schemes() -> dict[str, dict[str, Any]]:
    return {
        SIGNATURE_SCHEME: {
            "type": "apiKey",
            "in": "header",
            "name": SIGNATURE_HEADER,
            "description": (
                f'`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, keyed with any of the '
                f"merchants file's `ingest.hmac_secrets`; `t` within ±{TOLERANCE_S} s of the server's "
                "clock; several `v1=` entries are allowed (a sender signing with an old and a new secret "
                "during a rotation)."
            ),
        },
        BEARER_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <token>` with any of `ingest.bearer_tokens`.",
        },
    }


def body_schemas(max_outcomes: int) -> dict[str, dict[str, Any]]:
    """The three forms a body may take, beside the outcome components."""
    outcome = {"$ref": _REF.format(model="Outcome")}
    return {
        "OutcomeBatch": {
            "title": "OutcomeBatch",
            "description": 'Several outcomes: `{"outcomes": [...]}` and no other field.',
            "type": "object",
            "required": ["outcomes"],
            "additionalProperties": False,
            "properties": {"outcomes": {"type": "array", "maxItems": max_outcomes, "items": outcome}},
        },
        "OutcomeArray": {
            "title": "OutcomeArray",
            "description": "Several outcomes as a bare JSON array: the same as an OutcomeBatch.",
            "type": "array",
            "maxItems": max_outcomes,
            "items": outcome,
        },
    }


def _ingest_description(settings: Settings) -> str:
    return f"""Validate outcomes and store the valid, new ones for delivery; answers once Redis holds them.

**Body**: JSON, in one of three forms: one outcome object; `{{"outcomes": [...]}}`; or a bare
JSON array of outcomes. At most {settings.max_request_outcomes} outcomes and
{settings.max_request_bytes} bytes. An object with an `outcomes` field is always read as a batch.

**Edges**:
- *Empty batch* (`[]` or `{{"outcomes": []}}`): `202` with every count 0; nothing is stored.
- *Content-Type* is not read: the body is parsed as UTF-8 JSON whatever the header says (send
  `application/json`). JSON Lines is not accepted (`400`): send a batch, or use `bridge replay FILE.jsonl`.
- Invalid items beside valid ones do not refuse the request: `202`, with an entry in `errors`
  for each (dead-lettered with reason `invalid`); `422` only when every item is invalid.
- A JSON value other than an object or an array, or a batch with fields beside `outcomes`: `400`.

**Authentication**: `{SIGNATURE_HEADER}` (HMAC of the raw body) or `Authorization: Bearer`. With
no secret and no token configured, the ingest is open (local development)."""


def _responses(operation: dict[str, Any]) -> None:
    responses = operation["responses"]
    responses["202"]["description"] = (
        "Taken: the valid, new outcomes are stored in Redis. `accepted`, `duplicate` (already "
        "processed or accepted, or repeated in the request) and `invalid` count the items; `errors` "
        "lists each invalid one (index, outcomeId, field paths and reasons)."
    )
    responses["400"]["description"] = (
        "`invalid_json`: not JSON, not UTF-8, NaN or Infinity, a number too long, nested over 64 "
        'levels. `bad_request`: neither an object nor an array, `"outcomes"` not an array or with '
        "fields beside it, a bad Content-Length."
    )
    responses["401"]["description"] = "`unauthorized`: missing or bad credentials."
    responses["401"]["headers"] = {
        "WWW-Authenticate": {
            "required": True,
            "description": f"`{WWW_AUTHENTICATE}`",
            "schema": {"type": "string"},
        }
    }
    responses["408"]["description"] = (
        f"`request_timeout`: the body did not arrive whole within {BODY_TIMEOUT_S:.0f} s (or the "
        f"time `BRIDGE_MAX_REQUEST_BYTES` takes at {BODY_MIN_BYTES_PER_S // 1000} KB/s, if longer); "
        "the connection is closed. Nothing of it was taken: send it again."
    )
    responses["413"]["description"] = (
        "`too_large`: body over `BRIDGE_MAX_REQUEST_BYTES`; `too_many_outcomes`: more outcomes "
        "than `BRIDGE_MAX_REQUEST_OUTCOMES`."
    )
    responses["422"]["description"] = "Every item was invalid: nothing stored, `errors` says why."
    responses["503"]["description"] = (
        "`unavailable`: the queue backlog is over `BRIDGE_MAX_BACKLOG`, Redis is near its "
        "`maxmemory`, Redis or the broker does not answer, or an outcome of the request is still "
        "being stored by another request. Retry the whole request after `Retry-After`: nothing of it "
        "is lost, and what of it was already stored (when only dead-lettering its invalid items "
        "failed) is answered as a duplicate."
    )
    responses["503"]["headers"] = {
        "Retry-After": {
            "required": True,
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    }


def publish(document: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """``document`` (FastAPI's) with the ingest's body, examples, security and edges written in."""
    document = copy.deepcopy(document)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    added = {**outcome_schemas(_REF), **body_schemas(settings.max_request_outcomes)}
    clash = set(added) & set(schemas)
    if clash:
        raise ValueError(f"OpenAPI component names used twice: {sorted(clash)}")
    schemas.update(added)
    components["securitySchemes"] = security_schemes()

    examples = example_outcomes()
    named: dict[str, Any] = {
        kind: {"summary": f"One {kind} outcome", "value": value} for kind, value in examples.items()
    }
    first_two = list(examples.values())[:2]
    named["batch"] = {"summary": "A batch of two outcomes", "value": {"outcomes": first_two}}
    named["array"] = {"summary": "The same batch as a bare array", "value": first_two}
    named["emptyBatch"] = {"summary": "An empty batch (202, all counts 0)", "value": {"outcomes": []}}

    operation = document["paths"][INGEST_PATH]["post"]
    operation["description"] = _ingest_description(settings)
    operation["security"] = [{SIGNATURE_SCHEME: []}, {BEARER_SCHEME: []}]
    operation["requestBody"] = {
        "required": True,
        "description": "One outcome, a batch, or a bare array of outcomes (see the operation's description).",
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "title": "OneOutcome",
                            "allOf": [{"$ref": _REF.format(model="Outcome")}],
                            "not": {"required": ["outcomes"]},
                        },
                        {"$ref": _REF.format(model="OutcomeBatch")},
                        {"$ref": _REF.format(model="OutcomeArray")},
                    ]
                },
                "examples": named,
            }
        },
    }
    _responses(operation)
    metrics = document["paths"].get("/metrics", {}).get("get")
    if metrics is not None:
        metrics["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    return document


def install(app: FastAPI, settings: Settings) -> None:
    """Serve ``publish(...)`` of the app's generated document as its OpenAPI (built on first use)."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    published: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not published:
            published.update(publish(generate(), settings))
            app.openapi_schema = published
        return published

    app.openapi = openapi  # type: ignore[method-assign]
