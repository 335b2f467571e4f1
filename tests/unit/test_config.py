"""Settings come from the environment, with clear errors."""

from __future__ import annotations

import pytest

from agents.cli import build_parser
from agents.config import Settings
from schemas import ConfigError


def test_defaults_use_the_embedded_broker() -> None:
    s = Settings.from_env({})
    assert s.embedded
    assert s.bootstrap_servers == "127.0.0.1:19092"
    assert s.topics.sensor_events == "safetour.sensor-events.v1"
    assert s.topics.dlq == "safetour.dlq.v1"


def test_external_cluster_and_prefix() -> None:
    s = Settings.from_env({"SAFETOUR_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
                           "SAFETOUR_TOPIC_PREFIX": "staging."})
    assert not s.embedded
    assert s.bootstrap_servers == "k1:9092,k2:9092"
    assert s.topics.alerts == "staging.alerts.v1"


@pytest.mark.parametrize("env", [{"SAFETOUR_BROKER_PORT": "x"}, {"SAFETOUR_WINDOW_S": "0"},
                                 {"SAFETOUR_GRACE_S": "soon"}])
def test_bad_settings_are_config_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="SAFETOUR_"):
        Settings.from_env(env)


def test_help_lists_commands_and_environment(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in ("run", "broker", "topics", "worker", "alerts", "simulate", "replay",
                 "SAFETOUR_KAFKA_BOOTSTRAP"):
        assert word in out


def test_cluster_ids_never_start_with_a_dash() -> None:
    from agents.devtools.broker import new_cluster_id  # noqa: PLC0415

    ids = {new_cluster_id() for _ in range(3000)}  # ~1 in 64 raw ids would start with '-'
    assert len(ids) == 3000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_levels_from_the_environment() -> None:
    s = Settings.from_env({"SAFETOUR_STANDING_LEVELS": "1.5,3,4.5"})
    assert s.standing_levels == (1.5, 3.0, 4.5)
    assert s.pipeline([]).alerts.config.standing.critical == 4.5
    with pytest.raises(ConfigError, match="must rise"):
        Settings.from_env({"SAFETOUR_MOVING_LEVELS": "3,2,1"})


def test_forecast_span_from_the_environment() -> None:
    assert Settings.from_env({}).pipeline([]).alerts.config.forecast_span_s == 300.0
    s = Settings.from_env({"SAFETOUR_FORECAST_SPAN_S": "600"})
    assert s.pipeline([]).alerts.config.forecast_span_s == 600.0
    with pytest.raises(ConfigError, match="SAFETOUR_FORECAST_SPAN_S"):
        Settings.from_env({"SAFETOUR_FORECAST_SPAN_S": "30"})


def test_alert_line_shows_reason_and_eta() -> None:
    from agents.tail import format_alert  # noqa: PLC0415

    line = format_alert({"ts": "2026-02-15T12:30:00Z", "level": "elevated", "status": "raised",
                         "zone_id": "z", "density": 1.3, "reason": "forecast",
                         "eta_critical_s": 420.0, "message": {"th": "ท", "en": "e"}},
                        colour=False)
    assert line.splitlines()[0].endswith("1.30 p/m²  [forecast]  critical in ~7 min")
    assert line.startswith("19:30:00 ICT ELEVATED")


def test_json_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    import logging  # noqa: PLC0415
    import logging.config  # noqa: PLC0415

    import orjson  # noqa: PLC0415

    from agents.logs import logging_config  # noqa: PLC0415

    logging.config.dictConfig(logging_config("json", "INFO"))
    try:
        logging.getLogger("agents.test").info("zone %s at %.1f", "วัดใหญ่", 5.25)
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                                   "root": {"handlers": []}})
    doc = orjson.loads(line)
    assert doc["message"] == "zone วัดใหญ่ at 5.2"
    assert (doc["level"], doc["logger"]) == ("INFO", "agents.test")
    assert doc["ts"].endswith("Z")
