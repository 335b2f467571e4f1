"""A shelved zone and the density's confidence on the operator's screen: headless Chromium
against an in-process dashboard (no broker, no worker; see test_dashboard_browser.py)."""

from __future__ import annotations

import time

import orjson
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from agents.dashboard.follower import apply_records
from schemas import format_ts

from . import test_dashboard_browser as dash
from .test_dashboard_browser import (
    ARTIFACTS,
    ZONE,
    BoardServer,
    csp_violations,
    js,
    sign_in,
    wait_css,
)

OTHER = "night-bazaar"
# The in-process dashboard and the headless Chromium of those tests (fixtures).
served = dash.served
browser = dash.browser


def shelve(zone: str, now_ms: int, for_ms: int, reason: str) -> bytes:
    return orjson.dumps({"zone_id": zone, "action": "shelve", "by": "somchai",
                         "at": format_ts(now_ms), "until": format_ts(now_ms + for_ms),
                         "reason": reason})


def test_a_shelved_zone_says_so_until_its_end_and_confidence_dims_the_density(
    served: BoardServer, browser: webdriver.Chrome
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    now_ms = int(time.time() * 1000)
    # The server's clock stands still: the badge that goes at `until` below goes by the
    # page's own timer (the server's side is tests/unit/test_dashboard_shelves.py).
    frozen = now_ms / 1000
    served.call(lambda: setattr(served.board, "clock", lambda: frozen))
    served.call(lambda: apply_records(served.board, "shelf", [
        shelve(ZONE, now_ms, 8_000, "ซ้อมพิธี rehearsal"),
        shelve(OTHER, now_ms, 3_600_000, "stage test")]))
    served.call(lambda: apply_records(served.board, "density", [orjson.dumps(
        {"zone_id": z, "window_end": format_ts(now_ms), "density": d, "confidence": c})
        for z, d, c in ((ZONE, 2.5, 0.82), (OTHER, 1.2, 0.31))]))
    sign_in(browser, served.url)
    wait_css(browser, ".conn.on", 10)

    row = f'#zones li[data-zone="{ZONE}"]'
    wait_css(browser, f'{row}[data-shelved="true"] .shelf-badge', 10)
    text = browser.find_element(By.CSS_SELECTOR, f"{row} .shelf").text
    until_bkk = time.strftime("%H:%M:%S", time.gmtime((now_ms + 8_000) // 1000 + 7 * 3600))
    assert "พักการแจ้งเตือน / Shelved" in text
    assert f"ถึง {until_bkk} ICT" in text  # Asia/Bangkok
    assert "โดย somchai" in text
    assert "ซ้อมพิธี rehearsal" in text
    # ... and on the map: the zone's outline says so, its marker has the label.
    wait_css(browser, f'path[data-zone="{ZONE}"][data-shelved="true"]', 5)
    label = browser.find_element(
        By.CSS_SELECTOR, f'.leaflet-tooltip.shelf-label[data-zone="{ZONE}"]')
    assert "พักการแจ้งเตือน / Shelved" in label.text
    # The density's confidence; below 0.5 the figure is dimmed.
    conf = browser.find_element(By.CSS_SELECTOR, f"{row} .conf")
    assert conf.text == "ความเชื่อมั่น 0.82"
    assert "low-conf" not in str(browser.find_element(
        By.CSS_SELECTOR, f"{row} .dens").get_attribute("class"))
    low = browser.find_element(By.CSS_SELECTOR, f'#zones li[data-zone="{OTHER}"] .dens')
    assert "low-conf" in str(low.get_attribute("class"))
    assert float(low.value_of_css_property("opacity")) < 0.5
    browser.save_screenshot(str(ARTIFACTS / "dashboard-shelved.png"))

    # At `until` the badge and the label go by themselves.
    WebDriverWait(browser, 15, poll_frequency=0.2,
                  ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: d.find_element(By.CSS_SELECTOR, row).get_attribute("data-shelved") == "false",
        "the shelf did not end at its until")
    assert not browser.find_elements(By.CSS_SELECTOR, f"{row} .shelf-badge")
    WebDriverWait(browser, 5, poll_frequency=0.1).until(  # it fades out (Leaflet: 200 ms)
        lambda d: not d.find_elements(
            By.CSS_SELECTOR, f'.leaflet-tooltip.shelf-label[data-zone="{ZONE}"]'),
        "the marker's label stayed")
    assert time.time() * 1000 >= now_ms + 8_000
    # An unshelve record ends the other one at once.
    other = f'#zones li[data-zone="{OTHER}"]'
    assert browser.find_element(By.CSS_SELECTOR, other).get_attribute("data-shelved") == "true"
    at = format_ts(now_ms)
    served.call(lambda: apply_records(served.board, "shelf", [orjson.dumps(
        {"zone_id": OTHER, "action": "unshelve", "by": "malee", "at": at, "until": at})]))
    wait_css(browser, f'{other}[data-shelved="false"]', 5)
    WebDriverWait(browser, 5, poll_frequency=0.1).until(
        lambda d: js(d, "return document.querySelectorAll('.shelf-label').length") == 0,
        "a marker's label stayed")
    assert csp_violations(browser) == []
