"""The input rules of issue 12, one test per case found by trying safetour as a stranger would.

Each test failed before the fix: a far-future reading blinded its partition, a fast sensor
clock made the other sensors' readings late, a restart kept a poisoned watermark, unlisted
sensors were auto-registered for ever, old reports were held back silently, a report floor
in a zone without sensors never expired, a blind zone kept silent, and one bad batch gave
one DLQ record per item with the whole value in each.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import jsonschema
import orjson
import pytest

import schemas
from schemas import Kind, SensorSpec, Zone
from streams import WindowedDensityEngine
from streams.pipeline import Pipeline
from streams.records import SourceMessage

T0 = 1_771_150_000_000 - 1_771_150_000_000 % 5_000  # on a slide boundary
YEAR_2200 = 7_258_118_400_000


def zone(zone_id: str = "vihara", sensors: tuple[str, ...] = ("cam", "cam2", "cam3"),
         area: float = 100.0) -> Zone:
    return Zone(zone_id, "วิหาร", "Vihara", area, "standing",
                tuple(SensorSpec(s, Kind.OCCUPANCY, coverage_m2=50.0) for s in sensors))


def occ(event_id: str, ts: int, count: int = 100, sensor: str = "cam",
        zone_id: str = "vihara") -> dict[str, Any]:
    return {"event_id": event_id, "sensor_id": sensor, "zone_id": zone_id,
            "kind": "occupancy", "ts": ts, "count": count}


def live(value: Any, offset: int, arrival: int | None, partition: int = 0,
         topic: str = "sensors") -> SourceMessage:
    return SourceMessage(topic, partition, offset, arrival, b"k", orjson.dumps(value))


def dlq_reasons(out: Any) -> list[str]:
    return [orjson.loads(r.value)["reason"] for r in out.dlq]


def pipeline(*zones: Zone, **engine: Any) -> Pipeline:
    zs = list(zones) or [zone()]
    return Pipeline(zs, engine=WindowedDensityEngine(zs, **engine))


# -- event time no sender can poison ------------------------------------------------------------

@pytest.mark.kernels
def test_a_reading_stamped_2200_is_dead_lettered_and_blinds_nothing() -> None:
    p = pipeline()
    out = p.process_sensor_batch([live(occ("a", T0), 0, T0 + 500)], now_ms=T0 + 500)
    bad = p.process_sensor_batch([live(occ("b", YEAR_2200), 1, T0 + 1000)], now_ms=T0 + 1000)
    assert dlq_reasons(bad) == ["future"]
    record = orjson.loads(bad.dlq[0].value)
    assert record["items"][0]["pointer"] == "/ts"
    rest = [p.process_sensor_batch([live(occ(f"c{i}", T0 + i * 1000), 2 + i, T0 + i * 1000 + 800)],
                                   now_ms=T0 + i * 1000 + 800) for i in range(1, 90)]
    assert not [r for o in rest for r in dlq_reasons(o)]  # nothing late, nothing refused
    densities = [orjson.loads(r.value) for o in [out, *rest] for r in o.density]
    assert len(densities) >= 10
    assert all(d["density"] == 2.0 for d in densities)


@pytest.mark.kernels
def test_a_fast_sensor_clock_does_not_make_the_others_late_live() -> None:
    """cam3 runs 15 s fast (grace + slide); cam's readings arrive 8 s after they were taken."""
    p = pipeline()
    late = []
    for i in range(60):
        t = T0 + i * 2000
        out = p.process_sensor_batch([
            live(occ(f"f{i}", t + 15_000, sensor="cam3"), 2 * i, t + 300),
            live(occ(f"s{i}", t - 8000, sensor="cam"), 2 * i + 1, t + 300),
        ], now_ms=t + 300)
        late += dlq_reasons(out)
    assert late == []


@pytest.mark.kernels
def test_a_fast_sensor_clock_does_not_make_the_others_late_offline() -> None:
    """The same in replay, with no arrival times: the robust clock is outvoting cam3."""
    p = pipeline(zone(sensors=("cam", "cam2", "cam3", "cam4")))
    late = []
    for i in range(60):
        t = T0 + i * 2000
        msgs = [live(occ(f"f{i}", t + 15_000, sensor="cam3"), 4 * i, None),
                live(occ(f"a{i}", t, sensor="cam2"), 4 * i + 1, None),
                live(occ(f"b{i}", t, sensor="cam4"), 4 * i + 2, None),
                live(occ(f"s{i}", t - 8000, sensor="cam"), 4 * i + 3, None)]
        late += dlq_reasons(p.process_sensor_batch(msgs))
    assert late == []


