"""Where the microseconds of one outcome go: ``python -m bench.stages [--json FILE]``.

Times each stage of the ingest's CPU path on its own, per outcome, in this process (one core):

- ``decode``: ``bridge.stages.prepare.decode_json`` of the outcome's text (jiter, exact Decimals);
- ``validate``: ``bridge.domain.models.parse_outcome`` (pydantic, compiled fast paths);
- ``map``: ``mappings.map_outcome`` with the merchant's context (``bridge.stages.prepare.map_valid``);
- ``encode``: ``bridge.stages.prepare.encode`` of each message (orjson, Segment's rules checked).

Each figure is the best of several repeats of a loop over one example (the machine is shared:
the best repeat is the least disturbed), weighted by the bench's mix of outcomes
(``bench.outcomes.KIND_WEIGHTS``). ``growth`` repeats it for one check with 1, 10, 100 and 1,000
items: how the cost of an outcome grows with its size.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.outcomes import KIND_WEIGHTS, example_outcomes
from bridge.config import MerchantsConfig
from bridge.domain.wire import dumps
from bridge.stages.prepare import decode_json, encode, map_valid, validate

STAGES = ("decode", "validate", "map", "encode")
ITEM_COUNTS = (1, 10, 100, 1000)


def _best_us(fn: Callable[[], object], budget_s: float = 0.05, repeat: int = 5) -> float:
    """Best-of-``repeat`` time of one call in microseconds, each repeat ~``budget_s`` long."""
    once = timeit.timeit(fn, number=1)
    number = max(1, int(budget_s / max(once, 1e-7)))
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def for_merchant(example: dict[str, Any], merchant_id: int) -> dict[str, Any]:
    """A copy of an example outcome for ``merchant_id`` (its request names the merchant too)."""
    outcome = copy.deepcopy({**example, "merchantId": merchant_id})
    if isinstance(outcome.get("request"), dict) and "merchantId" in outcome["request"]:
        outcome["request"]["merchantId"] = merchant_id
    return outcome


def stage_times(text: str, merchants: MerchantsConfig) -> dict[str, float]:
    """Microseconds per stage for one outcome text."""
    raw = decode_json(text)
    outcome = validate(raw)
    messages = map_valid(outcome, merchants)
    return {
        "decode": _best_us(lambda: decode_json(text)),
        "validate": _best_us(lambda: validate(raw)),
        "map": _best_us(lambda: map_valid(outcome, merchants)),
        "encode": _best_us(lambda: [encode(m) for m in messages]),
    }


def mix(merchants: MerchantsConfig, merchant_id: int) -> dict[str, Any]:
    """Per-example stage times and their mean over the bench's mix of outcomes."""
    examples = example_outcomes()
    total_weight = sum(KIND_WEIGHTS.get(e["outcomeId"], 1.0) for e in examples)
    per_example: dict[str, dict[str, float]] = {}
    mean = dict.fromkeys(STAGES, 0.0)
    for example in examples:
        text = dumps(for_merchant(example, merchant_id)).decode()
        times = stage_times(text, merchants)
        per_example[f"{example['outcomeId']} {example['kind']}"] = {k: round(v, 1) for k, v in times.items()}
        weight = KIND_WEIGHTS.get(example["outcomeId"], 1.0) / total_weight
        for stage in STAGES:
            mean[stage] += weight * times[stage]
    total = sum(mean.values())
    return {
        "mean_us": {k: round(v, 1) for k, v in mean.items()},
        "total_us": round(total, 1),
        "share": {k: round(v / total, 3) for k, v in mean.items()},
        "outcomes_per_s_one_core": round(1e6 / total),
        "without_map_outcomes_per_s_one_core": round(1e6 / (total - mean["map"])),
        "per_example_us": per_example,
    }


def check_with_items(count: int, merchant_id: int) -> str:
    """The first example check (``check.postAndAccruePoints``) with ``count`` menu items."""
    example = next(e for e in example_outcomes() if e["kind"] == "check.postAndAccruePoints")
    outcome = for_merchant(example, merchant_id)
    check = outcome["request"]["check"]
    menu = [i for i in check["items"] if i.get("type", "menuItem") == "menuItem"]
    others = [i for i in check["items"] if i.get("type", "menuItem") != "menuItem"]
    items = []
    for n in range(count):
        item = copy.deepcopy(menu[n % len(menu)])
        item["itemId"] = f"{item['itemId']}-{n}"
        items.append(item)
    check["items"] = items + others
    return dumps(outcome).decode()


def growth(merchants: MerchantsConfig, merchant_id: int) -> dict[str, Any]:
    """Stage times of one check against its number of items."""
    rows: dict[str, Any] = {}
    for count in ITEM_COUNTS:
        text = check_with_items(count, merchant_id)
        times = stage_times(text, merchants)
        rows[str(count)] = {
            "bytes": len(text),
            **{k: round(v, 1) for k, v in times.items()},
            "total_us": round(sum(times.values()), 1),
            "map_us_per_item": round(times["map"] / count, 2),
        }
    return rows


def run(merchants: MerchantsConfig, merchant_id: int) -> dict[str, Any]:
    return {"mix": mix(merchants, merchant_id), "items": growth(merchants, merchant_id)}


def summary(report: dict[str, Any]) -> str:
    m = report["mix"]
    lines = [
        "stage    µs/outcome  share   (bench mix, one core, best of 5)",
        *(f"{stage:8s} {m['mean_us'][stage]:10.1f}  {m['share'][stage] * 100:4.0f} %" for stage in STAGES),
        f"total    {m['total_us']:10.1f}  -> {m['outcomes_per_s_one_core']} outcomes/s "
        f"({m['without_map_outcomes_per_s_one_core']} without mapping)",
        "",
        "items   bytes    decode  validate     map  encode   total µs  map µs/item",
    ]
    for count, row in report["items"].items():
        lines.append(
            f"{count:>5} {row['bytes']:>7} {row['decode']:9.1f} {row['validate']:9.1f} {row['map']:7.1f} "
            f"{row['encode']:7.1f} {row['total_us']:10.1f} {row['map_us_per_item']:12.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", dest="json_path", default=None, help="also write the report here")
    args = parser.parse_args(argv)
    import tempfile

    from bench.run import FIRST_MERCHANT, write_config
    from bridge.config import load_merchants_file

    with tempfile.TemporaryDirectory() as tmp:
        path = write_config(Path(tmp) / "m.yaml", "http://127.0.0.1:9", [FIRST_MERCHANT], "main")
        merchants = load_merchants_file(path)
    report = run(merchants, FIRST_MERCHANT)
    print(summary(report))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
