"""The operations-centre dashboard in a real headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium), against the real broker and a real worker.

Open the dashboard, publish a surge, see the zone turn critical on the map and in the list and
the alert arrive in the feed, acknowledge it, and read the acknowledgement back from Kafka.
Screenshots go to test-artifacts/ (kept by CI, ignored by git)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from agents.config import Settings
from agents.dashboard.board import Board
from agents.dashboard.handlers import build_web_app, dashboard_runner
from schemas import Ack, decode_ack, format_ts, load_zones
from streams.grid import cell_areas

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


# -- The operator's view, against an in-process dashboard (no broker, no worker) -------------
# The web side of `safetour dashboard` (build_web_app) serves a Board that the test feeds
# directly, on the server's own event loop: what the page does with episodes, thresholds,
# phone screens and sound, in seconds.

class BoardServer:
    """A dashboard web server in a thread of its own, serving ``board``."""

    def __init__(self) -> None:
        self.board = Board(load_zones(REPO / "deploy/zones/phitsanulok.yaml"))
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="dashboard-web")

    def __enter__(self) -> BoardServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the in-process dashboard did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()

        async def publish(key: bytes, value: bytes) -> None:
            ack = decode_ack(value)
            assert isinstance(ack, Ack)
            self.board.on_ack(ack)  # as the Kafka follower would, once the ack is on the topic

        runner = dashboard_runner(build_web_app(
            self.board, {TOKEN: "somchai"}, publish, health_every_s=1.0))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/"
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def call(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the server's loop (the board is the loop's) and wait for it."""
        async def run() -> None:
            fn()
        asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def alert(self, alert_id: str, zone: str, level: str, status: str, ts_ms: int,
              **extra: Any) -> None:
        a = {"alert_id": alert_id, "zone_id": zone, "level": level, "status": status,
             "reason": "density", "density": 5.4 if level == "critical" else 2.5,
             "occupancy": None, "window_start": format_ts(ts_ms - 60_000),
             "window_end": format_ts(ts_ms), "ts": format_ts(ts_ms),
             "message": {"th": f"ระดับ{level}", "en": f"level {level}"}, **extra}
        self.call(lambda: self.board.on_alert(a))

    def density(self, zone: str, values: list[float | None], end_ms: int) -> None:
        def feed() -> None:
            for i, v in enumerate(values):
                self.board.on_density({"zone_id": zone, "density": v, "window_end": format_ts(
                    end_ms - (len(values) - 1 - i) * 5000)})
        self.call(feed)


@pytest.fixture
def served() -> Iterator[BoardServer]:
    with BoardServer() as s:
        yield s


def js(driver: webdriver.Chrome, script: str) -> Any:
    return driver.execute_script(script)


def body_data(driver: webdriver.Chrome, name: str) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").get_attribute(f"data-{name}"))


