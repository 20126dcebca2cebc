"""The ``bridge`` command line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bridge.config import MerchantsConfig, Settings, load_settings
from bridge.domain.errors import ConfigError, InvalidOutcome, MalformedDeadLetterId

if TYPE_CHECKING:
    from bridge.runtime import Runtime

app = typer.Typer(
    name="bridge",
    help="Loyalty platform -> Segment event-source bridge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Loyalty platform -> Segment event-source bridge."""


def _settings() -> Settings:
    """The ``BRIDGE_*`` settings; a bad one ends the command as a bad merchants file does."""
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _merchants(settings: Settings) -> MerchantsConfig:
    try:
        return settings.load_merchants()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _redis_error(exc: BaseException) -> BaseException | None:
    """The Redis error behind ``exc``: itself, or one it was raised from or while handling (the
    task queue's broker errors wrap those of Redis); None if there is none."""
    import redis

    found: BaseException | None = exc
    while found is not None and not isinstance(found, redis.RedisError):
        found = found.__cause__ or (None if found.__suppress_context__ else found.__context__)
    return found


@contextlib.contextmanager
def _reaching_redis() -> Iterator[None]:
    """Redis not reachable (or failing): one line on stderr and exit status 2, as ``bridge status``,
    instead of a traceback. Used as a decorator of the commands that need Redis."""
    try:
        yield
    except Exception as exc:
        found = _redis_error(exc)
        if found is None:
            raise
        typer.echo(
            f"error: Redis at the configured BRIDGE_REDIS_URL: {type(found).__name__}: {found}",
            err=True,
        )
        raise typer.Exit(2) from None


@app.command("map")
def map_command(
    source: Annotated[
        str, typer.Argument(metavar="FILE|-", help="An outcome (JSON) or outcomes (JSONL); - reads stdin.")
    ],
) -> None:
    """Dry run: print the Segment messages outcomes produce, one JSON per line, as they would be sent.

    Applies BRIDGE_CONFIG when set (store directory, renames, disabled events). Needs no Redis.
    An invalid outcome is reported on stderr, the others are still mapped, and the exit status is 1."""
    from bridge.stages.prepare import prepare, split_outcomes
    from mappings import no_event_reason

    merchants = _merchants(_settings())
    try:
        if source == "-":  # strict UTF-8 as for a file (sys.stdin lets bad bytes through as surrogates)
            text = sys.stdin.buffer.read().decode("utf-8")
        else:
            text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"error: cannot read {source}: {exc}", err=True)
        raise typer.Exit(2) from None
    failures = 0
    silent = 0
    out = sys.stdout
    for entry in split_outcomes(text):
        if entry.error is not None:
            failures += 1
            typer.echo(f"error: {entry.where}: {entry.error}", err=True)
            continue
        try:
            prepared = prepare(entry.value, merchants)
        except InvalidOutcome as exc:
            failures += 1
            typer.echo(f"error: {entry.where}: {exc}", err=True)
            continue
        for _id, _label, encoded in prepared.messages:
            out.write(encoded.decode("utf-8"))
            out.write("\n")
        if not prepared.messages:
            silent += 1
            outcome = prepared.outcome
            reason = no_event_reason(outcome, merchants.context_for(outcome.merchant_id))
            typer.echo(f"no event: {entry.where} ({outcome.outcome_id}): {reason}", err=True)
    out.flush()
    if silent:
        typer.echo(f"{silent} outcome(s) produced no event", err=True)
    if failures:
        typer.echo(f"{failures} invalid outcome(s)", err=True)
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[
        int,
        typer.Option(
            min=0,
            help="Server processes sharing the port. Validation and mapping are CPU-bound, so the "
            "default (0) is one per CPU core available to the process.",
        ),
    ] = 0,
) -> None:
    """Run the HTTP ingest API (POST /v1/outcomes, /healthz, /readyz, /metrics, /docs)."""
    from bridge import logs
    from bridge.ingest.app import run

    settings = _settings()
    merchants = _merchants(settings)  # refuse to start on a bad configuration
    logs.configure(settings.log_level, logs.secrets_of(merchants))
    workers = workers or available_cores()
    if workers > 1:
        _multiprocess_metrics()
    run(host, port, settings, workers=workers)


