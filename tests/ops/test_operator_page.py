"""The operator page in a real browser: the demo daemon as a real process, the page loaded in
headless Chromium (the system package, through chromedriver and selenium), every account,
bar and status and the instance list checked, a screenshot saved as a test artifact; and the real daemon's
/metrics through promtool.

Screenshots: ``test-artifacts/operator-page-phone.png`` and ``…-desktop.png`` at the
repository root (gitignored), rewritten by every run.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.http.test_metrics import promtool_check, samples
from tests.ops.demo_process import REPO, DemoProcess, demo_process

ARTIFACTS = REPO / "test-artifacts"
ACCOUNTS = ("demo-1", "demo-2")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.TemporaryDirectory(prefix="wad-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-extensions",
                 f"--user-data-dir={profile.name}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
        profile.cleanup()


def settled(daemon: DemoProcess) -> bool:
    status, body = daemon.get("/diag")
    if status != 200:
        return False
    diag = json.loads(body)
    accounts = diag["accounts"]
    # The heartbeat is written at the start of each retry period: the one that names both
    # accounts comes a period after they were taken.
    heartbeats = [i["accounts"] for i in (diag["cluster"] or {}).get("instances", [])]
    return (len(accounts) == len(ACCOUNTS)
            and all(a["state"] == "connected" and a["history"]["progress"] == 100
                    and a["realtimeWritten"] > 0 for a in accounts)
            and heartbeats == [list(ACCOUNTS)])


@pytest.mark.slow
def test_operator_page_in_headless_chromium(tmp_path: Path, browser: webdriver.Chrome) -> None:
    with demo_process(tmp_path, "--accounts", "2", "--messages", "600") as daemon:
        daemon.wait_until("both accounts connected, history done, live traffic, heartbeat", lambda: settled(daemon))

        # The real daemon's metrics are valid and carry real values.
        status, text = daemon.get("/metrics")
        assert status == 200
        promtool_check(text)
        found = samples(text)
        assert found[("wadaemon_messages_ingested_total",
                      (("account_id", "demo-1"), ("source", "history_sync")))] == 600
        assert found[("wadaemon_store_write_seconds_count", (("operation", "upsert_messages"),))] > 0
        assert found[("wadaemon_account_leases_held", ())] == len(ACCOUNTS)

        ARTIFACTS.mkdir(exist_ok=True)
        for name, (width, height) in (("phone", (412, 915)), ("desktop", (1280, 1000))):
            browser.set_window_size(width, height)
            browser.get(daemon.base + "/")
            assert browser.title == "wadaemon ops-test"
            assert browser.find_element(By.ID, "mode").text == "active"
            assert browser.find_element(By.ID, "store").text == "reachable"
            assert not browser.find_elements(By.ID, "store-down")
            sections = browser.find_elements(By.CSS_SELECTOR, "section.account")
            assert [s.get_attribute("data-account") for s in sections] == list(ACCOUNTS)
            for section in sections:
                text = section.text
                assert section.find_element(By.CSS_SELECTOR, "h2").text in ACCOUNTS
                assert "connected" in section.find_element(By.CSS_SELECTOR, ".state").text
                bar = section.find_element(By.CSS_SELECTOR, ".bar")
                assert bar.get_attribute("aria-valuenow") == "100"
                assert bar.find_element(By.CSS_SELECTOR, "span").size["width"] >= bar.size["width"] - 1
                for label in ("owner", "history sync", "journal backlog", "last realtime ingest",
                              "backfill", "recent-sync", "gaps"):
                    assert label in text.lower(), (label, text)
                assert "ago)" in text  # a last realtime ingest time was shown
                rows = section.find_elements(By.CSS_SELECTOR, ".threads tbody tr")
                assert 1 <= len(rows) <= 20
                assert all(row.find_element(By.CSS_SELECTOR, "td.time").text.endswith("ago)") for row in rows)
            # The instance list, from the heartbeats: this instance, holding both accounts.
            [row] = browser.find_elements(By.CSS_SELECTOR, "#instances tbody tr")
            assert row.get_attribute("data-instance") == "ops-test"
            cells = [cell.text for cell in row.find_elements(By.CSS_SELECTOR, "td")]
            assert "this instance" in cells[0]
            assert cells[1].endswith("ago") and "stale" not in cells[1]
            assert cells[2].split() == ["2", "demo-1,", "demo-2"]
            assert cells[3]  # the version
            # The page is usable at this width: nothing wider than the window.
            assert browser.execute_script(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1")
            # The refresh script works (and the CSP let it run): trigger it, see it report.
            browser.execute_script("document.dispatchEvent(new Event('visibilitychange'))")
            WebDriverWait(browser, 10).until(
                lambda b: b.find_element(By.ID, "refresh").text.startswith("refreshed"))
            assert len(browser.find_elements(By.CSS_SELECTOR, "section.account")) == len(ACCOUNTS)
            browser.execute_script("document.body.style.height = 'auto'")
            full = browser.execute_script("return document.documentElement.scrollHeight")
            browser.set_window_size(width, max(height, int(full) + 40))
            path = ARTIFACTS / f"operator-page-{name}.png"
            assert browser.save_screenshot(str(path))
            assert path.stat().st_size > 10_000
        assert daemon.stop() == 0
