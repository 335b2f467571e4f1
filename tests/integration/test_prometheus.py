"""A real Prometheus scrapes a running worker; the metrics pass `promtool check metrics`."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from agents.config import Settings

from .conftest import REPO, free_port, kcat_produce, poll_until


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:  # loopback only
        body: bytes = r.read()
        return body


def test_prometheus_scrapes_the_worker(stack: Settings, tmp_path: Path) -> None:
    worker = f"127.0.0.1:{stack.web_port}"
    now = int(time.time() * 1000)
    batch = [{"event_id": f"prom-{i}", "sensor_id": "st-cam-1", "zone_id": "station-forecourt",
              "kind": "occupancy", "ts": now - i * 1000, "count": 300} for i in range(5)]
    kcat_produce(stack.bootstrap, stack.topics.sensor_events,
                 [orjson.dumps(batch[::-1]), b"garbage"], "station-forecourt", tmp_path)

    def scraped() -> bytes | None:
        t = http_get(f"http://{worker}/metrics")
        return t if b'safetour_dead_letters_total{reason="not_json"' in t else None

    text = poll_until(scraped, timeout=30, what="worker metrics")
    check = subprocess.run([shutil.which("promtool") or "promtool", "check", "metrics"],
                           input=text, capture_output=True, timeout=30, check=False)
    assert check.returncode == 0, check.stdout + check.stderr

    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{REPO / 'deploy/prometheus/rules.yml'}]\n"
        "scrape_configs:\n"
        "  - job_name: safetour\n"
        f"    static_configs: [{{targets: ['{worker}']}}]\n")
    with (tmp_path / "prometheus.log").open("wb") as log:
        prom = subprocess.Popen(
            [shutil.which("prometheus") or "prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=log)
    try:
        def query() -> Any:
            q = urllib.parse.quote('sum(safetour_events_in_total{kind="occupancy"})')
            try:
                res = orjson.loads(http_get(f"http://127.0.0.1:{port}/api/v1/query?query={q}"))
            except OSError:
                return None
            result = res["data"]["result"]
            return float(result[0]["value"][1]) if result else None

        value = poll_until(query, timeout=60, what="Prometheus to scrape the worker",
                           proc=prom, log=tmp_path / "prometheus.log")
        assert value >= 5
    finally:
        prom.terminate()
        prom.wait(30)
