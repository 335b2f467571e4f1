"""Prometheus rules are valid and behave as their promtool unit tests say.

promtool comes with Debian's prometheus package, which scripts/bootstrap installs; a missing
promtool fails here, it does not skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

RULES = Path(__file__).resolve().parents[2] / "deploy/prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: run scripts/bootstrap (Debian package prometheus)"
    return subprocess.run([exe, *args], cwd=RULES, capture_output=True, text=True, timeout=60,
                          check=False)


def test_rules_are_valid() -> None:
    res = promtool("check", "rules", "rules.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 13 rules found" in res.stdout


def test_rule_unit_tests_pass() -> None:
    res = promtool("test", "rules", "rules_test.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_has_a_unit_test() -> None:
    rules = (RULES / "rules.yml").read_text()
    tests = (RULES / "rules_test.yml").read_text()
    alerts = [line.split(":", 1)[1].strip() for line in rules.splitlines()
              if line.strip().startswith("- alert:")]
    assert len(alerts) == 9
    assert all(f"alertname: {a}" in tests for a in alerts)
