"""The merchants file: ${ENV} references, sources, store directories, renames, one error for all problems."""

from __future__ import annotations

import os
import time
from decimal import Decimal
from pathlib import Path

import pytest

from bridge.config import Settings, load_merchants_file, load_settings, parse_merchants
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
    assert info.value.problems == (
        "merchants[0].merchant_id: Input should be a valid integer, unable to parse string as an integer",
        "merchants[0].sourcez: Extra inputs are not permitted",
    )


def test_a_schema_problem_hides_no_other_problem(tmp_path: Path) -> None:
    # An unknown key (a typo) or a value of the wrong type is reported beside what the other
    # checks find in the parts that could be read, with paths in one style.
    (tmp_path / "c.yaml").write_text(
        """
segment: {host: not-a-url}
ingest: {bearer_tokens: [""], hmac_secret: [s]}
merchants:
  - merchant_id: 1738
    sources:
      - {name: Prod, write_key: k, hots: "https://events.eu1.segmentapis.com"}
      - {name: Prod, write_key: k}
      - {name: NoKey}
      - just text
    stores: missing-stores.csv
    events: {rename: {"Check In": "Store Check-In"}, disabled: "Nope"}
  - merchant_id: 1738
    sources: [{name: Other, write_key: k}]
    stores: [{store_code: "1"}, [1, 2]]
  - {merchant_id: x, sources: [{name: P, write_key: k, host: "ftp://x"}]}
  - {merchant_id: 3, stores: true, events: []}
"""
    )
    with pytest.raises(ConfigError) as info:
        load_merchants_file(tmp_path / "c.yaml", env={})
    known = "POS Activity, Add/Redeem, Identify Customer, Loyalty Registration, Web Registration, Referral, Check-In, Recharge Value, Survey Completion"
    assert sorted(p.replace(f"{tmp_path}/", "") for p in info.value.problems) == sorted(
        [
            "ingest.hmac_secret: Extra inputs are not permitted",
            "segment.host: not an http(s) URL",
            "ingest.bearer_tokens[0]: empty",
            "merchants[0].sources[0].hots: Extra inputs are not permitted",
            "merchants[0].sources[1].name: source 'Prod' appears twice for merchant 1738",
            "merchants[0].sources[2].write_key: Field required",
            "merchants[0].sources[3]: Input should be a valid dictionary or instance of SourceConfig",
            "missing-stores.csv: cannot read store directory (No such file or directory)",
            "merchants[0].events.disabled: Input should be a valid list",
            f"merchants[0].events.rename: unknown event 'Check In' (known: {known})",
            "merchants[1].merchant_id: merchant 1738 appears twice",
            "merchants[1].stores[1]: expected a mapping of column names to values",
            "merchants[2].merchant_id: Input should be a valid integer, unable to parse string as an integer",
            "merchants[3].events: Input should be a valid dictionary",
            "merchants[3].stores: expected a file name or a list of rows",
        ]
    )


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("BRIDGE_REDIS_URL", "redis://example:6380/2")
    # A parsing test (any integer shows the variable is read): no process runs with it.
    monkeypatch.setenv("BRIDGE_DEDUP_WINDOW_S", "60")
    monkeypatch.setenv("BRIDGE_RETENTION_S", "60")  # the window may not be shorter
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