def test_one_card_per_episode_with_its_history_thresholds_and_drill_badge(
    served: BoardServer, browser: webdriver.Chrome
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    t0 = int(time.time() * 1000) - 5 * 60_000  # an episode that started 5 minutes ago
    served.density(ZONE, [1.0, 1.5, None, None, 3.0, 4.2, 5.4], t0 + 4 * 60_000)
    sign_in(browser, served.url)
    wait_css(browser, ".conn.on", 10)
    ep = f"{ZONE}:{t0}"
    served.alert(ep, ZONE, "elevated", "raised", t0, seq=1, episode_start=format_ts(t0))
    served.alert(ep, ZONE, "high", "escalated", t0 + 60_000, seq=2)
    served.alert(ep, ZONE, "critical", "escalated", t0 + 120_000, seq=3)
    served.alert(ep, ZONE, "critical", "escalated", t0 + 120_000, seq=3)  # a duplicate
    old = "naresuan-bridge:1"  # an episode that ended
    served.alert(old, "naresuan-bridge", "high", "raised", t0 - 600_000, seq=1)
    served.alert(old, "naresuan-bridge", "normal", "resolved", t0 - 300_000, seq=2)
    drill = "night-bazaar:1"
    served.alert(drill, "night-bazaar", "elevated", "raised", t0 + 30_000, exercise=True)

    card = f'#feed li.card[data-alert="{ep}"]'
    wait_css(browser, f'{card}[data-level="critical"]', 10)
    wait_css(browser, f'#feed li.card[data-alert="{old}"].resolved', 10)
    wait_css(browser, f'#feed li.card[data-alert="{drill}"]', 10)
    # One card per episode (alert_id), not one per record; open ones on top, the most severe
    # first; the resolved one below them.
    order = js(browser, "return [...document.querySelectorAll('#feed > li')]"
                        ".map((li) => li.dataset.alert)")
    assert order == [ep, drill, old]
    steps = browser.find_elements(By.CSS_SELECTOR, f"{card} .history .step")
    assert [(s.get_attribute("data-level"), s.get_attribute("data-status")) for s in steps] == [
        ("elevated", "raised"), ("high", "escalated"), ("critical", "escalated")]
    # Each step with its time in Asia/Bangkok (UTC+7, no daylight saving).
    bkk = [time.strftime("%H:%M:%S", time.gmtime((t0 + d) / 1000 + 7 * 3600))
           for d in (0, 60_000, 120_000)]
    assert [s.find_element(By.TAG_NAME, "time").text for s in steps] == bkk
    text = browser.find_element(By.CSS_SELECTOR, card).text
    assert "วิกฤต" in text
    assert "เฝ้าระวัง" in text
    assert "ยังไม่มีผู้รับทราบ" not in text  # open: the acknowledge button instead
    # Time since start, counting on its own: about 5 minutes.
    elapsed = browser.find_element(By.CSS_SELECTOR, f"{card} .elapsed").text
    assert elapsed.startswith(("5 นาที", "4 นาที")), elapsed
    first = elapsed
    WebDriverWait(browser, 5, poll_frequency=0.2).until(
        lambda d: d.find_element(By.CSS_SELECTOR, f"{card} .elapsed").text != first,
        "the time since start does not count")
    # The resolved episode: faded, its duration and that nobody acknowledged it.
    ended = browser.find_element(By.CSS_SELECTOR, f'#feed li.card[data-alert="{old}"]')
    assert ended.value_of_css_property("opacity") == "0.55"
    assert "5 นาที 0 วินาที" in ended.text
    assert "ยังไม่มีผู้รับทราบ" in ended.text
    # The drill: marked as such.
    badge = browser.find_element(By.CSS_SELECTOR, f'#feed li[data-alert="{drill}"] .drill-badge')
    assert badge.text == "DRILL / ฝึกซ้อม"
    assert not browser.find_elements(By.CSS_SELECTOR, f"{card} .drill-badge")

    # Acknowledged on another screen: this card says who and when, in place.
    served.call(lambda: served.board.on_ack(Ack(ep, "malee", t0 + 150_000, "ส่งทีมแล้ว")))
    WebDriverWait(browser, 10, poll_frequency=0.2,
                  ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: "malee" in d.find_element(By.CSS_SELECTOR, f"{card} .acked").text)
    assert len(browser.find_elements(By.CSS_SELECTOR, card)) == 1

    # The sparkline: the density with a gap where the zone was blind, and the three
    # threshold lines at the registry's levels (standing crowd: 2.0, 3.5, 5.0 p/m²).
    spark = f'#zones li[data-zone="{ZONE}"] svg.spark'
    lines = browser.find_elements(By.CSS_SELECTOR, f"{spark} line.th")
    assert {(ln.get_attribute("data-level"), ln.get_attribute("data-value")) for ln in lines} == {
        ("elevated", "2"), ("high", "3.5"), ("critical", "5")}
    ys = {ln.get_attribute("data-level"): float(str(ln.get_attribute("y1"))) for ln in lines}
    assert ys["critical"] < ys["high"] < ys["elevated"]  # higher density, higher on the chart
    assert len(browser.find_elements(By.CSS_SELECTOR, f"{spark} polyline.dens-line")) == 2
    browser.save_screenshot(str(ARTIFACTS / "dashboard-episodes.png"))

    browser.find_element(By.ID, "lang").click()  # English: the same cards, relabelled
    WebDriverWait(browser, 5, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: "critical" in d.find_element(By.CSS_SELECTOR, card).text)
    assert "not acknowledged" in browser.find_element(
        By.CSS_SELECTOR, f'#feed li.card[data-alert="{old}"]').text
    browser.save_screenshot(str(ARTIFACTS / "dashboard-episodes-en.png"))
    assert csp_violations(browser) == []


@pytest.mark.parametrize(("width", "height"), [(390, 844), (360, 740)])
def test_readable_on_a_phone(served: BoardServer, browser: webdriver.Chrome,
                             width: int, height: int) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})
    t0 = int(time.time() * 1000) - 120_000
    served.density(ZONE, [2.0, 3.0, 4.0, 5.5], t0 + 60_000)
    browser.get(f"{served.url}login")  # the sign-in form fits too
    assert js(browser, "return [window.innerWidth, document.documentElement.scrollWidth]") == [
        width, width]
    sign_in(browser, served.url)
    wait_css(browser, ".conn.on", 10)
    served.alert(f"{ZONE}:1", ZONE, "high", "raised", t0, seq=1)
    served.alert(f"{ZONE}:1", ZONE, "critical", "escalated", t0 + 60_000, seq=2)
    served.alert("songkran-street:1", "songkran-street", "elevated", "raised", t0)
    wait_css(browser, f'#feed li.card[data-alert="{ZONE}:1"][data-level="critical"]', 10)
    # Nothing overflows sideways. (A phone lays a page that is too wide out wider than its
    # screen and shrinks it: innerWidth grows too, so both are checked.)
    assert js(browser, "return window.innerWidth") == width
    assert js(browser, "return document.documentElement.scrollWidth") <= width
    # ... the cards, the map and the zones stack in one column (the alerts first: what an
    # officer in the field needs), each as wide as the screen.
    boxes = js(browser, """return ['#feed li.card', '#map', '#zones'].map((s) => {
        const r = document.querySelector(s).getBoundingClientRect();
        return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; });""")
    cards, map_box, zone_list = boxes
    assert cards["bottom"] <= map_box["top"]
    assert map_box["bottom"] <= zone_list["top"]
    for box in boxes:
        assert box["left"] >= 0
        assert box["right"] <= width
        assert box["right"] - box["left"] > width * 0.9
    browser.save_screenshot(str(ARTIFACTS / f"dashboard-phone-{width}.png"))