@pytest.mark.kernels
def test_a_restart_heals_a_snapshot_poisoned_by_a_future_watermark() -> None:
    eng = WindowedDensityEngine([zone()])
    p = Pipeline([zone()], engine=eng)
    p.process_sensor_batch([live(occ("a", T0), 0, T0)], now_ms=T0)
    eng.p_max[0] = YEAR_2200  # what an earlier version let one reading do
    blob = p.snapshot(0)
    fresh = pipeline()
    assert fresh.restore(blob, now_ms=T0 + 1000) == 0
    out = fresh.process_sensor_batch([live(occ("b", T0 + 2000), 1, T0 + 2000)], now_ms=T0 + 2000)
    assert dlq_reasons(out) == []
    assert fresh.engine.watermark(0) is not None
    assert fresh.engine.watermark(0) < T0 + 10_000


@pytest.mark.kernels
def test_a_consistently_fast_sensor_is_visible_in_the_evidence() -> None:
    p = pipeline()
    densities = []
    for i in range(40):
        t = T0 + i * 2000
        out = p.process_sensor_batch([
            live(occ(f"f{i}", t + 9000, sensor="cam3"), 3 * i, t + 200),
            live(occ(f"a{i}", t, sensor="cam"), 3 * i + 1, t + 200),
            live(occ(f"b{i}", t, sensor="cam2"), 3 * i + 2, t + 200),
        ], now_ms=t + 200)
        densities += [orjson.loads(r.value) for r in out.density]
    skewed = densities[-1]["skewed_sensors"]
    assert [s["sensor_id"] for s in skewed] == ["cam3"]
    assert 8.0 <= skewed[0]["skew_s"] <= 9.5
    assert p.engine.skewed_sensors() == [("cam3", skewed[0]["skew_s"])]


# -- a bounded DLQ ---------------------------------------------------------------------------

@pytest.mark.kernels
def test_one_bad_batch_gives_one_bounded_dlq_record() -> None:
    batch = [{"event_id": f"e{i}", "sensor_id": "c", "zone_id": "popup", "kind": "occupancy",
              "ts": T0 + i, "count": 100} for i in range(5000)]
    value = orjson.dumps(batch)
    assert len(value) < schemas.MAX_MESSAGE_BYTES
    out = pipeline().process_sensor_batch([SourceMessage("s", 0, 7, T0, None, value)],
                                          now_ms=T0)
    assert len(out.dlq) == 1
    record = orjson.loads(out.dlq[0].value)
    assert record["items_total"] == 5000
    assert len(record["items"]) == 100
    assert record["counts"] == {"unknown_zone": 5000}
    assert record["items"][3]["index"] == 3
    assert record["items"][3]["pointer"] == "/3"
    assert base64.b64decode(record["value_b64"]) == value
    assert len(out.dlq[0].value) < 3 * len(value)
    doc = json.loads(schemas.schema_file("dlq-record.v1.json").read_text())
    jsonschema.Draft202012Validator(doc).validate(record)


# -- unknown sensors -------------------------------------------------------------------------

@pytest.mark.kernels
def test_unlisted_sensors_are_refused_and_never_grow_memory() -> None:
    p = pipeline()
    before = len(p.engine.sensor_ids)  # type: ignore[attr-defined]
    out = p.process_sensor_batch([live([occ(f"x{i}", T0, sensor=f"ghost-{i}")
                                        for i in range(2000)], 0, T0)], now_ms=T0)
    assert dlq_reasons(out) == ["unknown_sensor"]
    assert orjson.loads(out.dlq[0].value)["counts"] == {"unknown_sensor": 2000}
    assert len(p.engine.sensor_ids) == before  # type: ignore[attr-defined]


@pytest.mark.kernels
def test_unlisted_sensors_accepted_on_request_for_zones_that_list_none_bounded() -> None:
    open_zone = zone("market", sensors=())
    p = pipeline(open_zone, accept_unlisted=True)
    out = p.process_sensor_batch([live([occ(f"x{i}", T0, sensor=f"s{i}", zone_id="market")
                                        for i in range(100)], 0, T0)], now_ms=T0)
    assert orjson.loads(out.dlq[0].value)["counts"] == {"unknown_sensor": 36}
    assert len(p.engine.sensor_ids) == 64  # type: ignore[attr-defined]
    assert p.engine.stale_sensor_count() == 0  # accepted unlisted sensors are never "stale"


