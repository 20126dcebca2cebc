"""The collector's live event debugger (``GET /``): the page and ``/messages?redact=1`` over
HTTP, then the page in a real headless Chromium driven by Selenium.

The browser tests need Debian's ``chromium`` and ``chromium-driver`` packages
(``/usr/bin/chromium``, ``/usr/bin/chromedriver``) and the ``selenium`` package; they
are skipped when one is missing. ``CHROMIUM_BIN`` / ``CHROMEDRIVER_BIN`` override the
paths. Selenium Manager is never used (it would try to download a browser).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bridge.devtools.collector import build_app
from bridge.stores.keys import key_id
from tests.servers import ProcessServer, ThreadServer

KEY = "wk_debugger_SECRET_d41d8cd98f00"
OTHER_KEY = "wk_debugger_SECRET_other_7e1f"
WAIT_S = 8.0


def post_batch(url: str, batch: list[dict[str, Any]], key: str = KEY) -> None:
    answer = httpx.post(url + "/v1/batch", auth=(key, ""), json={"batch": batch})
    assert answer.status_code == 200, answer.text


def track(message_id: str, event: str, user_id: str, **fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": event, "userId": user_id, "messageId": message_id, **fields}


# -- without a browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    with ThreadServer(build_app({KEY, OTHER_KEY}, None), ready_path="/healthz") as srv:
        yield srv.url


@pytest.mark.parametrize("path", ["/", "/debugger", "/debugger/"])
def test_page_is_served(app_url: str, path: str) -> None:
    answer = httpx.get(app_url + path)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["cache-control"] == "no-store"
    assert "connect-src 'self'" in answer.headers["content-security-policy"]
    assert "<title>Collector debugger</title>" in answer.text
    assert "/messages?redact=1" in answer.text
    assert "innerHTML" not in answer.text  # message data only ever goes through textContent
    assert httpx.post(app_url + path).status_code == 405


def test_redact_replaces_write_key_with_its_id(app_url: str) -> None:
    httpx.delete(app_url + "/messages").raise_for_status()
    post_batch(app_url, [track("r-1", "A", "u1")])
    post_batch(app_url, [track("r-2", "B", "u2")], key=OTHER_KEY)

    plain = httpx.get(app_url + "/messages")
    assert [m["_writeKey"] for m in plain.json()] == [KEY, OTHER_KEY]

    redacted = httpx.get(app_url + "/messages", params={"redact": "1"})
    assert redacted.headers["x-next-since"] == "2"
    assert KEY not in redacted.text
    assert OTHER_KEY not in redacted.text
    got = redacted.json()
    assert [m["_writeKeyId"] for m in got] == [key_id(KEY), key_id(OTHER_KEY)]
    assert all(len(m["_writeKeyId"]) == 16 for m in got)
    assert all("_writeKey" not in m for m in got)
    # everything else is untouched, and filters still apply (on the raw key too)
    assert [{k: v for k, v in m.items() if k != "_writeKeyId"} for m in got] == [
        {k: v for k, v in m.items() if k != "_writeKey"} for m in plain.json()
    ]
    only = httpx.get(app_url + "/messages", params={"redact": "1", "writeKey": OTHER_KEY, "since": "1"})
    assert [m["messageId"] for m in only.json()] == ["r-2"]
    # the in-memory messages keep their key (the JSONL record and plain GET are unchanged)
    assert [m["_writeKey"] for m in httpx.get(app_url + "/messages").json()] == [KEY, OTHER_KEY]


# -- in a real browser ---------------------------------------------------------------------


def _binary(env: str, *candidates: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env] if os.path.isfile(os.environ[env]) else None
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _binary("CHROMIUM_BIN", "chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = _binary("CHROMEDRIVER_BIN", "chromedriver")


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "headless browser test needs chromium and chromedriver "
            "(Debian: apt-get install chromium chromium-driver)"
        )
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="debugger-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    browser.set_page_load_timeout(15)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def collector() -> Iterator[ProcessServer]:
    argv = [sys.executable, "-m", "bridge.ops.cli", "collector", "--port", "{port}", "--log-level", "warning",
            "--write-key", KEY, "--write-key", OTHER_KEY]  # fmt: skip
    with ProcessServer(argv, ready_path="/healthz") as srv:
        yield srv


def visible_rows(driver: Any) -> list[dict[str, str]]:
    """The rows the page shows, top to bottom, as the text of each cell."""
    rows: list[dict[str, str]] = driver.execute_script(
        """return [...document.querySelectorAll('#rows tr')].filter(tr => !tr.hidden && tr.offsetParent)
            .map(tr => ({type: tr.cells[1].textContent, event: tr.cells[2].textContent,
                         user: tr.cells[3].textContent, key: tr.cells[4].textContent,
                         id: tr.cells[5].textContent}));"""
    )
    return rows


def counters(driver: Any) -> tuple[str, str]:
    received = driver.find_element("id", "count-received").text
    shown = driver.find_element("id", "count-shown").text
    return received, shown


def wait_for(driver: Any, condition: Any, message: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(lambda d: condition(d), message)


def ids(driver: Any) -> list[str]:
    return [row["id"] for row in visible_rows(driver)]


def test_debugger_shows_live_events_filters_and_details(driver: Any, collector: ProcessServer) -> None:
    url = collector.url
    driver.get(url + "/")
    wait_for(driver, lambda d: d.find_element("id", "status").get_attribute("data-state") == "live",
             "the page never polled the collector")  # fmt: skip
    assert ids(driver) == []
    assert counters(driver) == ("0", "0")

    # sent after the page is open: they must arrive through polling
    post_batch(url, [
        track("m-1", "Order Completed", "user-alice", properties={"total": 42}),
        track("m-2", "Check-In", "user-bob"),
    ])  # fmt: skip
    wait_for(driver, lambda d: ids(d) == ["m-2", "m-1"], "first batch not shown newest first")
    post_batch(url, [
        {"type": "identify", "userId": "user-alice", "messageId": "m-3", "traits": {"plan": "pro"}},
        track("m-4", "<img src=x onerror=alert(1)>Check-In", "", anonymousId="anon-carol"),
    ], key=OTHER_KEY)  # fmt: skip
    wait_for(driver, lambda d: ids(d) == ["m-4", "m-3", "m-2", "m-1"], "second batch not on top")
    assert counters(driver) == ("4", "4")

    rows = {row["id"]: row for row in visible_rows(driver)}
    assert rows["m-3"]["type"] == "identify"
    assert rows["m-3"]["event"] == "identify"
    assert rows["m-1"]["event"] == "Order Completed"
    assert rows["m-1"]["user"] == "user-alice"
    assert rows["m-4"]["user"] == "anonanon-carol"  # an "anon" tag before an anonymousId
    assert rows["m-1"]["key"] == key_id(KEY)[:8]
    assert rows["m-3"]["key"] == key_id(OTHER_KEY)[:8]
    # user data is text, never markup
    assert rows["m-4"]["event"] == "<img src=x onerror=alert(1)>Check-In"
    assert driver.find_elements("css selector", "#rows img") == []

    # filters narrow the rows instantly, client-side, and combine
    event_filter = driver.find_element("id", "filter-event")
    user_filter = driver.find_element("id", "filter-user")
    event_filter.send_keys("check-in")
    wait_for(driver, lambda d: ids(d) == ["m-4", "m-2"], "event filter")
    assert counters(driver) == ("4", "2")
    user_filter.send_keys("bob")
    wait_for(driver, lambda d: ids(d) == ["m-2"], "event + user filter")
    event_filter.clear()
    wait_for(driver, lambda d: ids(d) == ["m-2"], "user filter alone")
    user_filter.clear()
    user_filter.send_keys("alice")
    wait_for(driver, lambda d: ids(d) == ["m-3", "m-1"], "user filter on userId")
    user_filter.clear()
    user_filter.send_keys("anon-carol")
    wait_for(driver, lambda d: ids(d) == ["m-4"], "user filter on anonymousId")
    event_filter.send_keys("Order")
    wait_for(driver, lambda d: ids(d) == [], "no match")
    assert driver.find_element("id", "no-match").is_displayed()

    # a new event while filtered is filtered too; clearing the filters shows everything
    driver.find_element("id", "clear-filters").click()
    event_filter.send_keys("Order Completed")
    post_batch(url, [track("m-5", "Order Completed", "user-dave"), track("m-6", "Signed Up", "user-dave")])
    wait_for(driver, lambda d: counters(d) == ("6", "2"), "received counter after third batch")
    assert ids(driver) == ["m-5", "m-1"]
    driver.find_element("id", "clear-filters").click()
    wait_for(driver, lambda d: ids(d) == ["m-6", "m-5", "m-4", "m-3", "m-2", "m-1"], "filters cleared")

    # clicking a row shows its whole message, pretty-printed
    assert not driver.find_element("id", "detail-json").is_displayed()
    driver.find_element("xpath", "//tbody[@id='rows']/tr[td[normalize-space()='m-1']]").click()
    detail = driver.find_element("id", "detail-json")
    wait_for(driver, lambda d: detail.is_displayed() and "m-1" in detail.text, "detail panel")
    shown = json.loads(detail.get_attribute("textContent"))
    assert shown["messageId"] == "m-1"
    assert shown["event"] == "Order Completed"
    assert shown["properties"] == {"total": 42}
    assert shown["_writeKeyId"] == key_id(KEY)
    assert "_writeKey" not in shown
    assert '\n  "messageId": "m-1"' in detail.get_attribute("textContent")  # indented
    driver.find_element("xpath", "//tbody[@id='rows']/tr[td[normalize-space()='m-3']]").click()
    wait_for(driver, lambda d: json.loads(detail.get_attribute("textContent"))["messageId"] == "m-3",
             "detail panel follows the click")  # fmt: skip

    # the raw write keys never reach the page
    source = driver.page_source
    assert KEY not in source
    assert OTHER_KEY not in source
    assert "SECRET" not in source
    if os.environ.get("DEBUGGER_SCREENSHOT"):
        driver.save_screenshot(os.environ["DEBUGGER_SCREENSHOT"])


def test_debugger_starts_over_when_the_collector_is_cleared(driver: Any, collector: ProcessServer) -> None:
    url = collector.url
    post_batch(url, [track("old-1", "Old", "u1"), track("old-2", "Old", "u2")])
    driver.get(url + "/debugger")
    wait_for(driver, lambda d: ids(d) == ["old-2", "old-1"], "messages already there are listed")
    httpx.delete(url + "/messages").raise_for_status()
    post_batch(url, [track("new-1", "New", "u3")])
    wait_for(driver, lambda d: ids(d) == ["new-1"], "the view starts over after DELETE /messages")
    assert counters(driver) == ("1", "1")
