"""`bridge replay FILE.jsonl`: bulk ingest, resumable, counted, never sending twice."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bridge.config import MerchantsConfig
from bridge.stages.bulk import checkpoint_path, ingest_file
from tests.backends import Backend
from tests.harness import ROOT, Pipeline, many_outcomes


def _write(path, outcomes, bad_lines=()):
    lines = [json.dumps(o) for o in outcomes]
    for index, text in bad_lines:
        lines.insert(index, text)
    path.write_text("\n".join(lines) + "\n")


class FlakyPublisher:
    """Collects what is published; fails once after ``fail_after`` calls (an interruption)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.texts: list[str] = []
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, texts, mapped):
        assert [m.outcome_id for m in mapped] == [json.loads(t)["outcomeId"] for t in texts]
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            self.fail_after = None
            raise ConnectionError("broker went away")
        self.texts.extend(texts)


def test_interrupted_run_resumes_and_counts(backend: Backend, tmp_path):
    """On both backends (the in-memory twins and a real redis-server)."""
    outcomes = many_outcomes(2300, prefix="bulk")
    path = tmp_path / "history.jsonl"
    _write(path, outcomes, bad_lines=[(10, "{broken"), (700, json.dumps({"outcomeId": "x", "kind": "nope"}))])
    publish = FlakyPublisher(fail_after=2)
    dedup, dlq = backend.stores.dedup, backend.stores.dlq
    stores = dict(merchants=MerchantsConfig(), dedup=dedup, dlq=dlq)

    with pytest.raises(ConnectionError):
        ingest_file(path, publish_texts=publish, chunk_lines=500, **stores)
    assert checkpoint_path(path).exists()
    assert len(publish.texts) == 998  # two chunks of 500 lines, each with one bad line

    counts = ingest_file(path, publish_texts=publish, chunk_lines=500, **stores)
    assert (counts.accepted, counts.duplicate, counts.invalid) == (2300, 0, 2)
    assert sorted(json.loads(t)["outcomeId"] for t in publish.texts) == sorted(
        o["outcomeId"] for o in outcomes
    )
    assert not checkpoint_path(path).exists()
    assert dlq.counts_by_reason() == {"invalid": 2}

    # Once processed, the same file sends nothing.
    dedup.confirm_outcomes([(o["merchantId"], o["outcomeId"]) for o in outcomes])
    again = FlakyPublisher()
    counts = ingest_file(path, publish_texts=again, chunk_lines=500, **stores)
    assert (counts.accepted, counts.duplicate) == (0, 2300)
    assert again.texts == []


@pytest.mark.slow
def test_replay_command_delivers_once_and_twice_sends_nothing(redis_server, tmp_path):
    outcomes = many_outcomes(400, prefix="hist")
    path = tmp_path / "history.jsonl"
    _write(path, outcomes, bad_lines=[(5, '{"outcomeId": "bad-1", "kind": "guest.identified"}')])
    with Pipeline(redis_server, tmp_path, {1738: [("Prod", "wk-1738-prod")]}) as pipe:
        expected = pipe.expected(outcomes)

        def run():
            return subprocess.run(
                [sys.executable, "-m", "bridge.ops.cli", "replay", str(path)],
                env=pipe.env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )

        first = run()
        assert first.returncode == 0, first.stderr
        assert "accepted 400  duplicate 0  invalid 1" in first.stdout
        assert "invalid: line 6: invalid outcome 'bad-1'" in first.stderr
        received = pipe.wait_delivered(expected)
        assert received == expected
        pipe.wait_for(pipe.drained, 60, "the first run to finish")

        second = run()
        assert second.returncode == 0, second.stderr
        assert "accepted 0  duplicate 400  invalid 1" in second.stdout
        assert pipe.received_pairs() == expected


def test_a_utf8_bom_and_crlf_line_ends_do_not_make_an_outcome_invalid(backend: Backend, tmp_path):
    """A JSONL file saved by a Windows tool starts with a UTF-8 BOM and ends lines with CRLF. The
    BOM made the first outcome "not valid JSON" and its dead letter kept the BOM, so replaying
    the letter could never take it either."""
    outcomes = many_outcomes(3, prefix="bom")
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps(o).encode() + b"\r\n" for o in outcomes))
    publish = FlakyPublisher()
    stores = dict(merchants=MerchantsConfig(), dedup=backend.stores.dedup, dlq=backend.stores.dlq)
    counts = ingest_file(path, publish_texts=publish, **stores)
    assert (counts.accepted, counts.duplicate, counts.invalid) == (3, 0, 0)
    assert [json.loads(t)["outcomeId"] for t in publish.texts] == [o["outcomeId"] for o in outcomes]
    assert backend.stores.dlq.size() == 0


def test_outcomes_another_ingest_holds_end_the_replay_in_one_line(capsys) -> None:
    """``bridge replay`` meeting outcomes another ingest still holds after the claim's lifetime
    (``OUTCOME_CLAIM_S``): one line and exit status 2, not a traceback; a re-run resumes."""
    import typer

    from bridge.domain.errors import OutcomesInFlight
    from bridge.ops.cli import _replay_file

    def held(*_args: object, **_kwargs: object) -> None:
        raise OutcomesInFlight(3)

    with pytest.raises(typer.Exit) as ended:
        _replay_file(held)
    assert ended.value.exit_code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3 outcome(s)" in err and "run it again" in err