@pytest.mark.kernels
def test_a_reused_event_id_with_other_content_is_refused_and_the_first_stands() -> None:
    p = pipeline()
    first = p.process_sensor_batch([live(occ("same", T0, count=100), 0, T0)], now_ms=T0)
    repeat = p.process_sensor_batch([live(occ("same", T0, count=100), 1, T0)], now_ms=T0)
    other = p.process_sensor_batch([live(occ("same", T0, count=900), 2, T0)], now_ms=T0)
    assert (dlq_reasons(first), dlq_reasons(repeat), repeat.duplicates) == ([], [], 1)
    assert dlq_reasons(other) == ["id_conflict"]
    out = p.tick(T0 + 120_000)
    assert next(orjson.loads(r.value)["density"] for r in out.density) == 2.0


# -- reports ---------------------------------------------------------------------------------

def report(report_id: str, ts: int, category: str = "crush", zone_id: str = "bridge"
           ) -> dict[str, Any]:
    return {"report_id": report_id, "ts": ts, "zone_id": zone_id, "category": category,
            "source": "staff"}


def test_a_report_written_minutes_before_it_arrives_acts_at_once() -> None:
    p = pipeline(zone(), zone("bridge", sensors=("b-cam",)))
    out = p.process_report_batch([live(report("r1", T0), 0, T0 + 4 * 60_000, topic="r")],
                                 now_ms=T0 + 4 * 60_000)
    assert [(orjson.loads(r.value)["level"], orjson.loads(r.value)["status"])
            for r in out.alerts] == [("critical", "raised")]
    assert not out.dlq


@pytest.mark.kernels
def test_reports_too_old_or_from_the_future_are_dead_lettered() -> None:
    p = pipeline(zone(), zone("bridge", sensors=("b-cam",)))
    now = T0 + 3_600_000
    for i in range(30):  # the bridge's own clock: its camera reports up to now
        t = now - 60_000 + i * 2000
        p.process_sensor_batch([live(occ(f"b{i}", t, 10, "b-cam", "bridge"), i, t)], now_ms=t)
    old = p.process_report_batch([live(report("r1", T0), 0, now, topic="r")], now_ms=now)
    ahead = p.process_report_batch([live(report("r2", YEAR_2200), 1, now, topic="r")],
                                   now_ms=now)
    assert (dlq_reasons(old), dlq_reasons(ahead)) == (["stale"], ["future"])
    assert not old.alerts
    assert not ahead.alerts


@pytest.mark.kernels
def test_a_crush_report_in_a_zone_without_sensors_expires_by_the_wall_clock() -> None:
    p = pipeline(zone("square", sensors=()))
    raised = p.process_report_batch([live(report("r1", T0, zone_id="square"), 0, T0,
                                          topic="r")], now_ms=T0)
    assert [orjson.loads(r.value)["status"] for r in raised.alerts] == ["raised"]
    held = p.tick(T0 + 14 * 60_000).alerts  # a re-alarm while it lasts, no resolution
    assert all(orjson.loads(r.value)["status"] == "raised" for r in held)
    ended = [orjson.loads(r.value) for r in p.tick(T0 + 15 * 60_000 + 1000).alerts]
    assert [(a["status"], a["level"], a["density"]) for a in ended] == [
        ("resolved", "normal", None)]


@pytest.mark.kernels
def test_a_crush_report_in_a_zone_without_sensors_expires_by_event_time_offline() -> None:
    p = pipeline(zone(), zone("square", sensors=()))
    p.process_report_batch([live(report("r1", T0, zone_id="square"), 0, None, topic="r")])
    statuses = []
    for i in range(0, 20 * 60, 2):  # twenty minutes of another zone's readings, replayed
        t = T0 + i * 1000
        out = p.process_sensor_batch([live(occ(f"a{i}", t, sensor=s), i * 3 + k, None)
                                      for k, s in enumerate(("cam", "cam2", "cam3"))])
        statuses += [(orjson.loads(r.value)["zone_id"], orjson.loads(r.value)["status"],
                      orjson.loads(r.value)["ts"]) for r in out.alerts]
    square = [s for s in statuses if s[0] == "square"]
    assert square[-1][1] == "resolved"
    ended = schemas.parse_ts(square[-1][2])
    assert T0 + 15 * 60_000 <= ended <= T0 + 15 * 60_000 + 3 * 60_000


# -- loss of sensing -------------------------------------------------------------------------

