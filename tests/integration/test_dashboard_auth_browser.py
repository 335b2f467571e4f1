"""Signing in to the dashboard, in a real headless Chromium against a real `safetour
dashboard` (the broker only for its topics; no worker).

The one-time link signs in once and is refused the second time; the cookie is a session id
(HttpOnly, SameSite=Strict), not the token; signing out revokes the session (the old cookie,
put back, no longer works); a session past its lifetime (SAFETOUR_DASHBOARD_SESSION_S, short
here) sends the open page back to the sign-in form by itself; failed sign-ins are
rate-limited; and nothing of it breaks the Content-Security-Policy or shows up in the log."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from agents.config import Settings

from .conftest import poll_until
from .test_dashboard_browser import ARTIFACTS, TOKEN, csp_violations, sign_in, start_dashboard
from .test_dashboard_browser import browser as browser  # the fixture  # noqa: PLC0414
from .test_dashboard_health_browser import quiet as quiet  # the fixture  # noqa: PLC0414

SESSION_S = 15  # long enough for each step below, short enough to watch one end
COOKIE = "safetour_session"


def signed_in(driver: webdriver.Chrome) -> None:
    WebDriverWait(driver, 20, poll_frequency=0.2).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".conn.on"), "not signed in and connected")
    assert driver.find_element(By.ID, "operator").text == "somchai"


def on_login_form(driver: webdriver.Chrome) -> bool:
    return bool(driver.current_url.endswith("/login")
                and driver.find_elements(By.CSS_SELECTOR, "form.login-box input#token"))


def status_of(url: str, cookie: str) -> int:
    req = urllib.request.Request(url, headers={"Cookie": f"{COOKIE}={cookie}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_sign_in_sessions_and_the_one_time_link(
    quiet: Settings, browser: webdriver.Chrome
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    log = quiet.state_dir / "dashboard.log"
    proc, url = start_dashboard(quiet, "--login-link", "somchai",
                                SAFETOUR_DASHBOARD_SESSION_S=str(SESSION_S))
    try:
        printed = poll_until(lambda: re.search(r"one-time sign-in link for somchai: (\S+)",
                                               log.read_text()), timeout=10, what="the link")
        link = printed.group(1)
        assert link.startswith(f"{url}login?once=")
        assert TOKEN not in link

        # 1. The link signs in; the cookie is a session id, not the token.
        browser.get(link)
        signed_in(browser)
        cookie = browser.get_cookie(COOKIE)
        assert cookie is not None
        first_sid = cookie["value"]
        assert first_sid != TOKEN
        assert len(first_sid) >= 43
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert cookie["secure"] is False  # plain HTTP on loopback

        # 2. The same link a second time: refused.
        browser.delete_all_cookies()
        browser.get(link)
        assert on_login_form(browser) or "once=" in browser.current_url
        assert "already used" in browser.find_element(By.CSS_SELECTOR, ".error").text
        assert browser.get_cookie(COOKIE) is None
        browser.save_screenshot(str(ARTIFACTS / "dashboard-link-used.png"))

        # 3. The form signs in; signing out revokes the session: its cookie, put back, fails.
        sign_in(browser, url)
        signed_in(browser)
        cookie = browser.get_cookie(COOKIE)
        assert cookie is not None
        sid = cookie["value"]
        assert status_of(url + "api/me", sid) == 200
        browser.find_element(By.CSS_SELECTOR, 'a[href="/logout"]').click()
        WebDriverWait(browser, 10).until(on_login_form, "not back on the sign-in form")
        assert status_of(url + "api/me", sid) == 401
        browser.add_cookie({"name": COOKIE, "value": sid, "path": "/"})
        browser.get(url)
        assert on_login_form(browser)

        # 4. A session past its lifetime: the open page goes back to the form by itself.
        sign_in(browser, url)
        signed_in(browser)
        WebDriverWait(browser, SESSION_S + 30, poll_frequency=0.5).until(
            on_login_form, f"still signed in {SESSION_S + 30}s into a {SESSION_S}s session")
        browser.save_screenshot(str(ARTIFACTS / "dashboard-session-ended.png"))

        # 5. Failed sign-ins: at most 5 a minute, then 429, even for the right token.
        for _ in range(5):
            sign_in(browser, url, "not-the-token-0123456789")
            if "Too many attempts" in browser.find_element(By.CSS_SELECTOR, ".error").text:
                break
            assert "Invalid token" in browser.find_element(By.CSS_SELECTOR, ".error").text
        sign_in(browser, url)
        assert "Too many attempts" in browser.find_element(By.CSS_SELECTOR, ".error").text
        assert browser.get_cookie(COOKIE) is None
        browser.save_screenshot(str(ARTIFACTS / "dashboard-rate-limited.png"))

        assert csp_violations(browser) == []
    finally:
        proc.terminate()
        proc.wait(15)
    text = log.read_text()
    assert TOKEN not in text
    assert first_sid not in text
    assert sid not in text
    assert text.count(link.rsplit("=", 1)[1]) == 1  # printed once, never logged
