"""The merchants file: ${ENV} references, sources, store directories, renames, one error for all problems."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from bridge.config import Settings, load_merchants_file, parse_merchants
from bridge.domain.errors import ConfigError

FIXTURE = Path(__file__).parent / "fixtures" / "merchants.yaml"


def test_fixture_loads_with_env_reference_and_relative_store_csv():
    cfg = load_merchants_file(FIXTURE, env={"TEST_WRITE_KEY_1738": "wk-1738"})
    [src] = cfg.sources_for(1738)
    assert src.write_key.get_secret_value() == "wk-1738"
    assert src.host == "https://api.segment.io"
    store = cfg.context_for(1738).stores["0"]
    assert (store.name, store.latitude, store.postal_code) == (
        "Downtown Flagship",
        Decimal("42.3601"),
        "02108",
    )
    prod, staging = cfg.sources_for(2001)
    assert prod.host == "https://api.segment.io"
    assert staging.host == "https://events.eu1.segmentapis.com"
    ctx = cfg.context_for(2001)
    assert ctx.rename == {"Check-In": "Store Check-In"}
    assert ctx.disabled == frozenset({"Survey Completion"})
    assert cfg.sources_for(9999) == ()


def test_write_keys_never_print():
    cfg = load_merchants_file(FIXTURE, env={"TEST_WRITE_KEY_1738": "wk-secret-1738"})
    assert "wk-secret-1738" not in repr(cfg)
    assert "wk-secret-1738" not in str(cfg.sources_for(1738))


def test_every_problem_is_reported_at_once(tmp_path):
    (tmp_path / "stores.csv").write_text("store_code,name,latitude\n1,A,north\n,B,1\n")
    (tmp_path / "c.yaml").write_text(
        """
segment: {host: "ftp://nope"}
merchants:
  - merchant_id: 1
    sources:
      - {name: Prod, write_key: "${MISSING_KEY}"}
      - {name: Prod, write_key: "k2"}
    stores: stores.csv
    events: {rename: {"Checkin": "X"}, disabled: ["Nope"]}
  - merchant_id: 1
    sources: []
    stores: missing.csv
"""
    )
    with pytest.raises(ConfigError) as info:
        load_merchants_file(tmp_path / "c.yaml", env={})
    text = str(info.value)
    for expected in (
        "segment.host: not an http(s) URL",
        "environment variable MISSING_KEY is not set",
        "source 'Prod' appears twice",
        "latitude: not a number",
        "store_code is empty",
        "unknown event 'Checkin'",
        "unknown event 'Nope'",
        "merchant 1 appears twice",
        "missing.csv: cannot read store directory",
    ):
        assert expected in text, expected
    assert len(info.value.problems) == 9


def test_unknown_keys_and_wrong_types_are_errors():
    with pytest.raises(ConfigError) as info:
        parse_merchants({"merchants": [{"merchant_id": "x", "sourcez": []}]}, Path("."), env={})
    text = str(info.value)
    assert "merchants.0.merchant_id" in text
    assert "merchants.0.sourcez" in text


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("BRIDGE_REDIS_URL", "redis://example:6380/2")
    # A parsing test (any integer shows the variable is read): no process runs with it.
    monkeypatch.setenv("BRIDGE_DEDUP_WINDOW_S", "60")
    settings = Settings()
    assert settings.redis_url == "redis://example:6380/2"
    assert settings.dedup_window_s == 60
    assert settings.load_merchants().merchants == {}


def test_a_heartbeat_ttl_shorter_than_two_intervals_is_refused() -> None:
    import pydantic

    from bridge.config import Settings

    with pytest.raises(pydantic.ValidationError, match="BRIDGE_HEARTBEAT_TTL_S"):
        Settings(heartbeat_interval_s=5, heartbeat_ttl_s=8)
    defaults = Settings()
    assert defaults.heartbeat_ttl_s >= 2 * defaults.heartbeat_interval_s
