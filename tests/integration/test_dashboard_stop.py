"""`safetour dashboard` stopped by SIGTERM or SIGINT exits cleanly (status 0, no traceback)
within agents.dashboard.dashboard.STOP_S, with a page's event stream open, which it closes."""

from __future__ import annotations

import http.client
import signal
import urllib.parse

import pytest

from agents.config import Settings
from agents.dashboard.dashboard import STOP_S

from .conftest import signal_and_wait
from .test_dashboard_browser import TOKEN, start_dashboard
from .test_dashboard_health_browser import quiet as quiet  # the fixture  # noqa: PLC0414


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_dashboard_stops_cleanly_on_a_signal(
    sig: signal.Signals, quiet: Settings
) -> None:
    proc, url = start_dashboard(quiet)
    log = quiet.state_dir / "dashboard.log"
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=STOP_S + 5)
    try:
        conn.request("GET", "/events", headers={"Authorization": f"Bearer {TOKEN}"})
        stream = conn.getresponse()
        assert stream.status == 200
        assert stream.readline().startswith(b"event: state")  # a page is watching

        rc, took = signal_and_wait(proc, sig, STOP_S, "`safetour dashboard`", log)
        text = log.read_text(errors="replace")
        assert rc == 0, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        assert took < STOP_S
        while stream.readline():  # the stream was closed, not left hanging
            pass
    finally:
        conn.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