@pytest.mark.kernels
def test_a_critical_zone_whose_sensors_all_stop_is_alerted_blind_and_re_alarmed() -> None:
    p = pipeline(zone(), zone("other", sensors=("o-cam",)))
    alerts: list[dict[str, Any]] = []
    caps: list[bytes] = []
    t = T0
    for i in range(60):  # 6 p/m²: critical
        t = T0 + i * 1000
        out = p.process_sensor_batch([live(occ(f"a{i}", t, count=300), 2 * i, t + 100),
                                      live(occ(f"o{i}", t, 10, "o-cam", "other"), 2 * i + 1,
                                           t + 100)], now_ms=t + 100)
        alerts += [orjson.loads(r.value) for r in out.alerts]
        caps += [r.value for r in out.cap]
    assert alerts[0]["level"] == "critical"
    for i in range(60, 60 + 20 * 60):  # the vihara's sensors stop; the other zone goes on
        t = T0 + i * 1000
        out = p.process_sensor_batch([live(occ(f"o{i}", t, 10, "o-cam", "other"), 200 + i,
                                           t + 100)], now_ms=t + 100)
        alerts += [orjson.loads(r.value) for r in out.alerts]
        caps += [r.value for r in out.cap]
    vihara = [a for a in alerts if a["zone_id"] == "vihara"]
    blind = [a for a in vihara if a["reason"] == "sensing_lost"]
    assert blind[0]["status"] == "updated"
    assert blind[0]["density"] is None
    assert blind[0]["level"] == "critical"
    assert "every sensor has stopped" in blind[0]["message"]["en"]
    assert "เซ็นเซอร์" in blind[0]["message"]["th"]
    assert len(blind) >= 3  # re-alarmed every 5 minutes while it lasts
    assert not any(a["status"] == "resolved" for a in vihara)  # never resolves by itself
    assert any(b"<certainty>Unknown</certainty>" in c for c in caps)
    seqs = [a["seq"] for a in vihara]
    assert seqs == list(range(1, len(seqs) + 1))
    doc = json.loads(schemas.schema_file("alert.v1.json").read_text())
    for a in vihara:
        jsonschema.Draft202012Validator(doc).validate(a)
    # Data returns, calm: the episode goes on from the measured density and resolves.
    back: list[dict[str, Any]] = []
    for i in range(1300, 1500):
        t = T0 + i * 1000
        out = p.process_sensor_batch([live(occ(f"a{i}", t, count=10), 5000 + i, t + 100)],
                                     now_ms=t + 100)
        back += [orjson.loads(r.value) for r in out.alerts if r.key == b"vihara"]
    assert back
    assert back[-1]["status"] == "resolved"
    assert not math.isnan(back[-1]["density"] or math.nan)


@pytest.mark.kernels
def test_a_report_read_ahead_of_a_sensor_backlog_is_not_stale() -> None:
    """Another partition has read its whole backlog; the report's zone has not been seen yet:
    its report acts (it has no zone clock to be old by)."""
    p = pipeline(zone(), zone("bridge", sensors=("b-cam",)))
    for i in range(40):  # the vihara's partition is 40 minutes on
        t = T0 + i * 60_000
        p.process_sensor_batch([live(occ(f"a{i}", t), i, t)], now_ms=t)
    out = p.process_report_batch([live(report("r1", T0 + 60_000), 0, T0 + 60_000, topic="r")],
                                 now_ms=T0 + 40 * 60_000)
    assert not out.dlq
    assert [orjson.loads(r.value)["level"] for r in out.alerts] == ["critical"]


@pytest.mark.kernels
def test_a_reading_keyed_to_another_partition_does_not_move_its_zone_there() -> None:
    """A gateway with another partitioner (or a batch mixing zones) puts a vihara reading on
    the bridge's partition, whose clock a consumer has read far ahead: the vihara is still
    judged by its own partition's clock."""
    p = pipeline(zone(), zone("bridge", sensors=("b-cam",)))
    for i in range(30):
        t = T0 + i * 1000
        p.process_sensor_batch([live(occ(f"a{i}", t), i, t, partition=0)], now_ms=t)
    for i in range(60):  # the bridge's partition, read ten minutes ahead
        t = T0 + 600_000 + i * 1000
        p.process_sensor_batch([live(occ(f"b{i}", t, 10, "b-cam", "bridge"), i, t,
                                     partition=1)], now_ms=t)
    stray = p.process_sensor_batch([live(occ("stray", T0 + 30_000), 99, T0 + 30_000,
                                         partition=1)], now_ms=T0 + 30_000)
    later = [p.process_sensor_batch([live(occ(f"c{i}", T0 + 31_000 + i * 1000), 40 + i,
                                          T0 + 31_000 + i * 1000, partition=0)],
                                    now_ms=T0 + 31_000 + i * 1000) for i in range(10)]
    assert dlq_reasons(stray) == []
    assert [r for o in later for r in dlq_reasons(o)] == []


# -- found by an independent review (replay of recorded files) ------------------------------

