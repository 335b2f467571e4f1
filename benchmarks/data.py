"""Benchmark input: the simulator's readings, cloned to any number of zones.

The Phitsanulok simulator (``agents/devtools/simulator.py``, scenario ``wat-yai-fair``) produces
what a festival night looks like: cameras, line counters and Wi-Fi counters on 9 zones, gateway
batches, re-sent and late readings. For ``zones`` zones the 9 are cloned (``zone~r``, with
their sensors) and the readings interleaved in delivery order, so event time advances through
the night at the same pace in every clone.

Two topics carry the same readings:
    single   one reading per message, keyed by zone_id
    batch100 gateway batches of 100 readings (one clone's site), keyed by site
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import yaml

from agents import devtools as sim
from schemas import BoundaryCounter, Neighbour, Zone, load_zones, parse_ts, zone_document

SITES = 8  # gateways of the batch topic, one a partition
BASE_ZONES = Path(__file__).resolve().parent.parent / "deploy/zones/phitsanulok.yaml"


def clone_zones(n: int) -> list[Zone]:
    """``n`` zones: the registry's 9 cloned (``zone~r``), each clone with its own sensors and
    its neighbours among the same clone (a neighbour cut off by ``n`` is left out)."""
    base = load_zones(BASE_ZONES)
    reps = math.ceil(n / len(base))
    out: list[Zone] = []
    for r in range(reps):
        for z in base:
            sensors = tuple(replace(s, sensor_id=f"{s.sensor_id}~{r}") for s in z.sensors)
            neighbours = tuple(
                Neighbour(f"{nb.zone_id}~{r}", tuple(
                    BoundaryCounter(f"{c.sensor_id}~{r}", c.into) for c in nb.counters))
                for nb in z.neighbours)
            out.append(replace(z, zone_id=f"{z.zone_id}~{r}", sensors=sensors,
                               neighbours=neighbours))
    out = out[:n]
    kept = {z.zone_id for z in out}
    return [replace(z, neighbours=tuple(nb for nb in z.neighbours if nb.zone_id in kept))
            for z in out]


def write_registry(zones: list[Zone], path: Path) -> Path:
    """The registry file of ``zones``: every field of each (grid, capacity, neighbours, ...),
    as the worker is to read them."""
    docs = [zone_document(z) for z in zones]
    if path.suffix == ".json":  # large registries: JSON loads in a fraction of YAML's time
        path.write_bytes(orjson.dumps({"zones": docs}))
    else:
        path.write_text(yaml.safe_dump({"zones": docs}, allow_unicode=True, sort_keys=False))
    return path


@dataclass
class Dataset:
    zones: list[Zone]
    readings: list[dict[str, Any]]  # in delivery order
    single: list[tuple[bytes, bytes]]
    batch100: list[tuple[bytes, bytes]]
    batch_order: list[dict[str, Any]]  # the readings in the order the batch topic holds them

    @property
    def ts(self) -> list[int]:
        return [int(r["ts"]) for r in self.readings]

    def ts_of(self, shape: str) -> list[int]:
        rows = self.readings if shape == "single" else self.batch_order
        return [int(r["ts"]) for r in rows]


# Each scenario drives a few zones; together these drive 8 of the 9 (the palace grounds
# have no scenario). Each zone takes its readings from the first scenario that drives it,
# shifted onto the fair night, so all zones share one event-time clock.
SCENARIOS = ("wat-yai-fair", "ordinary-evening", "songkran")


def _base_readings(seed: int) -> list[dict[str, Any]]:
    zones = load_zones(BASE_ZONES)
    night = sim.SCENARIOS[SCENARIOS[0]].start
    claimed: set[str] = set()
    merged: list[tuple[int, int, dict[str, Any]]] = []
    for k, name in enumerate(SCENARIOS):
        scenario = sim.SCENARIOS[name]
        shift = round((night - scenario.start).total_seconds() * 1000)
        out = sim.simulate(scenario, zones, seed=seed + k)
        mine: set[str] = set()
        for delivered, _, value in out.events:
            for ev in orjson.loads(value):
                if ev["zone_id"] in claimed:
                    continue
                mine.add(ev["zone_id"])
                ev["ts"] = parse_ts(ev["ts"]) + shift  # epoch ms, so nights can be shifted
                merged.append((delivered + shift, len(merged), ev))
        claimed |= mine
    merged.sort(key=lambda m: (m[0], m[1]))
    return [ev for _, _, ev in merged]


def build(zones: int, readings: int, *, seed: int = 7) -> Dataset:
    """``readings`` readings over ``zones`` zones, as single and batch-of-100 messages."""
    reps = math.ceil(zones / 9)
    cloned = clone_zones(zones)
    wanted = {z.zone_id for z in cloned}
    base = _base_readings(seed)
    rows: list[dict[str, Any]] = []
    loops = 0
    while len(rows) < readings:
        shift = loops * 3600 * 1000  # past the end of the night: the next night
        for ev in base:
            for r in range(reps):
                zid = f"{ev['zone_id']}~{r}"
                if zid not in wanted:
                    continue
                rows.append(dict(ev, zone_id=zid, sensor_id=f"{ev['sensor_id']}~{r}",
                                 event_id=f"{ev['event_id']}~{r}~{loops}",
                                 ts=ev["ts"] + shift))
            if len(rows) >= readings:
                break
        loops += 1
    rows = rows[:readings]
    single = [(e["zone_id"].encode(), orjson.dumps(e)) for e in rows]
    # Gateways: site i serves every zone whose index is i mod SITES and owns partition i, so
    # a site's batches reach one partition in order (as a gateway's would, keyed by site).
    site_of = {z.zone_id: i % SITES for i, z in enumerate(cloned)}
    buffers: dict[int, list[dict[str, Any]]] = {}
    batch100: list[tuple[bytes, bytes]] = []
    batch_order: list[dict[str, Any]] = []
    for e in rows:
        site = site_of[e["zone_id"]]
        buf = buffers.setdefault(site, [])
        buf.append(e)
        if len(buf) == 100:
            batch100.append((f"site~{site}".encode(), orjson.dumps(buf)))
            batch_order.extend(buf)
            buffers[site] = []
    for site, buf in sorted(buffers.items()):
        if buf:
            batch100.append((f"site~{site}".encode(), orjson.dumps(buf)))
            batch_order.extend(buf)
    return Dataset(cloned, rows, single, batch100, batch_order)


def site_partition(key: bytes) -> int | None:
    """Batch messages (key ``site~i``) go to partition i; others by the key's hash."""
    return int(key[5:]) if key.startswith(b"site~") else None


async def produce(bootstrap: str, topic: str, msgs: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                max_batch_size=512 * 1024, acks=1)
    await producer.start()
    try:
        for i, (key, value) in enumerate(msgs):
            await producer.send(topic, value, key=key, partition=site_partition(key))
            if i % 20000 == 19999:
                await producer.flush()
        await producer.flush()
    finally:
        await producer.stop()
