"""Spill-over across workers: zone A and its filling neighbour B live on by-zone partitions
owned by two different workers of one group; A's worker follows B's density records on the
density topic (agents/worker/neighbours.py) and A still gets its spill-over forecast: with
the inflow counted at A's own door, and with it counted only at B's gate (a counter B owns,
which A learns from the ``line_flows`` of B's density records). The two workers are started
once for the module; each test drives its own pair of zones."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from agents.config import Settings
from agents.topics import create_topics, topic_specs
from streams.route import zone_partition

from .conftest import free_port, make_settings, payloads, poll_until, start_worker, stop_worker
from .test_scale_out import readyz

PARTITIONS = 8
AREA = 600


def zone_ids() -> dict[int, str]:
    """One zone per by-zone partition."""
    out: dict[int, str] = {}
    i = 0
    while len(out) < PARTITIONS:
        zid = f"spill-{i}"
        out.setdefault(zone_partition(zid, PARTITIONS), zid)
        i += 1
    return out


def registry(path: Path, zones: list[str]) -> None:
    """Every zone neighbours every other; the flow into a zone from a neighbour is its own
    door's entries and the exits of the neighbour's gate (a counter the neighbour owns)."""
    docs = [{"zone_id": z, "name": {"th": f"โซน {z}", "en": f"Zone {z}"}, "area_m2": AREA,
             "crowd": "standing",
             "sensors": [{"sensor_id": f"{z}-cam", "kind": "occupancy", "coverage_m2": AREA},
                         {"sensor_id": f"{z}-door", "kind": "line_count"},
                         {"sensor_id": f"{z}-gate", "kind": "line_count"}],
             "neighbours": [{"zone_id": o, "counters": [
                 {"sensor_id": f"{z}-door", "into": "entries"},
                 {"sensor_id": f"{o}-gate", "into": "exits"}]} for o in zones if o != z]}
            for z in zones]
    path.write_text(yaml.safe_dump({"zones": docs}), encoding="utf-8")


async def publish_paced(bootstrap: str, topic: str, a: str, b: str, t0: int, seconds: int,
                        speed: float, *, via_gate: bool = False) -> None:
    """A: a flat camera and a door whose entries rise each second (``via_gate``: B's gate,
    whose exits into A rise; keyed by B, so read by B's worker only); B: a camera whose
    count rises through its elevated level. One event-second every 1/speed s of wall time
    (the follower sees B's records as a live worker would, not a backlog read in one go)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for t in range(seconds):
            ts = t0 + t * 1000
            evs = [(a, {"event_id": f"a-cam-{t}", "sensor_id": f"{a}-cam", "zone_id": a,
                        "kind": "occupancy", "ts": ts, "count": AREA}),
                   (b, {"event_id": f"b-gate-{t}", "sensor_id": f"{b}-gate", "zone_id": b,
                        "kind": "line_count", "ts": ts, "entries": 1, "exits": 2 + t // 4})
                   if via_gate else
                   (a, {"event_id": f"a-door-{t}", "sensor_id": f"{a}-door", "zone_id": a,
                        "kind": "line_count", "ts": ts, "entries": 2 + t // 4, "exits": 1}),
                   (b, {"event_id": f"b-cam-{t}", "sensor_id": f"{b}-cam", "zone_id": b,
                        "kind": "occupancy", "ts": ts,
                        "count": round(AREA * (1.8 + 0.01 * t))})]
            for zone, ev in evs:
                await producer.send(topic, orjson.dumps(ev), key=zone.encode())
            await producer.flush()
            await asyncio.sleep(1 / speed)  # pacing the input, not waiting for an effect
    finally:
        await producer.stop()


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


@dataclass
class Pair:
    """Two workers of one group on by-zone topics, the partitions each holds, one zone per
    partition."""

    kafka: str
    base: Settings
    ports: list[int]
    parts: list[set[int]]
    by_part: dict[int, str]

    def zones(self, i: int) -> tuple[str, str]:
        """The i-th pair (A, B): A driven by worker 0, B by worker 1."""
        return (self.by_part[sorted(self.parts[0])[i]], self.by_part[sorted(self.parts[1])[i]])


@pytest.fixture(scope="module")
def workers(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp_path = tmp_path_factory.mktemp("spill")
    by_part = zone_ids()
    zones_file = tmp_path / "zones.yaml"
    registry(zones_file, list(by_part.values()))
    base = replace(make_settings(kafka, tmp_path), zones_file=zones_file)
    asyncio.run(create_topics(kafka, topic_specs(base.topics)))
    ports = [free_port(), free_port()]
    env = {"SAFETOUR_ZONES": str(zones_file)}
    procs = []
    try:
        for i, port in enumerate(ports):
            procs.append(start_worker(replace(base, web_port=port), tmp_path / f"w{i}.log",
                                      **env))

        def spread() -> Any:
            parts = [set(readyz(p).get("partitions", [])) for p in ports]
            ok = all(readyz(p).get("ready") for p in ports) and \
                all(len(x) >= 2 for x in parts) and \
                set().union(*parts) == set(range(PARTITIONS)) and \
                sum(len(x) for x in parts) == PARTITIONS
            return parts if ok else None

        parts = poll_until(spread, timeout=90, what="partitions spread over 2 workers")
        yield Pair(kafka, base, ports, parts, by_part)
    finally:
        for p in procs:
            stop_worker(p)


def spill_over(w: Pair, a: str, b: str, *, via_gate: bool) -> tuple[list[dict[str, Any]], float]:
    """Drive the pair; A's spill-over alerts and how many records of other workers' zones
    worker 0 kept meanwhile."""
    kafka, base = w.kafka, w.base
    kept = metric(w.ports[0], 'safetour_neighbour_records_total{outcome="kept"}')
    t0 = (int(time.time()) - 150) * 1000
    asyncio.run(publish_paced(kafka, base.topics.sensor_events, a, b, t0, 120, 4.0,
                              via_gate=via_gate))

    def spill() -> Any:
        got = [x for x in payloads(kafka, base.topics.alerts)
               if x["zone_id"] == a and x["reason"] == "spillover"]
        return got or None

    alerts = poll_until(spill, timeout=60, what=f"a spill-over alert for {a}")
    # Nothing moved: A and B were driven by different workers throughout.
    assert [set(readyz(p).get("partitions", [])) for p in w.ports] == w.parts
    return alerts, metric(w.ports[0], 'safetour_neighbour_records_total{outcome="kept"}') - kept


def assert_spill_over(w: Pair, alerts: list[dict[str, Any]], a: str, b: str) -> None:
    first = alerts[0]
    assert first["status"] == "raised"
    assert first["level"] == "elevated"
    assert first["spillover"]["neighbour"] == b
    assert f"crowd from Zone {b} flowing in" in first["message"]["en"]
    assert 0 < first["eta_critical_s"] <= 600
    own = [x for x in payloads(w.kafka, w.base.topics.alerts) if x["zone_id"] == a
           and x["reason"] != "spillover"]
    assert not [x for x in own if x["status"] == "raised"]  # A's own density never moved


@pytest.mark.slow
def test_a_zone_gets_its_spillover_forecast_when_its_neighbour_is_on_another_worker(
    workers: Pair,
) -> None:
    a, b = workers.zones(0)
    alerts, kept = spill_over(workers, a, b, via_gate=False)
    assert_spill_over(workers, alerts, a, b)
    assert kept > 0  # worker 0 had B's records from the density topic only


@pytest.mark.slow
def test_the_inflow_counted_only_by_the_neighbours_gate_reaches_the_zone_over_its_records(
    workers: Pair,
) -> None:
    """A's boundary counter is B's gate, read by worker 1 only (its events are keyed by B):
    worker 0 learns the inflow from the ``line_flows`` of B's density records alone."""
    a, b = workers.zones(1)
    alerts, kept = spill_over(workers, a, b, via_gate=True)
    assert_spill_over(workers, alerts, a, b)
    assert kept > 0
    assert alerts[0]["spillover"]["inflow_per_min"] > 0  # B's gate's exits into A ...
    assert alerts[0]["spillover"]["net_inflow_per_min"] > 0  # ... less its entries back
    density = [x for x in payloads(workers.kafka, workers.base.topics.density)
               if x["zone_id"] == b and x.get("line_flows")]
    assert {f["sensor_id"] for x in density for f in x["line_flows"]} == {f"{b}-gate"}
