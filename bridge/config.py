"""Configuration: one settings object (``BRIDGE_*`` environment) and the merchants file it names.

``Settings`` holds process settings; ``load_settings()`` reads them from the environment,
raising one ``ConfigError`` that names every bad variable. ``Settings.load_merchants()`` reads
the YAML file of ``BRIDGE_CONFIG``, substitutes ``${NAME}`` from the environment, reads store
directories (CSV) and checks everything, raising one ``ConfigError`` that lists every problem.
Write keys are kept in ``SecretStr`` so they never print by accident, and no problem quotes a
value that may be one (a host, a reference, a line of YAML).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Hashable, Mapping
from decimal import Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import ParseResult, SplitResult, urlparse, urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge.domain.errors import ConfigError
from mappings.common import EVENT_NAMES, IDENTIFY, MappingContext, Store

DEFAULT_SEGMENT_HOST = "https://api.segment.io"
DAY_S = 24 * 3600
STORE_COLUMNS = ("store_code", "name", "latitude", "longitude", "city", "postal_code", "state", "country")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: The levels every logger of the bridge takes (uvicorn's have no WARN, FATAL or NOTSET).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without YAML 1.1's guesses about unquoted scalars: only ``true`` and
    ``false`` are booleans (and ``null``/``~`` null); everything else is text, as written, and the
    configuration's models read numbers from it (``merchant_id: 1738``). So ``NO`` (Norway),
    ``on`` and ``y`` stay text, and so do ``02210`` (a ZIP code, an octal number to YAML 1.1),
    ``007``, ``12.10``, ``40.712776123456789012`` (every digit), ``1:30`` (base 60 to YAML 1.1)
    and ``2024-05-05`` (a date to YAML 1.1).

    A key repeated in one mapping (a second ``merchants:`` or ``write_key:``) is an error: YAML
    readers keep the last value and drop the first without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor" may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):  # other keys: refused by SafeLoader
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"repeated key {key!r} (the first value would be lost)",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_GUESSED = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
}
_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _GUESSED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_yaml(text: str) -> Any:
    """The merchants file's YAML, each unquoted scalar read as ``_ConfigLoader`` says."""
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader with fewer resolvers


