"""The Lua scripts the Redis stores run, one ``.lua`` file each, beside this module.

A file is named ``{store}_{what}.lua`` and starts with a comment saying its KEYS, ARGV and
what it returns. ``load(name)`` reads one (once per process); ``all_scripts()`` all of them
(the embedded demo preloads them into a Redis that cannot answer NOSCRIPT).
"""

from __future__ import annotations

import functools
from importlib.resources import files


@functools.cache
def load(name: str) -> str:
    """The text of ``{name}.lua``."""
    return files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


def all_scripts() -> dict[str, str]:
    """Every script, by name."""
    names = sorted(p.name.removesuffix(".lua") for p in files(__name__).iterdir() if p.name.endswith(".lua"))
    return {name: load(name) for name in names}