def test_the_critical_sound_is_armed_at_the_start_of_the_shift_and_can_be_muted(
    served: BoardServer, browser: webdriver.Chrome
) -> None:
    t0 = int(time.time() * 1000) - 60_000
    sign_in(browser, served.url)
    wait_css(browser, ".conn.on", 10)
    # Before the shift starts: no sound (the browser would block it), the button asks for it.
    served.alert("chan-palace:1", "chan-palace", "critical", "raised", t0)
    wait_css(browser, '#feed li[data-alert="chan-palace:1"]', 10)
    arm = browser.find_element(By.ID, "arm")
    assert arm.is_displayed()
    assert "เริ่มเวร" in arm.text
    assert (body_data(browser, "audio"), body_data(browser, "beeps")) == ("off", "0")
    assert not browser.find_element(By.ID, "mute").is_displayed()

    arm.click()  # the user gesture that lets the page play sound
    WebDriverWait(browser, 5, poll_frequency=0.1).until(
        lambda d: body_data(d, "audio") == "armed", "the click did not arm the sound")
    assert not arm.is_displayed()
    assert js(browser, "return document.querySelector('#arm').hidden") is True
    assert body_data(browser, "beeps") == "0"  # arming alone sounds no alarm

    def beeps(n: int) -> None:
        WebDriverWait(browser, 5, poll_frequency=0.1).until(
            lambda d: body_data(d, "beeps") == str(n), f"not {n} alarms played")

    # A new critical episode: the alarm plays. A record of the same, still critical: it does
    # not play again; an escalation of another episode to critical does.
    served.alert("walking-street:1", "walking-street", "critical", "raised", t0 + 1000)
    beeps(1)
    served.alert("walking-street:1", "walking-street", "critical", "updated", t0 + 2000)
    served.alert("station-forecourt:1", "station-forecourt", "high", "raised", t0 + 2000)
    wait_css(browser, '#feed li[data-alert="station-forecourt:1"]', 10)
    assert body_data(browser, "beeps") == "1"
    served.alert("station-forecourt:1", "station-forecourt", "critical", "escalated", t0 + 3000)
    beeps(2)
    # Muted: a new critical episode is shown but silent; unmuted, the next one plays.
    mute = browser.find_element(By.ID, "mute")
    mute.click()
    assert (body_data(browser, "audio"), mute.get_attribute("aria-pressed")) == ("muted", "true")
    served.alert("suan-chom-nan:1", "suan-chom-nan", "critical", "raised", t0 + 4000)
    WebDriverWait(browser, 5, poll_frequency=0.1).until(
        lambda d: body_data(d, "silenced") == "1", "the muted alarm was not noticed")
    assert body_data(browser, "beeps") == "2"
    mute.click()
    assert body_data(browser, "audio") == "armed"
    served.alert("night-bazaar:1", "night-bazaar", "critical", "raised", t0 + 5000)
    beeps(3)
    # The server restarts (a new boot id, the stream cut): the page reconnects and is sent the
    # whole feed again; what it already had sounds no second time.
    def restart() -> None:
        served.board.boot = "restarted"
        served.board.end_streams()
    served.call(restart)
    WebDriverWait(browser, 10, poll_frequency=0.1).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".conn.off"), "the stream was not cut")
    served.alert("wat-yai-grounds:1", "wat-yai-grounds", "elevated", "raised", t0 + 6000)
    wait_css(browser, '#feed li[data-alert="wat-yai-grounds:1"]', 15)
    assert body_data(browser, "beeps") == "3"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#feed li.card")) == 6  # no duplicates
    # The sound is WebAudio made in the page: nothing was fetched for it.
    fetched = js(browser, "return performance.getEntriesByType('resource').map((e) => e.name)")
    assert not [u for u in fetched if not u.startswith(served.url)]
    assert not [u for u in fetched if u.rsplit(".", 1)[-1] in ("mp3", "ogg", "wav", "m4a")]
    assert csp_violations(browser) == []


