"""The collector over real HTTP: a subprocess on a free port, driven by httpx and by the
segment-analytics-python request layer (the one the bridge sends with)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import requests
from segment.analytics import request as segment_request
from segment.analytics.request import APIError, parse_retry_after

from bridge.devtools.collector import MAX_MESSAGE_BYTES, build_app, oversize
from bridge.domain.wire import dumps
from tests.servers import ProcessServer, ThreadServer, free_port

KEY = "wk_test_primary"
OTHER_KEY = "wk_test_secondary"


def collector_argv(*extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bridge.ops.cli",
        "collector",
        "--port",
        "{port}",
        "--log-level",
        "warning",
        *extra,
    ]


@pytest.fixture(scope="module")
def record_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("collector") / "received.jsonl"


@pytest.fixture(scope="module")
def server(record_file: Path) -> Iterator[ProcessServer]:
    argv = collector_argv("--write-key", KEY, "--write-key", OTHER_KEY, "--record", str(record_file))
    with ProcessServer(argv, ready_path="/healthz") as srv:
        yield srv


@pytest.fixture
def url(server: ProcessServer, record_file: Path) -> str:
    """The shared collector, cleared: no messages, no faults, empty record file."""
    assert server.running, server.output()
    httpx.delete(server.url + "/messages").raise_for_status()
    httpx.delete(server.url + "/faults").raise_for_status()
    record_file.write_bytes(b"")  # the collector appends (O_APPEND), so truncating is safe
    return server.url


def track(n: int = 0, **fields: Any) -> dict[str, Any]:
    message = {
        "type": "track",
        "event": "POS Activity",
        "userId": f"user-{n}",
        "messageId": f"m-{n}",
        "timestamp": "2024-05-01T12:00:00Z",
        "properties": {"merchant_id": 1738},
    }
    message.update(fields)
    return message


def send(url: str, batch: list[dict[str, Any]], key: str = KEY, **kwargs: Any) -> requests.Response:
    """What the bridge does: one synchronous batch through the Segment library."""
    answer: requests.Response = segment_request.post(key, host=url, batch=batch, **kwargs)
    return answer


def messages(url: str, **params: Any) -> list[dict[str, Any]]:
    answer = httpx.get(url + "/messages", params=params)
    answer.raise_for_status()
    result: list[dict[str, Any]] = answer.json()
    return result


def stats(url: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(url + "/stats").json()
    return result


def set_faults(url: str, **faults: Any) -> dict[str, Any]:
    answer = httpx.post(url + "/faults", json=faults)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


# -- accepting and recording ---------------------------------------------------------------


def test_batch_from_segment_library_is_recorded_with_its_key(url: str, record_file: Path) -> None:
    batch = [track(1), {"type": "identify", "userId": "user-1", "messageId": "i-1", "traits": {"a": 1}}]
    answer = send(url, batch, sentAt="2024-05-01T12:00:01+00:00")
    assert answer.status_code == 200
    assert answer.json() == {"success": True}

    got = messages(url)
    assert [m["messageId"] for m in got] == ["m-1", "i-1"]
    for sent, received in zip(batch, got, strict=True):
        assert {k: v for k, v in received.items() if not k.startswith("_")} == sent
        assert received["_writeKey"] == KEY
        assert received["_sentAt"] == "2024-05-01T12:00:01+00:00"
        assert received["_receivedAt"].endswith("Z")
    lines = [orjson.loads(line) for line in record_file.read_bytes().splitlines()]
    assert lines == got


#: Numbers a float would change (digits, trailing zeros), and integers beyond 64 bits.
EXACT_PROPERTIES = (
    b'{"recharge_amount":12345678901234567.89,"balance":1.10,"points":1.000,"x":-2.00,'
    b'"tiny":1E-7,"big":123456789012345678901234567890,"neg":-18446744073709551617,"list":[0.10,3]}'
)


def test_numbers_are_recorded_and_served_exactly_as_sent(url: str, record_file: Path) -> None:
    message = b'{"type":"track","event":"Recharge Value","userId":"u1","messageId":"m-n-1","properties":'
    body = b'{"batch":[' + message + EXACT_PROPERTIES + b'}],"sentAt":1.50}'
    answer = httpx.post(url + "/v1/batch", auth=(KEY, ""), content=body)
    assert answer.status_code == 200, answer.text
    assert b'"properties":' + EXACT_PROPERTIES + b',"_writeKey"' in record_file.read_bytes()
    assert b'"_sentAt":1.50}' in record_file.read_bytes()
    served = httpx.get(url + "/messages").content
    assert b'"properties":' + EXACT_PROPERTIES + b',"_writeKey"' in served


def test_the_demo_table_shows_numbers_as_received(tmp_path: Path) -> None:
    from rich.console import Console

    from bridge.devtools.demo import Demo, ThreadedServer, summary_table

    demo = Demo(tmp_path, Console())
    demo.collector = ThreadedServer(build_app({KEY}, None), free_port()).start()
    try:
        properties = {"check_total": Decimal("15.60"), "points_redeemed": Decimal("2.00")}
        body = dumps({"batch": [track(1, properties=properties)]})
        assert httpx.post(demo.collector.url + "/v1/batch", auth=(KEY, ""), content=body).status_code == 200
        [received] = demo.received()
    finally:
        demo.collector.stop()
    assert received["properties"] == properties
    console = Console(width=200, record=True)
    console.print(summary_table([received]))
    assert "check_total=15.60, points_redeemed=2.00" in console.export_text()


def test_gzip_batch_and_second_key(url: str) -> None:
    assert send(url, [track(1)], key=OTHER_KEY, gzip=True).status_code == 200
    assert [(m["messageId"], m["_writeKey"]) for m in messages(url)] == [("m-1", OTHER_KEY)]


def test_single_endpoints_with_basic_auth_or_body_key(url: str) -> None:
    a = httpx.post(url + "/v1/track", auth=(KEY, ""), json={"event": "Check-In", "userId": "u1"})
    b = httpx.post(url + "/v1/identify", json={"writeKey": OTHER_KEY, "userId": "u2", "sentAt": "S"})
    c = httpx.post(url + "/v1/page", auth=(KEY, ""), json={"anonymousId": "anon", "name": "Home"})
    assert [a.status_code, b.status_code, c.status_code] == [200, 200, 200]
    got = messages(url)
    assert [(m["type"], m["_writeKey"]) for m in got] == [
        ("track", KEY),
        ("identify", OTHER_KEY),
        ("page", KEY),
    ]
    assert "writeKey" not in got[1]
    assert got[1]["_sentAt"] == "S"


def test_message_filters(url: str) -> None:
    send(url, [track(1), track(2, event="Check-In"), track(3)])
    send(url, [track(4)], key=OTHER_KEY)
    assert [m["messageId"] for m in messages(url, event="Check-In")] == ["m-2"]
    assert [m["messageId"] for m in messages(url, userId="user-3")] == ["m-3"]
    assert [m["messageId"] for m in messages(url, writeKey=OTHER_KEY)] == ["m-4"]
    answer = httpx.get(url + "/messages", params={"since": 2})
    assert [m["messageId"] for m in answer.json()] == ["m-3", "m-4"]
    assert answer.headers["x-next-since"] == "4"
    assert messages(url, since=4) == []


def test_delete_messages_clears(url: str) -> None:
    send(url, [track(1)])
    assert len(messages(url)) == 1
    assert httpx.delete(url + "/messages").status_code == 200
    assert messages(url) == []
    assert stats(url)["accepted"] == 0


def test_repeated_message_ids_are_kept_once_per_write_key_like_segment(url: str) -> None:
    send(url, [track(1), track(2)])
    send(url, [track(1)])
    assert [m["messageId"] for m in messages(url)] == [track(1)["messageId"], track(2)["messageId"]]
    s = stats(url)
    assert (s["accepted"], s["unique_message_ids"], s["duplicates"]) == (2, 2, 1)


def test_keep_duplicates_records_repeats() -> None:
    argv = collector_argv("--write-key", KEY, "--keep-duplicates")
    with ProcessServer(argv, ready_path="/healthz") as srv:
        send(srv.url, [track(1), track(2)])
        send(srv.url, [track(1)])
        assert len(messages(srv.url)) == 3
        assert stats(srv.url)["duplicates"] == 1


def test_concurrent_requests_never_interleave_lines(url: str, record_file: Path) -> None:
    threads, per_thread, batch_size = 8, 5, 40

    def worker(t: int) -> None:
        with httpx.Client() as client:
            for b in range(per_thread):
                ids = range((t * per_thread + b) * batch_size, (t * per_thread + b + 1) * batch_size)
                batch = [track(i, properties={"pad": "x" * 500}) for i in ids]
                client.post(url + "/v1/batch", auth=(KEY, ""), json={"batch": batch}).raise_for_status()

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    total = threads * per_thread * batch_size
    lines = record_file.read_bytes().splitlines()
    assert len(lines) == total
    assert sorted(orjson.loads(line)["messageId"] for line in lines) == sorted(f"m-{i}" for i in range(total))
    assert stats(url)["accepted"] == total


# -- Segment's rules -----------------------------------------------------------------------


def test_unknown_or_missing_key_is_401_and_counted(url: str) -> None:
    with pytest.raises(APIError) as caught:
        send(url, [track(1)], key="wk_wrong")
    assert caught.value.status == 401
    assert caught.value.code == "unauthorized"
    missing = httpx.post(url + "/v1/batch", json={"batch": [track(2)]})
    assert missing.status_code == 401
    assert missing.json()["code"] == "unauthorized"
    assert messages(url) == []
    assert stats(url)["rejected"] == {"401": 2}


def test_message_over_32kb_is_400(url: str) -> None:
    # measured as the Segment library measures: json.dumps with its default separators
    base = len(json.dumps(track(1, properties={"pad": ""})))
    just_fits = track(1, properties={"pad": "x" * (MAX_MESSAGE_BYTES - base)})
    assert len(json.dumps(just_fits)) == MAX_MESSAGE_BYTES
    assert len(orjson.dumps(just_fits)) < MAX_MESSAGE_BYTES
    assert send(url, [just_fits]).status_code == 200

    too_big = track(2, properties={"pad": "x" * (MAX_MESSAGE_BYTES - base + 1)})
    with pytest.raises(APIError) as caught:
        send(url, [track(3), too_big])
    assert caught.value.status == 400
    assert caught.value.code == "message_too_large"
    assert [m["messageId"] for m in messages(url)] == ["m-1"]  # nothing of the refused batch
    assert stats(url)["rejected"] == {"400": 1}

    # 24 KB of UTF-8 on a compact wire, but 72 KB of \u escapes as the library measures
    accented = track(4, properties={"name": "é" * 12_000})
    answer = httpx.post(url + "/v1/batch", auth=(KEY, ""), content=orjson.dumps({"batch": [accented]}))
    assert answer.status_code == 400
    assert answer.json()["code"] == "message_too_large"


@pytest.mark.parametrize(
    "value",
    [
        "x" * 5000,  # small: fast path
        "x" * 33_000,
        "é" * 5000,  # 10 KB compact, 30 KB escaped
        "é" * 6000,  # 12 KB compact, 36 KB escaped
        "\x7f" * 6000,  # DEL: 1 byte compact, 6 escaped
        "😀" * 3000,  # 12 KB compact, 36 KB escaped (surrogate pairs)
        [1e-7] * 5000,  # "1e-7," compact, "1e-07, " by json
        ",:" * 8000,  # separators inside strings get no spaces
    ],
)
def test_oversize_matches_json_dumps(value: Any) -> None:
    message = track(1, properties={"v": value})
    size = len(json.dumps(message))
    assert oversize(message, orjson.dumps(message)) == (size if size > MAX_MESSAGE_BYTES else None)


def test_oversize_counts_an_exact_number_as_its_text() -> None:
    message = track(1, properties={"v": [Decimal("1.10")] * 7000})
    as_floats = track(1, properties={"v": [1.1] * 7000})
    assert oversize(message, dumps(message)) == len(json.dumps(as_floats)) + 7000  # "1.10" is "1.1" + 1


def test_batch_over_500kb_is_400(url: str) -> None:
    batch = [track(i, properties={"pad": "x" * 30_000}) for i in range(18)]  # ~540 KB, each < 32 KB
    with pytest.raises(APIError) as caught:
        send(url, batch)
    assert caught.value.status == 400
    assert caught.value.code == "request_too_large"
    # the limit is on the decoded body: gzip does not get it through
    with pytest.raises(APIError) as caught:
        send(url, batch, gzip=True)
    assert caught.value.status == 400
    assert messages(url) == []
    assert send(url, batch[:15]).status_code == 200  # ~450 KB passes


def test_invalid_json_is_400(url: str) -> None:
    answer = httpx.post(
        url + "/v1/batch",
        auth=(KEY, ""),
        content=b'{"batch": [',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_json"
    bad_gzip = httpx.post(
        url + "/v1/batch", auth=(KEY, ""), content=b"not gzip", headers={"content-encoding": "gzip"}
    )
    assert bad_gzip.status_code == 400
    assert set(bad_gzip.json()) == {"code", "message"}


@pytest.mark.parametrize(
    "message",
    [
        b'{"type":"track","event":"E","userId":"\\ud800","messageId":"m-1"}',  # a lone surrogate
        b'{"type":"track","event":"E","userId":"u","properties":' + b"[" * 300 + b"]" * 300 + b"}",
    ],
)
def test_a_message_that_cannot_be_written_back_is_400(url: str, message: bytes) -> None:
    answer = httpx.post(url + "/v1/batch", auth=(KEY, ""), content=b'{"batch":[' + message + b"]}")
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_json"
    assert messages(url) == []


def test_batch_over_2500_messages_answers_200_and_records_nothing(url: str) -> None:
    batch = [{"type": "track", "event": "E", "userId": "u", "messageId": f"m{i}"} for i in range(2501)]
    assert send(url, batch).status_code == 200
    assert messages(url) == []
    assert stats(url)["dropped"] == {"batch_over_2500_messages": 2501}
    dropped = httpx.get(url + "/dropped").json()
    assert [(d["reason"], d["count"]) for d in dropped] == [("batch_over_2500_messages", 2501)]

    assert send(url, batch[:2500]).status_code == 200
    assert len(messages(url)) == 2500


def test_messages_without_ids_or_event_are_dropped_with_reason(url: str) -> None:
    no_ids = track(2)
    del no_ids["userId"]
    no_event = track(3)
    del no_event["event"]
    anonymous = track(4, anonymousId="anon-4")
    del anonymous["userId"]
    assert send(url, [track(1), no_ids, no_event, anonymous]).status_code == 200

    assert [m["messageId"] for m in messages(url)] == ["m-1", "m-4"]
    dropped = httpx.get(url + "/dropped").json()
    assert [(d["reason"], d["message"]["messageId"]) for d in dropped] == [
        ("missing_user_id_and_anonymous_id", "m-2"),
        ("track_without_event", "m-3"),
    ]
    assert stats(url)["dropped"] == {"missing_user_id_and_anonymous_id": 1, "track_without_event": 1}


# -- faults --------------------------------------------------------------------------------


def test_fail_next_n_then_succeed(url: str) -> None:
    set_faults(url, fail=2)
    for _ in range(2):
        with pytest.raises(APIError) as caught:
            send(url, [track(1)])
        assert caught.value.status == 500
    assert send(url, [track(1)]).status_code == 200
    assert [m["messageId"] for m in messages(url)] == ["m-1"]  # faulted requests record nothing
    assert stats(url)["faulted"] == {"500": 2}
    assert httpx.get(url + "/faults").json()["fail"] == 0


def test_fail_with_chosen_status(url: str) -> None:
    set_faults(url, fail=1, fail_status=502)
    with pytest.raises(APIError) as caught:
        send(url, [track(1)])
    assert caught.value.status == 502


def test_rate_limit_has_retry_after(url: str) -> None:
    set_faults(url, rate_limit=1, retry_after=7)
    answer = httpx.post(url + "/v1/batch", auth=(KEY, ""), json={"batch": [track(1)]})
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "7"
    set_faults(url, rate_limit=1, retry_after=3)
    with pytest.raises(APIError) as caught:
        send(url, [track(1)])
    assert caught.value.status == 429
    assert parse_retry_after(caught.value.response) == 3
    assert send(url, [track(1)]).status_code == 200
    assert len(messages(url)) == 1


def test_dropped_connection_is_a_connection_error(url: str) -> None:
    set_faults(url, drop=2)
    with pytest.raises(requests.ConnectionError):
        send(url, [track(1)])
    with pytest.raises(httpx.TransportError):
        httpx.post(url + "/v1/batch", auth=(KEY, ""), json={"batch": [track(1)]})
    assert send(url, [track(2)]).status_code == 200
    assert [m["messageId"] for m in messages(url)] == ["m-2"]
    assert stats(url)["faulted"] == {"drop": 2}


def test_slow_answer_exceeds_client_timeout(url: str) -> None:
    set_faults(url, delay=1.0, delay_count=1)
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        send(url, [track(1)], timeout=0.2)
    assert time.monotonic() - started < 0.9
    started = time.monotonic()
    assert send(url, [track(2)], timeout=2).status_code == 200  # count used up: fast again
    assert time.monotonic() - started < 0.5
    # recorded although the client gave up: Segment got it, only the answer was slow
    assert [m["messageId"] for m in messages(url)] == ["m-1", "m-2"]


def test_fail_rate(url: str) -> None:
    set_faults(url, fail_rate=0.5)
    with httpx.Client(auth=(KEY, "")) as client:
        statuses = [client.post(url + "/v1/batch", json={"batch": [track(i)]}).status_code for i in range(80)]
    failed = statuses.count(500)
    assert 10 < failed < 70
    assert failed + statuses.count(200) == 80
    assert len(messages(url)) == statuses.count(200)
    set_faults(url, fail_rate=1.0)
    with pytest.raises(APIError):
        send(url, [track(1)])


def test_down_until_cleared(url: str) -> None:
    set_faults(url, down="error")
    for _ in range(3):
        with pytest.raises(APIError) as caught:
            send(url, [track(1)])
        assert caught.value.status == 503
    set_faults(url, down="drop")
    with pytest.raises(requests.ConnectionError):
        send(url, [track(1)])
    assert httpx.get(url + "/stats").status_code == 200  # control endpoints are never faulted
    httpx.delete(url + "/faults").raise_for_status()
    assert send(url, [track(1)]).status_code == 200
    assert stats(url)["faulted"] == {"503": 3, "drop": 1}


def test_fault_settings_are_validated(url: str) -> None:
    assert httpx.post(url + "/faults", json={"explode": 1}).status_code == 400
    assert httpx.post(url + "/faults", json={"fail": -1}).status_code == 400
    assert httpx.post(url + "/faults", content=b"[").status_code == 400
    shown = set_faults(url, fail=3)
    assert shown["fail"] == 3
    assert set_faults(url, drop=1)["fail"] == 3  # POST merges
    assert httpx.get(url + "/faults").json() == {**shown, "drop": 1}


def test_faults_at_start_and_any_key_when_none_configured() -> None:
    with ProcessServer(
        collector_argv("--faults", '{"fail": 1, "fail_status": 503}'), ready_path="/healthz"
    ) as srv:
        with pytest.raises(APIError) as caught:
            send(srv.url, [track(1)], key="whatever")
        assert caught.value.status == 503
        assert send(srv.url, [track(1)], key="whatever").status_code == 200
        assert send(srv.url, [track(2)], key="another").status_code == 200
        assert [m["_writeKey"] for m in messages(srv.url)] == ["whatever", "another"]


@pytest.mark.parametrize(
    ("faults", "problem"),
    [
        ("{fail:2}", "Invalid JSON: key must be a string at line 1 column 2"),
        ("[1]", "Input should be an object"),
        ('{"fail": -1, "nope": 1}', "fail: Input should be greater than or equal to 0; nope: Extra inputs"),
    ],
)
def test_bad_faults_at_start_are_a_usage_error(faults: str, problem: str) -> None:
    argv = [str(free_port()) if arg == "{port}" else arg for arg in collector_argv("--faults", faults)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    said = " ".join(result.stderr.replace("│", " ").split())  # the error box wraps lines
    assert f"Invalid value for '--faults': {problem}" in said
    assert "Traceback" not in result.stderr


def test_build_app_in_a_thread(tmp_path: Path) -> None:
    app = build_app({KEY}, tmp_path / "r.jsonl", faults={"rate_limit": 1})
    with ThreadServer(app, ready_path="/healthz") as srv:
        body = gzip.compress(orjson.dumps({"batch": [track(1)], "sentAt": "now"}))
        headers = {"content-encoding": "gzip", "content-type": "application/json"}
        first = httpx.post(srv.url + "/v1/batch", auth=(KEY, ""), content=body, headers=headers)
        second = httpx.post(srv.url + "/v1/batch", auth=(KEY, ""), content=body, headers=headers)
        assert (first.status_code, second.status_code) == (429, 200)
        assert [m["messageId"] for m in app.messages] == ["m-1"]
    assert orjson.loads((tmp_path / "r.jsonl").read_bytes())["_sentAt"] == "now"