def _inline(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "inline.yaml"
    path.write_text(
        "merchants:\n  - merchant_id: 1738\n    sources: [{name: Prod, write_key: k}]\n    stores:\n" + rows
    )
    return path


def test_unquoted_store_values_are_read_as_written_not_as_yaml_1_1_guesses(tmp_path: Path) -> None:
    # YAML 1.1 (yaml.safe_load) reads 02210 as the octal number 1160, NO (Norway) as False and
    # 007 as 7: the store's ZIP code, country and code would reach Segment changed.
    path = _inline(
        tmp_path,
        "      - {store_code: 007, name: Bond St, postal_code: 02210, city: Oslo, state: 'on', country: NO,"
        " latitude: 59.9139, longitude: -10.7522}\n"
        "      - {store_code: 0, name: Flagship, postal_code: 2210, latitude: 40.712776123456789012}\n"
        "      - {store_code: 1:30, name: Sixty}\n"
        "      - {store_code: 12.10, name: 2024-05-05}\n",
    )
    stores = load_merchants_file(path).context_for(1738).stores
    assert set(stores) == {"007", "0", "1:30", "12.10"}
    assert stores["0"].latitude == Decimal("40.712776123456789012")  # every digit
    assert stores["12.10"].name == "2024-05-05"
    bond = stores["007"]
    assert (bond.postal_code, bond.country, bond.state) == ("02210", "NO", "on")
    assert (bond.latitude, bond.longitude) == (Decimal("59.9139"), Decimal("-10.7522"))
    assert stores["0"].name == "Flagship" and stores["0"].postal_code == "2210"


def test_a_store_value_that_is_not_text_or_a_number_is_refused_with_where_it_is(tmp_path: Path) -> None:
    path = _inline(
        tmp_path,
        "      - {store_code: '1', name: A, country: true, city: [Boston]}\n"
        "      - {store_code: '2', name: B, zip: '02108'}\n"
        "      - {store_code: '1', name: C}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_merchants_file(path)
    assert sorted(info.value.problems) == [
        "merchants[0].stores[0].city: expected text, got list (quote it)",
        "merchants[0].stores[0].country: expected text, got bool (quote it)",
        "merchants[0].stores[1]: unknown column(s) zip (expected "
        "store_code,name,latitude,longitude,city,postal_code,state,country)",
        "merchants[0].stores[2]: store_code '1' appears twice",
    ]


def test_a_store_directory_with_unknown_columns_or_extra_cells_is_refused(tmp_path: Path) -> None:
    (tmp_path / "lat.csv").write_text("store_code,name,lat,lng\n1,A,42.36,-71.05\n")
    (tmp_path / "cells.csv").write_text("store_code,name\n1,A,extra\n2,B\n")
    (tmp_path / "trailing.csv").write_text("store_code,name,\n1,A,\n")  # a trailing comma: fine
    path = tmp_path / "c.yaml"
    path.write_text(
        "merchants:\n"
        "  - {merchant_id: 1, sources: [{name: P, write_key: k}], stores: lat.csv}\n"
        "  - {merchant_id: 2, sources: [{name: P, write_key: k}], stores: cells.csv}\n"
        "  - {merchant_id: 3, sources: [{name: P, write_key: k}], stores: trailing.csv}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_merchants_file(path)
    assert sorted(p.replace(str(tmp_path) + "/", "") for p in info.value.problems) == [
        "cells.csv:2: more values than columns",
        "lat.csv: unknown column(s) lat, lng (expected "
        "store_code,name,latitude,longitude,city,postal_code,state,country)",
    ]


def test_a_store_directory_that_is_not_utf8_or_not_strict_csv_is_refused(tmp_path: Path) -> None:
    # Not UTF-8: a configuration problem (it was a UnicodeDecodeError traceback); a quote left
    # open: refused (it swallowed every row after it into one name), as is any value spanning
    # lines (no store value does). A row with fewer cells than the header leaves the rest unknown,
    # as empty cells do (hand-edited directories have them), and a quote inside a value is kept.
    (tmp_path / "latin1.csv").write_bytes("store_code,name\n0,Café\n".encode("latin-1"))
    (tmp_path / "quote.csv").write_text('store_code,name,city\n0,"unterminated,x\n1,B,y\n')
    (tmp_path / "short.csv").write_text("store_code,name,city\n0,A,\n1,B\n2\n3,C,z\n")
    (tmp_path / "multi.csv").write_text('store_code,name\n0,"two\nlines"\n\n1,"a"b\n')
    path = tmp_path / "c.yaml"
    path.write_text(
        "merchants:\n"
        "  - {merchant_id: 1, sources: [{name: P, write_key: k}], stores: latin1.csv,"
        " events: {disabled: [Nope]}}\n"
        "  - {merchant_id: 2, sources: [{name: P, write_key: k}], stores: quote.csv}\n"
        "  - {merchant_id: 3, sources: [{name: P, write_key: k}], stores: short.csv}\n"
        "  - {merchant_id: 4, sources: [{name: P, write_key: k}], stores: multi.csv}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_merchants_file(path)
    assert sorted(p.replace(str(tmp_path) + "/", "") for p in info.value.problems if "Nope" not in p) == [
        "latin1.csv:2: not UTF-8 text (save the store directory as UTF-8)",
        "multi.csv:2: a value spans lines (a quote left open?)",
        "quote.csv:2: a value spans lines (a quote left open?)",
    ]
    assert any("unknown event 'Nope'" in p for p in info.value.problems)  # still checked


def test_a_dollar_brace_that_is_not_a_reference_is_refused_without_its_value(tmp_path: Path) -> None:
    # They were kept as the literal secret (a write key of "${SEGMENT-WRITE-KEY}" sent to Segment).
    path = tmp_path / "c.yaml"
    path.write_text(
        """
segment: {host: "${ SEGMENT_HOST }"}
ingest: {bearer_tokens: ["${ BRIDGE_INGEST_TOKEN }"]}
merchants:
  - merchant_id: 1738
    sources:
      - {name: Prod, write_key: "${SEGMENT-WRITE-KEY-1738}"}
      - {name: Staging, write_key: "${SEGMENT_WRITE_KEY_STAGING:-fallback-key}"}
      - {name: Half, write_key: "${WK}${"}
      - {name: Fine, write_key: "${WK}"}
"""
    )
    with pytest.raises(ConfigError) as info:
        load_merchants_file(path, env={"WK": "wk-1738", "SEGMENT_WRITE_KEY_STAGING": "s"})
    reason = (
        "'${' that does not start a ${NAME} reference "
        "(NAME: letters, digits and _, not starting with a digit; no spaces, no default)"
    )
    assert info.value.problems == (
        f"segment.host: {reason}",  # and no follow-on "not an http(s) URL"
        f"ingest.bearer_tokens[0]: {reason}",
        f"merchants[0].sources[0].write_key: {reason}",
        f"merchants[0].sources[1].write_key: {reason}",
        f"merchants[0].sources[2].write_key: {reason}",
    )
    assert "fallback-key" not in str(info.value) and "wk-1738" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "key", "where"),
    [
        (
            "merchants:\n  - merchant_id: 1\n    sources: [{name: P, write_key: a}]\n"
            "merchants:\n  - merchant_id: 2\n    sources: [{name: P, write_key: b}]\n",
            "merchants",
            "line 4, column 1",
        ),
        (
            "merchants:\n  - merchant_id: 1\n    sources:\n      - name: P\n"
            "        write_key: a\n        write_key: b\n",
            "write_key",
            "line 6, column 9",
        ),
        ("segment: {host: 'https://a.example', host: 'https://b.example'}\n", "host", "line 1, column 38"),
    ],
    ids=["merchants", "write_key", "flow-mapping"],
)
def test_a_repeated_yaml_key_is_refused(tmp_path: Path, text: str, key: str, where: str) -> None:
    # YAML readers keep the last value: the first merchants list (or write key) was dropped.
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_merchants_file(path)
    [problem] = info.value.problems
    assert f"repeated key {key!r}" in problem and where in problem


def test_yaml_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "merchants:\n  - &one {merchant_id: 1, sources: [{name: P, write_key: a}]}\n"
        "  - <<: *one\n    merchant_id: 2\n"
    )
    assert set(load_merchants_file(path).merchants) == {1, 2}


def test_a_boolean_is_not_a_merchant_id() -> None:
    # pydantic reads true as 1: "merchant_id: true" configured merchant 1.
    raw = {"merchants": [{"merchant_id": True, "sources": [{"name": "P", "write_key": "k"}]}]}
    with pytest.raises(ConfigError) as info:
        parse_merchants(raw, Path("."), env={})
    assert info.value.problems == (
        "merchants[0].merchant_id: Input should be a valid integer, not true or false",
    )


@pytest.fixture
def bridge_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment without any ``BRIDGE_*`` variable of the caller's."""
    for name in [n for n in os.environ if n.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_bad_bridge_settings_are_one_error_naming_the_variables(bridge_env: pytest.MonkeyPatch) -> None:
    # They were a pydantic traceback naming Python fields (rate_per_s), quoting the values; a
    # log level, Redis URL or port no process can use was accepted and failed later.
    for name, value in {
        "RATE_PER_S": "abc",
        "DEDUP_WINDOW_S": "-5",
        "LOG_LEVEL": "chatty",
        "METRICS_PORT": "99999",
        "REDIS_URL": "localhost:6379",
    }.items():
        bridge_env.setenv(f"BRIDGE_{name}", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert sorted(info.value.problems) == [
        "BRIDGE_DEDUP_WINDOW_S: Input should be greater than 0",
        "BRIDGE_LOG_LEVEL: not a log level (one of DEBUG, INFO, WARNING, ERROR, CRITICAL)",
        "BRIDGE_METRICS_PORT: Input should be less than or equal to 65535",
        "BRIDGE_RATE_PER_S: Input should be a valid number, unable to parse string as a number",
        "BRIDGE_REDIS_URL: not a redis:// or rediss:// URL",
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://:secret@127.0.0.1:6379/0", "not a redis:// or rediss:// URL"),
        (" redis://:secret@127.0.0.1:6379/0", "not a redis:// or rediss:// URL"),
        ("redis://:secret@127.0.0.1:99999/0", "its port is not a number from 1 to 65535"),
        ("redis://:secret@127.0.0.1:0/0", "its port is not a number from 1 to 65535"),
        ("redis://:secret@127.0.0.1:port/0", "its port is not a number from 1 to 65535"),
        # redis-py reads unix://, but kombu (the workers' broker) has no such transport
        ("unix:///run/redis.sock", "not a redis:// or rediss:// URL"),
    ],
)
def test_a_redis_url_no_client_can_use_is_refused_without_its_password(
    bridge_env: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    bridge_env.setenv("BRIDGE_REDIS_URL", url)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.problems == (f"BRIDGE_REDIS_URL: {problem}",)
    assert "secret" not in str(info.value)


def test_settings_that_bound_each_other_are_all_checked(bridge_env: pytest.MonkeyPatch) -> None:
    # README: keep BRIDGE_DEDUP_WINDOW_S >= BRIDGE_RETENTION_S; a retry base above its cap and a
    # heartbeat TTL under two intervals: every disagreement reported, not the first.
    problems = _refused_settings(
        bridge_env,
        DEDUP_WINDOW_S="60",
        RETRY_BASE_S="900",
        RETRY_CAP_S="1",
        HEARTBEAT_INTERVAL_S="5",
        HEARTBEAT_TTL_S="8",
    )
    assert [p.split(" ", 1)[0] for p in problems] == [
        "BRIDGE_HEARTBEAT_TTL_S",
        "BRIDGE_DEDUP_WINDOW_S",
        "BRIDGE_RETRY_BASE_S",
    ]
    assert "must be at least BRIDGE_RETENTION_S (604800)" in problems[1]
    assert problems[2] == "BRIDGE_RETRY_BASE_S (900.0) must not exceed BRIDGE_RETRY_CAP_S (1.0)"


def _refused_settings(bridge_env: pytest.MonkeyPatch, **values: str) -> tuple[str, ...]:
    """The problems ``load_settings`` names with these ``BRIDGE_*`` values set (a validation test:
    no process runs with them)."""
    for name, value in values.items():
        bridge_env.setenv(f"BRIDGE_{name}", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    return info.value.problems


@pytest.mark.parametrize(
    "env",
    [
        {"BRIDGE_REDIS_URL": "rediss://:pw@redis.example:6380/1", "BRIDGE_LOG_LEVEL": "debug"},
        {"BRIDGE_REDIS_URL": "redis://redis.internal:6379/2", "BRIDGE_LOG_LEVEL": "WARNING"},
        {"BRIDGE_REDIS_URL": "redis://", "BRIDGE_METRICS_PORT": "0"},  # 0: no metrics server, as unset
        # a validation test (no process runs with it): a base equal to the default cap (600) is allowed
        {"BRIDGE_REDIS_URL": "redis://", "BRIDGE_METRICS_PORT": "65535", "BRIDGE_RETRY_BASE_S": "600"},
    ],
)
def test_usable_settings_are_accepted(bridge_env: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        bridge_env.setenv(name, value)
    assert load_settings().redis_url == env["BRIDGE_REDIS_URL"]
    assert load_settings().log_level == env.get("BRIDGE_LOG_LEVEL", "INFO")  # as given


@pytest.mark.parametrize(
    ("host", "problems"),
    [
        ("https://api.segment.io ", ["spaces around the URL"]),
        ("\thttps://api.segment.io", ["spaces around the URL"]),
        ("http://exa mple.com", ["a space inside the URL"]),
        ("https://api.segment.io:99999", ["its port is not a number from 1 to 65535"]),
        ("https://api.segment.io:0", ["its port is not a number from 1 to 65535"]),
        ("https://api.segment.io:https", ["its port is not a number from 1 to 65535"]),
        (
            "https://api.segment.io/v1/batch",
            ["ends in /v1 or /v1/batch (give the host, or a gateway's prefix: /v1/batch is added)"],
        ),
        (
            "https://gw.example/segment/v1/",
            ["ends in /v1 or /v1/batch (give the host, or a gateway's prefix: /v1/batch is added)"],
        ),
        ("https://api.segment.io/?key=1", ["has a query or fragment"]),
        ("https://api.segment.io#top", ["has a query or fragment"]),
        ("https://api.segment.io?", ["has a query or fragment"]),
        ("REAL-EU-WRITE-KEY-0123456789", ["not an http(s) URL"]),  # a write key in its place
        ("WRITE KEY", ["a space inside the URL", "not an http(s) URL"]),
    ],
)
def test_a_host_no_request_can_use_is_refused_without_quoting_it(host: str, problems: list[str]) -> None:
    # They were accepted at start (a space, a port, a path) or printed whole in the error (a
    # write key swapped with the host).
    raw = {
        "segment": {"host": host},
        "merchants": [{"merchant_id": 1, "sources": [{"name": "a", "write_key": "k1234", "host": host}]}],
    }
    with pytest.raises(ConfigError) as info:
        parse_merchants(raw, Path("."), env={})
    assert info.value.problems == tuple(
        [f"segment.host: {p}" for p in problems] + [f"merchants[0].sources[0].host: {p}" for p in problems]
    )
    assert host.strip() not in str(info.value)


@pytest.mark.parametrize(
    # a path prefix is a gateway's (delivery posts to <host>/v1/batch): it worked, and still does
    "host",
    [
        "https://api.segment.io",
        "http://127.0.0.1:8090/",
        "https://h.example:443",
        "https://gw.example/segment",
    ],
)
def test_a_usable_host_is_accepted(host: str) -> None:
    raw = {"merchants": [{"merchant_id": 1, "sources": [{"name": "a", "write_key": "k", "host": host}]}]}
    assert parse_merchants(raw, Path("."), env={}).sources_for(1)[0].host == host.rstrip("/")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "merchants:\n  - merchant_id: 1738\n    sources:\n      - name: Prod\n"
            "        write_key: LITERALWRITEKEY9876543210: x\n",
            "not valid YAML at line 5, column 45: mapping values are not allowed here",
        ),
        (
            "merchants:\n  - merchant_id: 1738\n    sources:\n      - name: Prod\n"
            '        write_key: "LITERALWRITEKEY9876543210\n  - merchant_id: 1739\n',
            "not valid YAML at line 7, column 1: found unexpected end of stream "
            "(while scanning a quoted scalar at line 5, column 20)",
        ),
    ],
)
def test_a_yaml_syntax_error_says_where_without_printing_the_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    # PyYAML's message copies the offending line, which may hold a write key written literally.
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_merchants_file(path)
    assert info.value.problems == (f"{path}: {problem}",)
    assert "LITERALWRITEKEY" not in str(info.value)


def test_a_merchants_file_that_is_not_utf8_is_a_configuration_error(tmp_path: Path) -> None:
    # It was a UnicodeDecodeError traceback (exit status 1).
    path = tmp_path / "c.yaml"
    path.write_bytes("merchants: []\n# Café\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_merchants_file(path)
    assert info.value.problems == (f"{path}:2: not UTF-8 text (save the configuration as UTF-8)",)


def _with_renames(rename: dict[str, str]) -> dict[str, object]:
    return {
        "merchants": [
            {"merchant_id": 1, "sources": [{"name": "a", "write_key": "k"}], "events": {"rename": rename}}
        ]
    }


@pytest.mark.parametrize(
    ("rename", "problem"),
    [
        (
            {"Check-In": "Store Visit", "Referral": "Store Visit"},
            "events 'Referral', 'Check-In' would be sent under one name, 'Store Visit'",
        ),
        ({"Check-In": "Referral"}, "events 'Referral', 'Check-In' would be sent under one name, 'Referral'"),
        (
            {"Check-In": "Referral", "Recharge Value": "Referral"},
            "events 'Referral', 'Check-In', 'Recharge Value' would be sent under one name, 'Referral'",
        ),
    ],
)
def test_renames_that_send_two_events_under_one_name_are_refused(
    rename: dict[str, str], problem: str
) -> None:
    # They were accepted: Segment (and the tracking plan, with rules of one key) saw one event.
    with pytest.raises(ConfigError) as info:
        parse_merchants(_with_renames(rename), Path("."), env={})
    assert info.value.problems == (f"merchants[0].events.rename: {problem}",)


@pytest.mark.parametrize(
    "rename",
    [
        {"Check-In": "Referral", "Referral": "Friend Referral"},  # Referral renamed away
        {"Check-In": "Referral", "Referral": "Check-In"},  # swapped
        {"Check-In": "Check-In"},
    ],
)
def test_renames_that_keep_every_event_apart_are_accepted(rename: dict[str, str]) -> None:
    assert parse_merchants(_with_renames(rename), Path("."), env={}).context_for(1).rename == rename


def test_settings_that_bound_each_other_are_checked_beside_bad_values(bridge_env: pytest.MonkeyPatch) -> None:
    # The checks across settings ran only once every value was valid: they are reported
    # together with the bad values, except those that name a bad one (compared with what?).
    problems = _refused_settings(
        bridge_env, DEDUP_WINDOW_S="60", LOG_LEVEL="chatty", RETRY_BASE_S="900", RETRY_CAP_S="abc"
    )
    assert [p.split(" ", 1)[0] for p in problems] == [
        "BRIDGE_RETRY_CAP_S:",
        "BRIDGE_LOG_LEVEL:",
        "BRIDGE_DEDUP_WINDOW_S",
    ]


def test_a_store_directory_edited_alone_reaches_running_processes(tmp_path) -> None:
    """Running processes re-read the configuration when it changes (README): the store directory
    a merchant names is part of it. Editing only the CSV used to leave the old store names in
    every message until the YAML itself changed."""
    from bridge.runtime import CONFIG_CHECK_INTERVAL_S, ConfigWatcher

    (tmp_path / "stores.csv").write_text("store_code,name\n0,Old Name\n")
    config = tmp_path / "bridge.yaml"
    config.write_text(
        "merchants:\n  - merchant_id: 5\n    sources:\n      - name: Prod\n        write_key: wk-5-abcdef\n"
        "    stores: stores.csv\n"
    )
    watcher = ConfigWatcher(Settings(config=config))
    assert watcher.current().merchants[5].context.stores["0"].name == "Old Name"
    assert watcher.current().store_files == (tmp_path / "stores.csv",)
    (tmp_path / "stores.csv").write_text("store_code,name\n0,New Name\n")
    time.sleep(CONFIG_CHECK_INTERVAL_S + 0.1)
    assert watcher.current().merchants[5].context.stores["0"].name == "New Name"
    (tmp_path / "stores.csv").write_text('store_code,name\n0,"open quote\n')  # bad: the old one stays
    time.sleep(CONFIG_CHECK_INTERVAL_S + 0.1)
    assert watcher.current().merchants[5].context.stores["0"].name == "New Name"


def test_short_rows_and_quotes_inside_values_of_a_store_directory_still_load(tmp_path: Path) -> None:
    (tmp_path / "stores.csv").write_text(
        "store_code,name,latitude,longitude,city,postal_code,state,country\n"
        "0,Downtown,42.36,-71.05,Boston,02210,MA,US\n"
        "1,Harbor Kiosk\n"
        '2,"Joe\'s" Diner,,,Salem\n'
    )
    path = tmp_path / "c.yaml"
    path.write_text(
        "merchants:\n  - {merchant_id: 1, sources: [{name: P, write_key: k}], stores: stores.csv}\n"
    )
    stores = load_merchants_file(path).merchants[1].context.stores
    assert (stores["1"].name, stores["1"].city, stores["1"].postal_code) == ("Harbor Kiosk", None, None)
    assert (stores["2"].name, stores["2"].city) == ("Joe's Diner", "Salem")
    assert stores["0"].postal_code == "02210"


def test_a_rename_onto_a_disabled_events_name_is_accepted() -> None:
    # A disabled event is sent under no name: "Loyalty Registration" may take "Web Registration"'s.
    raw = _with_renames({"Loyalty Registration": "Web Registration"})
    raw["merchants"][0]["events"]["disabled"] = ["Web Registration"]  # type: ignore[index]
    context = parse_merchants(raw, Path("."), env={}).context_for(1)
    assert context.rename == {"Loyalty Registration": "Web Registration"}
    assert "Web Registration" in context.disabled


def test_a_rejected_file_is_taken_once_the_store_directory_it_names_exists(tmp_path) -> None:
    """A new merchant naming a store directory not there yet is refused; once the CSV is there,
    the file is taken without touching it again (the stamp knew only the old files)."""
    from bridge.runtime import CONFIG_CHECK_INTERVAL_S, ConfigWatcher

    config = tmp_path / "bridge.yaml"
    one = "merchants:\n  - merchant_id: 1\n    sources:\n      - name: P\n        write_key: wk-1-abcdef\n"
    config.write_text(one)
    watcher = ConfigWatcher(Settings(config=config))
    assert list(watcher.current().merchants) == [1]
    config.write_text(
        one + "  - merchant_id: 2\n    sources:\n      - name: P\n        write_key: wk-2-abcdef\n"
        "    stores: s2.csv\n"
    )
    time.sleep(CONFIG_CHECK_INTERVAL_S + 0.1)
    assert list(watcher.current().merchants) == [1]  # refused: s2.csv is missing
    (tmp_path / "s2.csv").write_text("store_code,name\n0,Two\n")
    time.sleep(CONFIG_CHECK_INTERVAL_S + 0.1)
    assert list(watcher.current().merchants) == [1, 2]
    assert watcher.current().merchants[2].context.stores["0"].name == "Two"


def test_a_write_key_rotated_in_the_file_is_scrubbed_from_logs(tmp_path, capfd) -> None:
    """README: a key written in the file is in force within 2 s of the edit. The log scrubber
    learnt the secrets once, at start: the new key must be scrubbed too (and the old one still)."""
    import logging

    from bridge import logs
    from bridge.runtime import CONFIG_CHECK_INTERVAL_S, ConfigWatcher

    config = tmp_path / "bridge.yaml"
    yaml_of = "merchants:\n  - merchant_id: 1\n    sources:\n      - name: P\n        write_key: {}\n".format
    config.write_text(yaml_of("wk-old-0123456789"))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        watcher = ConfigWatcher(Settings(config=config))
        logs.configure("INFO", logs.secrets_of(watcher.current()))
        config.write_text(yaml_of("wk-new-9876543210"))
        time.sleep(CONFIG_CHECK_INTERVAL_S + 0.1)
        assert watcher.current().sources_for(1)[0].write_key.get_secret_value() == "wk-new-9876543210"
        logging.getLogger("bridge.test").warning("keys %s and %s", "wk-old-0123456789", "wk-new-9876543210")
    finally:
        root.handlers[:], root.level = handlers, level
    err = capfd.readouterr().err
    assert "keys [redacted] and [redacted]" in err
    assert "wk-new-9876543210" not in err and "wk-old-0123456789" not in err


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_an_empty_merchants_file_is_refused(tmp_path: Path, text: str) -> None:
    """An empty file named by BRIDGE_CONFIG is a mistake (unset BRIDGE_CONFIG means no merchants),
    never "no merchants and no ingest secrets": that turned ingest authentication off."""
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_merchants_file(path)
    assert "empty" in str(caught.value)


def test_a_truncated_merchants_file_does_not_turn_ingest_authentication_off(tmp_path: Path) -> None:
    """A non-atomic rewrite (``cat new > bridge.yaml``, many editors) leaves the file empty for a
    moment. A running process that read it then took it as a configuration without secrets: the
    ingest answered 202 to unauthenticated requests, and every merchant was unconfigured."""
    from bridge.runtime import CONFIG_CHECK_INTERVAL_S, ConfigWatcher

    config = tmp_path / "bridge.yaml"
    config.write_text(
        'ingest:\n  bearer_tokens: ["tok-0123456789"]\n'
        "merchants:\n  - merchant_id: 1\n    sources:\n      - name: P\n        write_key: wk-1-abcdef\n"
    )
    watcher = ConfigWatcher(Settings(config=config))
    assert len(watcher.current().bearer_tokens) == 1
    config.write_text("")  # truncated, not yet written
    time.sleep(CONFIG_CHECK_INTERVAL_S + 0.1)
    current = watcher.current()
    assert len(current.bearer_tokens) == 1 and list(current.merchants) == [1]
    # half written: a valid YAML prefix without the ingest section (a review's case)
    config.write_text(
        "merchants:\n  - merchant_id: 1\n    sources:\n      - name: P\n        write_key: wk-1-abcdef\n"
    )
    time.sleep(CONFIG_CHECK_INTERVAL_S + 0.1)
    assert len(watcher.current().bearer_tokens) == 1
    # an edit that keeps a token is taken as ever
    config.write_text(
        'ingest:\n  bearer_tokens: ["tok-rotated-98765"]\n'
        "merchants:\n  - merchant_id: 1\n    sources:\n      - name: P\n        write_key: wk-1-abcdef\n"
    )
    time.sleep(CONFIG_CHECK_INTERVAL_S + 0.1)
    assert [t.get_secret_value() for t in watcher.current().bearer_tokens] == ["tok-rotated-98765"]
