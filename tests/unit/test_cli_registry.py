"""Every command that reads the zone registry refuses a bad file with one line and exit 2,
before it touches Kafka, and never with a traceback."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Each breaks an engine or alarm rule while passing zone.v1.
BAD = {
    "slide": "slide_s: 7, ",
    "thresholds": "thresholds: {critical: 3}, ",
}

COMMANDS = {
    "worker": ["worker"],
    "replay": ["replay", "--zones", "{zones}", "--events", "{tmp}/events.jsonl",
               "--out", "{tmp}/alerts.jsonl", "--quiet"],
    "simulate": ["simulate", "--scenario", "crush", "--out-dir", "{tmp}/sim", "--quiet"],
    "run": ["run", "--dashboard-port", "0"],
    "zones publish": ["zones", "publish"],
    "dashboard": ["dashboard", "--port", "0"],
}


@pytest.mark.slow
@pytest.mark.parametrize("bad", sorted(BAD))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bad_registry_is_one_line_and_exit_2(tmp_path: Path, command: str, bad: str) -> None:
    zones = tmp_path / "zones.yaml"
    zones.write_text("- {zone_id: stage, name: {th: เวที, en: Stage}, area_m2: 100, "
                     f"crowd: standing, {BAD[bad]}sensors: []}}\n")
    (tmp_path / "events.jsonl").write_text("")
    args = [a.format(zones=zones, tmp=tmp_path) for a in COMMANDS[command]]
    env = dict(os.environ, SAFETOUR_ZONES=str(zones), SAFETOUR_STATE_DIR=str(tmp_path / "st"),
               # Nothing listens here: a command that reached Kafka would fail differently.
               SAFETOUR_KAFKA_BOOTSTRAP="127.0.0.1:9", SAFETOUR_DASHBOARD_TOKENS="op:" + "t" * 20)
    env.pop("SAFETOUR_TOPIC_PREFIX", None)
    res = subprocess.run([sys.executable, "-m", "agents", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in res.stderr + res.stdout
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.splitlines()
    rule = "window_s 60 is not a whole number" if bad == "slide" else "thresholds must rise"
    assert line.startswith(f"safetour: error: {zones}: zone 'stage': ")
    assert rule in line


@pytest.mark.parametrize("command", ["run", "simulate"])
def test_the_scenario_help_names_every_scenario(command: str) -> None:
    """The help listed the first five scenarios only (the five of issue 16 were missing)."""
    from agents.cli import build_parser  # noqa: PLC0415
    from agents.devtools import SCENARIOS  # noqa: PLC0415

    sub = next(a for a in build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub.choices[command]._actions}
    text = " ".join((helps["scenario"] or "").split())
    for name in SCENARIOS:
        assert name in text, name
