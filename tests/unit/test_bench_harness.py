"""The benchmark's own arithmetic (it grades everything else, so it is tested too)."""

from __future__ import annotations

import collections

import orjson

from benchmarks import data
from benchmarks.e2e import Outputs, Progress


def test_progress_counts_readings_up_to_window_end_plus_grace() -> None:
    p = Progress.of([1000, 3000, 2000, 5000, 4000, 9000], grace_ms=1000)
    # A window ending at 2000 closes once a reading at >= 3000 was read: the 2nd one.
    assert p.readings_for(2000) == 1
    assert p.readings_for(3999) == 3  # the prefix max reaches 5000 at the 4th reading
    assert p.readings_for(8000) == 5
    assert p.readings_for(9000) == 6  # never reached: all readings


def test_rate_uses_readings_between_first_and_last_output() -> None:
    p = Progress.of(list(range(0, 100_000, 10)), grace_ms=0)  # 10,000 readings, 10 ms apart
    out = Outputs(first_append_ms=1000, last_append_ms=3000, first_window_end=10_000,
                  last_window_end=90_000, count=100)
    assert out.rate(p, 10_000) == (9000 - 1000) / 2.0
    assert Outputs(count=1).rate(p, 10_000) != Outputs(count=1).rate(p, 10_000)  # NaN


def test_dataset_clones_zones_and_keeps_sites_on_their_partition() -> None:
    ds = data.build(30, 3000)
    assert len(ds.zones) == 30
    assert len({z.zone_id for z in ds.zones}) == 30
    assert len(ds.readings) == len(ds.single) == 3000
    assert sorted(r["event_id"] for r in ds.batch_order) == sorted(
        r["event_id"] for r in ds.readings)
    site_of = {z.zone_id: i % data.SITES for i, z in enumerate(ds.zones)}
    for key, value in ds.batch100:
        site = data.site_partition(key)
        assert site is not None
        assert {site_of[r["zone_id"]] for r in orjson.loads(value)} == {site}
    # Event time advances through the night at the same pace in every clone.
    per_zone = collections.Counter(r["zone_id"].split("~")[0] for r in ds.readings)
    assert len(per_zone) == 8  # every zone some scenario drives (not the palace grounds)
    assert data.site_partition(b"wat-yai-vihara~1") is None
