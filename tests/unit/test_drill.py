"""Drills (`safetour run --drill`): readings on topics of their own, alerts on the real
alerts topic marked as an exercise (CAP Exercise, a marker in every channel); a real alert
during a drill stays Actual and unmarked."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from agents.config import Settings
from agents.delivery.mail import SmtpConfig, alert_email
from agents.delivery.notify import DRILL_MARKER, line_text
from agents.processes import start_worker_process
from agents.run import drill_settings
from agents.tail import format_alert
from schemas import SafetourError
from streams.cap import CAP_NS, to_cap
from streams.records import Outputs

NAMES = {"th": "ท", "en": "e"}
ALERT: dict[str, Any] = {
    "alert_id": "night-bazaar:1:x", "zone_id": "night-bazaar", "level": "high",
    "previous_level": "normal", "status": "raised", "seq": 1, "density": 3.7,
    "occupancy": 100.0, "window_start": "2026-02-16T12:59:00.000Z",
    "window_end": "2026-02-16T13:00:00.000Z", "ts": "2026-02-16T13:00:00.000Z",
    "message": {"th": "ความหนาแน่นสูง", "en": "density high"}, "reason": "density"}


def cap_status(alert: dict[str, Any]) -> str | None:
    return ET.fromstring(to_cap(alert, zone_names=NAMES)).findtext(f"{{{CAP_NS}}}status")


def test_a_drill_reads_and_keeps_state_apart_and_alerts_where_the_channels_read() -> None:
    real = Settings.from_env({})
    drill = drill_settings(real, "20260216-130000")
    assert drill.exercise
    assert not real.exercise
    for topic in ("sensor_events", "reports", "state", "density", "dlq", "by_zone", "zones"):
        assert getattr(drill.topics, topic) != getattr(real.topics, topic), topic
    assert drill.topics.alerts == real.topics.alerts
    assert drill.topics.alerts_cap == real.topics.alerts_cap
    assert drill.app_id != real.app_id  # a consumer group, and faust state, of its own


def test_a_drill_pipeline_marks_its_alerts_and_a_real_one_does_not() -> None:
    zones = Settings.from_env({}).load_registry()
    real_pipe = Settings.from_env({}).pipeline(zones)
    drill_pipe = replace(Settings.from_env({}), exercise=True).pipeline(zones)
    real_out, drill_out = Outputs(), Outputs()
    # The same zone alarms in the drill and for real at the same time.
    real_pipe._alert(real_out, b"night-bazaar", dict(ALERT))
    drill_pipe._alert(drill_out, b"night-bazaar", dict(ALERT))
    import orjson  # noqa: PLC0415

    (real_alert,) = [orjson.loads(r.value) for r in real_out.alerts]
    (drill_alert,) = [orjson.loads(r.value) for r in drill_out.alerts]
    assert "exercise" not in real_alert
    assert real_alert["alert_id"] == ALERT["alert_id"]
    assert drill_alert["exercise"] is True
    assert drill_alert["alert_id"] == f"drill-{ALERT['alert_id']}"  # never the real episode
    status = [ET.fromstring(r.value).findtext(f"{{{CAP_NS}}}status")
              for r in (*real_out.cap, *drill_out.cap)]
    assert status == ["Actual", "Exercise"]


def test_every_channel_marks_a_drill_and_only_a_drill() -> None:
    drill = ALERT | {"exercise": True}
    assert cap_status(drill) == "Exercise"
    assert cap_status(ALERT) == "Actual"
    assert line_text(drill).startswith(DRILL_MARKER)
    assert DRILL_MARKER not in line_text(ALERT)
    cfg = SmtpConfig("smtp.example", "a@example", ("b@example",))
    assert alert_email(drill, "k", cfg)["Subject"].startswith(DRILL_MARKER)
    assert alert_email(drill, "k", cfg)["X-Safetour-Exercise"] == "1"
    assert DRILL_MARKER not in alert_email(ALERT, "k", cfg)["Subject"]
    assert DRILL_MARKER == "[ฝึกซ้อม / DRILL]"


def test_a_drills_cap_headlines_say_drill_and_a_real_ones_do_not() -> None:
    """Issue 15 review: a drill's CAP message was status Exercise but its headlines, what a
    CAP client shows first, did not say so."""
    def headlines(alert: dict[str, Any]) -> list[str]:
        doc = ET.fromstring(to_cap(alert, zone_names=NAMES))
        return [i.findtext(f"{{{CAP_NS}}}headline") or ""
                for i in doc.findall(f"{{{CAP_NS}}}info")]

    drill, real = headlines(ALERT | {"exercise": True}), headlines(ALERT)
    assert len(drill) == 2  # th-TH and en-US
    assert drill == [f"{DRILL_MARKER} {h}" for h in real]
    assert not any(DRILL_MARKER in h for h in real)
    assert headlines(ALERT | {"exercise": "yes"}) == real  # only true is a drill
    from streams import messages  # noqa: PLC0415

    assert messages.DRILL_MARKER == DRILL_MARKER  # the channels' marker


def test_the_terminal_tail_marks_a_drill_and_only_a_drill() -> None:
    """`safetour alerts tail` (and `safetour run --drill`, which prints the real alerts topic)
    shows which alerts are a drill's: the channels read the same topic."""
    drill = format_alert(ALERT | {"exercise": True}, colour=False).splitlines()[0]
    assert drill.endswith(f"#1  {DRILL_MARKER}"), drill
    assert DRILL_MARKER not in format_alert(ALERT, colour=False)
    assert DRILL_MARKER not in format_alert(ALERT | {"exercise": "yes"}, colour=False)
    from agents import tail  # noqa: PLC0415

    assert tail.DRILL_MARKER == DRILL_MARKER  # the channels' marker


