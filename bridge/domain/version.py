"""The bridge's version: sent as ``context.library.version`` on every message."""

__version__ = "0.1.0"
