"""The operations-centre dashboard in a real headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium), against the real broker and a real worker.

Open the dashboard, publish a surge, see the zone turn critical on the map and in the list and
the alert arrive in the feed, acknowledge it, and read the acknowledgement back from Kafka.
Screenshots go to test-artifacts/ (kept by CI, ignored by git)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from agents.config import Settings

from .conftest import REPO, free_port, payloads, poll_until, settings_env
from .test_recovery import publish

ARTIFACTS = REPO / "test-artifacts"
TOKEN = "browser-test-token-0123456789"
ZONE = "wat-yai-vihara"


def start_dashboard(s: Settings, *args: str, **env: str
                    ) -> tuple[subprocess.Popen[bytes], str]:
    """``safetour dashboard`` on a free port with operator somchai; its URL once healthy.
    Its output goes to ``s.state_dir / "dashboard.log"``."""
    port = free_port()
    log = s.state_dir / "dashboard.log"
    env = settings_env(s) | {"SAFETOUR_DASHBOARD_TOKENS": f"somchai:{TOKEN}"} | env
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "agents", "dashboard", "--port",
                                 str(port), *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    poll_until(healthy, timeout=60, what="dashboard up", proc=proc, log=log)
    return proc, url


@pytest.fixture(scope="module")
def dashboard(stack: Settings) -> Iterator[str]:
    proc, url = start_dashboard(stack)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1400,900", "--lang=th-TH", f"--user-data-dir={tmp_path}/ud"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # for csp_violations()
    driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(driver: webdriver.Chrome, url: str, token: str = TOKEN) -> None:
    """Type the token into the sign-in form (tokens never go in a URL)."""
    driver.get(f"{url}login")
    field = driver.find_element(By.CSS_SELECTOR, "form.login-box input#token")
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.login-box button[type=submit]").click()
    WebDriverWait(driver, 10).until(lambda _: gone(field), "the form was not submitted")


def gone(element: WebElement) -> bool:
    """Whether the page that held ``element`` has been replaced.

    selenium's ``staleness_of`` only knows StaleElementReferenceException; Chromium sometimes
    reports the same fact, mid-navigation, as an "unknown error" whose message says the node
    "does not belong to the document" (a CI run failed on it).
    """
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as e:
        if "does not belong to the document" in str(e) or "No node with given id" in str(e):
            return True
        raise
    return False


def csp_violations(driver: webdriver.Chrome) -> list[str]:
    """What the page's console said about the Content-Security-Policy (nothing, we hope)."""
    return [e["message"] for e in driver.get_log("browser")
            if "Content Security Policy" in e["message"] or "Content-Security-Policy"
            in e["message"]]


def surge(s: Settings) -> None:
    """40 s calm, then 60 s at 6 persons/m² on one camera (critical for a standing crowd)."""
    t0 = (int(time.time()) - 3600) * 1000
    msgs = []
    for t in range(100):
        density = 1.0 if t < 40 else 6.0
        ev = {"event_id": f"browser-{t}", "sensor_id": "wy-vihara-cam-1", "zone_id": ZONE,
              "kind": "occupancy", "ts": t0 + t * 1000, "count": round(density * 300)}
        msgs.append((ZONE.encode(), orjson.dumps(ev)))
    asyncio.run(publish(s.bootstrap, s.topics.sensor_events, msgs))


def wait_css(driver: webdriver.Chrome, css: str, timeout: float = 60) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, css), message=f"no {css}")


def test_operator_sees_the_surge_and_acknowledges_it(
    stack: Settings, dashboard: str, browser: webdriver.Chrome
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    browser.get(dashboard)  # not signed in: the login page
    assert browser.find_elements(By.CSS_SELECTOR, "form.login-box input#token")
    sign_in(browser, dashboard)
    wait_css(browser, f'#zones li[data-zone="{ZONE}"][data-level="normal"]')
    wait_css(browser, ".conn.on")
    assert browser.find_element(By.ID, "operator").text == "somchai"
    paths = browser.find_elements(By.CSS_SELECTOR, "path.leaflet-interactive")
    assert len(paths) >= 9  # every zone of the registry is drawn

    surge(stack)
    wait_css(browser, f'#zones li[data-zone="{ZONE}"][data-level="critical"]')
    wait_css(browser, f'path[data-zone="{ZONE}"][data-level="critical"]')
    wait_css(browser, '#feed li[data-level="critical"]')
    browser.save_screenshot(str(ARTIFACTS / "dashboard-critical.png"))

    def acknowledge(d: webdriver.Chrome) -> str:
        """Type the note and click; all again if the feed is redrawn meanwhile (an element
        found before the redraw is stale: the wait ignores that and calls this again)."""
        [item, *_] = d.find_elements(By.CSS_SELECTOR, '#feed li[data-level="critical"]')
        assert "วิกฤต" in item.text  # the Thai UI by default
        alert_id = str(item.get_attribute("data-alert"))
        note = item.find_element(By.CSS_SELECTOR, ".ack input")
        note.send_keys("ส่งเจ้าหน้าที่ไปที่ประตูวิหารแล้ว")
        item.find_element(By.CSS_SELECTOR, ".ack-button").click()
        return alert_id

    alert_id = WebDriverWait(browser, 30, poll_frequency=0.2,
                             ignored_exceptions=(StaleElementReferenceException,)).until(
        acknowledge, message="could not acknowledge the critical alert")
    # The feed is redrawn as events arrive: read the text inside the wait, so an element
    # replaced between finding and reading it is simply found again.
    acked_css = f'#feed li[data-alert="{alert_id}"] .acked'
    WebDriverWait(browser, 30, poll_frequency=0.2,
                  ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: any("somchai" in e.text for e in d.find_elements(By.CSS_SELECTOR, acked_css)),
        message=f"no {acked_css} naming somchai")

    def ack_in_kafka() -> Any:
        return [a for a in payloads(stack.bootstrap, stack.topics.acks)
                if a["alert_id"] == alert_id]

    [ack] = poll_until(ack_in_kafka, timeout=30, what="the ack on the acks topic")
    assert ack["operator"] == "somchai"
    assert ack["note"] == "ส่งเจ้าหน้าที่ไปที่ประตูวิหารแล้ว"
    assert ack["zone_id"] == ZONE

    browser.find_element(By.ID, "lang").click()  # English
    WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: "critical" in d.find_element(
            By.CSS_SELECTOR, f'#feed li[data-alert="{alert_id}"]').text)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-acknowledged-en.png"))

    # A reload (a reconnect from scratch) shows the same state: level, alert and who acked.
    browser.refresh()
    wait_css(browser, f'#zones li[data-zone="{ZONE}"][data-level="critical"]')
    WebDriverWait(browser, 30, poll_frequency=0.2,
                  ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: any("somchai" in e.text for e in d.find_elements(By.CSS_SELECTOR, acked_css)),
        message=f"no {acked_css} naming somchai after the reload")
    # All of it ran under the Content-Security-Policy, which the page never violated.
    with urllib.request.urlopen(dashboard + "login") as r:
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert csp_violations(browser) == []