def _crush_files(tmp: Any) -> tuple[Any, Any]:
    from agents.devtools.simulator import SCENARIOS, simulate, write_files  # noqa: PLC0415
    from schemas import load_zones  # noqa: PLC0415
    from tests.unit.test_hostile_replay import ZONES_FILE  # noqa: PLC0415

    out = simulate(SCENARIOS["crush"], load_zones(ZONES_FILE), seed=1)
    events, reports = tmp / "events.jsonl", tmp / "reports.jsonl"
    write_files(out, str(events), str(reports))
    return events, reports


def _replay(events: Any, reports: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import io  # noqa: PLC0415

    from agents.config import Settings  # noqa: PLC0415
    from schemas import load_zones  # noqa: PLC0415
    from streams.replay import replay, replay_pipeline  # noqa: PLC0415
    from tests.unit.test_hostile_replay import ZONES_FILE  # noqa: PLC0415

    zones = load_zones(ZONES_FILE)
    conf = Settings.from_env({}).pipeline(zones)
    pipe = replay_pipeline(zones, conf.engine, conf.alerts.config)
    out, dlq = io.BytesIO(), io.BytesIO()
    replay(pipe, events, out, reports=reports, dlq_out=dlq)
    return ([orjson.loads(x) for x in out.getvalue().splitlines()],
            [orjson.loads(x) for x in dlq.getvalue().splitlines()])


@pytest.mark.kernels
def test_a_camera_15_s_fast_in_a_recorded_night_makes_no_other_reading_late(tmp_path: Any
                                                                           ) -> None:
    events, reports = _crush_files(tmp_path)
    _, clean = _replay(events, reports)
    fast = tmp_path / "fast.jsonl"
    lines = []
    for line in events.read_bytes().splitlines():
        doc = orjson.loads(line)
        for item in doc if isinstance(doc, list) else [doc]:
            if item.get("sensor_id") == "nb-cam-east":
                item["ts"] += 15_000
        lines.append(orjson.dumps(doc))
    fast.write_bytes(b"\n".join(lines) + b"\n")
    _, dirty = _replay(fast, reports)
    late = [d for d in dirty if d["reason"] == "late"]
    assert len(late) == len([d for d in clean if d["reason"] == "late"])


@pytest.mark.kernels
def test_a_report_sent_late_in_a_recorded_file_gets_no_other_report_refused(tmp_path: Any
                                                                          ) -> None:
    events, reports = _crush_files(tmp_path)
    lines = reports.read_bytes().splitlines()
    lines.insert(3, lines.pop(0))  # the first report arrived after the fourth
    moved = tmp_path / "moved.jsonl"
    moved.write_bytes(b"\n".join(lines) + b"\n")
    _, dlq = _replay(events, moved)
    assert [d["reason"] for d in dlq if "reports" in d["source"]["topic"]
            or "moved" in d["source"]["topic"]] == []


def test_a_huge_or_tiny_zone_is_refused_at_once() -> None:
    import pytest  # noqa: PLC0415

    from agents.config import Settings  # noqa: PLC0415
    from streams.registry import check_zones  # noqa: PLC0415

    rules = Settings.from_env({}).registry_rules()
    circle = tuple((16.82 + 0.001 * math.cos(2 * math.pi * i / 20_000),
                    100.26 + 0.001 * math.sin(2 * math.pi * i / 20_000)) for i in range(20_000))
    big = Zone("big", "ก", "Big", 500.0, "standing", (), polygon=circle)
    with pytest.raises(schemas.ZoneRegistryError, match="more than 1000 points"):
        check_zones([big], rules)
    with pytest.raises(schemas.ZoneRegistryError, match="area_m2"):
        check_zones([Zone("tiny", "ก", "Tiny", 1e-300, "standing", ())], rules)


@pytest.mark.kernels
def test_a_restored_partition_whose_input_stopped_still_goes_blind_by_the_wall_clock() -> None:
    """A restart after the sensors stopped: no arrival ever comes again, yet the zone's
    windows close by the wall clock and the open episode hears that the zone is blind."""
    p = pipeline(zone(), idle_ms=30_000)
    for i in range(60):
        t = T0 + i * 1000
        p.process_sensor_batch([live(occ(f"a{i}", t, count=300), i, t)], now_ms=t)
    blob = p.snapshot(0)
    fresh = pipeline(zone(), idle_ms=30_000)
    restart = T0 + 70_000
    assert fresh.restore(blob, now_ms=restart) == 1
    assert p.alerts.export_state(["vihara"])["vihara"]["level"] == 3  # critical
    statuses = [orjson.loads(r.value)["reason"]
                for now in range(restart, restart + 300_000, 2500)
                for r in fresh.tick(now).alerts]
    assert "sensing_lost" in statuses
