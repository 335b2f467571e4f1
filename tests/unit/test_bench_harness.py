"""The benchmark's own arithmetic (it grades everything else, so it is tested too)."""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import replace
from pathlib import Path

import orjson

from agents.config import Settings
from benchmarks import data, offline
from benchmarks.e2e import Outputs, Progress, ready_at
from schemas import load_zones


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


def test_rate_since_ready_divides_the_readings_the_last_output_needed() -> None:
    """The scale rows' rate: at 100,000 zones every window closes at the end, the first and
    last outputs need the same readings and :meth:`Outputs.rate` came out 0."""
    p = Progress.of(list(range(0, 10_000_000, 1000)), 0)
    late = Outputs(first_append_ms=9_000, last_append_ms=9_500, first_window_end=9_990_000,
                   last_window_end=9_990_000, count=5, ready_ms=1_500)
    assert late.rate(p, 10_000) == 0.0  # the defect: nothing between first and last
    assert late.rate_since_ready(p, 10_000) == 9990 / 8.0
    assert late.rate_since_ready(p, 100) == 100 / 8.0  # capped at the readings there are
    never = replace(late, ready_ms=None)
    assert never.rate_since_ready(p, 10_000) != never.rate_since_ready(p, 10_000)  # NaN


def test_ready_at_is_the_first_200_of_readyz() -> None:
    """Polled through 503s (partitions not restored yet) to the first 200."""
    answers = [b"503 Service Unavailable", b"503 Service Unavailable", b"200 OK"]
    asked: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(await reader.readline())
        status = answers.pop(0) if len(answers) > 1 else answers[0]
        writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def go() -> tuple[float, int]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            before = time.time() * 1000
            return before, await asyncio.wait_for(ready_at(port, every_s=0.01), 10)

    before, at = asyncio.run(go())
    assert at >= before - 1
    assert asked == [b"GET /readyz HTTP/1.0\r\n"] * 3


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


def test_registry_of_the_clones_keeps_every_field_and_their_own_neighbours(tmp_path: Path
                                                                            ) -> None:
    base = {z.zone_id: z for z in load_zones(data.BASE_ZONES)}
    clones = data.clone_zones(12)  # a clone and a part: neighbours cut off are left out
    reg = Settings.from_env({}).load_registry(data.write_registry(clones, tmp_path / "z.json"))
    assert reg == clones
    for z in reg:
        zid, r = z.zone_id.split("~")
        assert z.grid == base[zid].grid
        assert z.capacity == base[zid].capacity
        assert {n.zone_id for n in z.neighbours} <= {c.zone_id for c in clones}
        assert all(n.zone_id.endswith(f"~{r}") for n in z.neighbours)
    assert reg[10].zone_id == "wat-yai-grounds~1"
    assert [n.zone_id for n in reg[10].neighbours] == ["wat-yai-vihara~1", "naresuan-bridge~1"]
    assert [n.zone_id for n in reg[11].neighbours] == ["wat-yai-grounds~1"]  # the rest cut off


def test_benchmark_input_is_clean_for_its_registry(tmp_path: Path) -> None:
    """The simulator's readings are dead-lettered only as it means them (late re-sends):
    never off_grid, unknown_sensor or schema (the registry file lacked the grids, and the
    worker refused every grid reading of the benchmark off_grid)."""
    ds = data.build(9, 4000)
    zones = data.write_registry(ds.zones, tmp_path / "zones.json")
    pipe = Settings.from_env({}).pipeline(load_zones(zones))
    produced = max(int(r["ts"]) for r in ds.readings) + 60_000  # all arrived by then
    fetches = offline.messages(ds.single, "bench", 500, 1, produced)
    rejected: collections.Counter[str] = collections.Counter()
    grid = 0
    for batch in fetches:
        out = pipe.process_sensor_batch(batch, produced)
        rejected.update(out.rejected)
        grid += out.kinds["grid_count"]
    assert grid > 0  # the grounds' grid camera is in the input, and counted
    assert set(rejected) <= {"late"}, rejected
