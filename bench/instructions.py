"""Instructions per outcome of each stage, counted by ``valgrind --tool=callgrind``:
``python -m bench.instructions [--outcomes N] [--json FILE]``.

Wall-clock figures on a shared machine drift by tens of percent between runs; instruction
counts do not (they repeat to ~0.1 %), so this is how to tell what a change to a stage costs,
and where the floor of a stage lies. Each stage runs in its own process under callgrind over
the same ``N`` outcomes of the bench's mix (``bench.outcomes``, one stream of varied outcomes as
``bench.run``'s mapping-alone measure uses, not one example in a loop); a process that only
builds the inputs is counted too and taken off, so each figure is the stage's own work:

- ``decode``: ``decode_json`` of each outcome's text (jiter, exact Decimals);
- ``validate``: ``parse_outcome`` as shipped (pydantic models, the compiled fast paths);
- ``validate_plain``: the same pydantic-core schema with every model turned into a TypedDict,
  so validation builds dicts instead of model instances: what "validation into plain data"
  would save at most (the mapping would have to read dicts; not shipped, a measure only);
- ``map``: ``mappings.map_outcome`` of each valid outcome (``map_valid``);
- ``encode``: ``encode`` of each message (orjson, Segment's rules).

Needs ``valgrind`` on PATH. ``--stage NAME`` runs one stage without callgrind (what each counted
process runs).
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAGES = ("decode", "validate", "validate_plain", "map", "encode")


def plain_schema(schema: Any) -> Any:
    """``schema`` (a pydantic-core schema) with each ``model`` made a ``typed-dict`` of the same
    fields, aliases and validators: validation yields dicts, not model instances. A validator
    wrapped around a whole model (``model_validator``) is left out, as it takes the instance."""
    if isinstance(schema, list):
        return [plain_schema(v) for v in schema]
    if isinstance(schema, tuple):
        return tuple(plain_schema(v) for v in schema)
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    inner = schema.get("schema")
    wraps_model = isinstance(inner, dict) and inner.get("type") == "model"
    if kind in ("function-after", "function-wrap", "function-before") and wraps_model:
        return plain_schema(inner)
    if kind == "model" and isinstance(inner, dict) and inner.get("type") == "model-fields":
        fields = {}
        for name, field in inner["fields"].items():
            entry = {
                "type": "typed-dict-field",
                "schema": plain_schema(field["schema"]),
                "required": field["schema"].get("type") != "default",
            }
            if "validation_alias" in field:
                entry["validation_alias"] = field["validation_alias"]
            fields[name] = entry
        made: dict[str, Any] = {"type": "typed-dict", "fields": fields, "extra_behavior": "ignore"}
        if "ref" in schema:
            made["ref"] = schema["ref"]
        return made
    if kind == "model":
        return plain_schema(inner)
    return {k: plain_schema(v) for k, v in schema.items()}


def inputs(count: int) -> dict[str, Any]:
    """The bench's outcome texts for 4 merchants, and what each stage takes as input."""
    from bench.outcomes import build_variants
    from bench.run import FIRST_MERCHANT, Workload, write_config
    from bridge.config import load_merchants_file
    from bridge.domain.models import Outcome
    from bridge.stages.prepare import decode_json, map_valid, validate

    ids = [FIRST_MERCHANT + n for n in range(4)]
    with tempfile.TemporaryDirectory() as tmp:
        merchants = load_merchants_file(write_config(Path(tmp) / "m.yaml", "http://127.0.0.1:9", ids, "main"))
    texts = [g.text for g in Workload(count, build_variants(merchants, ids[0]), ids, "map").outcomes()]
    raws = [decode_json(t) for t in texts]
    valid = [o for o in (_or_none(validate, r) for r in raws) if isinstance(o, Outcome)]
    return {
        "merchants": merchants,
        "texts": texts,
        "raws": raws,
        "valid": valid,
        "messages": [map_valid(o, merchants) for o in valid],
    }


def _or_none(fn: Callable[[Any], Any], arg: Any) -> Any:
    try:
        return fn(arg)
    except Exception:
        return None


def stage_work(stage: str, data: dict[str, Any]) -> Callable[[], int]:
    """The work of ``stage`` over ``data``; it returns how many results it made."""
    from pydantic_core import SchemaValidator

    from bridge.domain.models import Outcome
    from bridge.stages.prepare import decode_json, encode, map_valid, validate

    merchants = data["merchants"]
    plain = SchemaValidator(plain_schema(Outcome.__pydantic_core_schema__))
    work: dict[str, Callable[[], int]] = {
        "none": lambda: 0,
        "decode": lambda: sum(1 for t in data["texts"] if decode_json(t) is not None),
        "validate": lambda: sum(1 for r in data["raws"] if _or_none(validate, r) is not None),
        "validate_plain": lambda: sum(
            1 for r in data["raws"] if _or_none(plain.validate_python, r) is not None
        ),
        "map": lambda: sum(len(map_valid(o, merchants)) for o in data["valid"]),
        "encode": lambda: sum(len(encode(m)) > 0 for ms in data["messages"] for m in ms),
    }
    return work[stage]


def run_stage(stage: str, count: int) -> int:
    data = inputs(count)
    work = stage_work(stage, data)
    gc.collect()
    gc.disable()  # the inputs are all alive: collections would count their size, not the stage
    try:
        return work()
    finally:
        gc.enable()


def count_instructions(stage: str, count: int) -> int:
    """Instructions callgrind counts for a whole process running ``stage`` over ``count`` outcomes."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench.instructions",
        "--stage",
        stage,
        "--outcomes",
        str(count),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in callgrind's output for {stage}")
    return int(found.group(1))


def report(count: int) -> dict[str, Any]:
    base = count_instructions("none", count)
    per_outcome = {stage: (count_instructions(stage, count) - base) / count for stage in STAGES}
    shipped = sum(per_outcome[s] for s in STAGES if s != "validate_plain")
    return {
        "outcomes": count,
        "instructions_per_outcome": {k: round(v) for k, v in per_outcome.items()},
        "shipped_total": round(shipped),
        "share": {s: round(per_outcome[s] / shipped, 3) for s in STAGES if s != "validate_plain"},
    }


def summary(result: dict[str, Any]) -> str:
    per = result["instructions_per_outcome"]
    lines = [
        f"stage            instructions/outcome  share  ({result['outcomes']} outcomes of the bench's mix)"
    ]
    for stage in STAGES:
        share = result["share"].get(stage)
        lines.append(f"{stage:16s} {per[stage]:>20,}  {'' if share is None else f'{share * 100:4.0f} %'}")
    lines.append(f"{'total (shipped)':16s} {result['shipped_total']:>20,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--outcomes", type=int, default=1000, help="outcomes of the bench's mix (default 1000)"
    )
    parser.add_argument("--stage", choices=("none", *STAGES), help="run one stage, uncounted")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if args.stage:
        print(f"{args.stage}: {run_stage(args.stage, args.outcomes)} results", file=sys.stderr)
        return None
    if shutil.which("valgrind") is None:
        parser.error("needs valgrind on PATH (apt-get install valgrind)")
    result = report(args.outcomes)
    print(summary(result))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