@app.command()
def demo(
    keep_running: Annotated[
        bool,
        typer.Option("--keep-running", help="Keep everything running after the demo and print the URLs."),
    ] = False,
) -> None:
    """Run the whole bridge end to end with nothing to set up, on the shipped example outcomes.

    Starts an embedded Redis, the collector (standing in for Segment), a worker and the ingest
    API; sends the examples through HTTP and shows what Segment received."""
    from bridge.devtools.demo import run

    raise typer.Exit(run(keep_running=keep_running))


@app.command("tracking-plan")
def tracking_plan_command(
    event: Annotated[
        str | None, typer.Option("--event", help="Only this event's rule (an event name, or identify).")
    ] = None,
    merchant: Annotated[
        int | None,
        typer.Option(help="Apply this merchant's renames and disabled events (from BRIDGE_CONFIG)."),
    ] = None,
    markdown: Annotated[
        bool,
        typer.Option(
            "--markdown",
            help="Print the README's event reference instead: every property's type, unit, source.",
        ),
    ] = False,
) -> None:
    """Print the Segment Protocols tracking plan (a JSON Schema per event), generated from the mappings."""
    from bridge.ops.tracking_plan import UnknownEvent, event_reference_markdown, write_tracking_plan

    if markdown:
        sys.stdout.write(event_reference_markdown())
        return
    context = None
    if merchant is not None:
        merchants = _merchants(_settings())
        if merchant not in merchants.merchants:
            typer.echo(f"error: merchant {merchant} is not configured in BRIDGE_CONFIG", err=True)
            raise typer.Exit(2)
        context = merchants.context_for(merchant)
    try:
        write_tracking_plan(sys.stdout, event, context)
    except UnknownEvent as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _multiprocess_metrics() -> None:
    """Counters from every process (pool children, server processes) land in one directory;
    set before prometheus_client loads. A given ``PROMETHEUS_MULTIPROC_DIR`` is kept."""
    import os
    import tempfile

    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bridge-metrics-"))


def available_cores() -> int:
    """CPU cores this process may run on (its affinity, e.g. a container's cpuset), at least 1."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@app.command()
def worker(
    concurrency: Annotated[
        int,
        typer.Option(
            min=0,
            help="Worker pool processes. The default (0) is one per CPU core available to the "
            "process: the ingest API has validated and mapped every outcome, so a worker mostly "
            "waits on Redis and Segment; raise it when Segment is far away (see the README).",
        ),
    ] = 0,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Start a Celery worker that processes and delivers outcomes (BRIDGE_REDIS_URL, BRIDGE_CONFIG).

    The Celery worker runs as a child that is started again if it exits on an error: kombu's
    Redis transport can die with an "Unrecoverable error" when Redis restarts under it."""
    import os

    from bridge import logs

    settings = _settings()
    merchants = _merchants(settings)  # refuse to start on a bad configuration
    logs.configure(settings.log_level, logs.secrets_of(merchants))
    _multiprocess_metrics()
    from bridge.ops.supervise import supervise

    # The Celery worker itself is ``python -m workers`` (the only room that imports Celery).
    child = [sys.executable, "-m", "workers", "--concurrency", str(concurrency or available_cores())]
    raise typer.Exit(supervise([*child, "--loglevel", loglevel], dict(os.environ)))


def _checked_faults(text: str | None) -> str | None:
    """``--faults``, refused as a usage error unless it is a JSON object of the collector's faults."""
    if not text:
        return text
    from pydantic import ValidationError

    from bridge.devtools.collector import Faults

    try:
        Faults.model_validate_json(text)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"])
            problems.append(f"{where}: {error['msg']}" if where else error["msg"])
        raise typer.BadParameter("; ".join(problems)) from None
    return text


