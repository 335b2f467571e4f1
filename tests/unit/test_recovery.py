"""Snapshots: a pipeline restored from a snapshot continues exactly like one never stopped."""

from __future__ import annotations

import random

import orjson
import pytest

from schemas import Kind, SensorEvent
from streams import WindowedDensityEngine
from streams.pipeline import Pipeline
from streams.records import SourceMessage

from .test_density_kernels import GRACE, SLIDE, WINDOW, ZONES, random_stream


def messages(stream: list[tuple[SensorEvent, int, int]]) -> list[SourceMessage]:
    out = []
    for off, (e, p, arrival) in enumerate(stream):
        doc = {"event_id": e.event_id, "sensor_id": e.sensor_id, "zone_id": e.zone_id,
               "kind": e.kind.wire, "ts": e.ts_ms}
        if e.kind is Kind.OCCUPANCY:
            doc["count"] = e.count
        elif e.kind is Kind.LINE_COUNT:
            doc |= {"entries": e.entries, "exits": e.exits}
        else:
            doc["devices"] = e.devices
        out.append(SourceMessage("sensors", p, off, arrival, e.zone_id.encode(),
                                 orjson.dumps(doc)))
    return out


def pipeline() -> Pipeline:
    engine = WindowedDensityEngine(ZONES, window_ms=WINDOW, slide_ms=SLIDE, grace_ms=GRACE)
    return Pipeline(ZONES, engine=engine)


def run(p: Pipeline, msgs: list[SourceMessage]) -> list[bytes]:
    out: list[bytes] = []
    for i in range(0, len(msgs), 50):
        o = p.process_sensor_batch(msgs[i:i + 50])
        out += [r.value for r in o.density] + [r.value for r in o.alerts]
    return out


@pytest.mark.kernels
def test_restored_pipeline_continues_exactly() -> None:
    msgs = messages(random_stream(random.Random(11), 2000, partitions=3))
    full = run(pipeline(), msgs)
    cut = 1000
    first = pipeline()
    before = run(first, msgs[:cut])
    snaps = [first.snapshot(p) for p in range(3)]
    second = pipeline()
    assert sum(second.restore(s) for s in snaps) == len(ZONES)
    after = run(second, msgs[cut:])
    assert before + after == full
    assert any(b"raised" in v for v in full)  # the stream raised alerts that had to carry over


@pytest.mark.kernels
def test_backfill_is_not_made_late_by_the_wall_clock() -> None:
    """Replaying an hour-old backlog: arrivals keep coming, so idleness never kicks in."""
    e = WindowedDensityEngine(ZONES, window_ms=WINDOW, slide_ms=SLIDE, grace_ms=GRACE,
                              idle_ms=30_000)
    t0 = 1_771_150_000_000
    now = t0 + 3_600_000
    for i in range(100):
        ev = SensorEvent(f"e{i}", "a-cam1", "a", Kind.OCCUPANCY, t0 + i * 1000, count=10)
        assert e.ingest([ev], [0], wall_ms=now + i) == []
        e.advance(now + i + 1)
    # Once the backlog stops arriving for longer than idle, the clock moves on.
    e.emit()
    e.advance(now + 100 + 30_000 + 120_000)
    last = e.emit()
    assert last
    assert last[-1].readings == 0


@pytest.mark.kernels
def test_an_upgrade_that_changes_the_grace_keeps_the_open_critical_episode() -> None:
    """A snapshot taken with window 60 / grace 10, restored into an engine with grace 5:
    the density state cannot be restored, but the open critical episode is carried over and
    the zone's next alert continues it (same alert_id), instead of vanishing unresolved."""
    from .test_input_rules import live, occ, zone  # noqa: PLC0415

    t0 = 1_771_150_000_000
    zs = [zone()]

    def engine(grace_ms: int) -> WindowedDensityEngine:
        return WindowedDensityEngine(zs, window_ms=60_000, slide_ms=5_000, grace_ms=grace_ms)

    def feed(p: Pipeline, start: int, seconds: int, count: int) -> list[dict[str, object]]:
        out = []
        for i in range(start, start + seconds):
            t = t0 + i * 1000
            msgs = [live(occ(f"{s}-{i}", t, count, sensor=s), 3 * i + k, t + 200)
                    for k, s in enumerate(("cam", "cam2", "cam3"))]
            out += [orjson.loads(r.value) for r in p.process_sensor_batch(msgs, t + 200).alerts]
        return out

    old = Pipeline(zs, engine=engine(10_000))
    raised = feed(old, 0, 120, 300)  # 6 p/m²: critical
    critical = [a for a in raised if a["level"] == "critical"]
    assert critical
    episode = critical[-1]["alert_id"]
    blob = old.snapshot(0)

    new = Pipeline(zs, engine=engine(5_000))
    assert new.restore(blob, now_ms=t0 + 120_000) == 0  # the density state is not restored
    after = feed(new, 120, 120, 30)  # the crowd thins out: 0.6 p/m²
    assert after, "the open episode vanished: no alert ever resolves it"
    assert after[0]["alert_id"] == episode
    assert after[0]["status"] != "raised"
    assert any(a["status"] == "resolved" for a in after)
