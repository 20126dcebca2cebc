"""The wire form of Segment messages: JSON bytes, decimals kept exact.

Mapping keeps money as ``Decimal``. On the wire a decimal becomes a JSON number
whose text is exactly the decimal's value (``Decimal("15.61")`` -> ``15.61``),
because a float64 prints its shortest round-tripping form. A decimal with more
significant digits than a float64 holds (rare: > 15) is sent as a string instead,
so no digit is ever lost or invented.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

#: Decimals already found to travel exactly as a float, and that float. Money repeats (prices,
#: totals, balances), so most lookups hit. Equal decimals (``1.5`` and ``1.50``) share an entry:
#: they have the same float (except zeros, never cached: ``-0`` is ``-0.0``). Cleared when
#: full, so it stays small.
_AS_FLOAT: dict[Decimal, float] = {}
_AS_FLOAT_MAX = 50_000


def decimal_to_wire(value: Decimal) -> float | str:
    """A JSON number when float64 carries the decimal exactly, else its exact string."""
    try:
        cached = _AS_FLOAT.get(value)
    except TypeError:  # a signalling NaN cannot be hashed
        cached = None
    if cached is not None:
        return cached
    as_float = float(value)
    # Fast path: a finite decimal of at most 15 significant digits (DBL_DIG) in the normal
    # float range always round-trips through float64, so the check below would pass.
    short = value.is_finite() and len(value.as_tuple().digits) <= 15 and -290 < value.adjusted() < 290
    if not short and Decimal(repr(as_float)) != value:
        return format(value, "f")
    if as_float:  # not zeros: 0 and -0 are equal decimals with different floats
        if len(_AS_FLOAT) >= _AS_FLOAT_MAX:
            _AS_FLOAT.clear()
        _AS_FLOAT[value] = as_float
    return as_float


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return decimal_to_wire(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def dumps(obj: Any) -> bytes:
    """Serialise a message (or any JSON-able object holding Decimals) to compact JSON bytes."""
    return orjson.dumps(obj, default=_default)


def to_wire(obj: Any) -> Any:
    """Turn Decimals inside ``obj`` into their wire values (for libraries that call json.dumps)."""
    if isinstance(obj, Decimal):
        return decimal_to_wire(obj)
    if isinstance(obj, dict):
        return {k: to_wire(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_wire(v) for v in obj]
    return obj


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)