def map_cells(driver: webdriver.Chrome, zone: str) -> dict[str, dict[str, Any]]:
    """The heat map's rectangles of ``zone`` on the map: cell id -> level, class, title and
    the rectangle's box on the screen."""
    got = js(driver, f"""return [...document.querySelectorAll(
        '.leaflet-heat-pane path.heat-cell[data-zone="{zone}"]')].map((p) => {{
        const r = p.getBoundingClientRect();
        return [p.dataset.cell, {{level: p.dataset.level, cls: p.getAttribute("class"),
          title: (p.querySelector("title") || {{}}).textContent,
          box: [r.left, r.top, r.right, r.bottom]}}]; }});""")
    return dict(got)


def assert_over_the_zone(driver: webdriver.Chrome, zone: str,
                         cells: dict[str, dict[str, Any]]) -> None:
    """The cells lie over the zone's outline on the screen, north above south and west left
    of east, in a pane above the zone's outline and below the other zones' outlines (the
    vihara, inside the grounds, stays in sight) and the zones' dots."""
    outline = js(driver, f"""const r = document.querySelector(
        'path[data-zone="{zone}"]:not(.heat-cell)').getBoundingClientRect();
        return [r.left, r.top, r.right, r.bottom];""")
    for c in cells.values():
        left, top, right, bottom = c["box"]
        assert right > left
        assert bottom > top
        # the grid's top row runs past the polygon's northern edge (half of it inside)
        assert left >= outline[0] - 2
        assert right <= outline[2] + 2
        assert bottom <= outline[3] + 2
        assert top >= outline[1] - (bottom - top) - 2
    box = {k: c["box"] for k, c in cells.items()}
    if "r0c1" in box and "r5c1" in box:
        assert box["r5c1"][1] < box["r0c1"][1]  # north above south
    assert box["r2c0"][0] < box["r2c4"][0]  # west left of east
    panes = js(driver, """return ['overlay', 'heat', 'zones', 'dots'].map((p) => Number(
        getComputedStyle(document.querySelector(`.leaflet-${p}-pane`)).zIndex));""")
    assert panes == sorted(panes)
    assert js(driver, f"""return document.querySelector(
        'path[data-zone="{zone}"]:not(.heat-cell)').closest('.leaflet-pane').classList
        .contains('leaflet-overlay-pane')""")
    # What is under the pointer at the middle of the vihara: the vihara, not a cell.
    if zone == "wat-yai-grounds" and js(driver, "return window.innerWidth") > 800:
        assert js(driver, """const r = document.querySelector('path[data-zone="wat-yai-vihara"]')
            .getBoundingClientRect();
            const e = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
            return e && e.dataset.zone;""") == "wat-yai-vihara"


