"""``bridge tracking-plan``: a Segment Protocols tracking plan generated from ``mappings.catalog``.

The output is the body of Segment Public API's "Replace Rules in Tracking Plan"
(``PUT /tracking-plans/{trackingPlanId}/rules``): ``{"rules": [...]}``, one rule per event,
each ``{"key", "type", "version", "jsonSchema"}``. Track rules are keyed by event name; the
identify rule has ``"key": null``, as Segment stores it. Each ``jsonSchema`` is draft-07 and
describes the whole message as the bridge sends it: ``properties`` (or ``traits``) closed with
``additionalProperties: false`` and the properties every message of the event carries listed
in ``required``; ``context.integration``; ``userId`` or ``anonymousId``; ``messageId``;
``timestamp``. Decimals are ``{"type": "number"}``, written exactly (see ``bridge.domain.wire``).

With a merchant's ``MappingContext`` the plan follows that merchant's configuration:
renamed events are keyed by their new name and disabled events are left out.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from mappings.catalog import EVENTS, EventSpec, JSONSchema, Prop
from mappings.common import IDENTIFY, INTEGRATION, MappingContext

JSON_SCHEMA_DRAFT = "http://json-schema.org/draft-07/schema#"
RULE_VERSION = 1
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
ANONYMOUS_ID_PATTERN = r"^anon-[0-9a-f]{32}$"


class UnknownEvent(ValueError):
    """``render(event=...)`` named no event of the plan."""

    def __init__(self, event: str, known: Iterable[str]) -> None:
        self.event = event
        self.known = list(known)
        super().__init__(f"unknown event {event!r} (known: {', '.join(self.known)})")


def _context_schema() -> JSONSchema:
    # Open object: analytics libraries add context.library (and Segment adds more).
    return {
        "description": "context.integration names the bridge; the library adds context.library.",
        "type": "object",
        "properties": {
            "integration": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "const": INTEGRATION["name"]},
                    "version": {"type": "string"},
                },
                "required": ["name", "version"],
            }
        },
        "required": ["integration"],
    }


def payload_schema(spec: EventSpec) -> JSONSchema:
    """The closed schema of an event's ``properties`` (or of identify's ``traits``)."""
    return {
        "type": "object",
        "properties": {prop.name: copy.deepcopy(prop.schema) for prop in spec.properties},
        "additionalProperties": False,
        "required": list(spec.required),
    }


def event_rule(spec: EventSpec, key: str | None = None) -> dict[str, Any]:
    """One tracking plan rule: ``{"key", "type", "version", "jsonSchema"}``."""
    is_track = spec.call == "track"
    payload = "properties" if is_track else "traits"
    other = "traits" if is_track else "properties"
    json_schema: JSONSchema = {
        "$schema": JSON_SCHEMA_DRAFT,
        "description": spec.description + " Produced by: " + ", ".join(spec.produced_by) + ".",
        "type": "object",
        "properties": {
            payload: payload_schema(spec),
            other: {},
            "context": _context_schema(),
            "userId": {
                "description": "guest.userId, else the account code.",
                "type": "string",
                "minLength": 1,
            },
            "anonymousId": {
                "description": "When no user id is known: a hash of merchant and card (never the card).",
                "type": "string",
                "pattern": ANONYMOUS_ID_PATTERN,
            },
            "messageId": {
                "description": "UUIDv5 of merchant, outcome id and the message's place in the outcome.",
                "type": "string",
                "maxLength": 100,
                "pattern": UUID_PATTERN,
            },
            "timestamp": {
                "description": "The outcome's occurredAt, in UTC.",
                "type": "string",
                "format": "date-time",
            },
        },
        "required": [payload, "context", "messageId", "timestamp"],
        "anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}],
    }
    return {
        "key": (key or spec.name) if is_track else None,
        "type": "TRACK" if is_track else "IDENTIFY",
        "version": RULE_VERSION,
        "jsonSchema": json_schema,
    }


def _enabled(context: MappingContext | None) -> list[tuple[EventSpec, str]]:
    """(spec, key) of every event the merchant's configuration leaves enabled."""
    ctx = context or MappingContext()
    found: list[tuple[EventSpec, str]] = []
    for spec in EVENTS:
        if spec.name in ctx.disabled:
            continue
        key = ctx.rename.get(spec.name, spec.name) if spec.call == "track" else IDENTIFY
        found.append((spec, key))
    return found