@app.command()
def collector(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8090,
    write_key: Annotated[
        list[str] | None, typer.Option(help="Accepted write key (repeatable; none = any).")
    ] = None,
    record: Annotated[Path | None, typer.Option(help="Append accepted messages to this JSONL file.")] = None,
    faults: Annotated[
        str | None,
        typer.Option(help="Faults active at start, JSON, e.g. '{\"fail\": 2}'.", callback=_checked_faults),
    ] = None,
    keep_duplicates: Annotated[
        bool,
        typer.Option(
            "--keep-duplicates/",
            help="Record a repeated messageId again (default: kept once per write key, as Segment).",
        ),
    ] = False,
    no_memory: Annotated[
        bool, typer.Option("--no-memory/", help="Keep only counts in memory (long runs; use --record).")
    ] = False,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Run a local Segment-compatible receiver (/v1/batch, /v1/track, /v1/identify) for development and tests.

    Its root URL serves a live event debugger page."""
    import json

    from bridge.devtools.collector import run

    run(
        host,
        port,
        set(write_key or []),
        record,
        log_level,
        faults=json.loads(faults) if faults else None,
        keep_messages=not no_memory,
        dedup=not keep_duplicates,
    )


@app.command()
@_reaching_redis()
def replay(
    file: Annotated[
        Path, typer.Argument(metavar="FILE.jsonl", help="Historical outcomes, one JSON per line.")
    ],
    restart: Annotated[
        bool, typer.Option(help="Ignore a checkpoint of an interrupted run; start from the top.")
    ] = False,
) -> None:
    """Bulk ingest of historical outcomes, with a progress bar; resumes after an interruption.

    Prints accepted / duplicate / invalid counts. Running it twice sends nothing twice."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from bridge.runtime import build_runtime
    from bridge.stages.bulk import ingest_file

    settings = _settings()
    merchants = _merchants(settings)
    if not file.is_file():
        typer.echo(f"error: {file} is not a file", err=True)
        raise typer.Exit(2)
    runtime = build_runtime(settings, merchants=merchants)
    invalid_lines: list[str] = []
    with Progress(
        TextColumn("[bold]replay"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task("replay", total=file.stat().st_size, counts="")
        counts = _replay_file(
            ingest_file,
            file,
            merchants=merchants,
            dedup=runtime.stores.dedup,
            dlq=runtime.stores.dlq,
            publish_texts=runtime.enqueuer.publish_texts,
            progress=lambda done, c: bar.update(
                task,
                completed=done,
                counts=f"accepted {c.accepted} duplicate {c.duplicate} invalid {c.invalid}",
            ),
            on_invalid=lambda line, error: invalid_lines.append(f"line {line}: {error}"),
            resume=not restart,
            window_s=settings.dedup_window_s,
        )
        bar.update(task, completed=file.stat().st_size)
    for line in invalid_lines[:20]:
        typer.echo(f"invalid: {line[:300]}", err=True)
    if len(invalid_lines) > 20:
        typer.echo(
            f"... and {len(invalid_lines) - 20} more (see: bridge dlq list --reason invalid)", err=True
        )
    typer.echo(f"accepted {counts.accepted}  duplicate {counts.duplicate}  invalid {counts.invalid}")


def _replay_file(ingest_file: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``ingest_file``, with outcomes another ingest still held after ``OUTCOME_CLAIM_S`` said in one
    line (exit status 2: running it again resumes at the checkpoint)."""
    from bridge.domain.errors import OutcomesInFlight

    try:
        return ingest_file(*args, **kwargs)
    except OutcomesInFlight as exc:
        typer.echo(f"error: {exc}; run it again to resume", err=True)
        raise typer.Exit(2) from None


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """One screen for operators: queue, in flight, parked, dead letters, deliveries, source health."""
    import json

    from rich.console import Console
    from rich.table import Table

    from bridge.ops.status import collect

    settings = _settings()  # a bad setting is not "cannot read Redis"
    try:
        facts = collect(_runtime(settings).store_set)
    except Exception as exc:
        typer.echo(
            f"error: cannot read Redis at the configured BRIDGE_REDIS_URL: {type(exc).__name__}", err=True
        )
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    console = Console()
    age = facts["oldest_undelivered_age_s"]
    overview = Table(title="bridge status", show_header=False)
    overview.add_row("worker processes alive (heartbeats)", str(facts["workers_alive"]))
    overview.add_row("queue depth (tasks)", str(facts["queue_depth_tasks"]))
    overview.add_row("in flight (tasks)", str(facts["in_flight_tasks"]))
    overview.add_row("accepted, not yet processed (batches)", str(facts["pending_batches"]))
    overview.add_row(
        "parked for retry (batches)", f"{facts['parked_batches']} ({facts['parked_due_now']} due now)"
    )
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(facts["dlq_by_reason"].items())) or "-"
    overview.add_row("dead letters", f"{facts['dlq_size']} ({reasons})")
    overview.add_row("invalid dead letters trimmed by the cap", str(facts["dlq_invalid_trimmed"]))
    overview.add_row(
        "delivered, last minute / hour", f"{facts['delivered_last_minute']} / {facts['delivered_last_hour']}"
    )
    overview.add_row("oldest undelivered outcome", "-" if age is None else f"{age:.0f}s")
    console.print(overview)
    sources = Table(title="sources")
    for column in ("merchant", "source", "key id", "health", "last status", "last ok", "last error"):
        sources.add_column(column)
    for src in facts["sources"]:
        health = "ok" if src["healthy"] else f"failing x{src['consecutive_failures']}"
        sources.add_row(
            str(src["merchant_id"]),
            src["source"],
            src["write_key_id"],
            health,
            src["last_status"],
            "-" if src["last_ok_age_s"] is None else f"{src['last_ok_age_s']:.0f}s ago",
            src["last_error"][:60] or "-",
        )
    console.print(sources)


dlq_app = typer.Typer(help="Inspect, replay and drop dead letters.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


def _runtime(settings: Settings | None = None) -> Runtime:
    """This command's wiring, from the ``BRIDGE_*`` environment read once (or ``settings``)."""
    from bridge.runtime import build_runtime

    return build_runtime(settings or _settings())


@dlq_app.command("list")
@_reaching_redis()
def dlq_list(
    reason: Annotated[str | None, typer.Option(help="Only this reason.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List dead letters (oldest first) with their reason, attempts and last error."""
    import json

    store = _runtime().store_set.dlq
    letters = store.list(reason, limit=limit)
    if as_json:
        for letter in letters:
            typer.echo(
                json.dumps(
                    {
                        "id": letter.id,
                        "reason": letter.reason,
                        "kind": letter.kind,
                        "merchant_id": letter.merchant_id,
                        "outcome_id": letter.outcome_id,
                        "attempts": letter.attempts,
                        "first_error": letter.first_error,
                        "last_error": letter.last_error,
                    }
                )
            )
        return
    counts = store.counts_by_reason()
    typer.echo(f"{store.size()} dead letter(s): " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    for letter in letters:
        typer.echo(
            f"{letter.id}  {letter.reason:<22} {letter.kind:<7} merchant={letter.merchant_id} "
            f"outcome={letter.outcome_id} attempts={letter.attempts}  {letter.last_error[:120]}"
        )


@dlq_app.command("replay")
@_reaching_redis()
def dlq_replay(
    ids: Annotated[
        list[str] | None, typer.Argument(help="Dead-letter ids (default: all, or --reason).")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Only this reason.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 10_000,
) -> None:
    """Put dead letters back into the pipeline (still deduplicated: nothing is sent twice)."""
    from bridge.stages.replay import replay

    runtime = _runtime()
    stores = runtime.store_set
    try:
        counts = replay(
            stores.dlq,
            stores.parking,
            runtime.enqueuer.publish_texts,
            ids=ids or None,
            reason=reason,
            limit=limit,
        )
    except MalformedDeadLetterId as exc:  # checked before anything is taken
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    skipped = f"; {counts['skipped']} unreadable message letter(s) left in place" if counts["skipped"] else ""
    typer.echo(f"replayed {counts['outcome']} outcome(s) and {counts['message']} message(s){skipped}")


@dlq_app.command("drop")
@_reaching_redis()
def dlq_drop(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead-letter ids.")] = None,
    reason: Annotated[str | None, typer.Option(help="Drop every dead letter of this reason.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Drop every dead letter.")] = False,
) -> None:
    """Delete dead letters for good."""
    store = _runtime().store_set.dlq
    if ids:
        try:
            dropped = store.drop(ids)
        except MalformedDeadLetterId as exc:  # checked before anything is dropped
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    elif reason or all_:
        dropped = store.drop_all(reason)
    else:
        typer.echo("error: give ids, --reason or --all", err=True)
        raise typer.Exit(2)
    typer.echo(f"dropped {dropped} dead letter(s)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