def test_hot_spot_readings_show_as_cells_over_the_zone(
    stack: Settings, dashboard: str, browser: webdriver.Chrome
) -> None:
    """The whole way: grid_count readings of wat-yai-grounds with a dense pocket (r4c3 at
    critical, r1c0 at elevated) through the worker's density engine to the dashboard's map,
    at the levels of the zone (moving crowd: 1.08, 2.17, 3.5 p/m²)."""
    [grounds] = [z for z in load_zones(REPO / "deploy/zones/phitsanulok.yaml")
                 if z.zone_id == "wat-yai-grounds"]
    g = grounds.grid
    assert g is not None
    areas = cell_areas(grounds).tolist()
    target = [0.3] * (g.rows * g.cols)
    target[4 * g.cols + 3] = 4.0
    target[1 * g.cols + 0] = 1.5
    t0 = (int(time.time()) - 1800) * 1000
    msgs = []
    for t in range(0, 40, 2):
        cells = [{"row": i // g.cols, "col": i % g.cols, "count": round(d * a)}
                 for i, (d, a) in enumerate(zip(target, areas, strict=True)) if a > 0]
        for ev in ({"event_id": f"heat-grid-{t}", "sensor_id": "wy-grid", "kind": "grid_count",
                    "cells": cells},
                   {"event_id": f"heat-wifi-{t}", "sensor_id": "wy-wifi-1",
                    "kind": "device_count", "devices": 4000}):
            msgs.append((b"wat-yai-grounds", orjson.dumps(
                ev | {"zone_id": "wat-yai-grounds", "ts": t0 + t * 1000})))
    sign_in(browser, dashboard)
    wait_css(browser, ".conn.on")
    asyncio.run(publish(stack.bootstrap, stack.topics.sensor_events, msgs))
    WebDriverWait(browser, 90, poll_frequency=0.5).until(
        lambda d: map_cells(d, "wat-yai-grounds").get("r4c3", {}).get("level") == "critical",
        "no critical cell r4c3 over wat-yai-grounds on the map")
    cells = map_cells(browser, "wat-yai-grounds")
    assert len(cells) == g.rows * g.cols  # every cell of the grounds is judged
    assert cells["r1c0"]["level"] == "elevated"
    assert {c["level"] for k, c in cells.items() if k not in ("r4c3", "r1c0")} == {"normal"}
    assert "hot" in cells["r4c3"]["cls"]
    assert "4.00 คน/ตร.ม. · วิกฤต" in cells["r4c3"]["title"]
    assert_over_the_zone(browser, "wat-yai-grounds", cells)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-heat-cells.png"))
    assert csp_violations(browser) == []
