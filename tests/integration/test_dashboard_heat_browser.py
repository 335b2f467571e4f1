"""A grid zone's heat map in a real headless Chromium, against an in-process dashboard (no
broker, no worker; tests/integration/test_dashboard_browser.py has the whole way, readings
through the worker): the cells under the zone's row and over the zone on the map, live, in
both languages, gone while the screen is stale or when a newer record has none."""

from __future__ import annotations

import time

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from schemas import format_ts

from .test_dashboard_browser import (
    ARTIFACTS,
    ZONE,
    BoardServer,
    assert_over_the_zone,
    csp_violations,
    js,
    map_cells,
    sign_in,
    wait_css,
)
from .test_dashboard_browser import browser as browser  # the fixture  # noqa: PLC0414
from .test_dashboard_browser import served as served  # the fixture  # noqa: PLC0414


@pytest.mark.parametrize("width", [1280, 360])
def test_a_grid_zone_shows_its_heat_map(served: BoardServer, browser: webdriver.Chrome,
                                        width: int) -> None:
    """wat-yai-grounds (6 x 5 cells of 50 m): the newest density record's cells as a grid
    coloured by the zone's levels (moving crowd: elevated 1.08, high 2.17), the south row at
    the bottom, a cell without a value blank; it fits a phone's width."""
    if width < 500:
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": 740, "deviceScaleFactor": 2, "mobile": True})
    zone = "wat-yai-grounds"
    t0 = int(time.time() * 1000) - 60_000
    cells: list[float | None] = [0.4] * 30
    cells[3 * 5 + 2] = 2.9  # r3c2: a pocket at high
    cells[0] = None  # r0c0: no value
    cells[29] = 1.2  # r5c4: elevated
    sign_in(browser, served.url)
    wait_css(browser, ".conn.on", 10)

    def feed() -> None:
        served.board.on_density({"zone_id": zone, "density": 0.45, "window_end": format_ts(t0),
                                 "hot_cell": "r3c2", "hot_density": 2.9, "cells": cells})
    served.call(feed)
    hot = wait_css(browser, f'#zones li[data-zone="{zone}"] .heat .hc[data-cell="r3c2"]', 10)
    assert hot[0].get_attribute("data-level") == "high"
    got = js(browser, f"""return [...document.querySelectorAll(
        '#zones li[data-zone="{zone}"] .heat .hc')].map((c) => [c.dataset.cell, c.dataset.level,
        c.getBoundingClientRect().top, c.getBoundingClientRect().left]);""")
    assert len(got) == 30
    by_cell = {c: (lv, top, left) for c, lv, top, left in got}
    assert by_cell["r0c0"][0] == "none"
    assert by_cell["r5c4"][0] == "elevated"
    assert sum(1 for lv, _, _ in by_cell.values() if lv == "normal") == 27
    assert by_cell["r5c0"][1] < by_cell["r0c0"][1]  # north above south
    assert by_cell["r0c0"][2] < by_cell["r0c4"][2]  # west left of east
    # A zone without a grid has no heat map; nothing overflows sideways.
    assert not browser.find_elements(By.CSS_SELECTOR, f'#zones li[data-zone="{ZONE}"] .heat')
    assert js(browser, "return document.documentElement.scrollWidth") <= js(
        browser, "return window.innerWidth")
    # The same cells over the zone on the map: one rectangle a cell with a value.
    on_map = map_cells(browser, zone)
    assert len(on_map) == 29  # r0c0 has no value
    assert on_map["r3c2"]["level"] == "high"
    assert "lvl-high" in on_map["r3c2"]["cls"]
    assert "hot" in on_map["r3c2"]["cls"]  # the densest: outlined, not only coloured
    assert on_map["r3c2"]["title"] == (
        "ลานวัดพระศรีรัตนมหาธาตุ (วัดใหญ่) · ช่อง r3c2 · 2.90 คน/ตร.ม. · สูง · หนาแน่นที่สุด")
    assert on_map["r5c4"]["level"] == "elevated"
    assert sum(1 for c in on_map.values() if c["level"] == "normal") == 27
    assert_over_the_zone(browser, zone, on_map)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"dashboard-heatmap-{width}.png"))

    # Live: a new record moves the pocket (r3c2 back to normal, r1c1 critical) ...
    cells2: list[float | None] = [0.4] * 30
    cells2[1 * 5 + 1] = 3.5
    served.call(lambda: served.board.on_density({
        "zone_id": zone, "density": 0.5, "window_end": format_ts(t0 + 5000), "cells": cells2}))
    WebDriverWait(browser, 10, poll_frequency=0.2).until(
        lambda d: map_cells(d, zone).get("r1c1", {}).get("level") == "critical",
        "the map's cells did not follow the new record")
    on_map = map_cells(browser, zone)
    assert len(on_map) == 30
    assert on_map["r3c2"]["level"] == "normal"
    assert "lvl-high" not in on_map["r3c2"]["cls"]
    browser.find_element(By.ID, "lang").click()  # ... and the titles follow the language
    WebDriverWait(browser, 5, poll_frequency=0.2).until(
        lambda d: map_cells(d, zone)["r1c1"]["title"].endswith("3.50 p/m² · critical · densest"))
    # While the screen may be out of date (the banner), no cells; back when data is.
    served.call(lambda: served.board.kafka_failed("test: Kafka unreachable"))
    WebDriverWait(browser, 10, poll_frequency=0.2).until(
        lambda d: not map_cells(d, zone), "cells shown while the screen is stale")
    served.call(lambda: served.board.kafka_failed(None))
    WebDriverWait(browser, 10, poll_frequency=0.2).until(
        lambda d: len(map_cells(d, zone)) == 30, "cells not back once data is")
    # A record without cells (the grid went quiet): the heat map goes, on the map and in
    # the row.
    served.call(lambda: served.board.on_density({
        "zone_id": zone, "density": 0.5, "window_end": format_ts(t0 + 10_000)}))
    WebDriverWait(browser, 10, poll_frequency=0.2).until(
        lambda d: not map_cells(d, zone), "the cells of an old record stayed on the map")
    assert not browser.find_elements(By.CSS_SELECTOR, f'#zones li[data-zone="{zone}"] .heat')
    assert csp_violations(browser) == []