class Settings(BaseSettings):
    """Every process setting, from ``BRIDGE_*`` environment variables (or keyword arguments)."""

    model_config = SettingsConfigDict(env_prefix="BRIDGE_", extra="ignore", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    config: Path | None = None

    # dedup and retention
    dedup_window_s: int = Field(default=7 * DAY_S, gt=0)
    retention_s: int = Field(default=7 * DAY_S, gt=0)
    lease_s: int = Field(default=300, gt=0)

    # delivery
    rate_per_s: float = Field(default=50.0, gt=0)
    request_timeout_s: float = Field(default=15.0, gt=0)
    retry_base_s: float = Field(default=1.0, gt=0)
    retry_cap_s: float = Field(default=600.0, gt=0)

    # workers
    #: kombu's visibility timeout: only a backstop now (a dead worker's tasks are taken over
    #: when its heartbeat stops, see bridge.stores.liveness); it must exceed any task's run time,
    #: or kombu would hand a running task to a second worker.
    visibility_timeout_s: int = Field(default=3600, gt=0)
    task_batch_size: int = Field(default=500, gt=0, le=10_000)
    #: A batch whose task message is neither queued nor held by a worker this long after it
    #: was sent (or last held) is sent again (see bridge.stores.pending).
    pending_stale_s: int = Field(default=60, gt=0)
    #: How often each worker process renews its heartbeat key (from a thread of its own).
    heartbeat_interval_s: float = Field(default=2.0, gt=0)
    #: A worker whose heartbeat is this old is dead: its batches and leases are taken over.
    #: Also the longest stall (GC pause, frozen VM, cut network) a live worker survives
    #: without its work being handed to another one (which would only cost re-sends).
    heartbeat_ttl_s: float = Field(default=10.0, gt=0)
    #: How often each worker's sweeper looks for dead workers, due parked batches and lost ones.
    sweep_interval_s: float = Field(default=1.0, gt=0)

    # ingest
    max_request_outcomes: int = Field(default=1000, gt=0)
    max_request_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    max_backlog: int = Field(default=1_000_000, gt=0)

    # dead letters
    #: Most dead letters of reason ``invalid`` kept (the oldest beyond are trimmed and counted);
    #: letters of other reasons hold deliverable outcomes and are never trimmed automatically.
    dlq_invalid_max: int = Field(default=100_000, gt=0)

    log_level: str = "INFO"
    #: Port on which ``bridge worker`` serves its Prometheus metrics (unset or 0: none).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

    @field_validator("log_level")
    @classmethod
    def _a_log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"not a log level (one of {', '.join(LOG_LEVELS)})")
        return value

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, value: str) -> str:
        """What redis-py and kombu can use. The URL may hold a password: never quoted."""
        parsed = urlparse(value)
        # (not unix://: redis-py reads it, but the worker's broker, kombu, has no such transport)
        if value != value.strip() or parsed.scheme not in ("redis", "rediss"):
            raise ValueError("not a redis:// or rediss:// URL")
        if not _port_ok(parsed):
            raise ValueError("its port is not a number from 1 to 65535")
        return value

    @model_validator(mode="after")
    def _settings_agree(self) -> Settings:
        """Settings that bound each other; every disagreement on a line of its own."""
        problems: list[str] = []
        if self.heartbeat_ttl_s < 2 * self.heartbeat_interval_s:
            problems.append(
                f"BRIDGE_HEARTBEAT_TTL_S ({self.heartbeat_ttl_s}) must be at least twice "
                f"BRIDGE_HEARTBEAT_INTERVAL_S ({self.heartbeat_interval_s}): one late renewal "
                "would make a live worker look dead"
            )
        if self.dedup_window_s < self.retention_s:
            problems.append(
                f"BRIDGE_DEDUP_WINDOW_S ({self.dedup_window_s}) must be at least BRIDGE_RETENTION_S "
                f"({self.retention_s}): an outcome sent again while its delivery is still retried "
                "would be accepted and delivered twice"
            )
        if self.retry_base_s > self.retry_cap_s:
            problems.append(
                f"BRIDGE_RETRY_BASE_S ({self.retry_base_s}) must not exceed BRIDGE_RETRY_CAP_S "
                f"({self.retry_cap_s})"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def load_merchants(self) -> MerchantsConfig:
        """The merchants file of ``BRIDGE_CONFIG``; an empty configuration when unset."""
        if self.config is None:
            return MerchantsConfig()
        return load_merchants_file(self.config)


def _port_ok(parsed: SplitResult | ParseResult) -> bool:
    """A URL's port is absent or a number from 1 to 65535 (``urllib`` raises beyond, and reads 0)."""
    try:
        return parsed.port != 0
    except ValueError:
        return False


def load_settings() -> Settings:
    """This process's ``Settings``, from the ``BRIDGE_*`` environment; raises ``ConfigError``
    listing every bad setting by its environment variable (never its value)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = _setting_problems(exc)
        bad = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
    if bad:
        # The settings that bound each other are checked only once every setting is valid:
        # check them with the bad ones at their defaults, keeping what names none of those.
        defaults = {name: Settings.model_fields[name].get_default(call_default_factory=True) for name in bad}
        named = tuple(f"BRIDGE_{name.upper()} (" for name in bad)
        try:
            Settings(**defaults)
        except ValidationError as again:
            problems += [p for p in _setting_problems(again) if not any(n in p for n in named)]
    raise ConfigError(problems)


def _setting_problems(exc: ValidationError) -> list[str]:
    """Each of ``Settings``'s errors, named by its ``BRIDGE_*`` variable, without the value."""
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        if err["loc"]:
            problems.append(f"BRIDGE_{str(err['loc'][0]).upper()}: {msg}")
        else:  # _settings_agree's, each naming its variables: BRIDGE_RETRY_BASE_S (900.0) ...
            problems += msg.splitlines()
    return problems


# --------------------------------------------------------------------------- merchants file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer, not true or false")
    return value


#: An integer of the file: written as text (``_ConfigLoader``), never ``true``/``false``
#: (which pydantic would read as 1 and 0).
_FileInt = Annotated[int, BeforeValidator(_not_a_boolean)]


class SourceConfig(_Strict):
    name: str = Field(min_length=1)
    write_key: SecretStr
    host: str | None = None


class EventsConfig(_Strict):
    rename: dict[str, str] = Field(default_factory=dict)
    disabled: list[str] = Field(default_factory=list)


class MerchantConfig(_Strict):
    merchant_id: _FileInt
    #: Each a ``SourceConfig``, checked on its own (``_merchant_sources``): a bad source hides
    #: neither the others nor the rest of the merchant.
    sources: list[Any] = Field(default_factory=list)
    #: A store directory's file name, or the rows inline (each a mapping); checked by
    #: ``_merchant_stores`` (so a mistake is reported as one problem at its own path).
    stores: Any = None
    #: An ``EventsConfig``, checked on its own (``_merchant``).
    events: dict[str, Any] = Field(default_factory=dict)


class SegmentConfig(_Strict):
    host: str = DEFAULT_SEGMENT_HOST


class IngestConfig(_Strict):
    hmac_secrets: list[SecretStr] = Field(default_factory=list)
    bearer_tokens: list[SecretStr] = Field(default_factory=list)


class _FileModel(_Strict):
    """The file's top level; each section is checked on its own (``parse_merchants``), so a
    mistake in one hides no problem of another."""

    segment: dict[str, Any] = Field(default_factory=dict)  # a SegmentConfig
    ingest: dict[str, Any] = Field(default_factory=dict)  # an IngestConfig
    merchants: list[Any] = Field(default_factory=list)  # each a MerchantConfig


class Source(BaseModel):
    """A merchant's Segment source, ready to deliver to."""

    model_config = ConfigDict(frozen=True)

    name: str
    write_key: SecretStr
    host: str


class Merchant(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    merchant_id: int
    sources: tuple[Source, ...]
    context: MappingContext


class MerchantsConfig(BaseModel):
    """The loaded, checked merchants file."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    segment_host: str = DEFAULT_SEGMENT_HOST
    hmac_secrets: tuple[SecretStr, ...] = ()
    bearer_tokens: tuple[SecretStr, ...] = ()
    merchants: Mapping[int, Merchant] = Field(default_factory=dict)
    path: Path | None = None
    #: The store directory files the merchants name: read with the file, and watched with it.
    store_files: tuple[Path, ...] = ()

    def context_for(self, merchant_id: int) -> MappingContext:
        merchant = self.merchants.get(merchant_id)
        return merchant.context if merchant is not None else MappingContext()

    def sources_for(self, merchant_id: int) -> tuple[Source, ...]:
        merchant = self.merchants.get(merchant_id)
        return merchant.sources if merchant is not None else ()

    @cached_property
    def sources_by_name(self) -> dict[tuple[int, str], Source]:
        return {(m.merchant_id, s.name): s for m in self.merchants.values() for s in m.sources}


def substitute_env(value: Any, env: Mapping[str, str], problems: list[str], where: str = "") -> Any:
    """Replace ``${NAME}`` in every string of a YAML tree; a missing variable is a problem, and so
    is any other ``${`` (``${ NAME }``, ``${NAME:-default}``, ``${A-B}``): it is no reference, and
    a secret must not silently be the text that spells it. Problems name where, never the value."""
    if isinstance(value, str):
        if "${" in _ENV_REF.sub("", value):
            problems.append(
                f"{where or '<root>'}: '${{' that does not start a ${{NAME}} reference "
                "(NAME: letters, digits and _, not starting with a digit; no spaces, no default)"
            )

        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                problems.append(f"{where or '<root>'}: environment variable {name} is not set")
                return ""
            return env[name]

        return _ENV_REF.sub(repl, value)
    if isinstance(value, list):
        return [substitute_env(v, env, problems, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: substitute_env(v, env, problems, f"{where}.{k}" if where else str(k)) for k, v in value.items()
        }
    return value


_Model = TypeVar("_Model", bound=BaseModel)


def _valid(model: type[_Model], value: Any, where: str, problems: list[str]) -> _Model | None:
    """``value`` read as ``model``, each of its problems added to ``problems`` with its path in
    the file's style (``merchants[0].sources[1].host``). A key that is unknown or holds a bad
    value is reported and then read as absent, so one mistake hides no other problem; None when
    even that cannot be read (not a mapping, or a required key bad or missing)."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    problems.extend(f"{_path(where, err['loc'])}: {err['msg']}" for err in errors)
    if not isinstance(value, dict):
        return None
    bad = {err["loc"][0] for err in errors if err["loc"]}
    try:
        return model.model_validate({k: v for k, v in value.items() if k not in bad})
    except ValidationError:
        return None


def _path(where: str, loc: tuple[int | str, ...]) -> str:
    """A pydantic error location below ``where``, written as the file's other problems are."""
    path = where
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "<root>"


def _decimal_or_none(text: str | None, where: str, problems: list[str]) -> Decimal | None:
    if text is None or not str(text).strip():
        return None
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        problems.append(f"{where}: not a number: {text!r}")
        return None
    if not value.is_finite():
        problems.append(f"{where}: not a finite number: {text!r}")
        return None
    return value


def _coordinate(text: str | None, limit: int, where: str, problems: list[str]) -> Decimal | None:
    """A latitude (``limit`` 90) or longitude (180) in decimal degrees; beyond ±limit is no
    place on Earth (a typo, or the columns swapped): a problem, never a store_latitude sent."""
    value = _decimal_or_none(text, where, problems)
    if value is not None and abs(value) > limit:
        problems.append(f"{where}: out of range: {text!r} (expected -{limit} to {limit})")
        return None
    return value


def _store(row: Mapping[str, Any], where: str, problems: list[str]) -> Store | None:
    """One store of the directory; each value must be text or a plain number (a boolean, list or
    mapping is a mistake of the file, e.g. an unquoted ``true``), and the columns known ones."""
    unknown = [str(k) for k in row if k not in STORE_COLUMNS and str(k).strip()]
    if unknown:
        problems.append(
            f"{where}: unknown column(s) {', '.join(unknown)} (expected {','.join(STORE_COLUMNS)})"
        )
    bad = [
        k
        for k in STORE_COLUMNS
        if isinstance(row.get(k), bool) or not isinstance(row.get(k), str | int | float | None)
    ]
    for key in bad:
        problems.append(f"{where}.{key}: expected text, got {type(row.get(key)).__name__} (quote it)")
    value = row.get("store_code")
    code = "" if value is None or "store_code" in bad else str(value).strip()
    if not code:
        if "store_code" not in bad:
            problems.append(f"{where}: store_code is empty")
        return None

    def text(key: str) -> str | None:
        value = row.get(key)
        return None if value is None or key in bad else (str(value).strip() or None)

    return Store(
        code=code,
        name=text("name"),
        latitude=_coordinate(text("latitude"), 90, f"{where}.latitude", problems),
        longitude=_coordinate(text("longitude"), 180, f"{where}.longitude", problems),
        city=text("city"),
        postal_code=text("postal_code"),
        state=text("state"),
        country=text("country"),
    )


def _add_store(stores: dict[str, Store], row: Mapping[str, Any], where: str, problems: list[str]) -> None:
    """One row of a directory (a CSV line or an inline row) added to ``stores``; a code listed
    twice is a problem (the later row still wins, as before)."""
    store = _store(row, where, problems)
    if store is not None:
        if store.code in stores:
            problems.append(f"{where}: store_code {store.code!r} appears twice")
        stores[store.code] = store


def read_store_directory(path: Path, problems: list[str]) -> dict[str, Store]:
    """Read ``store_code,name,latitude,longitude,city,postal_code,state,country`` (header row first):
    UTF-8 text (a byte-order mark allowed). A value spanning lines is a problem (a quote left open
    swallows the rows after it), not a store name."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(f"{path}: cannot read store directory ({exc.strerror or exc})")
        return {}
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problems.append(f"{path}:{line}: not UTF-8 text (save the store directory as UTF-8)")
        return {}
    return _store_rows(csv.DictReader(io.StringIO(text, newline="")), path, problems)


def _store_rows(reader: csv.DictReader[str], path: Path, problems: list[str]) -> dict[str, Store]:
    """The store directory's rows; each problem named by its line (where its row ends)."""
    stores: dict[str, Store] = {}
    try:
        columns = reader.fieldnames or []
        missing = [c for c in ("store_code",) if c not in columns]
        # an empty header cell (a trailing comma) names no column
        unknown = [c for c in columns if c.strip() and c not in STORE_COLUMNS]
        if missing or unknown:
            named = [f"missing column(s) {', '.join(missing)}"] if missing else []
            named += [f"unknown column(s) {', '.join(unknown)}"] if unknown else []
            problems.append(f"{path}: {'; '.join(named)} (expected {','.join(STORE_COLUMNS)})")
            return stores
        ended = reader.line_num  # the header's last line
        for given in reader:
            started, line = ended + 1, reader.line_num
            ended = line
            if None in given:  # more cells than the header names
                problems.append(f"{path}:{line}: more values than columns")
                continue
            # fewer cells than columns: the missing ones are unknown, as empty cells are
            row = {k: "" if v is None else v for k, v in given.items()}
            if any("\n" in v or "\r" in v for v in row.values()):  # what a quote left open swallows
                problems.append(f"{path}:{started}: a value spans lines (a quote left open?)")
                continue
            _add_store(stores, row, f"{path}:{line}", problems)
    except csv.Error as exc:  # the row after the last one read (a NUL byte, say)
        problems.append(f"{path}:{reader.line_num + 1}: not valid CSV ({exc})")
    return stores


def _check_host(host: str, where: str, problems: list[str]) -> None:
    """A URL requests can go to (``/v1/batch`` is added to it): http(s), a host, a port in
    1..65535, a path prefix (a gateway's) but not ``/v1/batch`` itself, no query or fragment.
    Never quoted: a write key put in its place by mistake would be printed."""
    if host != host.strip():
        problems.append(f"{where}: spaces around the URL")
    elif any(c.isspace() for c in host):
        problems.append(f"{where}: a space inside the URL")
    parsed = urlsplit(host.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        problems.append(f"{where}: not an http(s) URL")
        return
    if not _port_ok(parsed):
        problems.append(f"{where}: its port is not a number from 1 to 65535")
    if parsed.path.rstrip("/").endswith(("/v1/batch", "/v1")):
        problems.append(
            f"{where}: ends in /v1 or /v1/batch (give the host, or a gateway's prefix: /v1/batch is added)"
        )
    if parsed.query or parsed.fragment or host.rstrip().endswith(("?", "#")):
        problems.append(f"{where}: has a query or fragment")


def _merchant(m: MerchantConfig, where: str, default_host: str, base: Path, problems: list[str]) -> Merchant:
    sources = _merchant_sources(m, where, default_host, problems)
    stores = _merchant_stores(m.stores, where, base, problems)
    events = _valid(EventsConfig, m.events, f"{where}.events", problems) or EventsConfig()
    _check_event_names(events, where, problems)
    context = MappingContext(stores=stores, rename=dict(events.rename), disabled=frozenset(events.disabled))
    return Merchant(merchant_id=m.merchant_id, sources=tuple(sources), context=context)


def _merchant_sources(m: MerchantConfig, where: str, default_host: str, problems: list[str]) -> list[Source]:
    """A merchant's sources, each with its host (the default one unless it names its own)."""
    sources: list[Source] = []
    names: set[str] = set()
    for j, given in enumerate(m.sources):
        at = f"{where}.sources[{j}]"
        src = _valid(SourceConfig, given, at, problems)
        if src is None:
            continue
        if not src.write_key.get_secret_value().strip():
            problems.append(f"{at}.write_key: empty (is its environment variable set?)")
        if src.name in names:
            problems.append(f"{at}.name: source {src.name!r} appears twice for merchant {m.merchant_id}")
        names.add(src.name)
        host = src.host or default_host
        if src.host is not None:
            _check_host(host, f"{at}.host", problems)
        sources.append(Source(name=src.name, write_key=src.write_key, host=host.rstrip("/")))
    return sources


def store_file(given: str, base: Path) -> Path:
    """The store directory file a merchant names (a relative name is relative to ``base``)."""
    return base / given  # an absolute name stays itself


def _merchant_stores(given: Any, where: str, base: Path, problems: list[str]) -> dict[str, Store]:
    """A merchant's stores: from a directory file (relative to ``base``) or listed inline."""
    stores: dict[str, Store] = {}
    if isinstance(given, str):
        stores = read_store_directory(store_file(given, base), problems)
    elif isinstance(given, list):
        for k, row in enumerate(given):
            if not isinstance(row, dict):
                problems.append(f"{where}.stores[{k}]: expected a mapping of column names to values")
                continue
            _add_store(stores, row, f"{where}.stores[{k}]", problems)
    elif given is not None:
        problems.append(f"{where}.stores: expected a file name or a list of rows")
    return stores


def _check_event_names(events: EventsConfig, where: str, problems: list[str]) -> None:
    """Renamed and disabled events must be known ones; a new name must not be blank, nor the
    name another event is sent under (renamed to it, or its own name, not renamed away)."""
    known = set(EVENT_NAMES)
    for name in events.rename:
        if name not in known:
            problems.append(
                f"{where}.events.rename: unknown event {name!r} (known: {', '.join(EVENT_NAMES)})"
            )
    for name, new in events.rename.items():
        if not str(new).strip():
            problems.append(f"{where}.events.rename: empty new name for {name!r}")
    # Two events sent under one name would be one event to Segment (and to its tracking plan).
    sent_as: dict[str, list[str]] = {}
    for name in EVENT_NAMES:
        if name not in events.disabled:  # a disabled event is sent under no name
            sent_as.setdefault(events.rename.get(name, name), []).append(name)
    for new, names in sent_as.items():
        if len(names) > 1 and new.strip():
            problems.append(
                f"{where}.events.rename: events {', '.join(map(repr, names))} "
                f"would be sent under one name, {new!r}"
            )
    for name in events.disabled:
        if name not in known and name != IDENTIFY:
            problems.append(
                f"{where}.events.disabled: unknown event {name!r} (known: {', '.join(EVENT_NAMES)}, identify)"
            )


def parse_merchants(
    raw: Any, base: Path, env: Mapping[str, str] | None = None, path: Path | None = None
) -> MerchantsConfig:
    """Check a decoded merchants file; raises ``ConfigError`` listing every problem."""
    problems: list[str] = []
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{path or 'configuration'}: expected a mapping at the top level"])
    references: list[str] = []  # the ${NAME} references' problems
    raw = substitute_env(raw, os.environ if env is None else env, references)
    top = _valid(_FileModel, raw, "", problems) or _FileModel()
    segment = _valid(SegmentConfig, top.segment, "segment", problems) or SegmentConfig()
    ingest = _valid(IngestConfig, top.ingest, "ingest", problems) or IngestConfig()
    _check_host(segment.host, "segment.host", problems)
    merchants: dict[int, Merchant] = {}
    store_files: list[Path] = []
    for i, given in enumerate(top.merchants):
        where = f"merchants[{i}]"
        m = _valid(MerchantConfig, given, where, problems)
        if m is None:
            continue
        if m.merchant_id in merchants:
            problems.append(f"{where}.merchant_id: merchant {m.merchant_id} appears twice")
        merchants[m.merchant_id] = _merchant(m, where, segment.host, base, problems)
        if isinstance(m.stores, str):
            store_files.append(store_file(m.stores, base))
    for i, secret in enumerate(ingest.hmac_secrets):
        if not secret.get_secret_value():
            problems.append(f"ingest.hmac_secrets[{i}]: empty")
    for i, token in enumerate(ingest.bearer_tokens):
        if not token.get_secret_value():
            problems.append(f"ingest.bearer_tokens[{i}]: empty")
    if references or problems:
        raise ConfigError([*references, *_without_echoes(problems, references)])
    return MerchantsConfig(
        segment_host=segment.host.rstrip("/"),
        hmac_secrets=tuple(ingest.hmac_secrets),
        bearer_tokens=tuple(ingest.bearer_tokens),
        merchants=merchants,
        path=path,
        store_files=tuple(dict.fromkeys(store_files)),
    )


def _without_echoes(problems: list[str], references: list[str]) -> list[str]:
    """Drop the follow-on complaints about a value whose ``${NAME}`` reference is a problem
    (its environment variable missing, or not a reference)."""
    bad = {p.split(": ", 1)[0] for p in references}
    return [
        p for p in problems if not any(p.startswith(f"{path}:") or p.startswith(f"{path}.") for path in bad)
    ]


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what a YAML error is, without PyYAML's copy of the line (a write key written
    into the file would be printed)."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        return f" at character {exc.position + 1}: {exc.reason}"
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f" ({type(exc).__name__})"
    mark = exc.problem_mark
    text = f" at line {mark.line + 1}, column {mark.column + 1}: {exc.problem or 'not valid'}"
    if exc.context and exc.context_mark is not None:
        text += f" ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
    return text


def load_merchants_file(path: Path, env: Mapping[str, str] | None = None) -> MerchantsConfig:
    """Read and check the YAML merchants file (relative paths inside are relative to it)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read configuration ({exc.strerror or exc})"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text (save the configuration as UTF-8)"]) from None
    try:
        raw = read_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML{_yaml_problem(exc)}"]) from None
    if raw is None:
        # an empty file is a mistake (or a file caught mid-rewrite), never "no merchants and no
        # ingest secrets": that would turn ingest authentication off (unset BRIDGE_CONFIG for none)
        raise ConfigError([f"{path}: the configuration is empty"])
    return parse_merchants(raw, path.parent, env, path)
