"""Lanes (streams/lanes.py): a by-zone partition merges the streams of several upstream
partitions, read by routers at different speeds. One clock per upstream partition keeps a
lagging router's readings from being judged late by a faster one's clock."""

from __future__ import annotations

import orjson
import pytest

from schemas import Kind, SensorSpec, Zone
from streams.lanes import Lanes
from streams.pipeline import Pipeline
from streams.records import SourceMessage
from streams.route import Router

T0 = 1_771_150_000_000
ZONES = [Zone(z, z, z, 100.0, "standing", (SensorSpec(f"{z}-cam", Kind.OCCUPANCY, 50.0),))
         for z in ("a", "b", "c", "d")]
BY_ZONE = 1  # one by-zone partition: every zone merges into it


def reading(zone: str, t: int, upstream: int, offset: int) -> SourceMessage:
    ev = {"event_id": f"{zone}-{t}", "sensor_id": f"{zone}-cam", "zone_id": zone,
          "kind": "occupancy", "ts": T0 + t * 1000, "count": 100, "coverage_m2": 50.0}
    # An hour-old backlog: arrival (LogAppendTime) is now, long after the event time.
    return SourceMessage("sensors", upstream, offset, T0 + 3_600_000, zone.encode(),
                         orjson.dumps(ev))


def routed_backlog() -> list[SourceMessage]:
    """Zones a and b sit on upstream partition 0, c and d on 1. The router of partition 1
    lags: the by-zone log holds all of partition 0's 5 minutes before partition 1's."""
    router = Router(ZONES, BY_ZONE, reports_topic="reports")
    fast = [reading(z, t, 0, 2 * t + i) for t in range(300) for i, z in enumerate("ab")]
    slow = [reading(z, t, 1, 2 * t + i) for t in range(300) for i, z in enumerate("cd")]
    out = []
    for msg in fast + slow:
        for r in router.route(msg):
            out.append(SourceMessage("by-zone", r.partition, len(out), r.timestamp_ms, r.key,
                                     r.value, tuple(r.headers)))
    return out


def densities(records: list[bytes]) -> dict[str, int]:
    n: dict[str, int] = {}
    for v in records:
        z = orjson.loads(v)["zone_id"]
        n[z] = n.get(z, 0) + 1
    return n


@pytest.mark.kernels
def test_a_lagging_router_makes_no_reading_late() -> None:
    msgs = routed_backlog()
    lanes = Lanes(Pipeline(ZONES))
    outs = [lanes.process(msgs[i:i + 100], None) for i in range(0, len(msgs), 100)]
    assert sum(o.rejected.get("late", 0) for o in outs) == 0
    n = densities([r.value for o in outs for r in o.density])
    assert set(n) == {"a", "b", "c", "d"}
    assert abs(n["a"] - n["c"]) <= 2, n
    # One clock for the merged log (no lanes) drops the slow half as late: what lanes fix.
    pipe = Pipeline(ZONES)
    plain = [pipe.process_routed_batch(msgs[i:i + 100]) for i in range(0, len(msgs), 100)]
    assert sum(o.rejected.get("late", 0) for o in plain) > 500


@pytest.mark.kernels
def test_a_partition_snapshot_holds_all_its_lanes() -> None:
    msgs = routed_backlog()
    half = len(msgs) * 3 // 4
    lanes = Lanes(Pipeline(ZONES))
    for i in range(0, half, 100):
        lanes.process(msgs[i:i + 100], None)
    blob = lanes.snapshot(0)
    rest = [lanes.process(msgs[i:i + 100], None) for i in range(half, len(msgs), 100)]
    again = Lanes(Pipeline(ZONES))
    zones, resumable = again.restore(blob)
    assert resumable
    assert zones == 4
    rest2 = [again.process(msgs[i:i + 100], None) for i in range(half, len(msgs), 100)]
    assert [r.value for o in rest2 for r in o.density] == \
        [r.value for o in rest for r in o.density]
    assert again.watermark(0) == lanes.watermark(0)


@pytest.mark.kernels
def test_dropping_a_partition_drops_every_lane_and_an_old_snapshot_resumes_nothing() -> None:
    msgs = routed_backlog()
    lanes = Lanes(Pipeline(ZONES))
    lanes.process(msgs, None)
    assert sorted(lanes.drop_partition(0)) == ["a", "b", "c", "d"]
    assert lanes.watermark(0) is None
    assert lanes.tick(T0 + 4_000_000, [0]).density == []
    # A snapshot written before the router (one engine partition, of the sensor topic).
    old = Pipeline(ZONES)
    old.process_sensor_batch(msgs[:50])
    zones, resumable = Lanes(Pipeline(ZONES)).restore(old.snapshot(0))
    assert (zones, resumable) == (0, False)


@pytest.mark.kernels
def test_only_lanes_whose_upstream_is_routed_move_on_by_wall_time() -> None:
    """A router that is frozen or behind (its upstream partition not routed to its end) keeps
    its lanes' clocks: the readings it has yet to route must not be made late."""
    router = Router(ZONES, BY_ZONE, reports_topic="reports")
    msgs = []
    for t in range(20):
        for up, z in ((0, "a"), (1, "c")):
            ev = {"event_id": f"{z}-{t}", "sensor_id": f"{z}-cam", "zone_id": z,
                  "kind": "occupancy", "ts": T0 + t * 1000, "count": 100, "coverage_m2": 50.0}
            src = SourceMessage("sensors", up, t, T0 + t * 1000, z.encode(), orjson.dumps(ev))
            for r in router.route(src):
                msgs.append(SourceMessage("by-zone", r.partition, len(msgs), r.timestamp_ms,
                                          r.key, r.value, tuple(r.headers)))
    lanes = Lanes(Pipeline(ZONES))
    lanes.process(msgs, T0 + 20_000)
    later = T0 + 20_000 + 120_000  # two minutes of silence: past idle, window and grace
    out = lanes.tick(later, [0], upstream={0})
    assert densities([r.value for r in out.density]).keys() == {"a"}
    # Routed at last: after a full idle time of its own (its idle timer restarted while it
    # was held), the lagging lane moves on too.
    assert lanes.tick(later, [0], upstream={0, 1}).density == []
    out = lanes.tick(later + 120_000, [0], upstream={0, 1})
    assert densities([r.value for r in out.density]).keys() == {"c"}


@pytest.mark.kernels
def test_input_routed_again_after_a_crash_is_taken_once() -> None:
    """A router that died before committing is followed by one that routes the same input
    again: the repeats (more per sensor than its dedup ring holds) change no window."""
    msgs = routed_backlog()
    again = msgs[:700] + [m._replace(offset=0) for m in msgs[300:700]] + msgs[700:]
    runs = []
    for stream in (msgs, again):
        lanes = Lanes(Pipeline(ZONES))
        outs = [lanes.process(stream[i:i + 50], None) for i in range(0, len(stream), 50)]
        runs.append(([r.value for o in outs for r in o.density],
                     sum(o.duplicates for o in outs)))
    assert runs[1][0] == runs[0][0]
    assert runs[1][1] - runs[0][1] == 400
    # What is taken survives a snapshot: the repeats after a restore are dropped too.
    lanes = Lanes(Pipeline(ZONES))
    lanes.process(msgs[:700], None)
    restored = Lanes(Pipeline(ZONES))
    restored.restore(lanes.snapshot(0))
    assert restored.process(msgs[300:700], None).duplicates == 400
