"""Kernel benchmark: readings per second through the density kernels alone.

    python -m benchmarks.kernels [--quick] [--repeat 5] [--readings 3000000]

For 100, 10,000 and 100,000 zones (3 sensors each: a camera, a line counter, a Wi-Fi counter),
readings are generated as gateways send them: every ``interval`` of event time each zone
reports its 3 sensors together, zones in a shuffled order, with jitter. Two workloads: every
5 s (3 readings per window close, the costly case) and every 1 s (15 readings per close).
Columns are built before the clock starts; the timed part is
``WindowedDensityEngine.ingest_arrays`` (the numba kernel, including every window close it
triggers) in batches of 100,000, after a warm-up run that also compiles. The baseline in the
same run is the pure-Python twin (``streams/kernels_py.py``) on a prefix of the same
readings. Medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas import Kind, SensorSpec, Zone
from streams.density import WindowedDensityEngine
from streams.kernels_py import Row, SensorState, TwinEngine, ZoneState

T0 = 1_771_150_000_000
BATCH = 100_000


@dataclass
class Columns:
    zone: npt.NDArray[np.int32]
    sensor: npt.NDArray[np.int32]
    kind: npt.NDArray[np.int8]
    ts: npt.NDArray[np.int64]
    a: npt.NDArray[np.float64]
    b: npt.NDArray[np.float64]
    cov: npt.NDArray[np.float64]
    hash: npt.NDArray[np.int64]
    part: npt.NDArray[np.int32]

    def __len__(self) -> int:
        return int(self.zone.shape[0])

    def slice(self, i: int, j: int) -> Columns:
        return Columns(*(getattr(self, f)[i:j] for f in self.__dataclass_fields__))


def make_zones(n: int) -> list[Zone]:
    return [
        Zone(f"z{i}", f"z{i}", f"z{i}", 1000.0, "moving", (
            SensorSpec(f"z{i}-cam", Kind.OCCUPANCY, coverage_m2=200.0),
            SensorSpec(f"z{i}-line", Kind.LINE_COUNT, width_m=4.0),
            SensorSpec(f"z{i}-wifi", Kind.DEVICE_COUNT, calibration=2.0),
        ))
        for i in range(n)
    ]


def make_readings(n_zones: int, n_readings: int, interval_ms: int = 5000, seed: int = 1) -> Columns:
    rng = np.random.default_rng(seed)
    ticks = -(-n_readings // (3 * n_zones))
    zone = np.empty((ticks, n_zones, 3), dtype=np.int32)
    order = np.stack([rng.permutation(n_zones) for _ in range(ticks)])
    zone[:] = order[:, :, None]
    sensor = (zone * 3 + np.arange(3, dtype=np.int32)).astype(np.int32)
    kind = np.broadcast_to(np.array([1, 0, 2], dtype=np.int8), zone.shape)
    ts = (T0 + np.arange(ticks, dtype=np.int64)[:, None, None] * interval_ms
          + rng.integers(0, interval_ms // 2, size=zone.shape))
    a = rng.integers(0, 400, size=zone.shape).astype(np.float64)
    b = rng.integers(0, 400, size=zone.shape).astype(np.float64)
    n = zone.size
    cols = Columns(
        zone.ravel(), sensor.ravel(), np.ascontiguousarray(kind).ravel(), ts.ravel(), a.ravel(),
        b.ravel(), np.full(n, np.nan), rng.integers(0, 1 << 62, size=n, dtype=np.int64),
        np.zeros(n, dtype=np.int32),
    )
    return cols.slice(0, n_readings)


def run_kernel(zones: list[Zone], cols: Columns) -> float:
    eng = WindowedDensityEngine(zones)  # registry set-up is not part of the timed path
    t0 = time.perf_counter()
    for i in range(0, len(cols), BATCH):
        c = cols.slice(i, i + BATCH)
        eng.ingest_arrays(c.zone, c.sensor, c.kind, c.ts, c.a, c.b, c.cov, c.hash, c.part)
        eng.emit_arrays()
    return time.perf_counter() - t0


def run_twin(zones: list[Zone], cols: Columns) -> float:
    twin = TwinEngine(10_000)
    for zi, z in enumerate(zones):
        twin.zones[zi] = ZoneState(z.area_m2, 5000, 12, 1)
        for k, s in enumerate(z.sensors):
            twin.sensors[zi * 3 + k] = SensorState(s.calibration or 1.0, s.coverage_m2 or np.nan,
                                                    16, (1, 0, 2)[k], s.width_m or np.nan)
    events = list(zip(cols.zone.tolist(), cols.sensor.tolist(), cols.kind.tolist(),
                      cols.ts.tolist(), cols.a.tolist(), cols.b.tolist(), cols.cov.tolist(),
                      cols.hash.tolist(), cols.part.tolist(),
                      cols.ts.tolist(),  # watermark time: the event time (no arrivals here)
                      [0] * len(cols.ts),  # content hash: none (the kernel's default too)
                      strict=True))
    out: list[Row] = []
    t0 = time.perf_counter()
    for i in range(0, len(events), BATCH):
        twin.ingest(events[i:i + BATCH], out)
        twin.close_all(out)
    return time.perf_counter() - t0


def median_rate(fn: Callable[[], float], n: int, repeat: int) -> float:
    return n / statistics.median(fn() for _ in range(repeat))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readings", type=int, default=3_000_000)
    p.add_argument("--twin-readings", type=int, default=150_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="tiny smoke run (CI)")
    args = p.parse_args(argv)
    sizes = [100, 10_000, 100_000]
    if args.quick:
        args.readings, args.twin_readings, args.repeat = 60_000, 6_000, 1
        sizes = [100, 1_000]
    machine = platform.processor() or platform.machine()
    print(f"# Density kernel benchmark ({time.strftime('%Y-%m-%d')}, {machine}, "
          f"Python {platform.python_version()}, numpy {np.__version__})")
    print()
    print("| report every | zones | numba readings/s | twin readings/s | numba / twin "
          "| ns per reading | state MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for interval in (5000, 1000):
        run_sizes(sizes, interval, args)


def run_sizes(sizes: list[int], interval: int, args: argparse.Namespace) -> None:
    base_ns = None
    for nz in sizes:
        zones = make_zones(nz)
        cols = make_readings(nz, args.readings, interval)
        run_kernel(zones, cols.slice(0, min(len(cols), 4 * BATCH)))  # warm-up + compile
        rate = median_rate(functools.partial(run_kernel, zones, cols), len(cols), args.repeat)
        tcols = cols.slice(0, args.twin_readings)
        twin = median_rate(functools.partial(run_twin, zones, tcols), len(tcols),
                           max(1, args.repeat // 2))
        ns = 1e9 / rate
        base_ns = base_ns or ns
        eng = WindowedDensityEngine(zones)
        print(f"| {interval / 1000:g} s | {nz:,} | {rate:,.0f} | {twin:,.0f} | "
              f"{rate / twin:,.0f}x | {ns:.1f} "
              f"({ns / base_ns:.2f}x of {sizes[0]} zones) | {eng.state_bytes() / 1e6:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
