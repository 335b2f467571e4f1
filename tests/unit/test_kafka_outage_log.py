"""A Kafka outage is logged once every 10 s with a count, not twice a second
(agents/logs.py KafkaOutageFilter, installed by the CLI's logging set-up)."""

from __future__ import annotations

import logging
import logging.config

import pytest

from agents.logs import KafkaOutageFilter, faust_logging_config, logging_config


def record(name: str = "aiokafka.conn", msg: str = 'Unable connect to "%s": %s',
           args: tuple[object, ...] = ("127.0.0.1:1", "[Errno 111] Connect call failed"),
           level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_one_line_per_10s_with_a_count() -> None:
    clock = Clock()
    f = KafkaOutageFilter(every_s=10.0, clock=clock)
    passed = []
    for _ in range(200):  # 20 s of a client logging twice... ten times a second
        r = record()
        if f.filter(r):
            passed.append((clock.now, r.getMessage()))
        clock.now += 0.1
    assert [t for t, _ in passed] == pytest.approx([1000.0, 1010.0])
    assert passed[0][1] == 'Unable connect to "127.0.0.1:1": [Errno 111] Connect call failed'
    assert passed[1][1].endswith("(and 99 more Kafka connection errors held back since the "
                                 "last such line)")


def test_other_records_pass_untouched() -> None:
    clock = Clock()
    f = KafkaOutageFilter(clock=clock)
    assert f.filter(record())
    # Not a connection error, not a Kafka client's logger, or below WARNING: always shown.
    others = [record(msg="Fetch offset %s is out of range", args=(5,)),
              record(name="agents.worker.app"),
              record(name="safetour.cli"),
              record(level=logging.INFO)]
    for r in others:
        assert f.filter(r)
        assert r.msg in ('Unable connect to "%s": %s', "Fetch offset %s is out of range")
    assert f.filter(record(name="faust.transport", msg="x")) is True


def test_connection_errors_by_their_exception() -> None:
    from aiokafka.errors import KafkaConnectionError  # noqa: PLC0415

    f = KafkaOutageFilter(clock=Clock())
    r = logging.LogRecord("faust.transport.drivers.aiokafka", logging.ERROR, __file__, 1,
                          "Fetch failed", None, (KafkaConnectionError, KafkaConnectionError(),
                                                 None))
    assert f.filter(r)
    r2 = logging.LogRecord(r.name, logging.ERROR, __file__, 1, "Fetch failed", None,
                           r.exc_info)
    assert not f.filter(r2)  # held back: the same outage


def test_quiet_drops_them_all() -> None:
    f = KafkaOutageFilter(clock=Clock(), quiet=True)
    assert not f.filter(record())
    assert f.filter(record(name="agents.topics", msg="anything"))


@pytest.mark.parametrize("config", [logging_config("text", "INFO"),
                                    logging_config("json", "INFO"),
                                    logging_config("text", "INFO", kafka_errors="quiet")])
def test_the_cli_logging_installs_the_filter(config: dict[str, object]) -> None:
    handlers = config["handlers"]
    assert isinstance(handlers, dict)
    assert handlers["console"]["filters"] == ["kafka_outage"]
    # dictConfig builds it (on a throw-away copy: no change to this process's logging).
    filters = config["filters"]
    assert isinstance(filters, dict)
    spec = dict(filters["kafka_outage"])
    factory = spec.pop("()")
    assert factory == "agents.logs.KafkaOutageFilter"
    assert isinstance(KafkaOutageFilter(**spec), logging.Filter)


def test_faust_workers_get_the_filter_on_their_own_handler() -> None:
    c = faust_logging_config("INFO")
    assert c["merge"] is True
    assert c["handlers"]["default"]["filters"] == ["kafka_outage"]
    assert c["handlers"]["default"]["class"] == "colorlog.StreamHandler"
    with pytest.raises(ValueError, match="throttle or quiet"):
        logging_config("text", "INFO", kafka_errors="loud")


def test_the_line_with_the_count_formats_under_faust_workers_formatter() -> None:
    """faust's console formatter (mode's ExtensionFormatter) turns ``args=None`` into
    ``(None,)``: the line with the count once failed to format ("--- Logging error ---" and a
    60-line traceback in the worker's log, at every such line of an outage)."""
    import io  # noqa: PLC0415

    from mode.utils.logging import ExtensionFormatter  # noqa: PLC0415

    clock = Clock()
    f = KafkaOutageFilter(every_s=10.0, clock=clock)
    fmt = ExtensionFormatter(stream=io.StringIO(), fmt="%(message)s")
    lines = []
    for msg in ('Unable connect to "%s": %s', "Connect call failed at 100%% of %s"):
        for _ in range(3):
            r = record(msg=msg, args=("127.0.0.1:1", "[Errno 111]")[:msg.count("%s")])
            if f.filter(r):
                lines.append(fmt.format(r))
            clock.now += 5.0
    assert lines == [
        'Unable connect to "127.0.0.1:1": [Errno 111]',
        'Unable connect to "127.0.0.1:1": [Errno 111] (and 1 more Kafka connection errors '
        "held back since the last such line)",
        "Connect call failed at 100% of 127.0.0.1:1 (and 1 more Kafka connection errors held "
        "back since the last such line)"]
