"""A small built-in sensor-event generator for the demo and the smoke tests.

Every zone idles at a low density; one zone goes through a surge: up to ``peak`` persons/m²
over the first half of the run, then back down. Each tick, every sensor of every zone reads
the zone's true occupancy (cameras as a count over their coverage, line counters as
entries/exits deltas, Wi-Fi counters as devices = people / calibration), and each zone's
readings go out as one gateway batch (a JSON array) keyed by ``zone_id``. Event time is the
wall clock. The full simulator with faults and ground truth is ``safetour simulate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaProducer

from schemas import Kind, Zone

log = logging.getLogger(__name__)


def surge_density(t: float, duration: float, base: float, peak: float) -> float:
    """Triangular surge: ``base`` at 0, ``peak`` at 45% of ``duration``, ``base`` from 90%."""
    if duration <= 0:
        return base
    x = t / duration
    if x <= 0.45:
        return base + (peak - base) * x / 0.45
    if x <= 0.9:
        return peak - (peak - base) * (x - 0.45) / 0.45
    return base


@dataclass(slots=True)
class _SensorState:
    last_occupancy: float = 0.0


class ReadingFactory:
    """Readings for one tick, from true densities; seeded, so runs are reproducible."""

    def __init__(self, zones: Sequence[Zone], *, seed: int = 7) -> None:
        self.zones = list(zones)
        self._rng = random.Random(seed)
        self._lines: dict[str, _SensorState] = {}
        self._seq = 0

    def tick(
        self, ts_ms: int, density: Callable[[Zone], float]
    ) -> dict[str, list[dict[str, object]]]:
        out: dict[str, list[dict[str, object]]] = {}
        for z in self.zones:
            occ = max(0.0, density(z) * z.area_m2)
            batch: list[dict[str, object]] = []
            for s in z.sensors:
                self._seq += 1
                ev: dict[str, object] = {
                    "event_id": f"{s.sensor_id}-{ts_ms}-{self._seq}",
                    "sensor_id": s.sensor_id, "zone_id": z.zone_id,
                    "kind": s.kind.wire, "ts": ts_ms,
                }
                if s.kind is Kind.OCCUPANCY:
                    cov = s.coverage_m2 or z.area_m2
                    ev["count"] = max(0, round(occ / z.area_m2 * cov + self._rng.gauss(0, 1)))
                    ev["coverage_m2"] = cov
                elif s.kind is Kind.LINE_COUNT:
                    st = self._lines.setdefault(s.sensor_id, _SensorState(occ))
                    delta = round(occ - st.last_occupancy)
                    churn = self._rng.randint(0, 3)
                    ev["entries"] = max(delta, 0) + churn
                    ev["exits"] = max(-delta, 0) + churn
                    st.last_occupancy += delta
                else:
                    ev["devices"] = max(0, round(occ / (s.calibration or 1.0)))
                batch.append(ev)
            if batch:
                out[z.zone_id] = batch
        return out


async def run_generator(
    bootstrap: str,
    topic: str,
    zones: Sequence[Zone],
    *,
    duration_s: float = 120.0,
    surge_s: float | None = None,
    surge_zone: str | None = None,
    peak: float = 6.0,
    base: float = 0.4,
    interval_s: float = 1.0,
    seed: int = 7,
    stop: asyncio.Event | None = None,
) -> int:
    """Publish readings for ``duration_s`` seconds; return how many events were sent.

    The surge takes the first ``surge_s`` seconds (default: all of ``duration_s``); the rest
    is at ``base`` density, long enough for windows to see the crowd thin out.
    """
    target = surge_zone or next((z.zone_id for z in zones if z.crowd == "standing"), None)
    if target is not None and target not in {z.zone_id for z in zones}:
        raise ValueError(f"surge zone {target!r} is not in the registry")
    factory = ReadingFactory(zones, seed=seed)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    sent = 0
    t0 = time.monotonic()
    try:
        tick = 0
        while True:
            elapsed = tick * interval_s
            if elapsed > duration_s or (stop is not None and stop.is_set()):
                break
            ts_ms = int(time.time() * 1000)
            level = surge_density(elapsed, surge_s or duration_s, base, peak)

            def density(z: Zone, surge: float = level) -> float:
                return surge if z.zone_id == target else base

            batches = factory.tick(ts_ms, density)
            for zone_id, batch in batches.items():
                await producer.send(topic, orjson.dumps(batch), key=zone_id.encode())
                sent += len(batch)
            await producer.flush()
            tick += 1
            # Pace by the schedule, not by the time the sends took.
            delay = t0 + tick * interval_s - time.monotonic()
            if stop is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(delay, 0))
            elif delay > 0:
                await asyncio.sleep(delay)
    finally:
        await producer.stop()
    log.info("generator sent %d events", sent)
    return sent
