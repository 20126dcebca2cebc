"""The wire form of Segment messages: JSON bytes, decimals kept exact.

Mapping keeps money as ``Decimal``. On the wire a decimal is always a JSON *number* whose
text is exactly the decimal's (``Decimal("15.61")`` -> ``15.61``, ``Decimal("-2.00")`` ->
``-2.00``, ``Decimal("12345678901234567.89")`` -> ``12345678901234567.89``): orjson writes
the decimal's own text as a ``Fragment``, so no digit is lost or invented, whatever the
number of significant digits, and a property has one JSON type in every message (a
warehouse types a column by the first value it sees). Decimals that reach ``dumps`` are
finite: the models refuse NaN and infinities.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

_Fragment = orjson.Fragment


class LongNumber:
    """A JSON integer too long for Python to read as an ``int`` (over
    ``sys.get_int_max_str_digits()`` digits, 4,300 by default), as ``bridge.stages.prepare.decode_json``
    gives it: the models refuse it as "number too long" naming its field, ``dumps`` writes its
    text back unchanged (so the outcome can be kept as it came)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    @property
    def digits(self) -> int:
        return len(self.text.lstrip("-"))

    def __repr__(self) -> str:
        return f"LongNumber({self.digits} digits)"


def _default(obj: Any) -> Any:
    if obj.__class__ is Decimal:
        if not obj.is_finite():  # JSON has no NaN/Infinity (and orjson would not check a Fragment)
            raise TypeError(f"cannot serialise {obj} as JSON")
        return _Fragment(obj.__str__())
    if isinstance(obj, Decimal):  # a subclass: the same, without the fast path
        return _default(Decimal(obj))
    if isinstance(obj, LongNumber):
        return _Fragment(obj.text)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def dumps(obj: Any) -> bytes:
    """Serialise a message (or any JSON-able object holding Decimals) to compact JSON bytes."""
    return orjson.dumps(obj, default=_default)


#: Decimals already found to travel exactly as a float, and that float (``decimal_to_wire``).
_AS_FLOAT: dict[Decimal, float] = {}
_AS_FLOAT_MAX = 50_000


def decimal_to_wire(value: Decimal) -> float | str:
    """For libraries that can only write floats (the standard ``json``): a float when float64
    carries the decimal exactly, else its exact text as a string. ``dumps`` needs neither."""
    try:
        cached = _AS_FLOAT.get(value)
    except TypeError:  # a signalling NaN cannot be hashed
        cached = None
    if cached is not None:
        return cached
    as_float = float(value)
    # A finite decimal of at most 15 significant digits (DBL_DIG) in the normal float range
    # always round-trips through float64, so the check below would pass.
    short = value.is_finite() and len(value.as_tuple().digits) <= 15 and -290 < value.adjusted() < 290
    if not short and Decimal(repr(as_float)) != value:
        return format(value, "f")
    if as_float:  # not zeros: 0 and -0 are equal decimals with different floats
        if len(_AS_FLOAT) >= _AS_FLOAT_MAX:
            _AS_FLOAT.clear()
        _AS_FLOAT[value] = as_float
    return as_float


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)