def test_a_drill_on_a_sasl_cluster_runs_its_worker_as_the_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator runs `safetour run --drill`; its worker connects as the worker principal
    (the operator may not write alerts: deploy/kafka/acls.json)."""
    from agents.cli import build_parser  # noqa: PLC0415
    from agents.run import _run_worker_env  # noqa: PLC0415

    pw = tmp_path / "operator.password"
    pw.write_text("op-secret\n")
    sasl = Settings.from_env({"SAFETOUR_KAFKA_BOOTSTRAP": "h:1",
                              "SAFETOUR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                              "SAFETOUR_KAFKA_USER": "operator",
                              "SAFETOUR_KAFKA_PASSWORD_FILE": str(pw)})
    with pytest.raises(SafetourError, match="--worker-password-file"):
        _run_worker_env(build_parser().parse_args(["run", "--drill"]), sasl)
    args = build_parser().parse_args(["run", "--drill", "--worker-password-file", "/s/w.pw"])
    env = _run_worker_env(args, sasl)
    assert env == {"SAFETOUR_KAFKA_USER": "worker", "SAFETOUR_KAFKA_PASSWORD_FILE": "/s/w.pw"}
    # Plaintext: the worker runs as whoever runs the drill.
    assert _run_worker_env(build_parser().parse_args(["run", "--drill"]),
                           Settings.from_env({})) == {}
    # The caller's own password never reaches the worker beside the worker's file.
    monkeypatch.setenv("SAFETOUR_KAFKA_PASSWORD", "op-secret")
    seen: dict[str, str] = {}

    def popen(cmd: Any, **kw: Any) -> Any:
        seen.update(kw["env"])
        return None

    monkeypatch.setattr("agents.processes.subprocess.Popen", popen)
    start_worker_process(drill_settings(sasl, "x"), tmp_path / "w.log", env)
    assert "SAFETOUR_KAFKA_PASSWORD" not in seen
    assert seen["SAFETOUR_KAFKA_USER"] == "worker"
    assert seen["SAFETOUR_EXERCISE"] == "1"
