"""Chaos run: the whole path (signed HTTP ingest -> Redis -> workers -> receiver) under faults.

``python -m tests.chaos.run`` is the full run; ``tests/test_chaos_short.py`` the short one.
"""
