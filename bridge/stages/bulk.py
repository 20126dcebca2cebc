"""Bulk ingest of historical outcomes from a JSONL file (``bridge replay FILE.jsonl``).

Lines are validated here (invalid ones are dead-lettered as ``invalid`` and counted),
outcomes already processed are counted as duplicates, and the rest are enqueued in
chunks. After each chunk is in Redis, a checkpoint file beside the input records the
byte offset reached, so an interrupted run resumes where it stopped. Running the same
file again sends nothing twice: processed outcomes are skipped here, and anything still
in flight is deduplicated by the workers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bridge.config import MerchantsConfig
from bridge.domain.mapped import Mapped
from bridge.stages.accept import accept, decode_item
from bridge.stores.keys import OUTCOME_DEDUP_WINDOW_S
from bridge.stores.protocols import DeadLetters, DedupStore

#: Outcomes validated and enqueued per step (and per checkpoint).
CHUNK_LINES = 1000
#: A UTF-8 byte order mark, as Windows tools write at the start of a text file: not part of the
#: first outcome.
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass
class BulkCounts:
    lines: int = 0
    accepted: int = 0
    duplicate: int = 0
    invalid: int = 0


@dataclass(frozen=True)
class Checkpoint:
    """Where a run stopped: the input's identity, the byte offset reached and the counts so far."""

    size: int
    mtime_ns: int
    offset: int
    counts: dict[str, int]


def checkpoint_path(path: Path) -> Path:
    return path.with_name(path.name + ".bridge-progress")


def _read_checkpoint(path: Path) -> Checkpoint | None:
    marker = checkpoint_path(path)
    try:
        data = json.loads(marker.read_text())
        stat = path.stat()
        checkpoint = Checkpoint(**data)
    except (OSError, ValueError, TypeError):
        return None
    if (checkpoint.size, checkpoint.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
        return None  # the file changed: start over (dedup keeps it safe)
    return checkpoint


def _write_checkpoint(path: Path, offset: int, counts: BulkCounts) -> None:
    stat = path.stat()
    marker = checkpoint_path(path)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(asdict(Checkpoint(stat.st_size, stat.st_mtime_ns, offset, asdict(counts)))))
    os.replace(tmp, marker)


def ingest_file(
    path: Path,
    *,
    merchants: MerchantsConfig,
    dedup: DedupStore,
    dlq: DeadLetters,
    publish_texts: Callable[[Sequence[str], Sequence[Mapped]], object],
    progress: Callable[[int, BulkCounts], None] | None = None,
    on_invalid: Callable[[int, str], None] | None = None,
    resume: bool = True,
    chunk_lines: int = CHUNK_LINES,
    window_s: float = OUTCOME_DEDUP_WINDOW_S,
) -> BulkCounts:
    """Ingest a JSONL file of outcomes; ``progress(bytes_done, counts)`` is called after each chunk."""
    checkpoint = _read_checkpoint(path) if resume else None
    counts = BulkCounts(**checkpoint.counts) if checkpoint else BulkCounts()
    offset = checkpoint.offset if checkpoint else 0
    with path.open("rb") as handle:
        handle.seek(offset)
        line_no = counts.lines
        while True:
            chunk: list[tuple[int, bytes]] = []
            for read in handle:
                line_no += 1
                raw = read[len(UTF8_BOM) :] if line_no == 1 and read.startswith(UTF8_BOM) else read
                if raw.strip():
                    chunk.append((line_no, raw))
                if len(chunk) >= chunk_lines:
                    break
            if not chunk:
                break
            _ingest_chunk(chunk, counts, merchants, dedup, dlq, publish_texts, on_invalid, window_s)
            counts.lines = line_no
            offset = handle.tell()
            _write_checkpoint(path, offset, counts)
            if progress is not None:
                progress(offset, counts)
    checkpoint_path(path).unlink(missing_ok=True)
    return counts


def _ingest_chunk(
    chunk: list[tuple[int, bytes]],
    counts: BulkCounts,
    merchants: MerchantsConfig,
    dedup: DedupStore,
    dlq: DeadLetters,
    publish_texts: Callable[[Sequence[str], Sequence[Mapped]], object],
    on_invalid: Callable[[int, str], None] | None,
    window_s: float,
) -> None:
    items = [decode_item(raw.strip()) for _, raw in chunk]
    texts = [raw.decode("utf-8", "replace").strip() for _, raw in chunk]
    lines = [line_no for line_no, _ in chunk]
    checked = accept(
        items,
        merchants=merchants,
        dedup=dedup,
        dlq=dlq,
        publish=publish_texts,
        window_s=window_s,
        now=time.time(),
        texts=texts,
        lines=lines,
    )
    if on_invalid is not None:
        for letter, error in zip(checked.letters, checked.errors, strict=True):
            on_invalid(lines[error["index"]], letter.first_error)
    counts.invalid += len(checked.letters)
    counts.duplicate += checked.duplicate
    counts.accepted += len(checked.enqueue)
