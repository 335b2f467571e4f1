"""Silence must never look like calm, in a real headless Chromium against the real broker.

No worker runs here: nothing is published, and the page must say so (the red banner, Thai and
English, zones greyed). A heartbeat on the health topic clears it; when heartbeats stop it
comes back; and when the dashboard server itself dies, the page shows the banner on its own.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from agents.config import Settings
from agents.heartbeat import heartbeat_record
from agents.topics import create_topics, topic_specs

from .conftest import make_settings
from .test_dashboard_browser import ARTIFACTS, sign_in, start_dashboard
from .test_dashboard_browser import browser as browser  # the fixture  # noqa: PLC0414
from .test_recovery import publish

STALE_S = 3


@pytest.fixture
def quiet(kafka: str, tmp_path: Path) -> Settings:
    s = make_settings(kafka, tmp_path)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    return s


def beat(s: Settings, worker: str = "w1") -> None:
    value = heartbeat_record(worker, [0], {0: None}, int(time.time() * 1000))
    asyncio.run(publish(s.bootstrap, s.topics.health, [(worker.encode(), value)]))


@pytest.fixture
def heartbeats(quiet: Settings) -> Iterator[threading.Event]:
    """Set the event to publish a heartbeat every 0.5 s (a live worker), clear it to stop."""
    on, done = threading.Event(), threading.Event()

    def run() -> None:
        while not done.is_set():
            if on.is_set():
                beat(quiet)
            done.wait(0.5)

    t = threading.Thread(target=run, name="heartbeats")
    t.start()
    try:
        yield on
    finally:
        done.set()
        t.join(30)


def banner_shown(driver: webdriver.Chrome) -> bool:
    return bool(driver.find_element(By.ID, "stale").is_displayed())


def test_the_page_says_when_it_hears_nothing(
    quiet: Settings, heartbeats: threading.Event, browser: webdriver.Chrome
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    proc, url = start_dashboard(quiet, SAFETOUR_DASHBOARD_STALE_S=str(STALE_S))
    try:
        sign_in(browser, url)
        wait = WebDriverWait(browser, 30, poll_frequency=0.2)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".conn.on"), "not connected")
        # Nothing published: after STALE_S the banner, in both languages, zones greyed.
        wait.until(banner_shown, "no banner while nothing is published")
        text = browser.find_element(By.ID, "stale").text
        assert "ไม่ได้รับข้อมูลจากระบบประมวลผลมา" in text
        assert "สถานะบนจอนี้อาจไม่เป็นปัจจุบัน" in text
        assert "No data from the processing pipeline for" in text
        assert "may be out of date" in text
        assert browser.find_elements(By.CSS_SELECTOR, "body.stale")
        paths = browser.find_elements(By.CSS_SELECTOR, 'path[data-stale="true"]')
        assert len(paths) >= 9
        assert {p.get_attribute("stroke") for p in paths} == {"#9e9e9e"}
        browser.save_screenshot(str(ARTIFACTS / "dashboard-silent.png"))

        # A worker's heartbeat arrives: the banner clears and the zones get their colour.
        heartbeats.set()
        wait.until(lambda d: not banner_shown(d), "banner still shown after a heartbeat")
        assert not browser.find_elements(By.CSS_SELECTOR, 'path[data-stale="true"]')
        assert not browser.find_elements(By.CSS_SELECTOR, "body.stale")
        # Heartbeats stop: it comes back.
        heartbeats.clear()
        wait.until(banner_shown, "no banner after the heartbeats stopped")
        heartbeats.set()
        wait.until(lambda d: not banner_shown(d), "banner still shown after heartbeats resumed")

        # The dashboard server dies while the pipeline is fine: the page notices by itself.
        proc.terminate()
        proc.wait(15)
        wait.until(banner_shown, "no banner on a page whose server is gone")
        assert browser.find_elements(By.CSS_SELECTOR, ".conn.off")
        browser.save_screenshot(str(ARTIFACTS / "dashboard-server-gone.png"))
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(15)