def tracking_plan(context: MappingContext | None = None) -> dict[str, Any]:
    """The tracking plan's rules for every event (a merchant's renames and disabled events applied)."""
    return {"rules": [event_rule(spec, key) for spec, key in _enabled(context)]}


def rule_for(event: str, context: MappingContext | None = None) -> dict[str, Any]:
    """The rule of one event: by its (possibly renamed) key, its catalog name, or ``identify``."""
    enabled = _enabled(context)
    for spec, key in enabled:
        if event in (key, spec.name):
            return event_rule(spec, key)
    raise UnknownEvent(event, [key for _, key in enabled])


def render(event: str | None = None, context: MappingContext | None = None) -> str:
    """JSON text of the whole plan, or of one event's rule; raises ``UnknownEvent``."""
    document = tracking_plan(context) if event is None else rule_for(event, context)
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write_tracking_plan(
    stream: TextIO | None = None, event: str | None = None, context: MappingContext | None = None
) -> None:
    """Print the plan (or one rule) to ``stream`` (stdout by default)."""
    out = stream if stream is not None else sys.stdout
    out.write(render(event, context))
    out.flush()


# --------------------------------------------------------------------------- the README's reference

#: The README's event reference sits between these markers; tests/test_tracking_plan.py checks it
#: is what ``event_reference_markdown()`` renders (regenerate: ``bridge tracking-plan --markdown``).
README_START = "<!-- event-reference:start (generated by `bridge tracking-plan --markdown`) -->"
README_END = "<!-- event-reference:end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _type_of(schema: JSONSchema) -> str:
    kind = schema.get("type", "")
    name = "/".join(kind) if isinstance(kind, list) else str(kind)
    if name == "array":
        return f"array of {_type_of(schema.get('items', {}))}"
    if name == "object" and "properties" in schema:
        return "object {" + ", ".join(f"`{k}`" for k in schema["properties"]) + "}"
    return name


def _rows(props: Iterable[Prop], required: Iterable[str]) -> list[str]:
    always = set(required)
    rows = ["| property | JSON type | unit | source in the seeds | meaning |", "|---|---|---|---|---|"]
    for prop in props:
        name = f"`{prop.name}`" + (" (always)" if prop.name in always else "")
        rows.append(
            f"| {name} | {_cell(_type_of(prop.schema))} | {_cell(prop.unit or '')} "
            f"| {_cell(prop.source)} | {_cell(prop.description)} |"
        )
    return rows


def event_reference_markdown() -> str:
    """The README's event reference: for every event, every property with its JSON type, unit
    and source in the seeds, from ``mappings.catalog`` (the same data as the tracking plan)."""
    tracks = [spec for spec in EVENTS if spec.call == "track"]
    shared = [p for p in tracks[0].properties if all(p.name in s.property_names() for s in tracks)]
    shared_names = {p.name for p in shared}
    lines = [README_START, "", "#### Properties of every track event (when the outcome gives them)", ""]
    lines += [*_rows(shared, ("merchant_id",)), ""]
    for spec in EVENTS:
        title = f"track `{spec.name}`" if spec.call == "track" else "`identify` traits"
        produced = ", ".join(f"`{kind}`" for kind in spec.produced_by)
        own = [p for p in spec.properties if spec.call != "track" or p.name not in shared_names]
        lines += [f"#### {title}", "", f"{spec.description} Produced by {produced}.", ""]
        lines += [*_rows(own, spec.required), ""]
    lines.append(README_END)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - python -m bridge.ops.tracking_plan [EVENT]
    write_tracking_plan(sys.stdout, sys.argv[1] if len(sys.argv) > 1 else None)
